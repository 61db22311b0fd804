// CBC through its C interface (STYLE.md "Calling CBC").
#include "search/coin.h"

#include <Cbc_C_Interface.h>
#include <Clp_C_Interface.h>

#include <algorithm>
#include <limits>
#include <memory>

#include "mpq/common/error.h"

namespace mpq::search {

namespace {

struct CbcDeleter {
  void operator()(Cbc_Model* m) const { Cbc_deleteModel(m); }
};

std::vector<CoinBigIndex> big_starts(const LinearModel& m) {
  return std::vector<CoinBigIndex>(m.starts.begin(), m.starts.end());
}

void check_model(const LinearModel& m) {
  MPQ_ASSERT(m.starts.size() == m.obj.size() + 1 && m.col_lb.size() == m.obj.size() && m.col_ub.size() == m.obj.size());
  MPQ_ASSERT(m.rows.size() == m.vals.size() && static_cast<size_t>(m.starts.back()) == m.rows.size());
  MPQ_ASSERT(m.row_lb.size() == static_cast<size_t>(m.num_rows) && m.row_ub.size() == static_cast<size_t>(m.num_rows));
}

}  // namespace

MipResult solve_mip(const LinearModel& m, const std::vector<double>& start, double time_limit_s) {
  check_model(m);
  std::unique_ptr<Cbc_Model, CbcDeleter> cbc(Cbc_newModel());
  Cbc_setLogLevel(cbc.get(), 0);
  const auto starts = big_starts(m);
  Cbc_loadProblem(cbc.get(), m.num_cols(), m.num_rows, starts.data(), m.rows.data(), m.vals.data(), m.col_lb.data(),
                  m.col_ub.data(), m.obj.data(), m.row_lb.data(), m.row_ub.data());
  for (int c = 0; c < m.num_cols(); ++c) Cbc_setInteger(cbc.get(), c);
  Cbc_setMaximumSeconds(cbc.get(), std::max(time_limit_s, 1e-3));
  // Exact answers: no relative or absolute optimality tolerance beyond rounding.
  Cbc_setAllowableGap(cbc.get(), 1e-10);
  Cbc_setAllowableFractionGap(cbc.get(), 0.0);
  // CBC 2.10.8's integer preprocessing returns a worse solution as
  // "optimal" on some instances (two layers, one BitOPs row: see the
  // search tests' brute-force comparison); the models mpq hands it are
  // small or already reduced, so it goes.
  Cbc_setParameter(cbc.get(), "preprocess", "off");
  if (!start.empty()) {
    MPQ_ASSERT(start.size() == static_cast<size_t>(m.num_cols()));
    std::vector<int> idx(start.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int>(i);
    Cbc_setMIPStartI(cbc.get(), static_cast<int>(idx.size()), idx.data(), start.data());
  }
  Cbc_solve(cbc.get());

  MipResult r;
  r.nodes = Cbc_getNodeCount(cbc.get());
  const double* best = Cbc_bestSolution(cbc.get());
  if (best != nullptr) {
    r.x.assign(best, best + m.num_cols());
    r.objective = Cbc_getObjValue(cbc.get());
  }
  r.bound = Cbc_getBestPossibleObjValue(cbc.get());
  // Status in the order STYLE.md gives: proven optimal, proven infeasible,
  // time limit with a solution, time limit without one, anything else.
  if (Cbc_isProvenOptimal(cbc.get()) && best != nullptr) {
    r.status = MipResult::Status::kOptimal;
    r.bound = r.objective;
  } else if (Cbc_isProvenInfeasible(cbc.get()) || (Cbc_isProvenOptimal(cbc.get()) && best == nullptr)) {
    r.status = MipResult::Status::kInfeasible;
  } else if (Cbc_isSecondsLimitReached(cbc.get())) {
    r.status = best ? MipResult::Status::kLimitWithSolution : MipResult::Status::kLimitNoSolution;
  } else {
    r.status = MipResult::Status::kError;
  }
  return r;
}

bool solve_lp(const LinearModel& m, std::vector<double>& duals, std::vector<double>* x) {
  check_model(m);
  Clp_Simplex* clp = Clp_newModel();
  Clp_setLogLevel(clp, 0);
  const auto starts = big_starts(m);
  std::vector<double> row_lb = m.row_lb, row_ub = m.row_ub;
  for (double& v : row_lb) v = std::max(v, -std::numeric_limits<double>::max());
  for (double& v : row_ub) v = std::min(v, std::numeric_limits<double>::max());
  Clp_loadProblem(clp, m.num_cols(), m.num_rows, starts.data(), m.rows.data(), m.vals.data(), m.col_lb.data(),
                  m.col_ub.data(), m.obj.data(), row_lb.data(), row_ub.data());
  Clp_dual(clp, 0);
  const bool ok = Clp_status(clp) == 0;
  if (ok) {
    const double* y = Clp_getRowPrice(clp);
    duals.assign(y, y + m.num_rows);
    if (x != nullptr) {
      const double* c = Clp_getColSolution(clp);
      x->assign(c, c + m.num_cols());
    }
  }
  Clp_deleteModel(clp);
  return ok;
}

}  // namespace mpq::search

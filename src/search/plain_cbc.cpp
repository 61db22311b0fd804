// The original formulation handed to CBC as it is (--solver cbc): a binary
// per layer and pair, one row per layer, one per budget, and the layer rules
// as column bounds and tie rows. The reference the exact method is tested
// against.
#include <array>
#include <cmath>
#include <limits>
#include <map>

#include <spdlog/spdlog.h>

#include "mpq/common/error.h"
#include "search/coin.h"
#include "search/solvers.h"

namespace mpq::search {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
}  // namespace

SearchResult solve_plain_cbc(const SearchProblem& p, double time_limit_s) {
  // The literal formulation: a binary per layer and pair; pairs the rules or
  // the activation budget exclude have an upper bound of 0; tied layers take
  // equal columns.
  const auto& c = p.constraints;
  const size_t L = p.num_layers(), P = p.num_pairs(), KA = p.abits.size();
  const Amounts cap = {c.bops ? p.bops_budget() : kInf, c.cr != 0 ? p.size_budget() : kInf,
                       c.max_cost > 0 ? p.cost_budget() : kInf};
  LinearModel lm;
  int row = static_cast<int>(L);
  std::array<int, kResources> res_row;
  for (int k = 0; k < kResources; ++k) res_row[k] = std::isfinite(cap[k]) ? row++ : -1;
  // Tie rows: x[m, pair] - x[first, pair] = 0 for each later member m.
  std::map<int, int> first_of_group;
  std::vector<int> tie_base(L, -1);  // first row of layer l's tie rows
  for (size_t l = 0; l < L; ++l) {
    if (p.tie.empty()) continue;
    auto [it, fresh] = first_of_group.emplace(p.tie[l], static_cast<int>(l));
    if (!fresh) {
      tie_base[l] = row;
      row += static_cast<int>(P);
    }
  }
  lm.num_rows = row;
  lm.row_lb.assign(row, 0.0);
  lm.row_ub.assign(row, 0.0);
  for (size_t l = 0; l < L; ++l) lm.row_lb[l] = lm.row_ub[l] = 1.0;
  for (int k = 0; k < kResources; ++k)
    if (res_row[k] >= 0) {
      lm.row_lb[res_row[k]] = -kInf;
      lm.row_ub[res_row[k]] = 1.0;
    }
  std::vector<std::pair<int, int>> col;
  for (size_t l = 0; l < L; ++l)
    for (size_t pair = 0; pair < P; ++pair) {
      const size_t i = pair / KA, j = pair % KA;
      const bool ok = p.pair_allowed(l, pair) &&
                      !(c.max_act_bytes > 0 && static_cast<double>(p.act_bytes(l, p.abits[j])) > c.max_act_bytes);
      lm.obj.push_back(p.a[l][j] + p.alpha * p.w[l][i]);
      lm.col_lb.push_back(0);
      lm.col_ub.push_back(ok ? 1 : 0);
      lm.rows.push_back(static_cast<int>(l));
      lm.vals.push_back(1);
      const Amounts r = {static_cast<double>(p.macs[l]) * p.wbits[i] * p.abits[j],
                         static_cast<double>(p.params[l]) * p.wbits[i], p.cost.empty() ? 0.0 : p.cost[l][pair]};
      for (int k = 0; k < kResources; ++k)
        if (res_row[k] >= 0 && r[k] != 0) {
          lm.rows.push_back(res_row[k]);
          lm.vals.push_back(r[k] / cap[k]);
        }
      if (!p.tie.empty()) {
        const int first = first_of_group[p.tie[l]];
        if (tie_base[l] >= 0) {  // a later member: +1 in its own row
          lm.rows.push_back(tie_base[l] + static_cast<int>(pair));
          lm.vals.push_back(1);
        } else {  // the first member: -1 in every later member's row
          for (size_t m = l + 1; m < L; ++m)
            if (p.tie[m] == p.tie[l] && static_cast<int>(l) == first) {
              lm.rows.push_back(tie_base[m] + static_cast<int>(pair));
              lm.vals.push_back(-1);
            }
        }
      }
      lm.starts.push_back(static_cast<int>(lm.rows.size()));
      col.emplace_back(static_cast<int>(l), static_cast<int>(pair));
    }
  SearchResult r;
  r.pairs = r.pairs_kept = r.pairs_left = static_cast<int64_t>(col.size());
  // CBC's tolerances may let a solution overshoot a capacity by a hair: tighten and retry.
  for (double shrink : {0.0, 1e-9, 1e-7, 1e-5}) {
    for (int k = 0; k < kResources; ++k)
      if (res_row[k] >= 0) lm.row_ub[res_row[k]] = 1.0 - shrink;
    const MipResult mip = solve_mip(lm, {}, time_limit_s);
    r.cbc_nodes += mip.nodes;
    switch (mip.status) {
      case MipResult::Status::kOptimal:
      case MipResult::Status::kLimitWithSolution: {
        std::vector<int> pick(L, -1);
        for (size_t k = 0; k < col.size(); ++k)
          if (mip.x[k] > 0.5) pick[col[k].first] = col[k].second;
        SearchResult out = r;
        Amounts used{};
        out.objective = 0;
        out.w_bits.resize(L);
        out.a_bits.resize(L);
        for (size_t l = 0; l < L; ++l) {
          MPQ_ASSERT(pick[l] >= 0, "solver returned a layer without a pair");
          const size_t i = static_cast<size_t>(pick[l]) / KA, j = static_cast<size_t>(pick[l]) % KA;
          out.w_bits[l] = p.wbits[i];
          out.a_bits[l] = p.abits[j];
          out.objective += p.a[l][j] + p.alpha * p.w[l][i];
          used[kBops] += static_cast<double>(p.macs[l]) * p.wbits[i] * p.abits[j];
          used[kSize] += static_cast<double>(p.params[l]) * p.wbits[i];
          if (!p.cost.empty()) used[kCost] += p.cost[l][pick[l]];
        }
        bool fits = true;
        for (int k = 0; k < kResources; ++k) fits &= used[k] <= cap[k];
        if (!fits) {
          spdlog::debug("search: CBC's solution exceeds a capacity by its tolerance; tightening by {}", shrink);
          continue;
        }
        const bool optimal = mip.status == MipResult::Status::kOptimal;
        out.status = optimal ? Status::kOptimal : Status::kTimeLimit;
        out.bound = optimal ? out.objective : std::min(mip.bound, out.objective);
        return out;
      }
      case MipResult::Status::kInfeasible:
        r.status = Status::kInfeasible;
        r.message = "search: CBC proved the constraints cannot be met together";
        return r;
      case MipResult::Status::kLimitNoSolution:
        r.status = Status::kTimeLimitNoSolution;
        r.message = "search: time limit reached before CBC found any solution; raise --time-limit";
        return r;
      case MipResult::Status::kError: break;
    }
    break;
  }
  throw RuntimeError("search: CBC failed (neither optimal, infeasible nor stopped by the time limit)");
}

}  // namespace mpq::search

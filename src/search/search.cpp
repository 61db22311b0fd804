// Problem construction, feasibility, dispatch and the report (METHOD.md §4).
#include "mpq/search/search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <set>
#include <sstream>

#include "mpq/common/error.h"
#include "search/solvers.h"

namespace mpq::search {

double SearchProblem::bops_budget() const {
  double s = 0;
  for (int64_t m : macs) s += static_cast<double>(m) * constraints.wb * constraints.ab;
  return s;
}

double SearchProblem::size_budget() const {
  const double total = static_cast<double>(excepted_params + std::accumulate(params.begin(), params.end(), int64_t{0}));
  return 32.0 * total / constraints.cr - 8.0 * static_cast<double>(excepted_params);
}

double SearchResult::relative_gap() const {
  if (status != Status::kOptimal && status != Status::kTimeLimit) return 0;
  return std::max(0.0, objective - bound) / std::max(1e-12, std::abs(objective));
}

const char* status_name(Status s) {
  switch (s) {
    case Status::kOptimal: return "optimal";
    case Status::kTimeLimit: return "time_limit";
    case Status::kInfeasible: return "infeasible";
    case Status::kTimeLimitNoSolution: return "time_limit_no_solution";
  }
  return "?";
}

void apply_outlier_rule(const std::vector<int>& bits, std::vector<double>& table) {
  std::vector<size_t> order(bits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return bits[x] > bits[y]; });
  std::vector<size_t> outliers;
  for (size_t k = 0; k + 1 < order.size(); ++k)
    if (table[order[k + 1]] < table[order[k]]) outliers.push_back(order[k + 1]);
  for (size_t i : outliers) table[i] = 1e8;
}

namespace {

std::string bits_str(const std::vector<int>& bits) {
  std::string s;
  for (int b : bits) s += (s.empty() ? "" : " ") + std::to_string(b);
  return s;
}

}  // namespace

SearchProblem make_problem(const ModelGeometry& geometry, const io::Indicators& ind, const std::vector<int>& bits,
                           double alpha, const Constraints& c, bool outlier_rule, const std::string& source,
                           MacsCount macs_count) {
  MPQ_CHECK(!bits.empty(), "--b: no candidate bit-widths given (e.g. --b 6 5 4 3 2)");
  std::set<int> distinct;
  for (int b : bits) {
    MPQ_CHECK(b >= 2 && b <= 16, "--b: bit-width ", b, " is out of range (candidates must be 2 to 16)");
    MPQ_CHECK(distinct.insert(b).second, "--b: bit-width ", b, " is given twice");
  }
  MPQ_CHECK(std::isfinite(alpha) && alpha >= 0, "--alpha: must be a non-negative number (got ", alpha, ")");
  MPQ_CHECK(c.bops || c.cr != 0, "search: no constraint enabled; pass --bops (with --wb/--ab) and/or --cr R");
  MPQ_CHECK(std::isfinite(c.cr) && c.cr >= 0, "--cr: must be a positive ratio, or 0 to disable (got ", c.cr, ")");
  if (c.bops)
    MPQ_CHECK(std::isfinite(c.wb) && std::isfinite(c.ab) && c.wb > 0 && c.ab > 0,
              "--bops: needs positive --wb and --ab (got --wb ", c.wb, " --ab ", c.ab, ")");

  SearchProblem p;
  p.bits = bits;
  p.alpha = alpha;
  p.constraints = c;
  p.macs_count = macs_count;
  const bool original = macs_count == MacsCount::kOriginal;
  p.excepted_params = geometry.excepted_params();
  p.excepted_macs = geometry.excepted_macs(original);
  const auto layers = geometry.searchable();
  p.names = geometry.searchable_names();
  io::check_indicators(ind, p.names, bits, source);
  for (size_t l = 0; l < layers.size(); ++l) {
    p.params.push_back(layers[l]->params);
    p.macs.push_back(original ? layers[l]->original_macs : layers[l]->macs);
    std::vector<double> w, a;
    for (int b : bits) {
      w.push_back(ind.weight[l].at(b));
      a.push_back(ind.act[l].at(b));
    }
    if (outlier_rule) {
      apply_outlier_rule(bits, w);
      apply_outlier_rule(bits, a);
    }
    p.w.push_back(std::move(w));
    p.a.push_back(std::move(a));
  }
  return p;
}

Report make_report(const SearchProblem& p, const std::vector<int>& w_bits, const std::vector<int>& a_bits) {
  MPQ_ASSERT(w_bits.size() == p.num_layers() && a_bits.size() == p.num_layers());
  Report r;
  const double n = static_cast<double>(p.num_layers());
  double total_params = static_cast<double>(p.excepted_params), qbits = 8.0 * static_cast<double>(p.excepted_params);
  int64_t sum_w = 0, sum_a = 0;
  double bops = 0, target = 0, macs = 0;
  for (size_t l = 0; l < p.num_layers(); ++l) {
    sum_w += w_bits[l];
    sum_a += a_bits[l];
    total_params += static_cast<double>(p.params[l]);
    qbits += static_cast<double>(p.params[l]) * w_bits[l];
    bops += static_cast<double>(p.macs[l]) * w_bits[l] * a_bits[l];
    macs += static_cast<double>(p.macs[l]);
  }
  r.avg_weight_bits = static_cast<double>(sum_w) / n;
  r.avg_act_bits = static_cast<double>(sum_a) / n;
  const double fixed_bops = static_cast<double>(p.excepted_macs) * 64.0;
  constexpr double kMB = 1024.0 * 1024.0 * 8.0;
  r.compression_ratio = 32.0 * total_params / qbits;
  r.fp_size_mb = 32.0 * total_params / kMB;
  r.size_mb = qbits / kMB;
  r.gbitops = (bops + fixed_bops) / 1e9;
  if (p.constraints.wb > 0 && p.constraints.ab > 0) {
    target = macs * p.constraints.wb * p.constraints.ab;
    r.target_gbitops = (target + fixed_bops) / 1e9;
  }
  return r;
}

SearchResult solve(const SearchProblem& p, const SolveOptions& options) {
  MPQ_CHECK(options.time_limit_s > 0 && std::isfinite(options.time_limit_s),
            "--time-limit: must be a positive number of seconds (got ", options.time_limit_s, ")");
  const auto t0 = std::chrono::steady_clock::now();
  SearchResult r;
  // Feasibility: the all-lowest assignment minimises BitOPs and size at once,
  // so the constraint set is infeasible exactly when one constraint alone is.
  const int bmin = *std::min_element(p.bits.begin(), p.bits.end());
  const auto& c = p.constraints;
  double min_bops = 0, min_size = 0;
  for (size_t l = 0; l < p.num_layers(); ++l) {
    min_bops += static_cast<double>(p.macs[l]) * bmin * bmin;
    min_size += static_cast<double>(p.params[l]) * bmin;
  }
  std::ostringstream why;
  if (c.cr != 0 && min_size > p.size_budget()) {
    const double total = static_cast<double>(p.excepted_params + std::accumulate(p.params.begin(), p.params.end(), int64_t{0}));
    const double best_cr = 32.0 * total / (8.0 * static_cast<double>(p.excepted_params) + min_size);
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "search: no bit assignment meets --cr %g (the largest compression ratio reachable with bits %s is %.2f); "
                  "lower --cr or add lower bit-widths",
                  c.cr, bits_str(p.bits).c_str(), std::floor(best_cr * 100) / 100);
    why << buf;
  } else if (c.bops && min_bops > p.bops_budget()) {
    const double fixed = static_cast<double>(p.excepted_macs) * 64.0;
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  "search: no bit assignment meets --bops with --wb %g --ab %g (budget %.3f GBitOPs; the smallest reachable "
                  "with bits %s is %.3f GBitOPs); raise --wb/--ab or add lower bit-widths",
                  c.wb, c.ab, (p.bops_budget() + fixed) / 1e9, bits_str(p.bits).c_str(), (min_bops + fixed) / 1e9);
    why << buf;
  }
  if (!why.str().empty()) {
    r.status = Status::kInfeasible;
    r.message = why.str();
  } else if (options.method == Method::kCbc) {
    r = solve_plain_cbc(p, options.time_limit_s);
  } else {
    r = solve_exact(p, options.time_limit_s);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace mpq::search

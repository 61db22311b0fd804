// Problem construction, feasibility, dispatch and the report (METHOD.md §4).
#include "mpq/search/search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <set>
#include <sstream>

#include <spdlog/fmt/fmt.h>

#include "mpq/common/error.h"
#include "search/solvers.h"

namespace mpq::search {

double SearchProblem::bops_budget() const {
  double s = 0;
  if (constraints.bops_wa > 0) {
    for (int64_t m : macs) s += static_cast<double>(m) * constraints.bops_wa;
  } else {
    for (int64_t m : macs) s += static_cast<double>(m) * constraints.wb * constraints.ab;
  }
  return s;
}

double SearchProblem::size_budget() const {
  const double total = static_cast<double>(excepted_params + std::accumulate(params.begin(), params.end(), int64_t{0}));
  return 32.0 * total / constraints.cr - 8.0 * static_cast<double>(excepted_params);
}

double SearchResult::relative_gap() const {
  if (!has_solution(status)) return 0;
  return std::max(0.0, objective - bound) / std::max(1e-12, std::abs(objective));
}

const char* status_name(Status s) {
  switch (s) {
    case Status::kOptimal: return "optimal";
    case Status::kTimeLimit: return "time_limit";
    case Status::kInfeasible: return "infeasible";
    case Status::kTimeLimitNoSolution: return "time_limit_no_solution";
    case Status::kWithinGap: return "within_gap";
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

namespace {

void check_candidates(const std::vector<int>& bits, const char* flag) {
  MPQ_CHECK(!bits.empty(), flag, ": no candidate bit-widths given (e.g. --b 6 5 4 3 2)");
  std::set<int> distinct;
  for (int b : bits) {
    MPQ_CHECK(b >= 2 && b <= 16, flag, ": bit-width ", b, " is out of range (candidates must be 2 to 16)");
    MPQ_CHECK(distinct.insert(b).second, flag, ": bit-width ", b, " is given twice");
  }
}

}  // namespace

SearchProblem make_problem(const ModelGeometry& geometry, const io::Indicators& ind, const Candidates& bits,
                           double alpha, const Constraints& c, bool outlier_rule, const std::string& source,
                           MacsCount macs_count) {
  const bool same = bits.weight == bits.act;
  check_candidates(bits.weight, same ? "--b" : "--wbits");
  check_candidates(bits.act, same ? "--b" : "--abits");
  MPQ_CHECK(std::isfinite(alpha) && alpha >= 0, "--alpha: must be a non-negative number (got ", alpha, ")");
  MPQ_CHECK(c.bops || c.cr != 0 || c.max_cost != 0 || c.max_act_bytes != 0,
            "search: no constraint enabled; pass --bops (with --wb/--ab), --cr R, --max-cost X or --max-act-mem B");
  MPQ_CHECK(std::isfinite(c.cr) && c.cr >= 0, "--cr: must be a positive ratio, or 0 to disable (got ", c.cr, ")");
  MPQ_CHECK(std::isfinite(c.max_cost) && c.max_cost >= 0, "--max-cost: must be a positive number (got ", c.max_cost, ")");
  MPQ_CHECK(std::isfinite(c.max_act_bytes) && c.max_act_bytes >= 0, "--max-act-mem: must be a positive size (got ",
            c.max_act_bytes, ")");
  if (c.bops)
    MPQ_CHECK(c.bops_wa > 0 || (std::isfinite(c.wb) && std::isfinite(c.ab) && c.wb > 0 && c.ab > 0),
              "--bops: needs positive --wb and --ab (got --wb ", c.wb, " --ab ", c.ab, ")");

  SearchProblem p;
  p.wbits = bits.weight;
  p.abits = bits.act;
  p.alpha = alpha;
  p.constraints = c;
  p.macs_count = macs_count;
  const bool original = macs_count == MacsCount::kOriginal;
  p.excepted_params = geometry.excepted_params();
  p.excepted_macs = geometry.excepted_macs(original);
  const auto layers = geometry.searchable();
  p.names = geometry.searchable_names();
  io::check_indicators(ind, p.names, p.wbits, p.abits, source);
  for (size_t l = 0; l < layers.size(); ++l) {
    p.params.push_back(layers[l]->params);
    p.macs.push_back(original ? layers[l]->original_macs : layers[l]->macs);
    std::vector<double> w, a;
    for (int b : p.wbits) w.push_back(ind.weight[l].at(b));
    for (int b : p.abits) a.push_back(ind.act[l].at(b));
    if (outlier_rule) {
      apply_outlier_rule(p.wbits, w);
      apply_outlier_rule(p.abits, a);
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
  const double product = p.constraints.bops_product();
  if (product > 0) {
    target = macs * product;
    r.target_gbitops = (target + fixed_bops) / 1e9;
  }
  auto index = [](const std::vector<int>& list, int b) {
    return static_cast<size_t>(std::find(list.begin(), list.end(), b) - list.begin());
  };
  if (!p.cost.empty()) {
    r.cost = p.excepted_cost;
    for (size_t l = 0; l < p.num_layers(); ++l)
      r.cost += p.cost[l][index(p.wbits, w_bits[l]) * p.abits.size() + index(p.abits, a_bits[l])];
  }
  if (!p.act_elems.empty()) {
    r.peak_act_bytes = 0;
    for (const auto& [name, elems] : p.excepted_act)
      if (elems > r.peak_act_bytes) {
        r.peak_act_bytes = elems;  // 8 bits: one byte per element
        r.peak_act_layer = name;
      }
    for (size_t l = 0; l < p.num_layers(); ++l)
      if (p.act_bytes(l, a_bits[l]) > r.peak_act_bytes) {
        r.peak_act_bytes = p.act_bytes(l, a_bits[l]);
        r.peak_act_layer = p.names[l];
      }
  }
  return r;
}

namespace {

std::string candidates_str(const SearchProblem& p) {
  return p.wbits == p.abits ? "bits " + bits_str(p.wbits)
                            : "weight bits " + bits_str(p.wbits) + " and activation bits " + bits_str(p.abits);
}

// Infeasibility that one budget shows alone: the least each resource can
// reach over the allowed pairs. Empty when every budget alone can be met.
std::string alone_infeasible(const SearchProblem& p, SearchResult& r) {
  const auto& c = p.constraints;
  const std::string fix = p.rules.empty() ? "" : " or loosen the layer rules";
  char buf[512];
  if (c.max_act_bytes > 0) {
    for (const auto& [name, elems] : p.excepted_act)
      if (static_cast<double>(elems) > c.max_act_bytes) {
        r.reachable.emplace_back("--max-act-mem", static_cast<double>(elems));
        std::snprintf(buf, sizeof buf,
                      "search: no bit assignment meets --max-act-mem %.0f: the 8-bit layer '%s' alone reads %lld bytes; "
                      "raise --max-act-mem",
                      c.max_act_bytes, name.c_str(), static_cast<long long>(elems));
        return buf;
      }
  }
  // Per item (rules applied, the activation budget not yet): least of each resource.
  const PairTable t = allowed_pairs(p, false);
  if (c.max_act_bytes > 0) {
    SearchProblem q = p;
    q.constraints.max_act_bytes = 0;
    const PairTable all = allowed_pairs(q, false);
    for (size_t item = 0; item < t.layers.size(); ++item) {
      if (!t.layers[item].empty()) continue;
      int64_t least = INT64_MAX;
      for (const Pair& pr : all.layers[item]) {
        int64_t worst = 0;
        for (int l : all.members[item]) worst = std::max(worst, p.act_bytes(l, pr.a));
        least = std::min(least, worst);
      }
      r.reachable.emplace_back("--max-act-mem", static_cast<double>(least));
      std::snprintf(buf, sizeof buf,
                    "search: no bit assignment meets --max-act-mem %.0f: layer '%s' reads at least %lld bytes with %s; "
                    "raise --max-act-mem%s",
                    c.max_act_bytes, p.names[all.members[item][0]].c_str(), static_cast<long long>(least),
                    candidates_str(p).c_str(), fix.c_str());
      return buf;
    }
  }
  Amounts least{};
  for (const auto& ps : t.layers)
    for (int k = 0; k < kResources; ++k) {
      double m = INFINITY;
      for (const Pair& q : ps) m = std::min(m, q.r[k]);
      least[k] += m;
    }
  std::string why;
  if (c.cr != 0 && least[kSize] > p.size_budget()) {
    const double total = static_cast<double>(p.excepted_params + std::accumulate(p.params.begin(), p.params.end(), int64_t{0}));
    const double best_cr = 32.0 * total / (8.0 * static_cast<double>(p.excepted_params) + least[kSize]);
    r.reachable.emplace_back("--cr", std::floor(best_cr * 100) / 100);
    std::snprintf(buf, sizeof buf,
                  "search: no bit assignment meets --cr %g (the largest compression ratio reachable with %s is %.2f); "
                  "lower --cr or add lower bit-widths%s",
                  c.cr, candidates_str(p).c_str(), std::floor(best_cr * 100) / 100, fix.c_str());
    why = buf;
  }
  if (c.bops && least[kBops] > p.bops_budget()) {
    const double fixed = static_cast<double>(p.excepted_macs) * 64.0;
    r.reachable.emplace_back("--bops", (least[kBops] + fixed) / 1e9);
    const std::string budget = c.bops_wa > 0 ? fmt::format("an average W x A of {:g} bits", c.bops_wa)
                                             : fmt::format("--wb {:g} --ab {:g}", c.wb, c.ab);
    std::snprintf(buf, sizeof buf,
                  "search: no bit assignment meets --bops with %s (budget %.3f GBitOPs; the smallest reachable "
                  "with %s is %.3f GBitOPs); raise --wb/--ab or add lower bit-widths%s",
                  budget.c_str(), (p.bops_budget() + fixed) / 1e9, candidates_str(p).c_str(), (least[kBops] + fixed) / 1e9,
                  fix.c_str());
    if (why.empty()) why = buf;
  }
  if (c.max_cost > 0 && least[kCost] > p.cost_budget()) {
    r.reachable.emplace_back("--max-cost", least[kCost] + p.excepted_cost);
    std::snprintf(buf, sizeof buf,
                  "search: no bit assignment meets --max-cost %g (the smallest total cost in %s reachable with %s is "
                  "%.6g%s); raise --max-cost%s",
                  c.max_cost, p.cost_table.c_str(), candidates_str(p).c_str(), least[kCost] + p.excepted_cost,
                  p.cost_unit.empty() ? "" : (" " + p.cost_unit).c_str(), fix.c_str());
    if (why.empty()) why = buf;
  }
  return why;
}

}  // namespace

SearchResult solve(const SearchProblem& p, const SolveOptions& options) {
  MPQ_CHECK(options.time_limit_s > 0 && std::isfinite(options.time_limit_s),
            "--time-limit: must be a positive number of seconds (got ", options.time_limit_s, ")");
  MPQ_CHECK(options.relative_gap >= 0 && options.relative_gap < 1, "--gap: must be at least 0 and below 1 (got ",
            options.relative_gap, ")");
  MPQ_CHECK(p.constraints.max_cost == 0 || !p.cost.empty(), "--max-cost: needs a cost table (--cost-table FILE)");
  MPQ_ASSERT(p.constraints.max_act_bytes == 0 || p.act_elems.size() == p.num_layers(),
             "activation sizes must be applied for --max-act-mem");
  const auto t0 = std::chrono::steady_clock::now();
  SearchResult r;
  // A budget that cannot be met alone: BitOPs and size are least at the
  // lowest allowed bits, so with those two only, the set is infeasible
  // exactly when one of them is alone. (A cost table may conflict with them
  // jointly; the exact method names that case.)
  const std::string why = alone_infeasible(p, r);
  if (!why.empty()) {
    r.status = Status::kInfeasible;
    r.message = why;
  } else if (options.method == Method::kCbc) {
    r = solve_plain_cbc(p, options.time_limit_s);
  } else {
    r = solve_exact(p, options);
  }
  if (r.status == Status::kInfeasible && r.reachable.empty() && p.constraints.max_cost > 0) {
    // CBC said so (the plain formulation): say which budgets conflict.
    SearchResult e = explain_joint_infeasibility(p, options.time_limit_s);
    if (!e.message.empty()) {
      r.message = e.message;
      r.reachable = e.reachable;
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace mpq::search

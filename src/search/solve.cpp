// solve(): the budgets' feasibility alone, dispatch to a method, and why a
// problem is infeasible (METHOD.md §4).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <string>

#include <spdlog/fmt/fmt.h>

#include "mpq/common/error.h"
#include "mpq/search/search.h"
#include "search/solvers.h"

namespace mpq::search {

namespace {

std::string bits_str(const std::vector<int>& bits) {
  std::string s;
  for (int b : bits) s += (s.empty() ? "" : " ") + std::to_string(b);
  return s;
}

}  // namespace

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

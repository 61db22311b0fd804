// Problem construction and the report (METHOD.md §4); solve() is in solve.cpp.
#include "mpq/search/search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <set>
#include <sstream>

#include <spdlog/fmt/fmt.h>

#include "mpq/common/error.h"

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
    case Status::kRandom: return "random";
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

Report policy_report(const ModelGeometry& g, const std::vector<int>& w_bits, const std::vector<int>& a_bits) {
  SearchProblem p;
  for (const auto* l : g.searchable()) {
    p.names.push_back(l->name);
    p.params.push_back(l->params);
    p.macs.push_back(l->original_macs);
  }
  p.excepted_params = g.excepted_params();
  p.excepted_macs = g.excepted_macs(/*original_count=*/true);
  MPQ_CHECK(w_bits.size() == p.num_layers() && a_bits.size() == p.num_layers(), g.model, ": a policy of ",
            w_bits.size(), " layers for ", p.num_layers(), " searchable layers");
  return make_report(p, w_bits, a_bits);
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

}  // namespace mpq::search

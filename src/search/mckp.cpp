// Exact search for the multiple-choice knapsack of METHOD.md §4.
//
// CBC alone needs minutes for 1000 layers x 49 pairs. This method proves the
// same optimum in well under a second:
//  1. per-item dominance pruning: a pair that costs at least as much
//     objective and resources as another pair of its item (a layer, or the
//     layers of a tie group) is never needed (and outlier pairs go, when a
//     solution without them exists);
//  2. Lagrangian prices on the budgets (lagrangian_dfs.cpp), whose bound
//     is the LP bound at the LP's duals;
//  3. an incumbent: the least-resource assignment (or, where a cost table's
//     budget rules it out, the least-cost one under the other budgets,
//     itself solved exactly) or the Lagrangian minimisers (repaired to fit),
//     improved by single moves while they fit and, from 500 items up, by
//     exchanges of two items' pairs;
//  4. an exact depth-first search around the Lagrangian bound
//     (lagrangian_dfs.cpp) below a widening cutoff, restarted as the
//     incumbent improves;
//  5. should that run past its node budget: reduced-cost fixing around a
//     growing threshold and CBC on the pairs that are left.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <string>

#include <spdlog/spdlog.h>

#include "mpq/common/error.h"
#include "search/coin.h"
#include "search/solvers.h"

namespace mpq::search {

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kInf = std::numeric_limits<double>::infinity();
// Past this many nodes the depth-first search hands over to CBC.
constexpr int64_t kDfsNodeLimit = 200'000'000;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A choice of one pair per item with its resource use.
struct Assignment {
  std::vector<int> pick;  // index into PairTable::layers[l]
  double cost = 0;
  Amounts r{};
};

Assignment evaluate(const PairTable& t, std::vector<int> pick) {
  Assignment s;
  s.pick = std::move(pick);
  for (size_t l = 0; l < t.layers.size(); ++l) {
    const Pair& q = t.layers[l][s.pick[l]];
    s.cost += q.cost;
    for (int k = 0; k < kResources; ++k) s.r[k] += q.r[k];
  }
  return s;
}

bool feasible(const PairTable& t, const Amounts& r) {
  for (int k = 0; k < kResources; ++k)
    if (r[k] > t.cap[k]) return false;
  return true;
}

// The LP or MIP over `cols` (per item, the pair indices that take part);
// items with one column are constants folded into the capacities.
struct SubModel {
  LinearModel lm;
  std::vector<std::pair<int, int>> col;  // column -> (item, pair)
  double constant = 0;
};

SubModel build_model(const PairTable& t, const std::vector<std::vector<int>>& cols, double shrink) {
  SubModel m;
  Amounts fixed{};
  int row = 0;
  std::vector<int> layer_row(t.layers.size(), -1);
  for (size_t l = 0; l < t.layers.size(); ++l) {
    if (cols[l].size() == 1) {
      const Pair& q = t.layers[l][cols[l][0]];
      m.constant += q.cost;
      for (int k = 0; k < kResources; ++k) fixed[k] += q.r[k];
    } else {
      layer_row[l] = row++;
    }
  }
  std::array<int, kResources> res_row;
  for (int k = 0; k < kResources; ++k) res_row[k] = t.active(k) ? row++ : -1;
  m.lm.num_rows = row;
  m.lm.row_lb.assign(row, 1.0);
  m.lm.row_ub.assign(row, 1.0);
  // Resource rows are scaled by their capacity, so coefficients are O(1/L).
  for (int k = 0; k < kResources; ++k)
    if (res_row[k] >= 0) {
      m.lm.row_lb[res_row[k]] = -kInf;
      m.lm.row_ub[res_row[k]] = (t.cap[k] - fixed[k]) / t.cap[k] - shrink;
    }
  for (size_t l = 0; l < t.layers.size(); ++l) {
    if (layer_row[l] < 0) continue;
    for (int k : cols[l]) {
      const Pair& q = t.layers[l][k];
      m.lm.obj.push_back(q.cost);
      m.lm.col_lb.push_back(0);
      m.lm.col_ub.push_back(1);
      m.lm.rows.push_back(layer_row[l]);
      m.lm.vals.push_back(1);
      for (int r = 0; r < kResources; ++r)
        if (res_row[r] >= 0 && q.r[r] != 0) {
          m.lm.rows.push_back(res_row[r]);
          m.lm.vals.push_back(q.r[r] / t.cap[r]);
        }
      m.lm.starts.push_back(static_cast<int>(m.lm.rows.size()));
      m.col.emplace_back(static_cast<int>(l), k);
    }
  }
  return m;
}

// Reads one pair per item from a 0/1 column vector; fixed items take their only pair.
std::vector<int> read_pick(const PairTable& t, const SubModel& m, const std::vector<std::vector<int>>& cols,
                           const std::vector<double>& x) {
  std::vector<int> pick(t.layers.size(), -1);
  for (size_t l = 0; l < t.layers.size(); ++l)
    if (cols[l].size() == 1) pick[l] = cols[l][0];
  for (size_t c = 0; c < x.size(); ++c)
    if (x[c] > 0.5) pick[m.col[c].first] = m.col[c].second;
  for (int k : pick) MPQ_ASSERT(k >= 0, "solver returned a layer without a pair");
  return pick;
}

// The pair of an item that is least in BitOPs, then size, then the rest
// (lowest bits: with the monotone resources, least in both).
int least_resource(const std::vector<Pair>& ps) {
  int best = 0;
  for (int k = 1; k < static_cast<int>(ps.size()); ++k) {
    const Pair &q = ps[k], &b = ps[best];
    if (std::tie(q.r[0], q.r[1], q.cost, q.r[2]) < std::tie(b.r[0], b.r[1], b.cost, b.r[2])) best = k;
  }
  return best;
}

// Improves a feasible assignment by single moves: each item in turn takes
// its cheapest pair that still fits, until nothing changes. (The depth-first
// search that follows finds the exchanges.)
void improve(const PairTable& t, Assignment& s) {
  bool changed = true;
  while (changed) {
    changed = false;
    for (size_t l = 0; l < t.layers.size(); ++l) {
      const Pair& cur = t.layers[l][s.pick[l]];
      int best = -1;
      double best_cost = cur.cost;
      for (int k = 0; k < static_cast<int>(t.layers[l].size()); ++k) {
        const Pair& q = t.layers[l][k];
        if (q.cost >= best_cost) continue;
        Amounts r = s.r;
        for (int i = 0; i < kResources; ++i) r[i] += q.r[i] - cur.r[i];
        if (feasible(t, r)) {
          best = k;
          best_cost = q.cost;
        }
      }
      if (best >= 0) {
        const Pair& q = t.layers[l][best];
        s.cost += q.cost - cur.cost;
        for (int i = 0; i < kResources; ++i) s.r[i] += q.r[i] - cur.r[i];
        s.pick[l] = best;
        changed = true;
      }
    }
  }
  s = evaluate(t, s.pick);  // re-sum to shed rounding drift
}

// Makes an assignment that exceeds a capacity fit, if it can: moves, one at
// a time, the item whose next pair frees the most of the exceeded resources
// per unit of d it adds. (The Lagrangian minimisers exceed a capacity by at
// most the few items the LP would split.)
void repair(const PairTable& t, const Lagrangian& lag, Assignment& s) {
  for (size_t moves = 0; !feasible(t, s.r) && moves <= 4 * t.layers.size(); ++moves) {
    Amounts over{};
    for (int k = 0; k < kResources; ++k) over[k] = s.r[k] > t.cap[k] ? 1.0 / t.cap[k] : 0.0;
    int best_l = -1, best_k = -1;
    double best = kInf;
    for (size_t l = 0; l < t.layers.size(); ++l) {
      const Pair& cur = t.layers[l][s.pick[l]];
      const double dc = lag.d(t, l, s.pick[l]);
      for (int k = 0; k < static_cast<int>(t.layers[l].size()); ++k) {
        const Pair& q = t.layers[l][k];
        double freed = 0;
        for (int i = 0; i < kResources; ++i) freed += over[i] * (cur.r[i] - q.r[i]);
        if (freed <= 0) continue;
        const double score = std::max(0.0, lag.d(t, l, k) - dc) / freed;
        if (score < best) {
          best = score;
          best_l = static_cast<int>(l);
          best_k = k;
        }
      }
    }
    if (best_l < 0) return;
    s.pick[best_l] = best_k;
    s = evaluate(t, s.pick);
  }
}

// Improves a feasible assignment by exchanges of two items' pairs (which
// single moves cannot make when the budgets are full), among the pairs
// whose d is below the gap, cheapest first; repeats while one improves.
void exchange(const PairTable& t, const Lagrangian& lag, Assignment& s) {
  constexpr size_t kMaxCandidates = 400;
  for (int round = 0; round < 10; ++round) {
    const double gap = s.cost - lag.bound;
    struct Move {
      int l, k;
      double d;
    };
    std::vector<Move> moves;
    for (size_t l = 0; l < t.layers.size(); ++l)
      for (int k = 0; k < static_cast<int>(t.layers[l].size()); ++k) {
        const double d = lag.d(t, l, k);
        if (k != s.pick[l] && d < gap) moves.push_back({static_cast<int>(l), k, d});
      }
    if (moves.size() > kMaxCandidates) {
      std::nth_element(moves.begin(), moves.begin() + kMaxCandidates, moves.end(),
                       [](const Move& a, const Move& b) { return a.d < b.d; });
      moves.resize(kMaxCandidates);
    }
    double best = 0;
    int bi = -1, bj = -1;
    for (size_t i = 0; i < moves.size(); ++i) {
      const Pair &qi = t.layers[moves[i].l][moves[i].k], &ci = t.layers[moves[i].l][s.pick[moves[i].l]];
      for (size_t j = i + 1; j < moves.size(); ++j) {
        if (moves[j].l == moves[i].l) continue;
        const Pair &qj = t.layers[moves[j].l][moves[j].k], &cj = t.layers[moves[j].l][s.pick[moves[j].l]];
        const double delta = qi.cost - ci.cost + qj.cost - cj.cost;
        if (delta >= best - 1e-12 * std::max(1.0, std::abs(s.cost))) continue;
        Amounts r = s.r;
        for (int k = 0; k < kResources; ++k) r[k] += qi.r[k] - ci.r[k] + qj.r[k] - cj.r[k];
        if (!feasible(t, r)) continue;
        best = delta;
        bi = static_cast<int>(i);
        bj = static_cast<int>(j);
      }
    }
    if (bi < 0) return;
    s.pick[moves[bi].l] = moves[bi].k;
    s.pick[moves[bj].l] = moves[bj].k;
    s = evaluate(t, s.pick);
    improve(t, s);
  }
}

// Writes an item assignment as per-layer bits.
void write_bits(const PairTable& t, const std::vector<int>& pick, size_t num_layers, SearchResult& r) {
  r.w_bits.assign(num_layers, 0);
  r.a_bits.assign(num_layers, 0);
  for (size_t l = 0; l < t.layers.size(); ++l)
    for (int m : t.members[l]) {
      r.w_bits[m] = t.layers[l][pick[l]].w;
      r.a_bits[m] = t.layers[l][pick[l]].a;
    }
}

// Solves the MIP over `cols`; tightens the resource rows when CBC's
// tolerances let a solution overshoot a capacity by a hair.
MipResult solve_checked(const PairTable& t, const std::vector<std::vector<int>>& cols, const Assignment* start,
                        double time_limit_s, SubModel* out_model) {
  MipResult res;
  for (double shrink : {0.0, 1e-9, 1e-7, 1e-5}) {
    SubModel m = build_model(t, cols, shrink);
    std::vector<double> x0;
    if (start != nullptr) {
      x0.assign(m.col.size(), 0.0);
      for (size_t c = 0; c < m.col.size(); ++c) x0[c] = start->pick[m.col[c].first] == m.col[c].second ? 1.0 : 0.0;
    }
    res = solve_mip(m.lm, x0, time_limit_s);
    res.objective += m.constant;
    res.bound += m.constant;
    *out_model = std::move(m);
    if (res.x.empty()) return res;
    const Assignment s = evaluate(t, read_pick(t, *out_model, cols, res.x));
    if (feasible(t, s.r)) return res;
    spdlog::debug("search: CBC's solution exceeds a capacity by its tolerance; tightening by {}", shrink);
  }
  res.x.clear();
  res.status = MipResult::Status::kError;
  return res;
}

// The items' pairs for per-layer bits: the pair itself, or where pruning
// dropped it, a kept pair of the item that dominates it. False when the bits
// do not fit the table (another candidate list, a tie broken, an outlier).
bool start_assignment(const SearchProblem& p, const PairTable& t, const std::vector<int>& w, const std::vector<int>& a,
                      Assignment& out) {
  if (w.size() != p.num_layers() || a.size() != p.num_layers()) return false;
  std::vector<int> pick(t.layers.size(), -1);
  for (size_t item = 0; item < t.layers.size(); ++item) {
    const int l0 = t.members[item][0];
    Pair want{0.0, {}, w[l0], a[l0]};
    const auto i = std::find(p.wbits.begin(), p.wbits.end(), w[l0]) - p.wbits.begin();
    const auto j = std::find(p.abits.begin(), p.abits.end(), a[l0]) - p.abits.begin();
    if (i == static_cast<long>(p.wbits.size()) || j == static_cast<long>(p.abits.size())) return false;
    const size_t pair = static_cast<size_t>(i) * p.abits.size() + static_cast<size_t>(j);
    for (int l : t.members[item]) {
      if (w[l] != w[l0] || a[l] != a[l0]) return false;
      want.cost += p.a[l][j] + p.alpha * p.w[l][i];
      if (std::isfinite(t.cap[kBops])) want.r[kBops] += static_cast<double>(p.macs[l]) * w[l] * a[l];
      if (std::isfinite(t.cap[kSize])) want.r[kSize] += static_cast<double>(p.params[l]) * w[l];
      if (std::isfinite(t.cap[kCost])) want.r[kCost] += p.cost[l][pair];
    }
    const auto& ps = t.layers[item];
    for (int k = 0; k < static_cast<int>(ps.size()) && pick[item] < 0; ++k)
      if (ps[k].w == want.w && ps[k].a == want.a) pick[item] = k;
    for (int k = 0; k < static_cast<int>(ps.size()) && pick[item] < 0; ++k)
      if (ps[k].cost <= want.cost && ps[k].r[0] <= want.r[0] && ps[k].r[1] <= want.r[1] && ps[k].r[2] <= want.r[2])
        pick[item] = k;
    if (pick[item] < 0) return false;
  }
  out = evaluate(t, pick);
  return true;
}

// What one exact solve of a pair table found.
struct CoreResult {
  Assignment best;
  Status status = Status::kOptimal;
  double bound = 0;
  int64_t left = 0, dfs_nodes = 0;
  int cbc_nodes = 0;
};

// Steps 2 to 5 from a feasible incumbent.
CoreResult solve_core(const PairTable& t, Assignment inc, Clock::time_point t0, double time_limit_s,
                      double rel_gap = 0) {
  const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(time_limit_s));
  const size_t L = t.layers.size();
  int64_t kept = 0;
  for (const auto& ps : t.layers) kept += static_cast<int64_t>(ps.size());
  CoreResult out;

  // 2. Lagrangian prices near the LP duals, and the bound they give.
  const Lagrangian lag = lagrangian_prices(t, deadline);
  spdlog::debug("search: pruning and prices took {:.2f} ms, bound {:.8f}", seconds_since(t0) * 1e3, lag.bound);

  // 3. Incumbent: the cheaper of the one given and the per-item Lagrangian
  // minimisers (when they fit), each improved greedily.
  MPQ_ASSERT(feasible(t, inc.r), "the incumbent must be feasible");
  improve(t, inc);
  std::vector<int> pick(L);
  for (size_t l = 0; l < L; ++l) {  // ties to the least resource, as the prices were found
    pick[l] = 0;
    for (int k = 1; k < static_cast<int>(t.layers[l].size()); ++k) {
      const double dk = lag.d(t, l, k), dp = lag.d(t, l, pick[l]);
      const Pair &q = t.layers[l][k], &p = t.layers[l][pick[l]];
      if (dk < dp || (dk == dp && q.r[0] + q.r[1] + q.r[2] < p.r[0] + p.r[1] + p.r[2])) pick[l] = k;
    }
  }
  Assignment lag_pick = evaluate(t, pick);
  repair(t, lag, lag_pick);
  if (feasible(t, lag_pick.r)) {
    improve(t, lag_pick);
    if (lag_pick.cost < inc.cost) inc = lag_pick;
  }
  // Exchanges pay on large problems (without them the 10,000-layer bench
  // case's incumbent stays 2e-6 off and its search runs 30x longer); below
  // a few hundred items the search finds them itself, sooner.
  if (L >= 500) exchange(t, lag, inc);
  spdlog::debug("search: incumbent {:.8f} after {:.2f} ms", inc.cost, seconds_since(t0) * 1e3);

  // 4. The depth-first search usually proves the optimum at once.
  int64_t choices = kept;
  double proven = lag.bound;
  const bool done = lagrangian_dfs(t, lag, deadline, kDfsNodeLimit, rel_gap, inc.pick, inc.cost, proven,
                                   out.dfs_nodes, choices);
  inc = evaluate(t, inc.pick);
  MPQ_ASSERT(feasible(t, inc.r), "the depth-first search returned an infeasible assignment");
  spdlog::debug("search: depth-first search {} after {} nodes, {:.2f} ms", done ? "done" : "stopped", out.dfs_nodes,
                seconds_since(t0) * 1e3);
  if (done) {
    out.best = inc;
    out.bound = inc.cost;
    out.left = choices;
    return out;
  }
  if (rel_gap > 0 && inc.cost - proven <= rel_gap * std::abs(inc.cost)) {
    out.best = inc;
    out.status = Status::kWithinGap;
    out.bound = proven;
    out.left = choices;
    return out;
  }

  // 5. Otherwise reduced-cost fixing around a growing threshold tau (a
  // "core" method): CBC solves the MIP over the pairs whose bound is within
  // tau of the Lagrangian bound. Its answer is optimal for the whole problem
  // once the best value found is within tau of that bound, since every
  // dropped pair has a larger one; otherwise tau grows to (best - bound),
  // which is exact fixing.
  const double z = lag.bound;
  const double margin = 1e-9 * std::max(1.0, std::abs(inc.cost));
  double tau = std::max(margin, (inc.cost - z) / 8);
  out.best = inc;
  for (int round = 0;; ++round) {
    if (Clock::now() > deadline) {
      out.status = Status::kTimeLimit;
      out.bound = z;
      out.left = kept;
      return out;
    }
    std::vector<std::vector<int>> cols(L);
    int64_t left = 0;
    bool all_fixed = true;
    for (size_t l = 0; l < L; ++l) {
      for (int k = 0; k < static_cast<int>(t.layers[l].size()); ++k)
        if (k == out.best.pick[l] || lag.d(t, l, k) <= tau + margin) cols[l].push_back(k);
      left += static_cast<int64_t>(cols[l].size());
      all_fixed &= cols[l].size() == 1;
    }
    MipResult::Status status = MipResult::Status::kInfeasible;  // all fixed: nothing else to try
    if (!all_fixed) {
      const double remaining = std::max(1e-3, time_limit_s - seconds_since(t0));
      SubModel m;
      const MipResult mip = solve_checked(t, cols, &out.best, remaining, &m);
      out.cbc_nodes += mip.nodes;
      status = mip.status;
      if (status == MipResult::Status::kError)
        throw RuntimeError("search: CBC failed on the reduced problem; retry with --solver cbc");
      if (!mip.x.empty()) {
        const Assignment s = evaluate(t, read_pick(t, m, cols, mip.x));
        if (s.cost < out.best.cost) out.best = s;
      }
    }
    spdlog::debug("search: round {}: tau {:.3g}, {} pairs, best {:.8f}, {} CBC nodes, {:.2f} ms", round, tau, left,
                  out.best.cost, out.cbc_nodes, seconds_since(t0) * 1e3);
    const bool proven = status == MipResult::Status::kOptimal || status == MipResult::Status::kInfeasible;
    if (!proven || out.best.cost - z <= tau + margin) {
      out.status = proven ? Status::kOptimal : Status::kTimeLimit;
      out.bound = proven ? out.best.cost : z;
      out.left = left;
      return out;
    }
    tau = out.best.cost - z;
  }
}

// The table with resource k as the objective and its budget lifted: the
// subproblem "least k under the other budgets".
PairTable with_objective(const PairTable& t, int k) {
  PairTable s = t;
  s.cap[k] = kInf;
  for (auto& ps : s.layers)
    for (Pair& q : ps) {
      q.cost = q.r[k];
      q.r[k] = 0;
    }
  prune_dominated(s);
  return s;
}

// The least objective of table `s` from a starting assignment; +inf when
// the start does not fit (then nothing is known to fit), the bound at a
// time limit.
double least_from(const PairTable& s, const std::vector<int>& pick, Clock::time_point t0, double time_limit_s,
                  Assignment* witness = nullptr) {
  const Assignment inc = evaluate(s, pick);
  if (!feasible(s, inc.r)) return kInf;
  const CoreResult c = solve_core(s, inc, t0, time_limit_s);
  if (witness != nullptr) *witness = c.best;
  return c.status == Status::kOptimal ? c.best.cost : c.bound;
}

// The least amount of resource k under the other budgets of `t` (the
// monotone ones: the least-resource assignment fits them); +inf if those
// cannot be met together.
double least_under_others(const PairTable& t, int k, Clock::time_point t0, double time_limit_s,
                          Assignment* witness = nullptr) {
  const PairTable s = with_objective(t, k);
  std::vector<int> pick(s.layers.size());
  for (size_t l = 0; l < s.layers.size(); ++l) pick[l] = least_resource(s.layers[l]);
  return least_from(s, pick, t0, time_limit_s, witness);
}

// The budget's value as its flag takes it: GBitOPs, compression ratio, cost.
double budget_value(const SearchProblem& p, int k, double amount) {
  switch (k) {
    case kBops: return (amount + static_cast<double>(p.excepted_macs) * 64.0) / 1e9;
    case kSize: {
      const double total =
          static_cast<double>(p.excepted_params + std::accumulate(p.params.begin(), p.params.end(), int64_t{0}));
      return 32.0 * total / (8.0 * static_cast<double>(p.excepted_params) + amount);
    }
    default: return amount + p.excepted_cost;
  }
}

std::string budget_text(const SearchProblem& p, int k, double amount) {
  const double v = budget_value(p, k, amount);
  switch (k) {
    case kBops: return fmt::format("{:.3f} GBitOPs", v);
    case kSize: return fmt::format("compression ratio {:.2f}", v);
    default: return fmt::format("{:.6g}{}", v, p.cost_unit.empty() ? "" : " " + p.cost_unit);
  }
}

}  // namespace

const char* resource_flag(int k) {
  switch (k) {
    case kBops: return "--bops";
    case kSize: return "--cr";
    default: return "--max-cost";
  }
}

PairTable allowed_pairs(const SearchProblem& p, bool drop_outliers) {
  PairTable t;
  const auto& c = p.constraints;
  t.cap = {c.bops ? p.bops_budget() : kInf, c.cr != 0 ? p.size_budget() : kInf, c.max_cost > 0 ? p.cost_budget() : kInf};
  // Items: one per tie group, in the order of their first layer.
  std::vector<int> item_of(p.num_layers(), -1);
  std::map<int, int> item_of_group;
  for (size_t l = 0; l < p.num_layers(); ++l) {
    if (!p.tie.empty()) {
      auto [it, fresh] = item_of_group.emplace(p.tie[l], static_cast<int>(t.members.size()));
      if (fresh) t.members.emplace_back();
      item_of[l] = it->second;
    } else {
      item_of[l] = static_cast<int>(t.members.size());
      t.members.emplace_back();
    }
    t.members[item_of[l]].push_back(static_cast<int>(l));
  }
  const size_t KW = p.wbits.size(), KA = p.abits.size();
  t.layers.resize(t.members.size());
  for (size_t item = 0; item < t.members.size(); ++item) {
    for (size_t i = 0; i < KW; ++i)
      for (size_t j = 0; j < KA; ++j) {
        const size_t pair = i * KA + j;
        Pair q{0.0, {}, p.wbits[i], p.abits[j]};
        bool ok = true;
        for (int l : t.members[item]) {
          ok &= p.pair_allowed(l, pair);
          if (c.max_act_bytes > 0) ok &= static_cast<double>(p.act_bytes(l, p.abits[j])) <= c.max_act_bytes;
          q.cost += p.a[l][j] + p.alpha * p.w[l][i];
          if (c.bops) q.r[kBops] += static_cast<double>(p.macs[l]) * p.wbits[i] * p.abits[j];
          if (c.cr != 0) q.r[kSize] += static_cast<double>(p.params[l]) * p.wbits[i];
          if (c.max_cost > 0) q.r[kCost] += p.cost[l][pair];
        }
        if (ok && !(drop_outliers && q.cost >= kOutlierCost)) t.layers[item].push_back(q);
      }
  }
  return t;
}

void prune_dominated(PairTable& t) {
  for (auto& all : t.layers) {
    // Sorted by (cost, resources), a pair is dominated iff an earlier kept one
    // needs no more of any resource.
    std::stable_sort(all.begin(), all.end(), [](const Pair& x, const Pair& y) {
      return std::tie(x.cost, x.r[0], x.r[1], x.r[2]) < std::tie(y.cost, y.r[0], y.r[1], y.r[2]);
    });
    std::vector<Pair> kept;
    for (const Pair& q : all) {
      bool dominated = false;
      for (const Pair& k : kept)
        if (k.r[0] <= q.r[0] && k.r[1] <= q.r[1] && k.r[2] <= q.r[2]) {
          dominated = true;
          break;
        }
      if (!dominated) kept.push_back(q);
    }
    all = std::move(kept);
  }
}

PairTable make_pairs(const SearchProblem& p) {
  PairTable t = allowed_pairs(p, /*drop_outliers=*/true);
  prune_dominated(t);
  return t;
}

namespace {

// The least amount of monotone resource k (BitOPs or size) under the cost
// budget alone, from the per-item least-cost assignment; +inf when even
// that does not fit.
double least_under_cost(const PairTable& base, int k, Clock::time_point t0, double time_limit_s) {
  PairTable s = base;
  for (int i = 0; i < kResources; ++i)
    if (i != kCost) s.cap[i] = kInf;
  s = with_objective(s, k);
  std::vector<int> pick(s.layers.size());
  for (size_t l = 0; l < s.layers.size(); ++l)
    pick[l] = static_cast<int>(std::min_element(s.layers[l].begin(), s.layers[l].end(),
                                                [](const Pair& x, const Pair& y) {
                                                  return std::tie(x.r[kCost], x.cost) < std::tie(y.r[kCost], y.cost);
                                                }) -
                               s.layers[l].begin());
  return least_from(s, pick, t0, time_limit_s);
}

// The cost budget cannot be met together with the others: says which and
// what each reaches under the rest.
SearchResult jointly_infeasible(const SearchProblem& p, const PairTable& t, double least_cost, Clock::time_point t0,
                                double time_limit_s) {
  SearchResult r;
  r.status = Status::kInfeasible;
  std::string others, reach;
  for (int k : {kBops, kSize}) {
    if (!t.active(k)) continue;
    others += std::string(others.empty() ? "" : " and ") + resource_flag(k);
    const double best = least_under_cost(t, k, t0, time_limit_s);
    r.reachable.emplace_back(resource_flag(k), budget_value(p, k, best));
    reach += fmt::format("; under --max-cost alone the best {} reachable is {}", resource_flag(k), budget_text(p, k, best));
  }
  r.reachable.insert(r.reachable.begin(), {"--max-cost", least_cost + p.excepted_cost});
  r.message = fmt::format(
      "search: no bit assignment meets --max-cost {:g} together with {}: under {} the smallest cost reachable is {}{}; "
      "relax one of them",
      p.constraints.max_cost, others, others, budget_text(p, kCost, least_cost), reach);
  return r;
}

}  // namespace

SearchResult explain_joint_infeasibility(const SearchProblem& p, double time_limit_s) {
  const auto t0 = Clock::now();
  PairTable all = allowed_pairs(p, /*drop_outliers=*/false);
  prune_dominated(all);
  for (const auto& ps : all.layers)
    if (ps.empty()) return {};
  if (!std::isfinite(all.cap[kCost])) return {};
  const double least = least_under_others(all, kCost, t0, time_limit_s);
  if (!(least > all.cap[kCost])) return {};
  return jointly_infeasible(p, all, least, t0, time_limit_s);
}

SearchResult solve_exact(const SearchProblem& p, const SolveOptions& options) {
  const double time_limit_s = options.time_limit_s;
  const auto t0 = Clock::now();
  const PairTable t = make_pairs(p);
  const size_t L = t.layers.size();
  // Without outlier pairs, every item needs a pair that is least in the
  // monotone resources (BitOPs, size), and those together must fit;
  // otherwise outliers may be needed (each costs 1e8): the plain
  // formulation handles that rare case.
  std::vector<int> pick(L);
  {
    bool ok = true;
    for (size_t l = 0; l < L && ok; ++l) {
      ok = !t.layers[l].empty();
      if (!ok) break;
      pick[l] = least_resource(t.layers[l]);
      const Pair& q = t.layers[l][pick[l]];
      for (const Pair& o : t.layers[l]) ok &= q.r[kBops] <= o.r[kBops] && q.r[kSize] <= o.r[kSize];
    }
    Amounts least{};
    if (ok) least = evaluate(t, pick).r;
    if (!ok || least[kBops] > t.cap[kBops] || least[kSize] > t.cap[kSize]) {
      spdlog::info("search: the constraints may need pairs the outlier rule erased; solving the plain formulation");
      return solve_plain_cbc(p, time_limit_s);
    }
  }
  int64_t kept = 0;
  for (const auto& ps : t.layers) kept += static_cast<int64_t>(ps.size());
  // An incumbent: the least-resource assignment, or where it exceeds the
  // cost budget, the least-cost assignment under the other budgets.
  Assignment inc = evaluate(t, pick);
  if (!feasible(t, inc.r)) {
    Assignment witness;
    const double least = least_under_others(t, kCost, t0, time_limit_s, &witness);
    if (least > t.cap[kCost]) {
      // The outliers' pairs widen the choice: infeasible only if the least
      // cost with them is over the budget too; otherwise the solution needs
      // an outlier, which the plain formulation handles.
      PairTable all = allowed_pairs(p, /*drop_outliers=*/false);
      size_t n_all = 0, n = 0;
      for (const auto& ps : all.layers) n_all += ps.size();
      for (const auto& ps : allowed_pairs(p, true).layers) n += ps.size();
      prune_dominated(all);
      const double least_all = n_all == n ? least : least_under_others(all, kCost, t0, time_limit_s);
      if (least_all > all.cap[kCost]) return jointly_infeasible(p, all, least_all, t0, time_limit_s);
      return solve_plain_cbc(p, time_limit_s);
    }
    // The witness's pairs index the projected table: map them back by bits.
    const PairTable proj = with_objective(t, kCost);
    for (size_t l = 0; l < L; ++l) {
      const Pair& q = proj.layers[l][witness.pick[l]];
      for (int k = 0; k < static_cast<int>(t.layers[l].size()); ++k)
        if (t.layers[l][k].w == q.w && t.layers[l][k].a == q.a) pick[l] = k;
    }
    inc = evaluate(t, pick);
    if (!feasible(t, inc.r)) {  // the time limit stopped the least-cost search above the budget
      SearchResult r;
      r.status = Status::kTimeLimitNoSolution;
      r.message = "search: time limit reached before any assignment within --max-cost was found; raise --time-limit";
      return r;
    }
  }
  if (!options.start_w.empty()) {
    Assignment hint;
    if (start_assignment(p, t, options.start_w, options.start_a, hint) && feasible(t, hint.r) && hint.cost < inc.cost)
      inc = hint;
  }
  const CoreResult c = solve_core(t, inc, t0, time_limit_s, options.relative_gap);
  SearchResult r;
  r.status = c.status;
  r.objective = c.best.cost;
  r.bound = std::min(c.bound, c.best.cost);
  write_bits(t, c.best.pick, p.num_layers(), r);
  r.pairs = static_cast<int64_t>(p.num_layers() * p.num_pairs());
  r.pairs_kept = kept;
  r.pairs_left = c.left;
  r.dfs_nodes = c.dfs_nodes;
  r.cbc_nodes = c.cbc_nodes;
  return r;
}

}  // namespace mpq::search

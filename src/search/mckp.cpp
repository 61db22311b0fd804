// Exact search for the multiple-choice knapsack of METHOD.md §4.
//
// CBC alone needs minutes for 1000 layers x 49 pairs. This method proves the
// same optimum in well under a second:
//  1. per-layer dominance pruning: a pair that costs at least as much
//     objective, BitOPs and size as another pair of its layer is never needed
//     (and outlier pairs go, when a solution without them exists);
//  2. Lagrangian prices on the two budgets (lagrangian_dfs.cpp), whose bound
//     is the LP bound at the LP's duals;
//  3. an incumbent: the least-resource assignment or the Lagrangian
//     minimisers, improved by single moves while they fit;
//  4. an exact depth-first search around the Lagrangian bound
//     (lagrangian_dfs.cpp), restarted as the incumbent improves;
//  5. should that run past its node budget: reduced-cost fixing around a
//     growing threshold and CBC on the pairs that are left.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>

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

// A choice of one pair per layer with its resource use.
struct Assignment {
  std::vector<int> pick;  // index into PairTable::layers[l]
  double cost = 0, bops = 0, size = 0;
};

Assignment evaluate(const PairTable& t, std::vector<int> pick) {
  Assignment s;
  s.pick = std::move(pick);
  for (size_t l = 0; l < t.layers.size(); ++l) {
    const Pair& q = t.layers[l][s.pick[l]];
    s.cost += q.cost;
    s.bops += q.bops;
    s.size += q.size;
  }
  return s;
}

bool feasible(const PairTable& t, double bops, double size) { return bops <= t.bops_cap && size <= t.size_cap; }

// The LP or MIP over `cols` (per layer, the pair indices that take part);
// layers with one column are constants folded into the capacities.
struct SubModel {
  LinearModel lm;
  std::vector<std::pair<int, int>> col;  // column -> (layer, pair)
  double constant = 0;
};

SubModel build_model(const PairTable& t, const std::vector<std::vector<int>>& cols, double shrink) {
  SubModel m;
  const bool use_bops = std::isfinite(t.bops_cap), use_size = std::isfinite(t.size_cap);
  double fixed_bops = 0, fixed_size = 0;
  int row = 0;
  std::vector<int> layer_row(t.layers.size(), -1);
  for (size_t l = 0; l < t.layers.size(); ++l) {
    if (cols[l].size() == 1) {
      const Pair& q = t.layers[l][cols[l][0]];
      m.constant += q.cost;
      fixed_bops += q.bops;
      fixed_size += q.size;
    } else {
      layer_row[l] = row++;
    }
  }
  const int bops_row = use_bops ? row++ : -1;
  const int size_row = use_size ? row++ : -1;
  m.lm.num_rows = row;
  m.lm.row_lb.assign(row, 1.0);
  m.lm.row_ub.assign(row, 1.0);
  // Resource rows are scaled by their capacity, so coefficients are O(1/L).
  if (use_bops) {
    m.lm.row_lb[bops_row] = -kInf;
    m.lm.row_ub[bops_row] = (t.bops_cap - fixed_bops) / t.bops_cap - shrink;
  }
  if (use_size) {
    m.lm.row_lb[size_row] = -kInf;
    m.lm.row_ub[size_row] = (t.size_cap - fixed_size) / t.size_cap - shrink;
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
      if (use_bops && q.bops > 0) {
        m.lm.rows.push_back(bops_row);
        m.lm.vals.push_back(q.bops / t.bops_cap);
      }
      if (use_size && q.size > 0) {
        m.lm.rows.push_back(size_row);
        m.lm.vals.push_back(q.size / t.size_cap);
      }
      m.lm.starts.push_back(static_cast<int>(m.lm.rows.size()));
      m.col.emplace_back(static_cast<int>(l), k);
    }
  }
  return m;
}

// Reads one pair per layer from a 0/1 column vector; fixed layers take their only pair.
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

// The least-resource pair of each layer (lowest bits: minimal in both).
int least_resource(const std::vector<Pair>& ps) {
  int best = 0;
  for (int k = 1; k < static_cast<int>(ps.size()); ++k) {
    const Pair &q = ps[k], &b = ps[best];
    if (std::tie(q.bops, q.size, q.cost) < std::tie(b.bops, b.size, b.cost)) best = k;
  }
  return best;
}

// Improves a feasible assignment by single moves: each layer in turn takes
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
        if (q.cost < best_cost && feasible(t, s.bops - cur.bops + q.bops, s.size - cur.size + q.size)) {
          best = k;
          best_cost = q.cost;
        }
      }
      if (best >= 0) {
        const Pair& q = t.layers[l][best];
        s.cost += q.cost - cur.cost;
        s.bops += q.bops - cur.bops;
        s.size += q.size - cur.size;
        s.pick[l] = best;
        changed = true;
      }
    }
  }
  s = evaluate(t, s.pick);  // re-sum to shed rounding drift
}

SearchResult to_result(const PairTable& t, const Assignment& s, Status status, double bound) {
  SearchResult r;
  r.status = status;
  r.objective = s.cost;
  r.bound = std::min(bound, s.cost);
  for (size_t l = 0; l < t.layers.size(); ++l) {
    r.w_bits.push_back(t.layers[l][s.pick[l]].w);
    r.a_bits.push_back(t.layers[l][s.pick[l]].a);
  }
  return r;
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
    if (feasible(t, s.bops, s.size)) return res;
    spdlog::debug("search: CBC's solution exceeds a capacity by its tolerance; tightening by {}", shrink);
  }
  res.x.clear();
  res.status = MipResult::Status::kError;
  return res;
}

}  // namespace

PairTable make_pairs(const SearchProblem& p, bool prune) {
  PairTable t;
  t.bops_cap = p.constraints.bops ? p.bops_budget() : kInf;
  t.size_cap = p.constraints.cr != 0 ? p.size_budget() : kInf;
  const int K = static_cast<int>(p.bits.size());
  t.layers.resize(p.num_layers());
  for (size_t l = 0; l < p.num_layers(); ++l) {
    std::vector<Pair> all;
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < K; ++j) {
        Pair q;
        q.cost = p.a[l][j] + p.alpha * p.w[l][i];
        q.bops = p.constraints.bops ? static_cast<double>(p.macs[l]) * p.bits[i] * p.bits[j] : 0.0;
        q.size = p.constraints.cr != 0 ? static_cast<double>(p.params[l]) * p.bits[i] : 0.0;
        q.w = p.bits[i];
        q.a = p.bits[j];
        all.push_back(q);
      }
    if (!prune) {
      t.layers[l] = std::move(all);
      continue;
    }
    all.erase(std::remove_if(all.begin(), all.end(), [](const Pair& q) { return q.cost >= kOutlierCost; }), all.end());
    // Sorted by (cost, bops, size), a pair is dominated iff an earlier kept one
    // needs no more of either resource.
    std::stable_sort(all.begin(), all.end(), [](const Pair& x, const Pair& y) {
      return std::tie(x.cost, x.bops, x.size) < std::tie(y.cost, y.bops, y.size);
    });
    for (const Pair& q : all) {
      bool dominated = false;
      for (const Pair& k : t.layers[l])
        if (k.bops <= q.bops && k.size <= q.size) {
          dominated = true;
          break;
        }
      if (!dominated) t.layers[l].push_back(q);
    }
  }
  return t;
}

SearchResult solve_exact(const SearchProblem& p, double time_limit_s) {
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(time_limit_s));
  const PairTable t = make_pairs(p, /*prune=*/true);
  const size_t L = t.layers.size();
  // Without outlier pairs, every layer needs a pair that is least in both
  // resources, and those together must fit; otherwise outliers may be needed
  // (each costs 1e8): the plain formulation handles that rare case.
  {
    double bops = 0, size = 0;
    bool ok = true;
    for (size_t l = 0; l < L && ok; ++l) {
      ok = !t.layers[l].empty();
      if (!ok) break;
      const Pair& q = t.layers[l][least_resource(t.layers[l])];
      for (const Pair& o : t.layers[l]) ok &= q.bops <= o.bops && q.size <= o.size;
      bops += q.bops;
      size += q.size;
    }
    if (!ok || !feasible(t, bops, size)) {
      spdlog::info("search: the constraints may need pairs the outlier rule erased; solving the plain formulation");
      return solve_plain_cbc(p, time_limit_s);
    }
  }
  int64_t kept = 0;
  for (const auto& ps : t.layers) kept += static_cast<int64_t>(ps.size());
  SearchResult r;
  r.pairs = static_cast<int64_t>(L) * static_cast<int64_t>(p.bits.size() * p.bits.size());
  r.pairs_kept = kept;
  auto finish = [&](const Assignment& s, Status status, double bound, int64_t left, int64_t dfs_nodes, int cbc_nodes) {
    SearchResult out = to_result(t, s, status, bound);
    out.pairs = r.pairs;
    out.pairs_kept = kept;
    out.pairs_left = left;
    out.dfs_nodes = dfs_nodes;
    out.cbc_nodes = cbc_nodes;
    return out;
  };

  // 2. Lagrangian prices near the LP duals, and the bound they give.
  const Lagrangian lag = lagrangian_prices(t);
  spdlog::debug("search: pruning and prices took {:.2f} ms, bound {:.8f}", seconds_since(t0) * 1e3, lag.bound);

  // 3. Incumbent: the cheaper of the per-layer Lagrangian minimisers (when
  // they fit) and the least-resource assignment, each improved greedily.
  std::vector<int> pick(L);
  for (size_t l = 0; l < L; ++l) pick[l] = least_resource(t.layers[l]);
  Assignment inc = evaluate(t, pick);
  MPQ_ASSERT(feasible(t, inc.bops, inc.size), "the least-resource assignment must be feasible here");
  improve(t, inc);
  for (size_t l = 0; l < L; ++l) {
    pick[l] = 0;
    for (int k = 1; k < static_cast<int>(t.layers[l].size()); ++k)
      if (lag.d(t, l, k) < lag.d(t, l, pick[l])) pick[l] = k;
  }
  Assignment lag_pick = evaluate(t, pick);
  if (feasible(t, lag_pick.bops, lag_pick.size)) {
    improve(t, lag_pick);
    if (lag_pick.cost < inc.cost) inc = lag_pick;
  }
  spdlog::debug("search: incumbent {:.8f} after {:.2f} ms", inc.cost, seconds_since(t0) * 1e3);

  // 4. The depth-first search usually proves the optimum at once.
  int64_t dfs_nodes = 0, choices = kept;
  const bool done = lagrangian_dfs(t, lag, deadline, kDfsNodeLimit, inc.pick, inc.cost, dfs_nodes, choices);
  inc = evaluate(t, inc.pick);
  MPQ_ASSERT(feasible(t, inc.bops, inc.size), "the depth-first search returned an infeasible assignment");
  spdlog::debug("search: depth-first search {} after {} nodes, {:.2f} ms", done ? "done" : "stopped", dfs_nodes,
                seconds_since(t0) * 1e3);
  if (done) return finish(inc, Status::kOptimal, inc.cost, choices, dfs_nodes, 0);

  // 5. Otherwise reduced-cost fixing around a growing threshold tau (a
  // "core" method): CBC solves the MIP over the pairs whose bound is within
  // tau of the Lagrangian bound. Its answer is optimal for the whole problem
  // once the best value found is within tau of that bound, since every
  // dropped pair has a larger one; otherwise tau grows to (best - bound),
  // which is exact fixing.
  const double z = lag.bound;
  const double margin = 1e-9 * std::max(1.0, std::abs(inc.cost));
  double tau = std::max(margin, (inc.cost - z) / 8);
  Assignment best = inc;
  int nodes = 0;
  for (int round = 0;; ++round) {
    if (Clock::now() > deadline) return finish(best, Status::kTimeLimit, z, kept, dfs_nodes, nodes);
    std::vector<std::vector<int>> cols(L);
    int64_t left = 0;
    bool all_fixed = true;
    for (size_t l = 0; l < L; ++l) {
      for (int k = 0; k < static_cast<int>(t.layers[l].size()); ++k)
        if (k == best.pick[l] || lag.d(t, l, k) <= tau + margin) cols[l].push_back(k);
      left += static_cast<int64_t>(cols[l].size());
      all_fixed &= cols[l].size() == 1;
    }
    MipResult::Status status = MipResult::Status::kInfeasible;  // all fixed: nothing else to try
    if (!all_fixed) {
      const double remaining = std::max(1e-3, time_limit_s - seconds_since(t0));
      SubModel m;
      const MipResult mip = solve_checked(t, cols, &best, remaining, &m);
      nodes += mip.nodes;
      status = mip.status;
      if (status == MipResult::Status::kError)
        throw RuntimeError("search: CBC failed on the reduced problem; retry with --solver cbc");
      if (!mip.x.empty()) {
        const Assignment s = evaluate(t, read_pick(t, m, cols, mip.x));
        if (s.cost < best.cost) best = s;
      }
    }
    spdlog::debug("search: round {}: tau {:.3g}, {} pairs, best {:.8f}, {} CBC nodes, {:.2f} ms", round, tau, left,
                  best.cost, nodes, seconds_since(t0) * 1e3);
    const bool proven = status == MipResult::Status::kOptimal || status == MipResult::Status::kInfeasible;
    if (!proven || best.cost - z <= tau + margin)
      return finish(best, proven ? Status::kOptimal : Status::kTimeLimit, proven ? best.cost : z, left, dfs_nodes, nodes);
    tau = best.cost - z;
  }
}

SearchResult solve_plain_cbc(const SearchProblem& p, double time_limit_s) {
  const PairTable t = make_pairs(p, /*prune=*/false);
  std::vector<std::vector<int>> cols(t.layers.size());
  for (size_t l = 0; l < t.layers.size(); ++l) {
    cols[l].resize(t.layers[l].size());
    std::iota(cols[l].begin(), cols[l].end(), 0);
  }
  SubModel m;
  const MipResult mip = solve_checked(t, cols, nullptr, time_limit_s, &m);
  SearchResult r;
  r.pairs = r.pairs_kept = r.pairs_left = static_cast<int64_t>(m.col.size());
  r.cbc_nodes = mip.nodes;
  switch (mip.status) {
    case MipResult::Status::kOptimal:
    case MipResult::Status::kLimitWithSolution: {
      const Assignment s = evaluate(t, read_pick(t, m, cols, mip.x));
      SearchResult out = to_result(t, s, mip.status == MipResult::Status::kOptimal ? Status::kOptimal : Status::kTimeLimit,
                                   mip.status == MipResult::Status::kOptimal ? s.cost : mip.bound);
      out.pairs = r.pairs;
      out.pairs_kept = r.pairs_kept;
      out.pairs_left = r.pairs_left;
      out.cbc_nodes = r.cbc_nodes;
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
  throw RuntimeError("search: CBC failed (neither optimal, infeasible nor stopped by the time limit)");
}

}  // namespace mpq::search

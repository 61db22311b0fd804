// The two search methods behind search::solve (private to the search component).
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "mpq/search/search.h"

namespace mpq::search {

// The problem as one multiple-choice knapsack: every layer's (weight, act)
// pairs with their objective cost and the two resources, BitOPs and size.
// Constraints that are off have zero resource and an infinite capacity.
struct Pair {
  double cost;
  double bops, size;  // exact integers in a double (< 2^53)
  int w, a;           // weight and activation bit-widths
};
struct PairTable {
  std::vector<std::vector<Pair>> layers;
  double bops_cap, size_cap;  // +inf when the constraint is off
};

// `prune`: drop every pair that another pair of the same layer dominates
// (no more cost, BitOPs or size; ties kept once), and every pair that costs
// 1e8 or more (an outlier of the original's rule). The first keeps the
// optimum; the second keeps it whenever a solution without outliers exists,
// which solve_exact checks before relying on it.
PairTable make_pairs(const SearchProblem& p, bool prune);

// Pairs that cost at least this hold an erased outlier (METHOD.md §4).
constexpr double kOutlierCost = 1e8;

// The Lagrangian relaxation of both capacity rows: prices wb and ws per unit
// of BitOPs and size, and per layer u_l = min_p (cost + wb*bops + ws*size).
// For every assignment x,
//   cost(x) = bound + sum_l d(l, x_l) + wb*slack_bops(x) + ws*slack_size(x)
// with d >= 0 and slacks >= 0, whatever the prices; prices near the LP duals
// make `bound` the LP bound and the search around it small.
struct Lagrangian {
  double wb = 0, ws = 0;  // >= 0; 0 for a constraint that is off
  double bound = 0;       // sum_l u_l - wb*C_bops - ws*C_size
  std::vector<double> u;
  double d(const PairTable& t, size_t l, int k) const {
    const Pair& q = t.layers[l][k];
    return std::max(0.0, q.cost + wb * q.bops + ws * q.size - u[l]);
  }
};

// Prices that (nearly) maximise the bound: nested bisection on the
// subgradients, the size price outside, the BitOPs price inside.
Lagrangian lagrangian_prices(const PairTable& t);

// Exact depth-first search from a feasible incumbent (best_pick, best_cost),
// improved in place, bounded by the identity above. Returns true when it
// proved optimality, false when it hit `node_limit` or the deadline.
// `choices`: the pairs whose d is below the final gap (the rest cannot
// improve on the result).
bool lagrangian_dfs(const PairTable& t, const Lagrangian& lag, std::chrono::steady_clock::time_point deadline,
                    int64_t node_limit, std::vector<int>& best_pick, double& best_cost, int64_t& nodes,
                    int64_t& choices);

// Dominance pruning, Lagrangian prices, an incumbent, the depth-first
// search, and CBC on a reduced core should the search run long.
SearchResult solve_exact(const SearchProblem& p, double time_limit_s);

// The original formulation (all pairs) handed to CBC as it is.
SearchResult solve_plain_cbc(const SearchProblem& p, double time_limit_s);

}  // namespace mpq::search

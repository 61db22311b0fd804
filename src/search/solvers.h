// The search methods behind search::solve (private to the search component).
#pragma once

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "mpq/search/search.h"

namespace mpq::search {

// The resources a budget can bound by a sum over layers. (The activation
// memory budget bounds a maximum: it removes pairs instead.)
constexpr int kResources = 3;
enum Resource { kBops = 0, kSize = 1, kCost = 2 };
using Amounts = std::array<double, kResources>;

// The problem as one multiple-choice knapsack: every item (a layer, or the
// layers of one tie group together) offers its allowed (weight, act) pairs
// with their objective cost and resources. Resources that are off have zero
// amounts and an infinite capacity.
struct Pair {
  double cost;
  Amounts r;  // BitOPs and size: exact integers in a double (< 2^53)
  int w, a;   // weight and activation bit-widths
};
struct PairTable {
  std::vector<std::vector<Pair>> layers;  // per item
  std::vector<std::vector<int>> members;  // item -> its searchable layers
  Amounts cap;                            // +inf when the budget is off
  bool active(int k) const { return std::isfinite(cap[k]); }
};

// The allowed pairs of every item (rules and the activation memory budget
// applied); `drop_outliers`: without the pairs that cost 1e8 or more (an
// erased outlier of the original's rule).
PairTable allowed_pairs(const SearchProblem& p, bool drop_outliers);

// Drops every pair that another pair of its item dominates (no more cost and
// no more of any resource; ties kept once). Keeps the optimum.
void prune_dominated(PairTable& t);

// allowed_pairs(p, true) then prune_dominated: keeps the optimum whenever a
// solution without outliers exists, which solve_exact checks.
PairTable make_pairs(const SearchProblem& p);

// Pairs that cost at least this hold an erased outlier (METHOD.md §4).
constexpr double kOutlierCost = 1e8;

// The Lagrangian relaxation of the capacity rows: a price mu_k >= 0 per unit
// of each resource, and per item u_l = min_p (cost + mu . r). For every
// assignment x,
//   cost(x) = bound + sum_l d(l, x_l) + mu . slack(x)
// with d >= 0 and slacks >= 0, whatever the prices; prices near the LP duals
// make `bound` the LP bound and the search around it small.
struct Lagrangian {
  Amounts mu{};      // >= 0; 0 for a budget that is off
  double bound = 0;  // sum_l u_l - mu . cap
  std::vector<double> u;
  double priced(const Pair& q) const { return q.cost + mu[0] * q.r[0] + mu[1] * q.r[1] + mu[2] * q.r[2]; }
  double d(const PairTable& t, size_t l, int k) const { return std::max(0.0, priced(t.layers[l][k]) - u[l]); }
};

// Prices that (nearly) maximise the bound: with one budget, the exact one;
// with two, bisection on the second's subgradient around the first's exact
// price; with three, cutting planes on the dual (stopped at the deadline).
Lagrangian lagrangian_prices(const PairTable& t, std::chrono::steady_clock::time_point deadline);

// Exact depth-first search from a feasible incumbent (best_pick, best_cost),
// improved in place, bounded by the identity above. Returns true when it
// proved optimality, false when it hit `node_limit` or the deadline, or
// stopped with the incumbent within `rel_gap` (relative) of `proven`, the
// best lower bound it proved. `choices`: the pairs whose d is below the
// final gap (the rest cannot improve on the result).
bool lagrangian_dfs(const PairTable& t, const Lagrangian& lag, std::chrono::steady_clock::time_point deadline,
                    int64_t node_limit, double rel_gap, std::vector<int>& best_pick, double& best_cost,
                    double& proven, int64_t& nodes, int64_t& choices);

// Dominance pruning, Lagrangian prices, an incumbent, the depth-first
// search, and CBC on a reduced core should the search run long.
SearchResult solve_exact(const SearchProblem& p, const SolveOptions& options);

// The original formulation (every layer's every pair a binary; rules as
// bounds and tie rows) handed to CBC as it is.
SearchResult solve_plain_cbc(const SearchProblem& p, double time_limit_s);

// Why a problem whose budgets can each be met alone has no solution: the
// cost budget against the others, with what each reaches under the rest.
// An empty message when the least cost under the others fits after all.
SearchResult explain_joint_infeasibility(const SearchProblem& p, double time_limit_s);

// The names of the budgets in messages: "--bops", "--cr", "--max-cost".
const char* resource_flag(int k);

}  // namespace mpq::search

// The two search methods behind search::solve (private to the search component).
#pragma once

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

// Pairs that cost at least this hold an erased outlier (SPEC §4).
constexpr double kOutlierCost = 1e8;

// Dominance pruning + LP bound + incumbent + reduced-cost fixing + CBC.
SearchResult solve_exact(const SearchProblem& p, double time_limit_s);

// The original formulation (all pairs) handed to CBC as it is.
SearchResult solve_plain_cbc(const SearchProblem& p, double time_limit_s);

}  // namespace mpq::search

// The bit-width search ILP of METHOD.md §4 and its report.
//
// Variables x[l,i,j]: layer l takes weight candidate i and activation
// candidate j; one pair per layer. Objective: min sum x * (A[l][j] + alpha *
// W[l][i]). Constraints: BitOPs sum x*macs*b_i*b_j <= sum macs*wb*ab, and/or
// size 8*excepted + sum x*params*b_i <= 32*total_params/cr.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mpq/io/indicators.h"
#include "mpq/search/geometry.h"

namespace mpq::search {

struct Constraints {
  bool bops = false;    // --bops: BitOPs of uniform wb/ab
  double wb = 0, ab = 0;
  double cr = 0;        // --cr: minimum compression ratio; 0 disables
};

// How BitOPs count a layer's MACs (see LayerGeometry::original_macs).
enum class MacsCount {
  kOriginal,  // as the original search script: reproduces the paper's policies and figures
  kExact,     // true MACs: params x floor-divided output H x W
};

struct SearchProblem {
  std::vector<int> bits;                   // candidate bit-widths, as given
  std::vector<std::string> names;          // searchable layers
  std::vector<int64_t> params, macs;       // per searchable layer; macs as `macs_count` says
  std::vector<std::vector<double>> w, a;   // [layer][candidate]: indicators after the outlier rule
  double alpha = 2.0;
  int64_t excepted_params = 0, excepted_macs = 0;  // 8-bit layers (first conv, fc)
  Constraints constraints;
  MacsCount macs_count = MacsCount::kOriginal;

  size_t num_layers() const { return names.size(); }
  double bops_budget() const;  // sum macs * wb * ab
  double size_budget() const;  // 32 * total / cr - 8 * excepted (bits of the searchable layers)
};

// The original's outlier ("wired point") rule on one layer's table, given in
// candidate order: every candidate whose value is smaller than that of the
// next higher candidate is set to 1e8. All comparisons use the values as they
// were: the original collects the outliers first and erases them after, so an
// outlier does not erase the candidates below it. (METHOD.md §4 describes
// sequential updates; the original's code and the paper's policy in
// ../shared/golden/search_paper_r50.json follow this rule.)
void apply_outlier_rule(const std::vector<int>& bits, std::vector<double>& table);

// Validates candidates (distinct, 2..16) and constraints, checks the
// indicators against the geometry's searchable layers and builds the problem.
// `source` names the indicator file in messages.
SearchProblem make_problem(const ModelGeometry& geometry, const io::Indicators& ind, const std::vector<int>& bits,
                           double alpha, const Constraints& constraints, bool outlier_rule, const std::string& source,
                           MacsCount macs_count = MacsCount::kOriginal);

enum class Method {
  kExact,  // dominance pruning + Lagrangian bound + exact depth-first search (CBC on a core as fallback)
  kCbc,    // the whole original formulation handed to CBC, as the original does
};

struct SolveOptions {
  Method method = Method::kExact;
  double time_limit_s = 60;
};

enum class Status { kOptimal, kTimeLimit, kInfeasible, kTimeLimitNoSolution };

struct SearchResult {
  Status status = Status::kInfeasible;
  std::vector<int> w_bits, a_bits;  // per layer, valid unless infeasible or no solution
  double objective = 0;
  double bound = 0;                 // proven lower bound on the objective
  double seconds = 0;               // solve time
  std::string message;              // why it is infeasible, or the gap at a time limit
  // What the exact method did, for the log and the benchmarks.
  int64_t pairs = 0, pairs_kept = 0;  // all (w, a) pairs; left after dominance pruning
  int64_t pairs_left = 0;              // pairs that could still improve on the result
  int cbc_nodes = 0;
  int64_t dfs_nodes = 0;
  double relative_gap() const;
};

SearchResult solve(const SearchProblem& p, const SolveOptions& options);

// The figures the original prints (METHOD.md §4).
struct Report {
  double avg_weight_bits = 0, avg_act_bits = 0;
  double compression_ratio = 0;
  double fp_size_mb = 0, size_mb = 0;
  double gbitops = 0;         // searched, with the 8-bit excepted layers
  double target_gbitops = 0;  // uniform wb/ab; 0 without --bops
};

Report make_report(const SearchProblem& p, const std::vector<int>& w_bits, const std::vector<int>& a_bits);

const char* status_name(Status s);

}  // namespace mpq::search

// The bit-width search ILP of METHOD.md §4 and its report.
//
// Variables x[l,i,j]: layer l takes weight candidate i and activation
// candidate j; one pair per layer. Objective: min sum x * (A[l][j] + alpha *
// W[l][i]). Constraints: BitOPs sum x*macs*b_i*b_j <= sum macs*wb*ab, and/or
// size 8*excepted + sum x*params*b_i <= 32*total_params/cr. Beyond the
// paper, any subset of: a cost table's total <= max_cost, the largest
// activation tensor <= max_act_bytes, and per-layer rules (pins, bounds,
// W = A, layers tied to one pair).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "mpq/io/indicators.h"
#include "mpq/search/geometry.h"

namespace mpq::search {

struct Constraints {
  bool bops = false;    // --bops: BitOPs of uniform wb/ab
  double wb = 0, ab = 0;
  double cr = 0;        // --cr: minimum compression ratio; 0 disables
  double max_cost = 0;  // --max-cost: budget on the cost table's total; 0 disables (needs a cost table)
  double max_act_bytes = 0;  // --max-act-mem: largest activation tensor of any layer, bytes; 0 disables
  double bops_wa = 0;   // when > 0, the BitOPs budget's average W x A product instead of wb * ab (a sweep point)
  double bops_product() const { return bops_wa > 0 ? bops_wa : wb * ab; }
};

// How BitOPs count a layer's MACs (see LayerGeometry::original_macs).
enum class MacsCount {
  kOriginal,  // as the original search script: reproduces the paper's policies and figures
  kExact,     // true MACs: params x floor-divided output H x W
};

// Candidate bit-widths: one list for both (--b), or separate weight and
// activation lists (--wbits, --abits).
struct Candidates {
  std::vector<int> weight, act;
  Candidates(std::initializer_list<int> both) : weight(both), act(both) {}
  Candidates(const std::vector<int>& both) : weight(both), act(both) {}  // NOLINT: a list means both
  Candidates(std::vector<int> w, std::vector<int> a) : weight(std::move(w)), act(std::move(a)) {}
};

// A per-layer cost table (docs/FORMATS.md): any additive cost of running a
// searchable layer at each (weight bits, act bits) pair, e.g. a latency
// measured on the target. Excepted (8-bit) layers may list their 8/8 row; it
// counts as a constant.
struct CostTable {
  std::string path, unit;
  std::vector<std::string> layers;           // as listed, first appearance order
  std::vector<std::map<std::pair<int, int>, double>> cost;  // [layer]: (w, a) -> cost
};

// Reads a cost table (CSV: layer,w_bits,a_bits,cost[,unit]); InputError with
// file:line on anything malformed.
CostTable load_cost_table(const std::string& path);

// Per-layer rules on the bits (--pin, --min-bits, --max-bits, --same-wa,
// --tie). `layers` are names or shell patterns (`layer4.*`) of searchable
// layers; each must match at least one.
struct LayerRule {
  enum class Kind { kPin, kMin, kMax, kSameWA, kTie } kind;
  std::string text;                 // as given, for messages: "--pin layer4.2.conv3=8/8"
  std::vector<std::string> layers;  // names or patterns
  int w = 0, a = 0;                 // pin/min/max bits; 0 in a min/max: no bound on that side
};

struct SearchProblem {
  std::vector<int> wbits, abits;           // candidate bit-widths, as given
  std::vector<std::string> names;          // searchable layers
  std::vector<int64_t> params, macs;       // per searchable layer; macs as `macs_count` says
  std::vector<std::vector<double>> w, a;   // [layer][candidate]: indicators after the outlier rule
  double alpha = 2.0;
  int64_t excepted_params = 0, excepted_macs = 0;  // 8-bit layers (first conv, fc)
  Constraints constraints;
  MacsCount macs_count = MacsCount::kOriginal;
  // Beyond the paper; all empty by default. A layer's pair (i, j) is
  // wbits[i] / abits[j], indexed i * abits.size() + j.
  std::vector<std::vector<char>> allowed;  // [layer][pair]: left by the layer rules; empty: all
  std::vector<int> tie;                    // [layer]: tie group (layers with one id take one pair); empty: none
  std::vector<LayerRule> rules;            // as given, for the policy file
  std::vector<std::vector<double>> cost;   // [layer][pair] from a cost table; empty: none
  double excepted_cost = 0;                // the excepted layers' 8/8 rows of the cost table
  std::string cost_table, cost_unit;
  std::vector<int64_t> act_elems;          // [layer]: elements of the input it quantizes; empty: unknown
  std::vector<std::pair<std::string, int64_t>> excepted_act;  // excepted layers' input elements (8 bits)

  size_t num_layers() const { return names.size(); }
  size_t num_pairs() const { return wbits.size() * abits.size(); }
  double bops_budget() const;  // sum macs * wb * ab
  double size_budget() const;  // 32 * total / cr - 8 * excepted (bits of the searchable layers)
  double cost_budget() const;  // max_cost - excepted_cost
  bool pair_allowed(size_t l, size_t pair) const { return allowed.empty() || allowed[l][pair]; }
  int64_t act_bytes(size_t l, int a_bits) const;  // input activation of layer l at a_bits, bytes
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
SearchProblem make_problem(const ModelGeometry& geometry, const io::Indicators& ind, const Candidates& bits,
                           double alpha, const Constraints& constraints, bool outlier_rule, const std::string& source,
                           MacsCount macs_count = MacsCount::kOriginal);

// Adds the layer rules: every rule's layers must exist, and together they
// must leave every layer (and every tie group) at least one pair; InputError
// naming the rule otherwise.
void apply_layer_rules(SearchProblem& p, const std::vector<LayerRule>& rules);

// Adds a cost table: every searchable layer needs a row for every candidate
// pair; rows of unknown layers are errors. Enables the --max-cost budget.
void apply_cost_table(SearchProblem& p, const ModelGeometry& geometry, const CostTable& table);

// Adds the activation sizes the --max-act-mem budget needs; InputError naming
// a layer whose input shape the geometry does not give.
void apply_activation_sizes(SearchProblem& p, const ModelGeometry& geometry);

// Parses "NAME=W/A" (--pin, --min-bits, --max-bits; "*" leaves a side free in
// the bounds), "NAME" (--same-wa) or "A,B,C" (--tie).
LayerRule parse_layer_rule(LayerRule::Kind kind, const std::string& flag, const std::string& value);

enum class Method {
  kExact,  // dominance pruning + Lagrangian bound + exact depth-first search (CBC on a core as fallback)
  kCbc,    // the whole original formulation handed to CBC, as the original does
};

struct SolveOptions {
  Method method = Method::kExact;
  double time_limit_s = 60;
  // Stop once the solution is proven within this relative gap of the
  // optimum ((objective - bound) / objective); 0: prove the optimum.
  double relative_gap = 0;
  // A known assignment (per layer) the exact method starts from where it
  // fits, e.g. the optimum of a tighter budget in a sweep; empty: none.
  std::vector<int> start_w, start_a;
};

// kRandom: a random policy under the budgets (random_policy), not a search's.
enum class Status { kOptimal, kTimeLimit, kInfeasible, kTimeLimitNoSolution, kWithinGap, kRandom };

// A status with a solution: optimal, within the requested gap, or the best found at the time limit.
inline bool has_solution(Status s) {
  return s == Status::kOptimal || s == Status::kWithinGap || s == Status::kTimeLimit || s == Status::kRandom;
}

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
  // The binding resources when infeasible: (name, best reachable value), for the sweep's report.
  std::vector<std::pair<std::string, double>> reachable;
};

SearchResult solve(const SearchProblem& p, const SolveOptions& options);

// A random policy under the problem's budgets and rules, the baseline a
// searched one has to beat (--random-policy SEED). Each draw starts every
// layer at its lowest allowed bits and takes uniformly chosen steps (one
// layer's weight or activation up to its next allowed candidate) among those
// that keep every budget, until none does; a draw whose binding budget is
// used less than `min_fill` is redrawn, up to `max_draws` times (then
// kInfeasible with the reason). The objective is the policy's under the
// indicators; the same seed gives the same policy. Ties are refused.
SearchResult random_policy(const SearchProblem& p, uint64_t seed, double min_fill = 0.99, int max_draws = 100000);

// The indicators with the layers' importance order reversed
// (--reverse-indicators), a sanity check that should search the worst
// policy: layers are ranked by how much their tables rise from the highest
// to the lowest bit-width (activation + alpha * weight), and the k-th least
// sensitive layer takes the k-th most sensitive one's tables.
io::Indicators reverse_importance(const io::Indicators& ind, double alpha);

// The figures the original prints (METHOD.md §4).
struct Report {
  double avg_weight_bits = 0, avg_act_bits = 0;
  double compression_ratio = 0;
  double fp_size_mb = 0, size_mb = 0;
  double gbitops = 0;         // searched, with the 8-bit excepted layers
  double target_gbitops = 0;  // uniform wb/ab; 0 without --bops
  double cost = -1;           // the cost table's total with the excepted rows; -1 without a table
  int64_t peak_act_bytes = -1;  // largest activation tensor, bytes; -1 when the sizes are unknown
  std::string peak_act_layer;
};

Report make_report(const SearchProblem& p, const std::vector<int>& w_bits, const std::vector<int>& a_bits);

// The size and BitOPs of a policy (bits per searchable layer of `g`, in
// order), counted as the search counts them: the original's MACs, the
// excepted layers at 8 bits.
Report policy_report(const ModelGeometry& g, const std::vector<int>& w_bits, const std::vector<int>& a_bits);

const char* status_name(Status s);

}  // namespace mpq::search

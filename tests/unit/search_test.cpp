// The search: the paper's case against the original's policy, both methods
// against brute force on random small problems, infeasibility, time limits.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include <yaml-cpp/yaml.h>

#include "mpq/common/error.h"
#include "mpq/io/indicators.h"
#include "mpq/search/geometry.h"
#include "mpq/search/policy.h"
#include "mpq/search/search.h"
#include "mpq/search/sweep.h"
#include "synthetic.h"
#include "test_util.h"

using namespace mpq::search;

namespace {

SearchProblem paper_problem(double cr = 12.2, bool bops = true) {
  const auto g = zoo_geometry("resnet50");
  const auto ind = mpq::io::load_indicators(mpq::test::golden("importance_indicators_resnet50.pkl"));
  return make_problem(g, ind, {6, 5, 4, 3, 2}, 2.0, {bops, 3, 4, cr}, true, "r50.pkl");
}

// Exhaustive minimum over every (w, a) per layer under every budget, rule
// and tie of the problem, written from the definitions; +inf when infeasible.
double brute_force(const SearchProblem& p) {
  const size_t L = p.num_layers(), KA = p.abits.size(), P = p.num_pairs();
  const auto& c = p.constraints;
  const double bcap = c.bops ? p.bops_budget() : INFINITY;
  const double scap = c.cr != 0 ? p.size_budget() : INFINITY;
  const double ccap = c.max_cost > 0 ? c.max_cost - p.excepted_cost : INFINITY;
  double best = INFINITY;
  std::vector<size_t> pick(L);
  std::function<void(size_t, double, double, double, double)> go = [&](size_t l, double cost, double bops, double size,
                                                                      double table) {
    if (bops > bcap || size > scap || table > ccap) return;
    if (l == L) {
      best = std::min(best, cost);
      return;
    }
    for (size_t pair = 0; pair < P; ++pair) {
      const size_t i = pair / KA, j = pair % KA;
      if (!p.allowed.empty() && !p.allowed[l][pair]) continue;
      if (c.max_act_bytes > 0 && double((p.act_elems[l] * p.abits[j] + 7) / 8) > c.max_act_bytes) continue;
      bool tied_ok = true;
      for (size_t m = 0; m < l && !p.tie.empty(); ++m) tied_ok &= p.tie[m] != p.tie[l] || pick[m] == pair;
      if (!tied_ok) continue;
      pick[l] = pair;
      go(l + 1, cost + p.a[l][j] + p.alpha * p.w[l][i], bops + double(p.macs[l]) * p.wbits[i] * p.abits[j],
         size + double(p.params[l]) * p.wbits[i], table + (p.cost.empty() ? 0.0 : p.cost[l][pair]));
    }
  };
  if (c.max_act_bytes > 0)
    for (const auto& e : p.excepted_act)
      if (double(e.second) > c.max_act_bytes) return INFINITY;
  go(0, 0, 0, 0, 0);
  return best;
}

void expect_valid(const SearchProblem& p, const SearchResult& r);

// Both methods find the brute-force optimum (or both say infeasible, with
// the reason); the answer satisfies every budget and rule. Returns whether
// the problem is feasible.
bool both_methods_match_brute_force(const SearchProblem& p, int trial) {
  const double best = brute_force(p);
  for (Method m : {Method::kExact, Method::kCbc}) {
    SolveOptions o;
    o.method = m;
    const SearchResult r = solve(p, o);
    SCOPED_TRACE("trial " + std::to_string(trial) + (m == Method::kExact ? " exact" : " cbc"));
    if (std::isinf(best)) {
      EXPECT_EQ(r.status, Status::kInfeasible);
      EXPECT_NE(r.message.find("no bit assignment meets"), std::string::npos) << r.message;
      continue;
    }
    EXPECT_EQ(r.status, Status::kOptimal) << r.message;
    if (r.status != Status::kOptimal) continue;
    EXPECT_NEAR(r.objective, best, 1e-9 * std::max(1.0, std::abs(best)));
    expect_valid(p, r);
  }
  return std::isfinite(best);
}

}  // namespace

TEST(Search, OutlierRuleAsTheOriginal) {
  // layer4.0.downsample.0's weight indicators: 5 bits is below 6 bits.
  std::vector<double> t = {0.004623, 0.004173, 0.006186, 0.010214, 0.016934};
  apply_outlier_rule({6, 5, 4, 3, 2}, t);
  EXPECT_EQ(t[1], 1e8);
  EXPECT_EQ(t[2], 0.006186) << "an outlier does not erase the candidates below it";
  // Any candidate order: the rule walks from the highest bit-width down.
  std::vector<double> u = {0.016934, 0.004623, 0.004173};
  apply_outlier_rule({2, 6, 5}, u);
  EXPECT_EQ(u[2], 1e8);
  EXPECT_EQ(u[0], 0.016934);
}

TEST(Search, PapersPolicyExactly) {
  MPQ_NEEDS_GOLDEN();
  const YAML::Node ref = YAML::LoadFile(mpq::test::golden("search_paper_r50.json"));
  const auto p = paper_problem();
  for (Method m : {Method::kExact, Method::kCbc}) {
    SolveOptions o;
    o.method = m;
    const SearchResult r = solve(p, o);
    ASSERT_EQ(r.status, Status::kOptimal);
    EXPECT_EQ(r.w_bits, ref["weight_bits"].as<std::vector<int>>());
    EXPECT_EQ(r.a_bits, ref["act_bits"].as<std::vector<int>>());
    EXPECT_NEAR(r.objective, ref["objective"].as<double>(), 5e-9);
    const Report rep = make_report(p, r.w_bits, r.a_bits);
    const YAML::Node rr = ref["reference_report"];
    EXPECT_DOUBLE_EQ(rep.avg_weight_bits, rr["avg_weight_bits"].as<double>());
    EXPECT_DOUBLE_EQ(rep.avg_act_bits, rr["avg_act_bits"].as<double>());
    EXPECT_NEAR(rep.compression_ratio, rr["compression_ratio"].as<double>(), 1e-12);
    EXPECT_NEAR(rep.fp_size_mb, rr["fp_model_size_MB"].as<double>(), 5e-4);
    EXPECT_NEAR(rep.size_mb, rr["searched_model_size_MB"].as<double>(), 5e-4);
    EXPECT_NEAR(rep.gbitops, rr["searched_GBitOPs"].as<double>(), 5e-4);
    EXPECT_NEAR(rep.target_gbitops, rr["target_GBitOPs"].as<double>(), 5e-4);
  }
}

TEST(Search, BothMethodsEqualBruteForce) {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<double> u(0, 1);
  int feasible = 0;
  for (int trial = 0; trial < 150; ++trial) {
    const size_t L = 1 + trial % 6;
    std::vector<int> bits = trial % 2 ? std::vector<int>{4, 3, 2} : std::vector<int>{2, 8, 5};
    ModelGeometry g;
    mpq::io::Indicators ind;
    for (size_t l = 0; l < L; ++l) {
      LayerGeometry lg;
      lg.name = "l" + std::to_string(l);
      lg.params = 1 + static_cast<int64_t>(u(rng) * 5000);
      lg.macs = lg.original_macs = lg.params * (1 + static_cast<int64_t>(u(rng) * 50));
      lg.searchable = true;
      g.layers.push_back(lg);
      ind.layer_names.push_back(lg.name);
      std::map<int, double> w, a;
      for (int b : bits) {  // mostly decreasing with bits, sometimes not (outliers)
        w[b] = (0.1 + u(rng)) / b + (u(rng) < 0.1 ? 0.3 : 0.0);
        a[b] = (0.1 + u(rng)) / b;
      }
      ind.weight.push_back(w);
      ind.act.push_back(a);
    }
    Constraints c;
    c.bops = trial % 3 != 0;
    c.wb = 2 + u(rng) * 4;
    c.ab = 2 + u(rng) * 4;
    c.cr = trial % 3 == 1 ? 0 : 4 + u(rng) * 12;
    const auto p = make_problem(g, ind, bits, trial % 4 ? 2.0 : 0.5, c, trial % 5 != 0, "random");
    feasible += both_methods_match_brute_force(p, trial);
  }
  EXPECT_GT(feasible, 75);
}

TEST(Search, InfeasibleSaysWhichConstraintAndTheBestReachable) {
  MPQ_NEEDS_GOLDEN();
  const SearchResult r = solve(paper_problem(16, false), {});
  ASSERT_EQ(r.status, Status::kInfeasible);
  EXPECT_EQ(r.message,
            "search: no bit assignment meets --cr 16 (the largest compression ratio reachable with bits 6 5 4 3 2 is "
            "12.88); lower --cr or add lower bit-widths");
  auto p = paper_problem(0, true);
  p.constraints.wb = p.constraints.ab = 1.5;
  const SearchResult b = solve(p, {});
  ASSERT_EQ(b.status, Status::kInfeasible);
  EXPECT_NE(b.message.find("no bit assignment meets --bops with --wb 1.5 --ab 1.5"), std::string::npos) << b.message;
}

TEST(Search, TimeLimitStatuses) {
  // The plain formulation of a 1000-layer problem takes CBC minutes.
  ModelGeometry g;
  mpq::io::Indicators ind;
  mpq::test::make_synthetic(1000, 5, g, ind);
  const std::vector<int> bits = {8, 7, 6, 5, 4, 3, 2};
  const auto p = make_problem(g, ind, bits, 2.0, {true, 3, 4, 12}, true, "synthetic");
  SolveOptions o;
  o.method = Method::kCbc;
  o.time_limit_s = 3;
  const SearchResult r = solve(p, o);
  ASSERT_EQ(r.status, Status::kTimeLimit);
  EXPECT_EQ(r.w_bits.size(), 1000u);
  EXPECT_GT(r.relative_gap(), 0);
  EXPECT_LE(r.bound, r.objective);
  EXPECT_LT(r.seconds, 10.0);
  o.time_limit_s = 0.05;  // not even time for a first solution
  const SearchResult none = solve(p, o);
  EXPECT_EQ(none.status, Status::kTimeLimitNoSolution);
  EXPECT_NE(none.message.find("raise --time-limit"), std::string::npos);
  // The exact method proves the optimum of the same problem.
  const SearchResult exact = solve(p, {});
  EXPECT_EQ(exact.status, Status::kOptimal);
  EXPECT_LE(exact.objective, r.objective + 1e-9);
}

// ---- Beyond the paper: more resources, layer rules, sweeps ----

// The statement throws an InputError whose message contains `want`.
#define EXPECT_THROW_MSG(stmt, want)                                                   \
  do {                                                                                 \
    try {                                                                              \
      stmt;                                                                            \
      ADD_FAILURE() << "no error, expected: " << (want);                               \
    } catch (const mpq::InputError& e) {                                               \
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();      \
    }                                                                                  \
  } while (0)

namespace {

struct Random {
  std::mt19937 rng;
  explicit Random(unsigned seed) : rng(seed) {}
  double u() { return std::uniform_real_distribution<double>(0, 1)(rng); }
  int pick(int n) { return static_cast<int>(u() * n) % n; }
};

// A random small problem with every extension in play: separate weight and
// activation candidates, a non-monotone cost table, an activation memory
// budget, and random pins, bounds, W = A and ties. Returns false when the
// drawn rules contradict each other (an InputError, checked elsewhere).
bool random_problem(Random& R, int trial, SearchProblem& out) {
  const size_t L = 1 + trial % 5;
  const std::vector<std::vector<int>> lists = {{4, 3, 2}, {2, 8}, {6, 4, 2}, {3, 5}, {8, 4}};
  const std::vector<int> wbits = lists[R.pick(5)], abits = trial % 3 == 0 ? wbits : lists[R.pick(5)];
  ModelGeometry g;
  mpq::io::Indicators ind;
  for (size_t l = 0; l < L; ++l) {
    LayerGeometry lg;
    lg.name = "l" + std::to_string(l);
    lg.in = 1 + R.pick(64);
    lg.in_h = lg.in_w = 1 + R.pick(16);
    lg.params = 1 + static_cast<int64_t>(R.u() * 5000);
    lg.macs = lg.original_macs = lg.params * (1 + static_cast<int64_t>(R.u() * 50));
    lg.searchable = true;
    g.layers.push_back(lg);
    ind.layer_names.push_back(lg.name);
    std::map<int, double> w, a;
    for (int b : {2, 3, 4, 5, 6, 8}) {
      w[b] = (0.1 + R.u()) / b + (R.u() < 0.1 ? 0.3 : 0.0);
      a[b] = (0.1 + R.u()) / b;
    }
    ind.weight.push_back(w);
    ind.act.push_back(a);
  }
  Constraints c;
  const int mask = 1 + R.pick(15);  // which budgets: bops, cr, cost, act
  c.bops = mask & 1;
  c.wb = 2 + R.u() * 4;
  c.ab = 2 + R.u() * 4;
  c.cr = mask & 2 ? 4 + R.u() * 12 : 0;
  Constraints any = c;  // make_problem needs a budget; the cost and activation ones come below
  any.bops = true;
  out = make_problem(g, ind, Candidates(wbits, abits), trial % 4 ? 2.0 : 0.5, any, trial % 5 != 0, "random");
  out.constraints = c;
  CostTable table;
  table.path = "random.csv";
  for (size_t l = 0; l < L; ++l) {
    table.layers.push_back(g.layers[l].name);
    table.cost.emplace_back();
    for (int w : wbits)
      for (int a : abits) table.cost.back()[{w, a}] = R.u() * 10 + (w + a) * R.u();
  }
  apply_cost_table(out, g, table);
  apply_activation_sizes(out, g);
  double all_cost = 0;
  for (const auto& row : out.cost) all_cost += *std::max_element(row.begin(), row.end());
  if (mask & 4) out.constraints.max_cost = all_cost * (0.3 + 0.6 * R.u());
  if (mask & 8) {
    int64_t biggest = 0;
    for (size_t l = 0; l < L; ++l) biggest = std::max(biggest, out.act_bytes(l, 8));
    out.constraints.max_act_bytes = static_cast<double>(biggest) * (0.2 + 0.9 * R.u());
  }
  std::vector<LayerRule> rules;
  using K = LayerRule::Kind;
  auto name = [&] { return "l" + std::to_string(R.pick(static_cast<int>(L))); };
  if (R.u() < 0.3) {
    LayerRule r{K::kPin, "--pin", {name()}, wbits[R.pick(wbits.size())], abits[R.pick(abits.size())]};
    rules.push_back(r);
  }
  if (R.u() < 0.3) rules.push_back({K::kMin, "--min-bits", {R.u() < 0.5 ? "*" : name()}, R.u() < 0.5 ? 3 : 0, 3});
  if (R.u() < 0.3) rules.push_back({K::kMax, "--max-bits", {name()}, 4, R.u() < 0.5 ? 0 : 5});
  if (R.u() < 0.2) rules.push_back({K::kSameWA, "--same-wa", {name()}, 0, 0});
  if (L >= 2 && R.u() < 0.4) rules.push_back({K::kTie, "--tie", {"l0", "l" + std::to_string(1 + R.pick(L - 1))}, 0, 0});
  if (L >= 3 && R.u() < 0.2) rules.push_back({K::kTie, "--tie", {"l1", "l2"}, 0, 0});
  try {
    if (!rules.empty()) apply_layer_rules(out, rules);
  } catch (const mpq::InputError&) {
    return false;
  }
  return true;
}

// The assignment a result gives satisfies every budget, rule and tie.
void expect_valid(const SearchProblem& p, const SearchResult& r) {
  ASSERT_EQ(r.w_bits.size(), p.num_layers());
  const auto& c = p.constraints;
  double bops = 0, size = 0, cost = 0;
  for (size_t l = 0; l < p.num_layers(); ++l) {
    const size_t i = std::find(p.wbits.begin(), p.wbits.end(), r.w_bits[l]) - p.wbits.begin();
    const size_t j = std::find(p.abits.begin(), p.abits.end(), r.a_bits[l]) - p.abits.begin();
    ASSERT_LT(i, p.wbits.size());
    ASSERT_LT(j, p.abits.size());
    EXPECT_TRUE(p.pair_allowed(l, i * p.abits.size() + j)) << "layer " << l;
    for (size_t m = 0; m < l && !p.tie.empty(); ++m)
      if (p.tie[m] == p.tie[l]) EXPECT_TRUE(r.w_bits[m] == r.w_bits[l] && r.a_bits[m] == r.a_bits[l]);
    if (c.max_act_bytes > 0) EXPECT_LE(static_cast<double>(p.act_bytes(l, r.a_bits[l])), c.max_act_bytes);
    bops += double(p.macs[l]) * r.w_bits[l] * r.a_bits[l];
    size += double(p.params[l]) * r.w_bits[l];
    cost += p.cost.empty() ? 0.0 : p.cost[l][i * p.abits.size() + j];
  }
  if (c.bops) EXPECT_LE(bops, p.bops_budget());
  if (c.cr != 0) EXPECT_LE(size, p.size_budget());
  if (c.max_cost > 0) EXPECT_LE(cost, p.cost_budget() * (1 + 1e-12));
}

}  // namespace

TEST(SearchExtensions, BothMethodsEqualBruteForceWithEveryResourceAndRule) {
  Random R(2024);
  int feasible = 0, infeasible = 0, contradictions = 0, with_cost = 0, with_ties = 0;
  for (int trial = 0; trial < 400; ++trial) {
    SearchProblem p;
    if (!random_problem(R, trial, p)) {
      ++contradictions;
      continue;
    }
    with_cost += p.constraints.max_cost > 0;
    with_ties += !p.tie.empty();
    both_methods_match_brute_force(p, trial) ? ++feasible : ++infeasible;
  }
  EXPECT_GT(feasible, 150);
  EXPECT_GT(infeasible, 30);
  EXPECT_GT(with_cost, 100);
  EXPECT_GT(with_ties, 50);
  EXPECT_LT(contradictions, 120);
}

TEST(SearchExtensions, ExactEqualsCbcOnMediumProblemsWithCostTablesAndTies) {
  // 40 layers x 25 pairs: past brute force, within what CBC proves in seconds.
  for (unsigned seed : {1u, 2u, 3u}) {
    ModelGeometry g;
    mpq::io::Indicators ind;
    mpq::test::make_synthetic(40, seed, g, ind);
    const std::vector<int> bits = {6, 5, 4, 3, 2};
    auto p = make_problem(g, ind, bits, 2.0, {true, 3, 4, 9.0}, true, "synthetic");
    Random R(seed);
    CostTable table;
    table.path = "medium.csv";
    double uniform44 = 0;
    for (size_t l = 0; l < p.num_layers(); ++l) {
      table.layers.push_back(p.names[l]);
      table.cost.emplace_back();
      for (int w : bits)
        for (int a : bits) {
          const double c = double(p.macs[l]) * 1e-9 * (0.3 + 0.05 * (w + a) + ((w % 2) || (a % 2) ? 0.1 : 0.0)) *
                           (0.95 + 0.1 * R.u());
          table.cost.back()[{w, a}] = c;
          if (w == 4 && a == 4) uniform44 += c;
        }
    }
    apply_cost_table(p, g, table);
    p.constraints.max_cost = 0.9 * uniform44;
    apply_layer_rules(p, {parse_layer_rule(LayerRule::Kind::kTie, "--tie", "l1,l2,l3"),
                          parse_layer_rule(LayerRule::Kind::kPin, "--pin", "l7=6/6"),
                          parse_layer_rule(LayerRule::Kind::kSameWA, "--same-wa", "l1*")});
    SolveOptions cbc;
    cbc.method = Method::kCbc;
    cbc.time_limit_s = 120;
    const SearchResult a = solve(p, {}), b = solve(p, cbc);
    SCOPED_TRACE("seed " + std::to_string(seed));
    ASSERT_EQ(a.status, Status::kOptimal) << a.message;
    ASSERT_EQ(b.status, Status::kOptimal) << b.message;
    EXPECT_NEAR(a.objective, b.objective, 1e-8 * std::abs(b.objective));
    expect_valid(p, a);
    EXPECT_EQ(a.w_bits[7], 6);
    EXPECT_EQ(a.w_bits[1], a.w_bits[3]);
    EXPECT_EQ(a.w_bits[10], a.a_bits[10]);  // l10 matches l1*
  }
}

TEST(SearchExtensions, DefaultsLeaveThePapersProblemAsItWas) {
  MPQ_NEEDS_GOLDEN();
  // No extension asked for: no rules, no table, the paper's candidates for both.
  const auto p = paper_problem();
  EXPECT_EQ(p.wbits, p.abits);
  EXPECT_TRUE(p.allowed.empty() && p.tie.empty() && p.cost.empty());
  // A pin on the policy's own choice and a loose bound leave the optimum alone.
  const YAML::Node ref = YAML::LoadFile(mpq::test::golden("search_paper_r50.json"));
  auto q = paper_problem();
  const auto w = ref["weight_bits"].as<std::vector<int>>(), a = ref["act_bits"].as<std::vector<int>>();
  apply_layer_rules(q, {parse_layer_rule(LayerRule::Kind::kPin, "--pin",
                                         "layer4.2.conv3=" + std::to_string(w.back()) + "/" + std::to_string(a.back())),
                        parse_layer_rule(LayerRule::Kind::kMax, "--max-bits", "*=6/6")});
  const SearchResult r = solve(q, {});
  ASSERT_EQ(r.status, Status::kOptimal);
  EXPECT_EQ(r.w_bits, w);
  EXPECT_EQ(r.a_bits, a);
}

TEST(SearchExtensions, RulesThatNameNothingOrContradictAreOneLine) {
  MPQ_NEEDS_GOLDEN();
  auto p = paper_problem();
  using K = LayerRule::Kind;
  auto fails = [&](std::vector<LayerRule> rules, const std::string& want) {
    auto q = p;
    try {
      apply_layer_rules(q, rules);
      ADD_FAILURE() << "accepted: " << rules[0].text;
    } catch (const mpq::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  };
  fails({parse_layer_rule(K::kPin, "--pin", "layer4.2.conv4=8/8")}, "'layer4.2.conv4' is no searchable layer (did you mean 'layer4.2.conv");
  fails({parse_layer_rule(K::kPin, "--pin", "layer4.2.conv3=8/8")}, "8 bits is not a weight candidate (6 5 4 3 2)");
  fails({parse_layer_rule(K::kMax, "--max-bits", "layer9.*=4/4")}, "the pattern 'layer9.*' matches no searchable layer");
  fails({parse_layer_rule(K::kPin, "--pin", "layer1.0.conv1=6/6"), parse_layer_rule(K::kMax, "--max-bits", "layer1.*=4/*")},
        "the rules leave layer 'layer1.0.conv1' no (weight, act) pair among the candidates (--pin layer1.0.conv1=6/6, "
        "--max-bits layer1.*=4/*); they contradict each other");
  fails({parse_layer_rule(K::kPin, "--pin", "layer1.0.conv1=6/6"), parse_layer_rule(K::kPin, "--pin", "layer1.0.conv2=5/5"),
         parse_layer_rule(K::kTie, "--tie", "layer1.0.conv1,layer1.0.conv2")},
        "the tied layers 'layer1.0.conv1' and 'layer1.0.conv2' have no (weight, act) pair in common");
  fails({parse_layer_rule(K::kTie, "--tie", "layer1.0.conv1")}, "ties one layer to itself");
  for (const auto& [kind, flag, value, want] : std::vector<std::tuple<K, std::string, std::string, std::string>>{
           {K::kPin, "--pin", "layer1.0.conv1", "expected LAYER=W/A"},
           {K::kPin, "--pin", "layer1.0.conv1=6", "expected LAYER=W/A"},
           {K::kPin, "--pin", "layer1.0.conv1=x/4", "'x' is not a bit-width (1 to 32)"},
           {K::kPin, "--pin", "layer1.0.conv1=*/4", "'*' is not a bit-width (1 to 32)"},
           {K::kMin, "--min-bits", "l=*/*", "bounds neither side"},
           {K::kMax, "--max-bits", "l=40/4", "'40' is not a bit-width (1 to 32, or * for no bound)"},
           {K::kTie, "--tie", "a,,b", "an empty layer name"}}) {
    try {
      parse_layer_rule(kind, flag, value);
      ADD_FAILURE() << "accepted " << flag << " " << value;
    } catch (const mpq::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
}

TEST(SearchExtensions, CostTablesAreReadStrictly) {
  mpq::test::TempDir dir;
  const auto g = zoo_geometry("resnet20", {32, 32, 3, 10});
  const auto ind_names = g.searchable_names();
  // A complete table for candidates 4 and 2, with the excepted fc at 8/8.
  std::string good = "# latency of resnet20 on a target\nlayer,w_bits,a_bits,cost,unit\n";
  for (const auto& n : ind_names)
    for (int w : {4, 2})
      for (int a : {4, 2}) good += n + "," + std::to_string(w) + "," + std::to_string(a) + ",0.5,ms\n";
  good += "fc,8,8,0.25,ms\n";
  mpq::test::write_all(dir.file("good.csv"), good);
  const CostTable t = load_cost_table(dir.file("good.csv"));
  EXPECT_EQ(t.unit, "ms");
  EXPECT_EQ(t.layers.size(), ind_names.size() + 1);
  mpq::io::Indicators ind;
  ind.layer_names = ind_names;
  for (size_t l = 0; l < ind_names.size(); ++l) {
    ind.weight.push_back({{4, 0.1}, {2, 0.3}});
    ind.act.push_back({{4, 0.1}, {2, 0.3}});
  }
  auto p = make_problem(g, ind, {4, 2}, 2.0, {false, 0, 0, 5.0}, true, "ind");
  apply_cost_table(p, g, t);
  EXPECT_DOUBLE_EQ(p.excepted_cost, 0.25);
  p.constraints.max_cost = 0.5 * ind_names.size() + 0.25 - 1e-9;  // just short
  const SearchResult r = solve(p, {});
  EXPECT_EQ(r.status, Status::kInfeasible);
  EXPECT_NE(r.message.find("no bit assignment meets --max-cost"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find(" ms)"), std::string::npos) << r.message;

  const std::string head = "layer,w_bits,a_bits,cost,unit\n";
  const std::string row0 = ind_names[0] + ",4,4,1,ms\n";
  for (const auto& [text, want] : std::vector<std::pair<std::string, std::string>>{
           {"", "empty cost table"},
           {"layer,w,a,cost\n", "bad.csv:1: the first line must be the header"},
           {head, "has a header but no rows"},
           {head + row0 + row0, "bad.csv:3: a second row for layer '" + ind_names[0] + "' at 4/4 bits (the first is on line 2)"},
           {head + ind_names[0] + ",4,4,-1,ms\n", "bad.csv:2: cost -1 must be finite and not negative"},
           {head + ind_names[0] + ",4,4,nan,ms\n", "bad.csv:2: cost nan must be finite and not negative"},
           {head + ind_names[0] + ",4,4,1.2ms,ms\n", "bad.csv:2: cost '1.2ms' is not a number"},
           {"layer,w_bits,a_bits,cost\n" + ind_names[0] + ",4,4,1.2ms\n", "(units go in a 'unit' column)"},
           {head + row0 + ind_names[1] + ",4,4,1,us\n", "bad.csv:3: unit 'us' differs from 'ms' on line 2"},
           {head + ind_names[0] + ",4,four,1,ms\n", "bad.csv:2: a_bits 'four' is not a bit-width"},
           {head + ind_names[0] + ",4,4,1\n", "bad.csv:2: 4 fields where the header has 5"}}) {
    mpq::test::write_all(dir.file("bad.csv"), text);
    try {
      load_cost_table(dir.file("bad.csv"));
      ADD_FAILURE() << "accepted: " << text;
    } catch (const mpq::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
  // Layers and pairs the problem needs, and names it does not know.
  auto apply = [&](const std::string& text) {
    mpq::test::write_all(dir.file("bad.csv"), text);
    auto q = make_problem(g, ind, {4, 2}, 2.0, {false, 0, 0, 5.0}, true, "ind");
    apply_cost_table(q, g, load_cost_table(dir.file("bad.csv")));
  };
  std::string missing_pair = good;
  missing_pair.erase(missing_pair.find(ind_names[3] + ",2,2"), ind_names[3].size() + 13);
  EXPECT_THROW_MSG(apply(missing_pair), "no row for layer '" + ind_names[3] + "' at 2/2 bits");
  EXPECT_THROW_MSG(apply(good + "layer9.0.conv1,4,4,1,ms\n"), "layer 'layer9.0.conv1' is not a layer of resnet20");
  EXPECT_THROW_MSG(apply(head + "conv1,4,4,1,ms\n"), "layer 'conv1' is kept at 8 bits but has no 8/8 row");
  EXPECT_THROW_MSG(apply(head + row0), "no row for layer '" + ind_names[0] + "' at 4/2 bits");
}

TEST(SearchExtensions, ActivationMemoryBoundsTheLargestActivation) {
  MPQ_NEEDS_GOLDEN();
  auto p = paper_problem(0, true);
  apply_activation_sizes(p, zoo_geometry("resnet50"));
  const SearchResult free_run = solve(p, {});
  const Report before = make_report(p, free_run.w_bits, free_run.a_bits);
  ASSERT_GT(before.peak_act_bytes, 0);
  p.constraints.max_act_bytes = static_cast<double>(before.peak_act_bytes) * 0.6;
  const SearchResult r = solve(p, {});
  ASSERT_EQ(r.status, Status::kOptimal);
  const Report after = make_report(p, r.w_bits, r.a_bits);
  EXPECT_LE(static_cast<double>(after.peak_act_bytes), p.constraints.max_act_bytes);
  EXPECT_GE(r.objective, free_run.objective);
  // The image the first conv reads at 8 bits is 150528 bytes: below that, nothing fits.
  p.constraints.max_act_bytes = 100000;
  const SearchResult none = solve(p, {});
  ASSERT_EQ(none.status, Status::kInfeasible);
  EXPECT_NE(none.message.find("the 8-bit layer 'conv1' alone reads 150528 bytes"), std::string::npos) << none.message;
  // A searchable layer that cannot shrink enough even at 2 bits.
  p.constraints.max_act_bytes = 160000;
  const SearchResult tight = solve(p, {});
  ASSERT_EQ(tight.status, Status::kInfeasible);
  EXPECT_NE(tight.message.find("reads at least 200704 bytes"), std::string::npos) << tight.message;
  // A geometry without input shapes cannot take the budget.
  ModelGeometry g;
  g.model = "shapeless";
  g.layers.push_back({"a", "conv", 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 10, 100, 100, true});
  EXPECT_THROW_MSG(apply_activation_sizes(p, g), "does not give its input shape");
}

TEST(SearchExtensions, ACostTableAtOddsWithTheOtherBudgetsNamesThemAll) {
  MPQ_NEEDS_GOLDEN();
  // Cost that rises as bits fall: a tight cost budget wants high bits, a
  // compression ratio low ones.
  auto p = paper_problem(12.2, false);
  p.cost.assign(p.num_layers(), std::vector<double>(p.num_pairs()));
  double at_six = 0;
  for (size_t l = 0; l < p.num_layers(); ++l)
    for (size_t i = 0; i < p.wbits.size(); ++i)
      for (size_t j = 0; j < p.abits.size(); ++j) {
        p.cost[l][i * p.abits.size() + j] = 16.0 / (p.wbits[i] + p.abits[j]);
        if (i == 0 && j == 0) at_six += 16.0 / 12;
      }
  p.cost_table = "odd.csv";
  p.cost_unit = "mJ";
  p.constraints.max_cost = at_six * 1.05;
  for (Method m : {Method::kExact, Method::kCbc}) {
    SolveOptions o;
    o.method = m;
    const SearchResult r = solve(p, o);
    ASSERT_EQ(r.status, Status::kInfeasible) << (m == Method::kExact);
    if (m == Method::kExact) {
      EXPECT_NE(r.message.find("no bit assignment meets --max-cost " ), std::string::npos) << r.message;
      EXPECT_NE(r.message.find("together with --cr: under --cr the smallest cost reachable is"), std::string::npos) << r.message;
      EXPECT_NE(r.message.find("under --max-cost alone the best --cr reachable is compression ratio"), std::string::npos)
          << r.message;
      ASSERT_EQ(r.reachable.size(), 2u);
      EXPECT_GT(r.reachable[0].second, p.constraints.max_cost);
      EXPECT_EQ(r.reachable[1].first, "--cr");
      EXPECT_LT(r.reachable[1].second, 12.2);  // the largest compression ratio under the cost budget
    }
  }
  // Loosened, both methods agree.
  p.constraints.max_cost = at_six * 1.6;
  SolveOptions cbc;
  cbc.method = Method::kCbc;
  const SearchResult a = solve(p, {}), b = solve(p, cbc);
  ASSERT_EQ(a.status, Status::kOptimal) << a.message;
  ASSERT_EQ(b.status, Status::kOptimal) << b.message;
  EXPECT_NEAR(a.objective, b.objective, 1e-8 * a.objective);
  expect_valid(p, a);
}

TEST(SearchExtensions, SweepPointsAreExactSolvesAndTheFrontIsMonotone) {
  MPQ_NEEDS_GOLDEN();
  auto p = paper_problem(0, true);
  p.constraints.bops = false;
  const Sweep sw = run_sweep(p, parse_sweep("bops=4:36", 20), {});
  ASSERT_EQ(sw.points.size(), 20u);
  EXPECT_EQ(sw.count(Status::kOptimal), 20);
  EXPECT_FALSE(sw.chosen.has_value());
  for (size_t k = 0; k < sw.points.size(); ++k) {
    const SweepPoint& pt = sw.points[k];
    SCOPED_TRACE("point " + std::to_string(k));
    EXPECT_NEAR(pt.budget, 4 + 32.0 * k / 19, 1e-12);
    // The same budget solved alone gives the same optimum.
    auto q = p;
    q.constraints.bops = true;
    q.constraints.bops_wa = pt.budget;
    const SearchResult r = solve(q, {});
    EXPECT_NEAR(pt.result.objective, r.objective, 1e-9);
    EXPECT_LE(pt.used, pt.budget + 1e-9);
    if (k > 0) EXPECT_LE(pt.result.objective, sw.points[k - 1].result.objective + 1e-12);
  }
  // Uniform W = A policies: 2..6 bits, each above or on the front.
  ASSERT_EQ(sw.uniform.size(), 5u);
  for (const SweepPoint& u : sw.uniform)
    for (const SweepPoint& pt : sw.points)
      if (pt.budget >= u.used) EXPECT_LE(pt.result.objective, u.result.objective + 1e-9) << u.label;
  // With --bops --wb 3 --ab 4 beside it, the chosen budget is solved as given.
  auto c = paper_problem(0, true);
  const Sweep with = run_sweep(c, parse_sweep("bops=4:36", 3), {});
  ASSERT_TRUE(with.chosen.has_value());
  EXPECT_NEAR(with.chosen->budget, 12, 1e-12);
  EXPECT_EQ(with.chosen->label, "--wb 3 --ab 4");
  // Compression ratio sweeps run from the loosest budget's side too.
  auto s = paper_problem(0, true);
  s.constraints.bops = false;
  const Sweep cr = run_sweep(s, parse_sweep("cr=6:12.5", 8), {});
  EXPECT_EQ(cr.count(Status::kOptimal), 8);
  for (size_t k = 1; k < cr.points.size(); ++k)
    EXPECT_GE(cr.points[k].result.objective, cr.points[k - 1].result.objective - 1e-12);
  // The files: CSV rows, a YAML/JSON document and an SVG.
  const std::string csv = sweep_csv(p, sw);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + 20 + 5);
  const std::string svg = sweep_svg(p, sw, "resnet50 <test>");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("resnet50 &lt;test&gt;"), std::string::npos);
  EXPECT_NE(svg.find(">W4A4<"), std::string::npos);
}

TEST(SearchExtensions, SweepRangesThatAreEmptyInvertedOrOutOfReachAreRefused) {
  MPQ_NEEDS_GOLDEN();
  auto p = paper_problem(0, true);
  EXPECT_THROW_MSG(parse_sweep("bops=36:4", 10), "the range is inverted");
  EXPECT_THROW_MSG(parse_sweep("bops=4:4", 10), "the range is empty");
  EXPECT_NO_THROW(parse_sweep("bops=4:4", 1));
  EXPECT_THROW_MSG(parse_sweep("latency=1:2", 10), "sweeps 'bops' or 'cr', not 'latency'");
  EXPECT_THROW_MSG(parse_sweep("bops=4-36", 10), "expected bops=FROM:TO");
  EXPECT_THROW_MSG(parse_sweep("bops=a:36", 10), "'a' is not a number");
  EXPECT_THROW_MSG(parse_sweep("bops=4:36", 0), "--points: 0 is out of range");
  EXPECT_THROW_MSG(parse_sweep("bops=-1:36", 10), "budgets must be positive");
  EXPECT_THROW_MSG(run_sweep(p, parse_sweep("bops=2:36", 10), {}),
                   "beyond what the candidates reach (average W x A bits from 4 to 36)");
  EXPECT_THROW_MSG(run_sweep(p, parse_sweep("cr=4:20", 10), {}), "compression ratio from 5.194 to 12.88");
  const auto [lo, hi] = sweep_reach(p, "bops");
  EXPECT_DOUBLE_EQ(lo, 4);
  EXPECT_DOUBLE_EQ(hi, 36);
}

TEST(SearchExtensions, AGapStopsEarlyAndSaysSo) {
  ModelGeometry g;
  mpq::io::Indicators ind;
  mpq::test::make_synthetic(1000, 5, g, ind);
  const auto p = make_problem(g, ind, {8, 7, 6, 5, 4, 3, 2}, 2.0, {true, 3, 4, 12}, true, "synthetic");
  SolveOptions o;
  o.relative_gap = 1e-3;
  const SearchResult r = solve(p, o);
  ASSERT_TRUE(r.status == Status::kWithinGap || r.status == Status::kOptimal) << status_name(r.status);
  EXPECT_LE(r.relative_gap(), 1e-3);
  EXPECT_LE(r.bound, r.objective);
  const SearchResult exact = solve(p, {});
  EXPECT_GE(r.objective, exact.objective - 1e-9);
  EXPECT_LE(r.objective, exact.objective * (1 + 1e-3));
  o.relative_gap = 1.5;
  EXPECT_THROW_MSG(solve(p, o), "--gap: must be at least 0 and below 1");
}

namespace {

// Sum of a policy's BitOPs over the searchable layers.
double bops_of(const SearchProblem& p, const SearchResult& r) {
  double s = 0;
  for (size_t l = 0; l < p.num_layers(); ++l) s += double(p.macs[l]) * r.w_bits[l] * r.a_bits[l];
  return s;
}

}  // namespace

TEST(RandomPolicy, FillsTheBudgetWithinOnePercentIsSeededAndMaximal) {
  MPQ_NEEDS_GOLDEN();
  const SearchProblem p = paper_problem(0, true);  // BitOPs of uniform W3A4 only
  std::set<std::vector<int>> distinct;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const SearchResult r = random_policy(p, seed);
    ASSERT_EQ(r.status, Status::kRandom) << r.message;
    expect_valid(p, r);
    EXPECT_GE(bops_of(p, r), 0.99 * p.bops_budget());
    // Maximal: no single step up (one side of one layer to the next candidate) still fits.
    for (size_t l = 0; l < p.num_layers(); ++l)
      for (int side = 0; side < 2; ++side) {
        const auto& bits = side == 0 ? p.wbits : p.abits;
        const int now = side == 0 ? r.w_bits[l] : r.a_bits[l];
        int next = 99;
        for (int b : bits)
          if (b > now) next = std::min(next, b);
        if (next == 99) continue;
        const double other = side == 0 ? r.a_bits[l] : r.w_bits[l];
        EXPECT_GT(bops_of(p, r) + double(p.macs[l]) * (next - now) * other, p.bops_budget()) << "layer " << l;
      }
    const SearchResult again = random_policy(p, seed);
    EXPECT_EQ(again.w_bits, r.w_bits);
    EXPECT_EQ(again.a_bits, r.a_bits);
    std::vector<int> key = r.w_bits;
    key.insert(key.end(), r.a_bits.begin(), r.a_bits.end());
    distinct.insert(key);
  }
  EXPECT_GE(distinct.size(), 19u);  // 52 layers: seeds do not collide
}

TEST(RandomPolicy, KeepsEveryBudgetAndRuleOfRandomProblems) {
  Random R(77);
  int drawn = 0;
  for (int trial = 0; trial < 300; ++trial) {
    SearchProblem p;
    if (!random_problem(R, trial, p) || !p.tie.empty()) continue;
    if (!p.constraints.bops && p.constraints.cr == 0 && p.constraints.max_cost == 0) {
      EXPECT_THROW(random_policy(p, 1), mpq::InputError);  // nothing to fill: every layer would go to the top
      continue;
    }
    const SearchResult r = random_policy(p, static_cast<uint64_t>(trial), /*min_fill=*/0.0);
    if (r.status != Status::kRandom) {
      EXPECT_EQ(r.status, Status::kInfeasible);
      EXPECT_FALSE(r.message.empty());
      continue;
    }
    ++drawn;
    expect_valid(p, r);
  }
  EXPECT_GT(drawn, 50);
}

TEST(RandomPolicy, UnreachableFillAndTiesAreRefused) {
  MPQ_NEEDS_GOLDEN();
  SearchProblem p = paper_problem(0, true);
  const SearchResult r = random_policy(p, 1, /*min_fill=*/1.0, /*max_draws=*/5);
  EXPECT_EQ(r.status, Status::kInfeasible);
  EXPECT_NE(r.message.find("--random-fill"), std::string::npos) << r.message;
  apply_layer_rules(p, {parse_layer_rule(LayerRule::Kind::kTie, "--tie", "layer1.0.conv1,layer1.0.conv2")});
  EXPECT_THROW(random_policy(p, 1), mpq::InputError);
}

TEST(ReverseImportance, PermutesWholeTablesInReversedOrderOfSensitivity) {
  MPQ_NEEDS_GOLDEN();
  const auto ind = mpq::io::load_indicators(mpq::test::golden("importance_indicators_resnet50.pkl"));
  const auto rev = reverse_importance(ind, 2.0);
  const size_t L = ind.layer_names.size();
  auto score = [](const mpq::io::Indicators& x, size_t l) {
    auto rise = [](const std::map<int, double>& t) { return t.begin()->second - t.rbegin()->second; };
    return rise(x.act[l]) + 2.0 * rise(x.weight[l]);
  };
  ASSERT_EQ(rev.layer_names, ind.layer_names);
  size_t most = 0, least = 0;
  for (size_t l = 0; l < L; ++l) {
    if (score(ind, l) > score(ind, most)) most = l;
    if (score(ind, l) < score(ind, least)) least = l;
  }
  EXPECT_EQ(rev.weight[least], ind.weight[most]);
  EXPECT_EQ(rev.act[least], ind.act[most]);
  EXPECT_EQ(rev.weight[most], ind.weight[least]);
  // Every table moves whole: the reversed set is a permutation of the original's.
  std::multiset<std::pair<std::map<int, double>, std::map<int, double>>> a, b;
  for (size_t l = 0; l < L; ++l) a.insert({ind.weight[l], ind.act[l]}), b.insert({rev.weight[l], rev.act[l]});
  EXPECT_EQ(a, b);
  // Sensitivity order reversed: rank of a layer before = L - 1 - its rank after.
  std::vector<double> before(L), after(L);
  for (size_t l = 0; l < L; ++l) before[l] = score(ind, l), after[l] = score(rev, l);
  for (size_t x = 0; x < L; ++x)
    for (size_t y = 0; y < L; ++y)
      if (before[x] < before[y]) EXPECT_GE(after[x], after[y]) << x << " " << y;
}

// A policy read from text, as from the file `mpq search` writes; messages
// name the given source.
TEST(Policy, TextReaderReadsAPolicyAndNamesTheSourceInErrors) {
  const PolicyBits p = load_policy_text("model: resnet20\nlayers: [a, b]\nweight_bits: [4, 3]\nact_bits: [4, 2]\n",
                                        "given");
  EXPECT_EQ(p.model, "resnet20");
  EXPECT_EQ(p.layers, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(p.weight_bits, (std::vector<int>{4, 3}));
  EXPECT_EQ(p.act_bits, (std::vector<int>{4, 2}));
  auto error_of = [](const std::string& text) {
    try {
      load_policy_text(text, "given");
    } catch (const mpq::InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_of("layers: [a]\nweight_bits: [40]\nact_bits: [4]\n"),
            "given:2:15: weight_bits holds 40 (expected 1 to 32 bits)");
  EXPECT_EQ(error_of("layers: [a, b]\nweight_bits: [4]\nact_bits: [4]\n"),
            "given: 2 layers but 1 weight_bits and 1 act_bits");
  EXPECT_EQ(error_of("[1, 2]"), "given: not a policy file (expected a mapping written by `mpq search`)");
}

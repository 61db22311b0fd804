// The search: the paper's case against the original's policy, both methods
// against brute force on random small problems, infeasibility, time limits.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include <yaml-cpp/yaml.h>

#include "mpq/common/error.h"
#include "mpq/io/indicators.h"
#include "mpq/search/geometry.h"
#include "mpq/search/search.h"
#include "synthetic.h"
#include "test_util.h"

using namespace mpq::search;

namespace {

SearchProblem paper_problem(double cr = 12.2, bool bops = true) {
  const auto g = zoo_geometry("resnet50");
  const auto ind = mpq::io::load_indicators(mpq::test::golden("importance_indicators_resnet50.pkl"));
  return make_problem(g, ind, {6, 5, 4, 3, 2}, 2.0, {bops, 3, 4, cr}, true, "r50.pkl");
}

// Exhaustive minimum over every (w, a) per layer; +inf when infeasible.
double brute_force(const SearchProblem& p) {
  const size_t L = p.num_layers(), K = p.bits.size();
  const double bcap = p.constraints.bops ? p.bops_budget() : INFINITY;
  const double scap = p.constraints.cr != 0 ? p.size_budget() : INFINITY;
  double best = INFINITY;
  std::function<void(size_t, double, double, double)> go = [&](size_t l, double cost, double bops, double size) {
    if (bops > bcap || size > scap) return;
    if (l == L) {
      best = std::min(best, cost);
      return;
    }
    for (size_t i = 0; i < K; ++i)
      for (size_t j = 0; j < K; ++j)
        go(l + 1, cost + p.a[l][j] + p.alpha * p.w[l][i], bops + double(p.macs[l]) * p.bits[i] * p.bits[j],
           size + double(p.params[l]) * p.bits[i]);
  };
  go(0, 0, 0, 0);
  return best;
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
    const double best = brute_force(p);
    for (Method m : {Method::kExact, Method::kCbc}) {
      SolveOptions o;
      o.method = m;
      const SearchResult r = solve(p, o);
      SCOPED_TRACE("trial " + std::to_string(trial) + (m == Method::kExact ? " exact" : " cbc"));
      if (std::isinf(best)) {
        EXPECT_EQ(r.status, Status::kInfeasible);
        continue;
      }
      ASSERT_EQ(r.status, Status::kOptimal);
      EXPECT_NEAR(r.objective, best, 1e-9 * std::max(1.0, std::abs(best)));
      const Report rep = make_report(p, r.w_bits, r.a_bits);
      if (c.cr != 0) EXPECT_GE(rep.compression_ratio, c.cr * (1 - 1e-12));
    }
    feasible += std::isfinite(best);
  }
  EXPECT_GT(feasible, 75);
}

TEST(Search, InfeasibleSaysWhichConstraintAndTheBestReachable) {
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

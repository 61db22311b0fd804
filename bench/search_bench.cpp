// Search benchmark: the paper's ResNet-50 case and the synthetic 200/1000-layer
// instances of ../shared/golden/synthetic, exact method against plain CBC in
// one run. Prints median solve times, ratios and objectives against the
// original's. Usage: search_bench GOLDEN_DIR [repeats] [--with-cbc-1000 | --exact-only]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include "mpq/io/indicators.h"
#include "mpq/search/geometry.h"
#include "mpq/search/search.h"
#include "mpq/search/sweep.h"
#include "synthetic.h"

using namespace mpq;

namespace {

struct Case {
  std::string name;
  search::SearchProblem problem;
  double reference_objective;
};

Case paper(const std::string& golden) {
  const auto g = search::zoo_geometry("resnet50");
  const auto ind = io::load_indicators(golden + "/importance_indicators_resnet50.pkl");
  search::Constraints c{true, 3, 4, 12.2};
  const YAML::Node ref = YAML::LoadFile(golden + "/search_paper_r50.json");
  return {"paper resnet50 (52x25)", search::make_problem(g, ind, {6, 5, 4, 3, 2}, 2.0, c, true, "paper"),
          ref["objective"].as<double>()};
}

Case synthetic(const std::string& golden, const std::string& tag) {
  const std::string base = golden + "/synthetic/synthetic_" + tag;
  const YAML::Node j = YAML::LoadFile(base + ".json");
  search::ModelGeometry g;
  g.model = "synthetic_" + tag;
  for (const auto& l : j["layers"]) {
    search::LayerGeometry lg;
    lg.name = l["name"].as<std::string>();
    lg.params = l["params"].as<int64_t>();
    lg.macs = lg.original_macs = l["macs"].as<int64_t>();
    lg.searchable = true;
    g.layers.push_back(lg);
  }
  const auto ind = io::load_indicators(base + ".pkl");
  search::Constraints c{true, j["wb"].as<double>(), j["ab"].as<double>(), j["cr"].as<double>()};
  const auto bits = j["candidates"].as<std::vector<int>>();
  const size_t pairs = g.layers.size() * bits.size() * bits.size();
  return {"synthetic " + tag + " (" + std::to_string(pairs) + " binaries)",
          search::make_problem(g, ind, bits, j["alpha"].as<double>(), c, true, base + ".pkl"),
          j["reference_objective"].as<double>()};
}

struct Timing {
  double median_s = 0;
  search::SearchResult last;
};

Timing run(const Case& c, search::Method m, int repeats, double limit) {
  std::vector<double> ts;
  Timing t;
  for (int i = 0; i < repeats; ++i) {
    search::SolveOptions o;
    o.method = m;
    o.time_limit_s = limit;
    const auto t0 = std::chrono::steady_clock::now();
    t.last = search::solve(c.problem, o);
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  t.median_s = ts[ts.size() / 2];
  return t;
}

void report(const Case& c, const char* method, const Timing& t) {
  const auto& r = t.last;
  std::printf("| %-32s | %-5s | %10.3f ms | %-10s | %.6f | %.6f | %.1e | %lld / %lld / %lld | %lld |\n", c.name.c_str(),
              method, t.median_s * 1e3, search::status_name(r.status), r.objective, c.reference_objective,
              r.relative_gap(), static_cast<long long>(r.pairs), static_cast<long long>(r.pairs_kept),
              static_cast<long long>(r.pairs_left), static_cast<long long>(r.dfs_nodes));
}

// The sweep of the paper's indicators: 100 BitOPs budgets (average W x A
// of 4 to 36 bits), alone or beside the paper's --cr 12.2.
void sweep_case(const std::string& golden, bool with_cr, int repeats) {
  const auto g = search::zoo_geometry("resnet50");
  const auto ind = io::load_indicators(golden + "/importance_indicators_resnet50.pkl");
  search::Constraints c{true, 3, 4, with_cr ? 12.2 : 0.0};
  if (!with_cr) c.bops = false;
  auto p = search::make_problem(g, ind, {6, 5, 4, 3, 2}, 2.0, with_cr ? c : search::Constraints{true, 3, 4, 0}, true, "paper");
  p.constraints = c;
  std::vector<double> ts;
  search::Sweep sw;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    sw = search::run_sweep(p, {"bops", 4, 36, 100}, {});
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  int64_t nodes = 0;
  for (const auto& pt : sw.points) nodes += pt.result.dfs_nodes;
  std::printf("| sweep resnet50 bops=4:36, 100 points%s | %10.3f ms | %d optimal of %zu | %lld search nodes |\n",
              with_cr ? ", --cr 12.2" : "", ts[ts.size() / 2] * 1e3, sw.count(search::Status::kOptimal), sw.points.size(),
              static_cast<long long>(nodes));
}

// 10,000 layers x 7 candidates (49 pairs each) with BitOPs, size and a
// latency-like cost table at once. The table favours even bit-widths, so
// it is not monotone in the bits.
void big_case(int repeats, double rel_gap) {
  search::ModelGeometry g;
  io::Indicators ind;
  test::make_synthetic(10000, 7, g, ind);
  const std::vector<int> bits = {8, 7, 6, 5, 4, 3, 2};
  auto p = search::make_problem(g, ind, bits, 2.0, {true, 3, 4, 9.0}, true, "synthetic");
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> u(0.95, 1.05);
  p.cost.assign(p.num_layers(), std::vector<double>(p.num_pairs()));
  double uniform44 = 0;
  for (size_t l = 0; l < p.num_layers(); ++l)
    for (size_t i = 0; i < bits.size(); ++i)
      for (size_t j = 0; j < bits.size(); ++j) {
        const int w = bits[i], a = bits[j];
        const double lat = 0.3 + 0.05 * (w + a) + ((w % 2) || (a % 2) ? 0.1 : 0.0);
        p.cost[l][i * bits.size() + j] = static_cast<double>(p.macs[l]) * 1e-9 * lat * u(rng);
        if (w == 4 && a == 4) uniform44 += p.cost[l][i * bits.size() + j];
      }
  p.constraints.max_cost = 0.9 * uniform44;
  p.cost_table = "synthetic";
  std::vector<double> ts;
  search::SearchResult r;
  for (int i = 0; i < repeats; ++i) {
    search::SolveOptions o;
    o.time_limit_s = 60;
    o.relative_gap = rel_gap;
    const auto t0 = std::chrono::steady_clock::now();
    r = search::solve(p, o);
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  const auto rep = search::make_report(p, r.w_bits, r.a_bits);
  std::printf("| synthetic 10000x7, --bops 3x4 --cr 9 --max-cost 0.9 x W4A4, --gap %g | %10.3f ms | %s, gap %.1e | %lld search nodes, "
              "%d CBC nodes; cr %.4f, cost %.4f of %.4f |\n",
              rel_gap, ts[ts.size() / 2] * 1e3, search::status_name(r.status), r.relative_gap(), static_cast<long long>(r.dfs_nodes),
              r.cbc_nodes, rep.compression_ratio, rep.cost, p.constraints.max_cost);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: search_bench GOLDEN_DIR [repeats] [--with-cbc-1000 | --exact-only | --features]\n");
    return 2;
  }
  spdlog::set_level(std::getenv("BENCH_TRACE") ? spdlog::level::trace : spdlog::level::warn);
  const std::string golden = argv[1];
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 21;
  const bool cbc_1000 = argc > 3 && std::strcmp(argv[3], "--with-cbc-1000") == 0;
  const bool no_cbc = argc > 3 && std::strcmp(argv[3], "--exact-only") == 0;
  std::printf("| case | method | median solve | status | objective | original's objective | gap | pairs / pruned / within gap | search nodes |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  std::vector<Case> cases = {paper(golden), synthetic(golden, "200x5"), synthetic(golden, "200x7"),
                             synthetic(golden, "1000x5"), synthetic(golden, "1000x7")};
  const bool features_only = argc > 3 && std::strcmp(argv[3], "--features") == 0;
  if (features_only) cases.clear();
  for (const auto& c : cases) {
    const Timing ex = run(c, search::Method::kExact, c.problem.num_layers() > 500 ? std::max(3, repeats / 4) : repeats, 60);
    report(c, "exact", ex);
    const bool big = c.problem.num_layers() > 500;
    if (!no_cbc && (!big || cbc_1000)) {
      const Timing cb = run(c, search::Method::kCbc, big || c.problem.num_layers() > 100 ? 1 : repeats, 300);
      report(c, "cbc", cb);
      std::printf("| %-32s | ratio | %10.1fx | | | | | |\n", c.name.c_str(), cb.median_s / ex.median_s);
    }
  }
  std::printf("\n| case | median time | status | |\n|---|---|---|---|\n");
  sweep_case(golden, false, repeats);
  sweep_case(golden, true, repeats);
  big_case(std::max(1, repeats / 7), 1e-6);
  big_case(std::max(1, repeats / 7), 0);
  return 0;
}

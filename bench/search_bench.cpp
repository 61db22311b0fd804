// Search benchmark: the paper's ResNet-50 case and the synthetic 200/1000-layer
// instances of ../shared/golden/synthetic, exact method against plain CBC in
// one run. Prints median solve times, ratios and objectives against the
// original's. Usage: search_bench GOLDEN_DIR [repeats] [--with-cbc-1000]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include "mpq/io/indicators.h"
#include "mpq/search/geometry.h"
#include "mpq/search/search.h"

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
  std::printf("| %-32s | %-5s | %10.3f ms | %-10s | %.6f | %.6f | %.1e | %lld / %lld / %lld |\n", c.name.c_str(), method,
              t.median_s * 1e3, search::status_name(r.status), r.objective, c.reference_objective, r.relative_gap(),
              static_cast<long long>(r.pairs), static_cast<long long>(r.pairs_kept), static_cast<long long>(r.pairs_left));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: search_bench GOLDEN_DIR [repeats] [--with-cbc-1000]\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  const std::string golden = argv[1];
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 21;
  const bool cbc_1000 = argc > 3 && std::strcmp(argv[3], "--with-cbc-1000") == 0;
  std::printf("| case | method | median solve | status | objective | original's objective | gap | pairs / pruned / within gap |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  std::vector<Case> cases = {paper(golden), synthetic(golden, "200x5"), synthetic(golden, "200x7"),
                             synthetic(golden, "1000x5"), synthetic(golden, "1000x7")};
  for (const auto& c : cases) {
    const Timing ex = run(c, search::Method::kExact, c.problem.num_layers() > 500 ? std::max(3, repeats / 4) : repeats, 60);
    report(c, "exact", ex);
    const bool big = c.problem.num_layers() > 500;
    if (!big || cbc_1000) {
      const Timing cb = run(c, search::Method::kCbc, big || c.problem.num_layers() > 100 ? 1 : repeats, 300);
      report(c, "cbc", cb);
      std::printf("| %-32s | ratio | %10.1fx | | | | | |\n", c.name.c_str(), cb.median_s / ex.median_s);
    }
  }
  return 0;
}

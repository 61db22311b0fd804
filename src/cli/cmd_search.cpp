// mpq search: the bit-width ILP, torch-free.
#include <cmath>
#include <cstdio>
#include <memory>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "mpq/common/error.h"
#include "mpq/io/indicators.h"
#include "mpq/search/geometry.h"
#include "mpq/search/policy.h"
#include "mpq/search/search.h"

namespace mpq::cli {

namespace {

struct SearchArgs {
  std::string model, geometry, indicators, output, solver = "exact", macs = "original";
  std::vector<int> bits;
  double wb = 0, ab = 0, cr = 0, alpha = 2.0, time_limit_s = 60;
  bool bops = false, json = false, no_outlier_rule = false;
  int input_size = 224, in_channels = 3, num_classes = 1000;
};

void run_search(const SearchArgs& a) {
  MPQ_CHECK(!a.model.empty() || !a.geometry.empty(), "search: name the network with --model (resnet18, resnet50, "
            "mobilenetv1, resnet20) or describe it with --geometry FILE");
  io::check_output_is_not_an_input("-o", a.output, {{"--i", a.indicators}, {"--geometry", a.geometry}});
  search::ModelGeometry geometry;
  if (!a.geometry.empty()) {
    geometry = search::load_geometry(a.geometry, a.model);
  } else {
    search::InputShape in;
    in.height = in.width = a.input_size;
    in.channels = a.in_channels;
    in.num_classes = a.num_classes;
    geometry = search::zoo_geometry(a.model, in);
  }
  const io::Indicators ind = io::load_indicators(a.indicators);
  search::Constraints c;
  c.bops = a.bops;
  c.wb = a.wb;
  c.ab = a.ab;
  c.cr = a.cr;
  const bool outliers = !a.no_outlier_rule;
  const search::SearchProblem problem = search::make_problem(
      geometry, ind, a.bits, a.alpha, c, outliers, a.indicators,
      a.macs == "exact" ? search::MacsCount::kExact : search::MacsCount::kOriginal);
  search::SolveOptions opt;
  opt.method = a.solver == "cbc" ? search::Method::kCbc : search::Method::kExact;
  opt.time_limit_s = a.time_limit_s;
  const search::SearchResult r = search::solve(problem, opt);
  switch (r.status) {
    case search::Status::kInfeasible: throw Error(r.message, ExitCode::kInfeasible);
    case search::Status::kTimeLimitNoSolution: throw Error(r.message, ExitCode::kTimeLimit);
    case search::Status::kTimeLimit:
      spdlog::warn("search: time limit of {} s reached; the best solution found is within a relative gap of {:.3g} "
                   "(objective {:.8f}, bound {:.8f}); raise --time-limit to prove optimality",
                   a.time_limit_s, r.relative_gap(), r.objective, r.bound);
      break;
    case search::Status::kOptimal: break;
  }
  search::Policy pol;
  pol.model = geometry.model;
  pol.geometry = a.geometry;
  pol.indicators_path = a.indicators;
  pol.indicators_sha256 = io::sha256_file(a.indicators);
  pol.method = a.solver;
  pol.outlier_rule = outliers;
  pol.problem = &problem;
  pol.result = &r;
  pol.report = search::make_report(problem, r.w_bits, r.a_bits);
  const auto& rep = pol.report;
  spdlog::info("search: {} in {:.2f} ms, objective {:.8f} ({} pairs, {} after pruning, {} within the gap)",
               search::status_name(r.status), r.seconds * 1e3, r.objective, r.pairs, r.pairs_kept, r.pairs_left);
  spdlog::info("search: average bits W {:.4f} A {:.4f}; compression {:.4f}x, {:.3f} MB -> {:.3f} MB; {:.3f} GBitOPs{}",
               rep.avg_weight_bits, rep.avg_act_bits, rep.compression_ratio, rep.fp_size_mb, rep.size_mb, rep.gbitops,
               rep.target_gbitops > 0 ? fmt::format(" (uniform W{:g}A{:g}: {:.3f})", c.wb, c.ab, rep.target_gbitops) : "");
  const std::string text = a.json ? search::policy_json(pol) : search::policy_yaml(pol);
  if (a.output.empty() || a.output == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  } else {
    io::write_file_atomic(a.output, text);
    spdlog::info("search: policy written to {}", a.output);
  }
}

}  // namespace

Command setup_search(CLI::App& app) {
  auto a = std::make_shared<SearchArgs>();
  CLI::App* sub = app.add_subcommand("search", "pick every layer's weight/activation bits with one ILP (torch-free)");
  sub->add_option("--model", a->model, "zoo network: resnet18, resnet50, mobilenetv1, resnet20");
  sub->add_option("--geometry", a->geometry, "layer geometry file (YAML/JSON) for a network outside the zoo")
      ->check(CLI::ExistingFile);
  sub->add_option("--i,--indicators", a->indicators, "indicator file (pickle) from `mpq extract`")->required();
  sub->add_option("--b,--bits", a->bits, "candidate bit-widths, distinct, 2..16 (e.g. 6 5 4 3 2)")->required();
  sub->add_option("--wb", a->wb, "uniform weight bits that set the BitOPs budget");
  sub->add_option("--ab", a->ab, "uniform activation bits that set the BitOPs budget");
  sub->add_option("--cr", a->cr, "minimum compression ratio against 32-bit weights; 0 disables (default 0)");
  sub->add_flag("--bops", a->bops, "constrain BitOPs to those of uniform --wb/--ab");
  sub->add_option("--alpha", a->alpha, "weight of the weight indicators in the objective (default 2)");
  sub->add_option("--time-limit", a->time_limit_s, "solver time limit in seconds (default 60)");
  sub->add_option("--solver", a->solver, "exact (default: pruning, Lagrangian bound, exact depth-first search) or cbc (the plain formulation)")
      ->check(CLI::IsMember({"exact", "cbc"}));
  sub->add_option("--macs", a->macs,
                  "BitOPs MAC count: original (default: as the original script, reproduces the paper) or exact")
      ->check(CLI::IsMember({"original", "exact"}));
  sub->add_flag("--no-outlier-rule", a->no_outlier_rule, "keep the indicator tables as they are (default: the original's rule)");
  sub->add_option("-o,--output", a->output, "write the policy here instead of stdout ('-': stdout)");
  sub->add_flag("--json", a->json, "write the policy as JSON instead of YAML");
  sub->add_option("--input-size", a->input_size, "zoo geometry: input height and width (default 224)")
      ->check(CLI::Range(1, 16384));
  sub->add_option("--in-channels", a->in_channels, "zoo geometry: input channels (default 3)")
      ->check(CLI::Range(1, 65536));
  sub->add_option("--num-classes", a->num_classes, "zoo geometry: classes of the fc layer (default 1000)")
      ->check(CLI::Range(1, 10000000));
  return {sub, [a] { run_search(*a); }};
}

}  // namespace mpq::cli

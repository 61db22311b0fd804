// mpq search: the bit-width ILP, torch-free.
#include <cmath>
#include <cstdio>
#include <memory>
#include <tuple>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "mpq/common/error.h"
#include "mpq/common/text.h"
#include "mpq/io/indicators.h"
#include "mpq/search/geometry.h"
#include "mpq/search/policy.h"
#include "mpq/search/search.h"
#include "mpq/search/sweep.h"

namespace mpq::cli {

namespace {

struct SearchArgs {
  std::string model, geometry, indicators, output, solver = "exact", macs = "original";
  std::vector<int> bits, wbits, abits;
  double wb = 0, ab = 0, cr = 0, alpha = 2.0, time_limit_s = 60, max_cost = 0, relative_gap = 0;
  bool bops = false, json = false, no_outlier_rule = false, reverse = false;
  int64_t random_seed = -1;
  double random_fill = 0.99;
  int input_size = 224, in_channels = 3, num_classes = 1000;
  std::string cost_table, max_act_mem, sweep, csv, svg;
  int points = 50;
  std::vector<std::string> pins, min_bits, max_bits, same_wa, ties;
  const CLI::Option *fill_opt = nullptr, *points_opt = nullptr, *wb_opt = nullptr, *ab_opt = nullptr, *gap_opt = nullptr;
};

// "512K", "1.5MiB", "200000": bytes (K/M/G are powers of 1024, KB/MB/GB of 1000).
double parse_bytes(const std::string& s) {
  const size_t used = s.find_first_not_of("0123456789.eE+-");
  const auto number = parse_double(s.substr(0, used));
  const std::string unit = used == std::string::npos ? "" : s.substr(used);
  const double v = number ? *number : 0;
  double scale = 0;
  for (const auto& [u, f] : std::vector<std::pair<std::string, double>>{
           {"", 1}, {"B", 1}, {"K", 1024}, {"KiB", 1024}, {"M", 1048576}, {"MiB", 1048576}, {"G", 1073741824},
           {"GiB", 1073741824}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}})
    if (unit == u) scale = f;
  MPQ_CHECK(number && scale > 0 && v > 0, "--max-act-mem: '", s,
            "' is not a size (a positive number of bytes, optionally with K, M, G (KiB...) or KB, MB, GB)");
  return std::floor(v * scale);
}

search::Candidates candidates(const SearchArgs& a) {
  MPQ_CHECK(!a.bits.empty() || (!a.wbits.empty() && !a.abits.empty()),
            "search: give the candidate bit-widths with --b (both), or with --wbits and --abits");
  return {a.wbits.empty() ? a.bits : a.wbits, a.abits.empty() ? a.bits : a.abits};
}

void write_output(const std::string& path, const std::string& text, const char* what) {
  if (path.empty() || path == "-") {
    io::write_file_atomic("-", text);
  } else {
    io::write_file_atomic(path, text);
    spdlog::info("search: {} written to {}", what, path);
  }
}

void run_search(const SearchArgs& a) {
  MPQ_CHECK(!a.model.empty() || !a.geometry.empty(), "search: name the network with --model (resnet18, resnet50, "
            "mobilenetv1, resnet20) or describe it with --geometry FILE");
  MPQ_CHECK(a.cost_table.empty() == (a.max_cost == 0), a.cost_table.empty()
            ? "--max-cost: needs the cost table it bounds (--cost-table FILE)"
            : "--cost-table: needs a budget on it (--max-cost X, in the table's unit)");
  MPQ_CHECK(a.csv.empty() || a.csv != a.svg, "--csv and --svg name the same file");
  MPQ_CHECK(a.bops || (a.wb_opt->count() == 0 && a.ab_opt->count() == 0),
            "--wb/--ab: set the BitOPs budget only with --bops (add --bops, or drop them)");
  MPQ_CHECK(!a.sweep.empty() || a.points_opt->count() == 0, "--points: only with --sweep");
  MPQ_CHECK(a.solver != "cbc" || a.gap_opt->count() == 0,
            "--gap: only with the exact solver (--solver cbc proves the optimum or stops at --time-limit)");
  if (a.sweep.empty())
    MPQ_CHECK(a.csv.empty() && a.svg.empty(), a.csv.empty() ? "--svg" : "--csv", ": only with --sweep");
  const std::vector<std::pair<std::string, std::string>> inputs = {
      {"--i", a.indicators}, {"--geometry", a.geometry}, {"--cost-table", a.cost_table}};
  for (const auto& [flag, out] : {std::pair{"-o", a.output}, {"--csv", a.csv}, {"--svg", a.svg}}) {
    io::check_output_is_not_an_input(flag, out, inputs);
    io::check_output_writable(flag, out);
  }
  MPQ_CHECK(a.output.empty() || a.output == "-" || (a.output != a.csv && a.output != a.svg),
            "-o names the same file as --csv or --svg");
  const search::SweepSpec spec = a.sweep.empty() ? search::SweepSpec{} : search::parse_sweep(a.sweep, a.points);
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
  MPQ_CHECK(a.random_seed < 0 || a.sweep.empty(), "--random-policy: draws one policy; drop --sweep");
  MPQ_CHECK(a.random_seed >= 0 || a.fill_opt->count() == 0, "--random-fill: only with --random-policy SEED");
  const io::Indicators loaded = io::load_indicators(a.indicators);
  const io::Indicators ind = a.reverse ? search::reverse_importance(loaded, a.alpha) : loaded;
  search::Constraints c;
  c.bops = a.bops;
  c.wb = a.wb;
  c.ab = a.ab;
  c.cr = a.cr;
  c.max_cost = a.max_cost;
  c.max_act_bytes = a.max_act_mem.empty() ? 0 : parse_bytes(a.max_act_mem);
  const bool outliers = !a.no_outlier_rule;
  // A sweep supplies its own budget: the problem needs no other.
  search::Constraints checked = c;
  if (spec.resource == "bops" && !c.bops) checked.bops = true, checked.bops_wa = spec.from;
  if (spec.resource == "cr" && c.cr == 0) checked.cr = spec.from;
  search::SearchProblem problem = search::make_problem(
      geometry, ind, candidates(a), a.alpha, checked, outliers, a.indicators,
      a.macs == "exact" ? search::MacsCount::kExact : search::MacsCount::kOriginal);
  problem.constraints = c;
  std::vector<search::LayerRule> rules;
  using K = search::LayerRule::Kind;
  for (const auto& [kind, flag, values] : {std::tuple{K::kPin, "--pin", &a.pins}, {K::kMin, "--min-bits", &a.min_bits},
                                           {K::kMax, "--max-bits", &a.max_bits}, {K::kSameWA, "--same-wa", &a.same_wa},
                                           {K::kTie, "--tie", &a.ties}})
    for (const auto& v : *values) rules.push_back(search::parse_layer_rule(kind, flag, v));
  if (!rules.empty()) search::apply_layer_rules(problem, rules);
  if (!a.cost_table.empty()) search::apply_cost_table(problem, geometry, search::load_cost_table(a.cost_table));
  // Activation sizes: needed by --max-act-mem, reported wherever the geometry gives them.
  try {
    search::apply_activation_sizes(problem, geometry);
  } catch (const InputError&) {
    if (c.max_act_bytes > 0) throw;
    problem.act_elems.clear();
    problem.excepted_act.clear();
  }
  search::SolveOptions opt;
  opt.method = a.solver == "cbc" ? search::Method::kCbc : search::Method::kExact;
  opt.time_limit_s = a.time_limit_s;
  opt.relative_gap = a.relative_gap;
  search::Policy pol;
  pol.model = geometry.model;
  pol.geometry = a.geometry;
  pol.indicators_path = a.indicators;
  pol.indicators_sha256 = io::sha256_file(a.indicators);
  pol.method = a.random_seed >= 0 ? fmt::format("random (seed {})", a.random_seed) : a.solver;
  if (a.reverse) pol.method += ", reversed indicators";
  pol.outlier_rule = outliers;
  pol.problem = &problem;

  if (!spec.resource.empty()) {
    const search::Sweep sw = search::run_sweep(problem, spec, opt);
    spdlog::info("search: swept {} from {:g} to {:g} in {} points: {} optimal, {} infeasible, {} at the time limit or --gap; "
                 "{:.2f} ms in all",
                 spec.resource, spec.from, spec.to, sw.points.size(), sw.count(search::Status::kOptimal),
                 sw.count(search::Status::kInfeasible),
                 sw.count(search::Status::kTimeLimit) + sw.count(search::Status::kTimeLimitNoSolution) +
                     sw.count(search::Status::kWithinGap),
                 sw.seconds * 1e3);
    // Files first, stdout last: a failing write leaves no partial set behind on stdout.
    if (!a.csv.empty()) write_output(a.csv, search::sweep_csv(problem, sw), "sweep table");
    if (!a.svg.empty())
      write_output(a.svg,
                   search::sweep_svg(problem, sw, fmt::format("{}: objective against {}", geometry.model,
                                                              spec.resource == "bops" ? "GBitOPs" : "size")),
                   "sweep plot");
    write_output(a.output, a.json ? search::sweep_json(pol, sw) : search::sweep_yaml(pol, sw), "sweep");
    return;
  }

  const search::SearchResult r = a.random_seed >= 0
      ? search::random_policy(problem, static_cast<uint64_t>(a.random_seed), a.random_fill)
      : search::solve(problem, opt);
  switch (r.status) {
    case search::Status::kInfeasible: throw Error(r.message, ExitCode::kInfeasible);
    case search::Status::kTimeLimitNoSolution: throw Error(r.message, ExitCode::kTimeLimit);
    case search::Status::kTimeLimit:
      spdlog::warn("search: time limit of {} s reached; the best solution found is within a relative gap of {:.3g} "
                   "(objective {:.8f}, bound {:.8f}); raise --time-limit to prove optimality",
                   a.time_limit_s, r.relative_gap(), r.objective, r.bound);
      break;
    case search::Status::kWithinGap:
      spdlog::info("search: stopped within the relative gap {:.3g} of the optimum (--gap {:g}; objective {:.8f}, "
                   "bound {:.8f})", r.relative_gap(), a.relative_gap, r.objective, r.bound);
      break;
    case search::Status::kOptimal:
    case search::Status::kRandom: break;
  }
  pol.result = &r;
  pol.report = search::make_report(problem, r.w_bits, r.a_bits);
  const auto& rep = pol.report;
  spdlog::info("search: {} in {:.2f} ms, objective {:.8f} ({} pairs, {} after pruning, {} within the gap)",
               search::status_name(r.status), r.seconds * 1e3, r.objective, r.pairs, r.pairs_kept, r.pairs_left);
  spdlog::info("search: average bits W {:.4f} A {:.4f}; compression {:.4f}x, {:.3f} MB -> {:.3f} MB; {:.3f} GBitOPs{}",
               rep.avg_weight_bits, rep.avg_act_bits, rep.compression_ratio, rep.fp_size_mb, rep.size_mb, rep.gbitops,
               rep.target_gbitops > 0 ? fmt::format(" (uniform W{:g}A{:g}: {:.3f})", c.wb, c.ab, rep.target_gbitops) : "");
  if (rep.cost >= 0 || rep.peak_act_bytes >= 0)
    spdlog::info("search: {}{}", rep.cost >= 0 ? fmt::format("cost {:.6g} {} ", rep.cost, problem.cost_unit) : "",
                 rep.peak_act_bytes >= 0
                     ? fmt::format("peak activation {} bytes ({})", rep.peak_act_bytes, rep.peak_act_layer)
                     : "");
  write_output(a.output, a.json ? search::policy_json(pol) : search::policy_yaml(pol), "policy");
}

}  // namespace

Command setup_search(CLI::App& app) {
  auto a = std::make_shared<SearchArgs>();
  CLI::App* sub = app.add_subcommand("search", "pick every layer's weight/activation bits with one ILP (torch-free)");
  sub->add_option("--model", a->model, "zoo network: resnet18, resnet50, mobilenetv1, resnet20");
  sub->add_option("--geometry", a->geometry, "layer geometry file (YAML/JSON) for a network outside the zoo")
      ->check(CLI::ExistingFile);
  sub->add_option("--i,--indicators", a->indicators, "indicator file (pickle) from `mpq extract`")->required();
  sub->add_option("--b,--bits", a->bits, "candidate bit-widths for weights and activations, distinct, 2..16 (e.g. 6 5 4 3 2)");
  sub->add_option("--wbits", a->wbits, "weight candidates, when they differ from --b");
  sub->add_option("--abits", a->abits, "activation candidates, when they differ from --b");
  a->wb_opt = sub->add_option("--wb", a->wb, "uniform weight bits that set the BitOPs budget (with --bops)");
  a->ab_opt = sub->add_option("--ab", a->ab, "uniform activation bits that set the BitOPs budget (with --bops)");
  sub->add_option("--cr", a->cr, "minimum compression ratio against 32-bit weights; 0 disables (default 0)");
  sub->add_flag("--bops", a->bops, "constrain BitOPs to those of uniform --wb/--ab");
  sub->add_option("--cost-table", a->cost_table,
                  "per-layer cost of every (weight, act) pair, CSV layer,w_bits,a_bits,cost[,unit] (docs/FORMATS.md)")
      ->check(CLI::ExistingFile);
  sub->add_option("--max-cost", a->max_cost, "budget on the cost table's total, in its unit (needs --cost-table)");
  sub->add_option("--max-act-mem", a->max_act_mem,
                  "budget on the largest activation tensor a layer reads at its bits, e.g. 200K or 1.5MiB");
  sub->add_option("--pin", a->pins, "fix a layer's bits: LAYER=W/A (repeatable; LAYER may be a pattern like 'layer4.*')");
  sub->add_option("--min-bits", a->min_bits, "lower bounds: LAYER=W/A, '*' leaves a side free (repeatable)");
  sub->add_option("--max-bits", a->max_bits, "upper bounds: LAYER=W/A, '*' leaves a side free (repeatable)");
  sub->add_option("--same-wa", a->same_wa, "the layer's weight bits equal its activation bits: LAYER (repeatable)");
  sub->add_option("--tie", a->ties, "these layers take one (W, A) pair: L1,L2,... (repeatable)");
  sub->add_option("--sweep", a->sweep,
                  "solve a range of one budget: bops=FROM:TO (average W x A bits) or cr=FROM:TO; writes every point");
  a->points_opt = sub->add_option("--points", a->points, "points of --sweep (default 50)");
  sub->add_option("--csv", a->csv, "with --sweep: also write a CSV table of the points here");
  sub->add_option("--svg", a->svg, "with --sweep: also draw the objective against GBitOPs (or size) here");
  sub->add_option("--alpha", a->alpha, "weight of the weight indicators in the objective (default 2)");
  sub->add_option("--time-limit", a->time_limit_s, "solver time limit in seconds (default 60)");
  a->gap_opt = sub->add_option("--gap", a->relative_gap,
                  "stop once the policy is proven within this relative gap of the optimum (default 0: prove it optimal)");
  sub->add_option("--solver", a->solver, "exact (default: pruning, Lagrangian bound, exact depth-first search) or cbc (the plain formulation)")
      ->check(CLI::IsMember({"exact", "cbc"}));
  sub->add_option("--macs", a->macs,
                  "BitOPs MAC count: original (default: as the original script, reproduces the paper) or exact")
      ->check(CLI::IsMember({"original", "exact"}));
  sub->add_flag("--no-outlier-rule", a->no_outlier_rule, "keep the indicator tables as they are (default: the original's rule)");
  sub->add_option("--random-policy", a->random_seed,
                  "instead of searching, draw a random policy under the same budgets and rules (a baseline), seeded")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 62));
  a->fill_opt = sub->add_option("--random-fill", a->random_fill,
                                "with --random-policy: least share of the budget the draw must use (default 0.99)")
                    ->check(CLI::Range(0.0, 1.0));
  sub->add_flag("--reverse-indicators", a->reverse,
                "reverse the layers' importance order before searching (a sanity check: the worst policy)");
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

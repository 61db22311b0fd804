// The real `mpq` binary: exit codes, stdout formats and the text of errors.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <tuple>

#include <yaml-cpp/yaml.h>

#include "mpq/io/indicators.h"
#include "mpq/io/pickle.h"
#include "mpq/search/geometry.h"
#include "synthetic.h"
#include "test_util.h"

namespace {

struct Result {
  int code;
  std::string out, err;
};

// `env`: VAR=value words for the command's environment, or "".
Result mpq_run_with(const std::string& env, const std::string& args) {
  mpq::test::TempDir dir;
  const std::string cmd = (env.empty() ? "" : "env " + env + " ") + std::string(MPQ_BINARY) + " " + args + " >" +
                          dir.file("out") + " 2>" + dir.file("err") + " </dev/null";
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, mpq::test::read_all(dir.file("out")),
          mpq::test::read_all(dir.file("err"))};
}

Result mpq_run(const std::string& args) { return mpq_run_with("", args); }

std::string paper_args() {
  return "search --model resnet50 --i " + mpq::test::golden("importance_indicators_resnet50.pkl") +
         " --b 6 5 4 3 2 --wb 3 --ab 4 --cr 12.2 --bops";
}

int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

TEST(Cli, PaperSearchWritesThePolicyOnStdout) {
  MPQ_NEEDS_GOLDEN();
  const Result r = mpq_run(paper_args());
  ASSERT_EQ(r.code, 0) << r.err;
  const YAML::Node ref = YAML::LoadFile(mpq::test::golden("search_paper_r50.json"));
  const YAML::Node pol = YAML::Load(r.out);
  EXPECT_EQ(pol["weight_bits"].as<std::vector<int>>(), ref["weight_bits"].as<std::vector<int>>());
  EXPECT_EQ(pol["act_bits"].as<std::vector<int>>(), ref["act_bits"].as<std::vector<int>>());
  EXPECT_EQ(pol["layers"].size(), 52u);
  EXPECT_EQ(pol["solver"]["status"].as<std::string>(), "optimal");
  EXPECT_EQ(pol["solver"]["objective"].as<std::string>(), "4.61743923");
  const YAML::Node rep = pol["report"];
  EXPECT_EQ(rep["compression_ratio"].as<std::string>(), "12.2029");
  EXPECT_EQ(rep["fp_size_mb"].as<std::string>(), "97.286");
  EXPECT_EQ(rep["size_mb"].as<std::string>(), "7.972");
  EXPECT_EQ(rep["gbitops"].as<std::string>(), "56.035");
  EXPECT_EQ(rep["target_gbitops"].as<std::string>(), "56.036");
  EXPECT_EQ(pol["indicators"]["sha256"].as<std::string>().size(), 64u);
  // weight_bits as one line, pasteable into the original's finetune YAML.
  EXPECT_NE(r.out.find("\nweight_bits: [6, 3, 4, 5, "), std::string::npos);
  EXPECT_NE(r.err.find("info: search: optimal"), std::string::npos);
}

TEST(Cli, JsonAndOutputFile) {
  MPQ_NEEDS_GOLDEN();
  const Result j = mpq_run(paper_args() + " --json");
  ASSERT_EQ(j.code, 0) << j.err;
  EXPECT_EQ(j.out.front(), '{');
  EXPECT_EQ(YAML::Load(j.out)["act_bits"].size(), 52u);
  mpq::test::TempDir dir;
  const Result o = mpq_run(paper_args() + " -o " + dir.file("p.yaml"));
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_TRUE(o.out.empty());
  EXPECT_EQ(YAML::LoadFile(dir.file("p.yaml"))["weight_bits"].size(), 52u);
}

// -o writes through a symlink to the file it names (the link stays), keeps
// an existing file's permissions, writes a device in place, and '-' is stdout.
TEST(Cli, OutputsWriteThroughLinksKeepModesAndTakeDevices) {
  MPQ_NEEDS_GOLDEN();
  mpq::test::TempDir dir;
  mpq::test::write_all(dir.file("target.yaml"), "old\n");
  ASSERT_EQ(::chmod(dir.file("target.yaml").c_str(), 0600), 0);
  ASSERT_EQ(::symlink("target.yaml", dir.file("link.yaml").c_str()), 0);  // relative, as users make them
  const Result r = mpq_run(paper_args() + " -o " + dir.file("link.yaml"));
  ASSERT_EQ(r.code, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::lstat(dir.file("link.yaml").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode)) << "the link was replaced by a file";
  EXPECT_EQ(YAML::LoadFile(dir.file("target.yaml"))["weight_bits"].size(), 52u);
  ASSERT_EQ(::stat(dir.file("target.yaml").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const Result dash = mpq_run(paper_args() + " -o -");
  ASSERT_EQ(dash.code, 0) << dash.err;
  EXPECT_EQ(YAML::Load(dash.out)["weight_bits"].size(), 52u);
  const Result null = mpq_run(paper_args() + " -o /dev/null");
  ASSERT_EQ(null.code, 0) << null.err;
  ASSERT_EQ(::stat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode)) << "/dev/null was replaced";
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(Cli, GeometryFileGivesTheSamePolicy) {
  MPQ_NEEDS_GOLDEN();
  const Result a = mpq_run(paper_args());
  const Result b = mpq_run(paper_args() + " --geometry " + mpq::test::golden("geometry_224.json"));
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(YAML::Load(a.out)["weight_bits"].as<std::vector<int>>(), YAML::Load(b.out)["weight_bits"].as<std::vector<int>>());
}

TEST(Cli, InfeasibleExits3NamingTheConstraint) {
  MPQ_NEEDS_GOLDEN();
  const Result r = mpq_run("search --model resnet50 --i " + mpq::test::golden("importance_indicators_resnet50.pkl") +
                        " --b 6 5 4 3 2 --cr 16");
  EXPECT_EQ(r.code, 3);
  EXPECT_EQ(r.err,
            "mpq: search: no bit assignment meets --cr 16 (the largest compression ratio reachable with bits 6 5 4 3 2 "
            "is 12.88); lower --cr or add lower bit-widths\n");
  EXPECT_TRUE(r.out.empty());
}

TEST(Cli, TimeLimitExitCodes) {
  // A 1000-layer network (geometry file + indicators) that the plain CBC
  // formulation cannot prove optimal in seconds.
  mpq::test::TempDir dir;
  mpq::search::ModelGeometry g;
  mpq::io::Indicators ind;
  mpq::test::make_synthetic(1000, 11, g, ind);
  mpq::test::write_all(dir.file("g.yaml"), mpq::search::geometry_to_yaml(g));
  mpq::io::save_indicators(dir.file("i.pkl"), ind);
  const std::string base = "search --geometry " + dir.file("g.yaml") + " --i " + dir.file("i.pkl") +
                           " --b 8 7 6 5 4 3 2 --wb 3 --ab 4 --cr 12 --bops --solver cbc";
  const Result none = mpq_run(base + " --time-limit 0.05");
  EXPECT_EQ(none.code, 4) << none.err;
  EXPECT_NE(none.err.find("time limit reached before CBC found any solution; raise --time-limit"), std::string::npos)
      << none.err;
  EXPECT_TRUE(none.out.empty());
  const Result some = mpq_run(base + " --time-limit 3");
  EXPECT_EQ(some.code, 0) << some.err;
  EXPECT_NE(some.err.find("warning: search: time limit of 3 s reached; the best solution found is within a relative gap"),
            std::string::npos)
      << some.err;
  EXPECT_EQ(YAML::Load(some.out)["solver"]["status"].as<std::string>(), "time_limit");
  const Result exact = mpq_run(base.substr(0, base.size() - std::string(" --solver cbc").size()));
  EXPECT_EQ(exact.code, 0) << exact.err;
  EXPECT_EQ(YAML::Load(exact.out)["solver"]["status"].as<std::string>(), "optimal");
}

TEST(Cli, BadInputIsOneLineAndExit2) {
  MPQ_NEEDS_GOLDEN();
  mpq::test::TempDir dir;
  const std::string ind = mpq::test::golden("importance_indicators_resnet50.pkl");
  mpq::test::write_all(dir.file("text.pkl"), "this is not a pickle\n");
  mpq::test::write_all(dir.file("trunc.pkl"), mpq::test::read_all(ind).substr(0, 1000));
  const std::string base = " --b 6 5 4 3 2 --wb 3 --ab 4 --bops";
  struct Case {
    std::string args, expect;
  } cases[] = {
      {"search --model resnet50 --i /nonexistent.pkl" + base, "/nonexistent.pkl: cannot open (No such file or directory)"},
      {"search --model resnet50 --i " + dir.file("text.pkl") + base, "text.pkl: not a valid pickle: "},
      {"search --model resnet50 --i " + dir.file("trunc.pkl") + base, "not a valid pickle: truncated"},
      {"search --model resnet18 --i " + ind + base, "has 52 layers but the model has 19 searchable layers"},
      {"search --model resnet51 --i " + ind + base, "unknown model 'resnet51' (known: resnet18, resnet50, mobilenetv1, resnet20"},
      {"search --model resnet50 --i " + ind + " --b --wb 3 --ab 4 --bops", "--b"},
      {"search --model resnet50 --i " + ind + " --b 6 5 4 3 2", "no constraint enabled"},
      {"search --model resnet50 --i " + ind + " --b 6 5 4 3 2 --cr -3", "--cr: must be a positive ratio, or 0 to disable (got -3)"},
      {"search --model resnet50 --i " + ind + " --b 6 5 4 3 2 --bops --wb -3 --ab 4", "--bops: needs positive --wb and --ab"},
      {"search --model resnet50 --i " + ind + " --b 6 6 4 --cr 8", "--b: bit-width 6 is given twice"},
      {"search --model resnet50 --i " + ind + " --b 6 5 4 3 2 1 --cr 8", "--b: bit-width 1 is out of range"},
      {"search --model resnet50 --i " + ind + " --b 7 6 5 --cr 8", "has no weight indicator for 7 bits"},
      {"search --model resnet50 --i " + ind + base + " --time-limit 0", "--time-limit: must be a positive number"},
      {"search --i " + ind + base, "name the network with --model"},
      {"search --model resnet50 --i " + ind + base + " --bogus", "bogus"},
      {"frobnicate", "'frobnicate' is not a command (search, pretrain, extract, finetune, eval, export, importance)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const Result r = mpq_run(c.args);
    EXPECT_EQ(r.code, 2);
    EXPECT_EQ(lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty());
  }
}

TEST(Cli, HelpForEverySubcommand) {
  for (const char* sub : {"", "search", "pretrain", "extract", "finetune", "eval", "export", "importance"}) {
    const Result r = mpq_run(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << sub;
  }
  const Result v = mpq_run("--version");
  EXPECT_EQ(v.out, "mpq 0.1.0\n");
}

TEST(Cli, ConfigsAreValidatedBeforeTorchLoads) {
  mpq::test::TempDir dir;
  mpq::test::write_all(dir.file("c.yaml"), "name: x\nlr: fast\n");
  const Result r = mpq_run("finetune " + dir.file("c.yaml"));
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "mpq: " + dir.file("c.yaml") + ":2:5: lr must be a finite number (got 'fast')\n");
  const Result s = mpq_run("pretrain " + dir.file("c.yaml") + " --set lr=0.1 --set epochz=3");
  EXPECT_EQ(s.code, 2);
  EXPECT_NE(s.err.find("unknown key 'epochz' (did you mean 'epochs'?)"), std::string::npos) << s.err;
}

TEST(Cli, TorchCommandsCheckTheirConfigBeforeTouchingData) {
  mpq::test::TempDir dir;
  mpq::test::write_all(dir.file("c.yaml"), "name: x\noutput_dir: " + dir.file("out") + "\n");
  const Result r = mpq_run("pretrain " + dir.file("c.yaml"));
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("target_bits must list the candidate bit-widths"), std::string::npos) << r.err;
  const Result f = mpq_run("finetune " + dir.file("c.yaml"));
  EXPECT_EQ(f.code, 2);
  EXPECT_NE(f.err.find("finetuning needs bit-widths"), std::string::npos) << f.err;
  const Result e = mpq_run("eval " + dir.file("c.yaml"));
  EXPECT_EQ(e.code, 2);
  EXPECT_NE(e.err.find("eval needs weights"), std::string::npos) << e.err;
}

TEST(Cli, ExtractGivesTheOriginalsIndicators) {
  MPQ_NEEDS_GOLDEN();
  mpq::test::TempDir dir;
  const std::string ckpt = mpq::test::golden("limpq_pretrain_checkpoint.pth.tar");
  const Result r = mpq_run("extract " + ckpt + " -o " + dir.file("i.pkl") + " --b 4 3 2");
  if (r.err.find("could not be loaded") != std::string::npos) GTEST_SKIP() << "built without the torch plugin";
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("| layer | W4 | W3 | W2 | A4 | A3 | A2 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| conv2 | 0.0259362 | 0.0525413 | 0.103904 |"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("no geometry file"), std::string::npos) << r.err;  // the original's tiny net is not in the zoo
  const auto mine = mpq::io::load_indicators(dir.file("i.pkl"));
  const auto ref = mpq::io::load_indicators(mpq::test::golden("limpq_pretrain_indicators.pkl"));
  EXPECT_EQ(mine.layer_names, ref.layer_names);
  EXPECT_EQ(mine.weight, ref.weight);  // exactly: float32 scales widened to double, as Python does
  EXPECT_EQ(mine.act, ref.act);
  // The plot beside the indicators: a line per bit-width in each panel, a ring per outlier of the table.
  const std::string svg = mpq::test::read_all(dir.file("i.svg"));
  ASSERT_EQ(svg.rfind("<svg ", 0), 0u) << svg.substr(0, 100);
  auto count = [](const std::string& s, const std::string& what) {
    size_t c = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++c;
    return c;
  };
  EXPECT_EQ(count(svg, "<polyline"), 6u);
  EXPECT_EQ(count(svg, "class=\"outlier\""), count(r.out, "*"));
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  // Candidates given in the wrong order make every lower bit-width an outlier, in the table and the plot.
  const Result rev = mpq_run("extract " + ckpt + " -o " + dir.file("rev.pkl") + " --b 2 3 4");
  ASSERT_EQ(rev.code, 0) << rev.err;
  EXPECT_EQ(count(rev.out, "*"), 4 * mine.layer_names.size());
  EXPECT_EQ(count(mpq::test::read_all(dir.file("rev.svg")), "class=\"outlier\""), 4 * mine.layer_names.size());
  // The names keep the original's 'module.' prefix.
  const auto raw = mpq::pickle::read_file(dir.file("i.pkl"));
  EXPECT_EQ(raw.find("layer_name")->items()[0].as_str(), "module.conv2");
  // Without --b the original's checkpoint cannot say its candidates.
  const Result nob = mpq_run("extract " + ckpt + " -o " + dir.file("j.pkl"));
  EXPECT_EQ(nob.code, 2);
  EXPECT_NE(nob.err.find("pass them in the order of training with --b"), std::string::npos) << nob.err;
  const Result wrong = mpq_run("extract " + ckpt + " -o " + dir.file("k.pkl") + " --b 4 2");
  EXPECT_EQ(wrong.code, 2);
  EXPECT_NE(wrong.err.find("holds 3 scales but 2 candidate bit-widths were given"), std::string::npos) << wrong.err;
}

TEST(Cli, ExecutableDoesNotLinkTorch) {
  const Result r = mpq_run("--version");  // the binary exists and runs
  ASSERT_EQ(r.code, 0);
  mpq::test::TempDir dir;
  const std::string cmd = std::string("readelf -d ") + MPQ_BINARY + " > " + dir.file("dyn");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "readelf (binutils) is needed for this check";
  const std::string dyn = mpq::test::read_all(dir.file("dyn"));
  EXPECT_NE(dyn.find("NEEDED"), std::string::npos);
  for (const char* lib : {"torch", "c10", "opencv"}) EXPECT_EQ(dyn.find(lib), std::string::npos) << dyn;
}

// ---- Sweeps, cost tables, activation memory and layer rules ----

namespace {

std::string paper_search() {
  return "search --model resnet50 --i " + mpq::test::golden("importance_indicators_resnet50.pkl") + " --b 6 5 4 3 2";
}

// A latency-like table for ResNet-50's searchable layers, every pair of 6..2.
std::string resnet50_cost_table(double* uniform44) {
  const auto g = mpq::search::zoo_geometry("resnet50");
  std::string t = "# made up: cost grows with MACs, even bit-widths cheaper\nlayer,w_bits,a_bits,cost,unit\n";
  *uniform44 = 0;
  for (const auto* l : g.searchable())
    for (int w = 2; w <= 6; ++w)
      for (int a = 2; a <= 6; ++a) {
        const double c = static_cast<double>(l->macs) * 1e-8 * (0.3 + 0.05 * (w + a) + ((w % 2) || (a % 2) ? 0.1 : 0.0));
        if (w == 4 && a == 4) *uniform44 += c;
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.9g", c);
        t += l->name + "," + std::to_string(w) + "," + std::to_string(a) + "," + buf + ",ms\n";
      }
  t += "conv1,8,8,1.5,ms\nfc,8,8,0.05,ms\n";
  return t;
}

}  // namespace

TEST(Cli, SweepWritesTheFrontAsYamlJsonCsvAndSvg) {
  MPQ_NEEDS_GOLDEN();
  mpq::test::TempDir dir;
  const Result r = mpq_run(paper_search() + " --wb 3 --ab 4 --bops --cr 12.2 --sweep bops=4:36 --points 12 -o " + dir.file("f.yaml") +
                           " --csv " + dir.file("f.csv") + " --svg " + dir.file("f.svg"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.out.empty());
  EXPECT_NE(r.err.find("info: search: swept bops from 4 to 36 in 12 points: "), std::string::npos)
      << r.err;
  const YAML::Node f = YAML::LoadFile(dir.file("f.yaml"));
  ASSERT_EQ(f["points"].size(), 12u);
  EXPECT_EQ(f["sweep"]["resource"].as<std::string>(), "bops");
  EXPECT_EQ(f["chosen"][0]["budget"].as<double>(), 12);
  // The chosen budget (--bops --wb 3 --ab 4 beside --cr 12.2) gives the paper's policy.
  const YAML::Node ref = YAML::LoadFile(mpq::test::golden("search_paper_r50.json"));
  EXPECT_EQ(f["chosen"][0]["weight_bits"].as<std::vector<int>>(), ref["weight_bits"].as<std::vector<int>>());
  double last = 1e300;
  for (const auto& pt : f["points"]) {
    // Below the paper's --cr 12.2, the lowest BitOPs budgets cannot be met together with it.
    if (pt["status"].as<std::string>() == "infeasible") continue;
    EXPECT_EQ(pt["status"].as<std::string>(), "optimal");
    EXPECT_EQ(pt["weight_bits"].size(), 52u);
    EXPECT_LE(pt["exact_from"].as<double>(), pt["budget"].as<double>() + 1e-9);
    EXPECT_LE(pt["objective"].as<double>(), last);
    last = pt["objective"].as<double>();
  }
  EXPECT_EQ(f["uniform"].size(), 6u);  // W2A2..W6A6 and the chosen W3A4
  const std::string csv = mpq::test::read_all(dir.file("f.csv"));
  EXPECT_EQ(lines(csv), 1 + 12 + 1 + 6);
  EXPECT_EQ(csv.rfind("kind,budget,status,objective,", 0), 0u);
  const std::string svg = mpq::test::read_all(dir.file("f.svg"));
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find("chosen budget"), std::string::npos);
  const Result j = mpq_run(paper_search() + " --sweep cr=6:12 --points 5 --json");
  ASSERT_EQ(j.code, 0) << j.err;
  EXPECT_EQ(j.out.front(), '{');
  EXPECT_EQ(YAML::Load(j.out)["points"].size(), 5u);
}

TEST(Cli, CostTableAndActivationBudgetsHoldInThePolicy) {
  MPQ_NEEDS_GOLDEN();
  mpq::test::TempDir dir;
  double uniform44 = 0;
  mpq::test::write_all(dir.file("lat.csv"), resnet50_cost_table(&uniform44));
  const double budget = 0.9 * uniform44 + 1.55;
  const Result r = mpq_run(paper_search() + " --wb 3 --ab 4 --bops --cost-table " + dir.file("lat.csv") +
                           " --max-cost " + std::to_string(budget) + " --max-act-mem 400K");
  ASSERT_EQ(r.code, 0) << r.err;
  const YAML::Node pol = YAML::Load(r.out);
  EXPECT_LE(pol["report"]["cost"].as<double>(), budget);
  EXPECT_LE(pol["report"]["peak_act_bytes"].as<double>(), 400 * 1024);
  EXPECT_EQ(pol["constraints"]["cost_unit"].as<std::string>(), "ms");
  EXPECT_EQ(pol["constraints"]["max_act_bytes"].as<double>(), 409600);
  EXPECT_NE(r.err.find("info: search: cost "), std::string::npos) << r.err;
  // A cost budget below what the table reaches at all: exit 3, named.
  const Result low = mpq_run(paper_search() + " --bops --wb 3 --ab 4 --cost-table " + dir.file("lat.csv") + " --max-cost 1");
  EXPECT_EQ(low.code, 3);
  EXPECT_NE(low.err.find("no bit assignment meets --max-cost 1 (the smallest total cost in"), std::string::npos) << low.err;
  EXPECT_EQ(lines(low.err), 1);
}

TEST(Cli, RulesPinTieAndBoundTheBits) {
  MPQ_NEEDS_GOLDEN();
  const Result r = mpq_run(paper_search() + " --wb 3 --ab 4 --bops --pin layer4.2.conv3=6/6 --min-bits 'layer1.*=4/*'"
                           " --tie layer1.0.conv3,layer1.0.downsample.0 --same-wa 'layer2.*' --max-bits 'layer3.*=*/5'");
  ASSERT_EQ(r.code, 0) << r.err;
  const YAML::Node pol = YAML::Load(r.out);
  const auto names = pol["layers"].as<std::vector<std::string>>();
  const auto w = pol["weight_bits"].as<std::vector<int>>(), a = pol["act_bits"].as<std::vector<int>>();
  for (size_t l = 0; l < names.size(); ++l) {
    SCOPED_TRACE(names[l]);
    if (names[l] == "layer4.2.conv3") {
      EXPECT_EQ(w[l], 6);
      EXPECT_EQ(a[l], 6);
    }
    if (names[l].rfind("layer3.", 0) == 0) EXPECT_LE(a[l], 5);
    if (names[l].rfind("layer1.", 0) == 0) EXPECT_GE(w[l], 4);
    if (names[l].rfind("layer2.", 0) == 0) EXPECT_EQ(w[l], a[l]);
  }
  EXPECT_EQ(pol["constraints"]["rules"].size(), 5u);
}

TEST(Cli, RandomPoliciesAndReversedIndicatorsAreMarkedInThePolicy) {
  MPQ_NEEDS_GOLDEN();
  const Result r = mpq_run(paper_search() + " --wb 3 --ab 4 --bops --random-policy 5");
  ASSERT_EQ(r.code, 0) << r.err;
  const YAML::Node pol = YAML::Load(r.out);
  EXPECT_EQ(pol["solver"]["status"].as<std::string>(), "random");
  EXPECT_EQ(pol["solver"]["method"].as<std::string>(), "random (seed 5)");
  EXPECT_GE(pol["report"]["gbitops"].as<double>(), 0.99 * pol["report"]["target_gbitops"].as<double>());
  const YAML::Node again = YAML::Load(mpq_run(paper_search() + " --wb 3 --ab 4 --bops --random-policy 5").out);
  EXPECT_EQ(again["weight_bits"].as<std::vector<int>>(), pol["weight_bits"].as<std::vector<int>>());  // seeded
  EXPECT_EQ(again["act_bits"].as<std::vector<int>>(), pol["act_bits"].as<std::vector<int>>());
  const Result v = mpq_run(paper_search() + " --wb 3 --ab 4 --bops --reverse-indicators");
  ASSERT_EQ(v.code, 0) << v.err;
  const YAML::Node rev = YAML::Load(v.out);
  EXPECT_EQ(rev["solver"]["method"].as<std::string>(), "exact, reversed indicators");
  const YAML::Node fwd = YAML::Load(mpq_run(paper_search() + " --wb 3 --ab 4 --bops").out);
  EXPECT_NE(rev["weight_bits"].as<std::vector<int>>(), fwd["weight_bits"].as<std::vector<int>>());
}

TEST(Cli, BadSearchInputIsOneLineWithItsExitCodeAndLeavesNoFile) {
  MPQ_NEEDS_GOLDEN();
  mpq::test::TempDir dir;
  double unused = 0;
  std::string table = resnet50_cost_table(&unused);
  mpq::test::write_all(dir.file("dup.csv"), table + "layer1.0.conv1,4,4,1,ms\n");
  mpq::test::write_all(dir.file("mixed.csv"), table + "fc,6,6,1,us\n");
  mpq::test::write_all(dir.file("unknown.csv"), table + "layer5.0.conv1,4,4,1,ms\n");
  const std::string out = dir.file("out.yaml");
  for (const auto& [args, code, want] : std::vector<std::tuple<std::string, int, std::string>>{
           {" --bops --wb 3 --ab 4 --pin layer4.2.conv9=6/6", 2, "'layer4.2.conv9' is no searchable layer"},
           {" --bops --wb 3 --ab 4 --pin layer4.2.conv3=6/6 --max-bits layer4.2.conv3=4/4", 2, "they contradict each other"},
           {" --bops --wb 3 --ab 4 --pin layer4.2.conv3=7/7", 2, "7 bits is not a weight candidate"},
           {" --bops --wb 3 --ab 4 --cost-table " + dir.file("dup.csv") + " --max-cost 9", 2, "dup.csv:1305: a second row for layer 'layer1.0.conv1' at 4/4 bits (the first is on line 15)"},
           {" --bops --wb 3 --ab 4 --cost-table " + dir.file("mixed.csv") + " --max-cost 9", 2, "unit 'us' differs from 'ms'"},
           {" --bops --wb 3 --ab 4 --cost-table " + dir.file("unknown.csv") + " --max-cost 9", 2,
            "layer 'layer5.0.conv1' is not a layer of resnet50"},
           {" --bops --wb 3 --ab 4 --cost-table " + dir.file("dup.csv"), 2, "--cost-table: needs a budget on it"},
           {" --sweep bops=36:4", 2, "the range is inverted"},
           {" --sweep bops=1:36", 2, "beyond what the candidates reach"},
           {" --sweep bops=4:36 --points 0", 2, "--points: 0 is out of range"},
           {" --sweep bops=4:36 --svg " + dir.file("no/such/f.svg"), 2, "does not exist; create it first"},
           {" --bops --wb 3 --ab 4 --csv " + dir.file("f.csv"), 2, "--csv: only with --sweep"},
           {" --bops --wb 3 --ab 4 --max-act-mem 12parsecs", 2, "'12parsecs' is not a size"},
           {" --bops --wb 3 --ab 4 --max-act-mem 100K", 3, "the 8-bit layer 'conv1' alone reads 150528 bytes"},
           {" --wbits 6 4 --bops --wb 3 --ab 4", 2, "give the candidate bit-widths with --b (both), or with --wbits and --abits"},
           {" --bops --wb 3 --ab 4 --gap 2", 2, "--gap: must be at least 0 and below 1"},
           {" --bops --wb 3 --ab 4 --gap 0.01 --solver cbc", 2, "--gap: only with the exact solver"},
           {" --cr 12 --wb 3 --ab 4", 2, "--wb/--ab: set the BitOPs budget only with --bops"},
           {" --cr 12 --points 7", 2, "--points: only with --sweep"},
           {" --bops --wb 3 --ab 4 --random-fill 0.5", 2, "--random-fill: only with --random-policy SEED"},
           {" --sweep bops=4:36 --random-policy 1", 2, "--random-policy: draws one policy; drop --sweep"},
           {" --bops --wb 3 --ab 4 --random-policy 1 --tie layer1.0.conv3,layer1.0.downsample.0", 2,
            "--random-policy: --tie is not supported"}}) {
    SCOPED_TRACE(args);
    const std::string cmd = args.find("--b ") == std::string::npos && args.find("--wbits") != std::string::npos
                                ? "search --model resnet50 --i " + mpq::test::golden("importance_indicators_resnet50.pkl") + args
                                : paper_search() + args;
    const Result r = mpq_run(cmd + " -o " + out);
    EXPECT_EQ(r.code, code) << r.err;
    EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
    EXPECT_EQ(lines(r.err), 1) << r.err;
    EXPECT_FALSE(std::filesystem::exists(out));
  }
}

namespace {

// `mount --bind empty F && ` for each of `folders`, for a shell line.
std::string hiding(const std::string& empty, const std::vector<std::string>& folders) {
  std::string mounts;
  for (const std::string& f : folders) mounts += "mount --bind " + empty + " " + f + " && ";
  return mounts;
}

// The folder that resolves `lib` for `binary` (ldd's view, symlinks
// followed) while `hidden` are hidden in a mount namespace, or "" where
// nothing does.
std::string folder_resolving(const std::string& binary, const std::string& lib, const std::string& empty,
                             const std::vector<std::string>& hidden) {
  mpq::test::TempDir dir;
  const std::string cmd =
      "unshare -m sh -c '" + hiding(empty, hidden) + "ldd " + binary + "' >" + dir.file("ldd") + " 2>&1";
  if (std::system(cmd.c_str()) != 0) return "";
  std::istringstream in(mpq::test::read_all(dir.file("ldd")));
  for (std::string line; std::getline(in, line);) {
    std::istringstream w(line);
    std::string name, arrow, path;
    if (w >> name >> arrow >> path && name == lib && arrow == "=>" && path.front() == '/') {
      std::error_code ec;
      const std::filesystem::path real = std::filesystem::canonical(path, ec);
      return (ec ? std::filesystem::path(path) : real).parent_path().string();
    }
  }
  return "";
}

}  // namespace

// A torch command whose LibTorch, or a CUDA library of LibTorch's, has gone
// (its folder hidden in a mount namespace of the test's own, as after a
// deleted venv or a copy to a machine without it): one line naming what is
// missing and what to do, exit 1, instead of the loader's bare words and
// advice to rebuild. Skips where no mount namespace can be made (not root).
TEST(Cli, TorchCommandWithItsLibrariesGoneSaysWhatIsMissingAndWhatToDo) {
  const std::string plugin = std::filesystem::path(MPQ_BINARY).parent_path().string() + "/libmpq_torch.so";
  if (::access(plugin.c_str(), F_OK) != 0) GTEST_SKIP() << "built without the torch plugin";
  mpq::test::TempDir dir;
  ::mkdir(dir.file("empty").c_str(), 0755);
  const std::string can_mount =
      "unshare -m sh -c 'mount --bind " + dir.file("empty") + " " + dir.file("empty") + "' >/dev/null 2>&1";
  if (std::system(can_mount.c_str()) != 0) GTEST_SKIP() << "no mount namespace here (unshare -m, mount --bind)";
  mpq::test::write_all(dir.file("junk.pt"), "junk");
  int checked = 0;
  for (const auto& [lib, want] : std::vector<std::pair<std::string, std::string>>{
           {"libtorch.so", "which is missing (libtorch.so not found): reinstall it with bash scripts/install_torch.sh"},
           {"libcudart.so.13", "a CUDA library that LibTorch"}}) {
    // Every folder the loader would take `lib` from, one after the other: a
    // machine may hold it twice (the toolkit's lib/ and a copy on
    // LD_LIBRARY_PATH or in the loader's cache), but never hide libc's.
    std::vector<std::string> folders;
    const std::string system = folder_resolving(plugin, "libc.so.6", dir.file("empty"), {});
    for (std::string f; !(f = folder_resolving(plugin, lib, dir.file("empty"), folders)).empty();) {
      if (f == system || folders.size() == 4 || std::find(folders.begin(), folders.end(), f) != folders.end()) {
        folders.clear();
        break;
      }
      folders.push_back(f);
    }
    if (folders.empty()) continue;  // a CPU build links no CUDA runtime, or it is not to be hidden alone
    SCOPED_TRACE(lib + ", hidden: " + hiding(dir.file("empty"), folders));
    const std::string cmd = "unshare -m sh -c '" + hiding(dir.file("empty"), folders) + "exec " +
                            MPQ_BINARY + " extract " + dir.file("junk.pt") + " -o " + dir.file("i.pkl") + "' >" +
                            dir.file("out") + " 2>" + dir.file("err") + " </dev/null";
    const int status = std::system(cmd.c_str());
    const std::string err = mpq::test::read_all(dir.file("err"));
    ASSERT_TRUE(WIFEXITED(status)) << err;
    EXPECT_EQ(WEXITSTATUS(status), 1) << err;
    EXPECT_EQ(err.rfind("mpq: extract: the torch plugin " + plugin, 0), 0u) << err;  // the command named once
    EXPECT_NE(err.find(want), std::string::npos) << err;
    EXPECT_EQ(err.find("build with -DMPQ_WITH_TORCH=ON"), std::string::npos) << err;
    EXPECT_EQ(lines(err), 1) << err;
    EXPECT_FALSE(std::filesystem::exists(dir.file("i.pkl")));
    ++checked;
  }
  EXPECT_GE(checked, 1) << "ldd named neither libtorch.so nor libcudart.so.13 for " << plugin;
}

// A LibTorch of another release whose every symbol the plugin needs happens to
// resolve: it loads, but the classes behind those symbols may differ, so mpq
// refuses to run with it before any work.
TEST(Cli, TorchCommandRunningWithAnotherLibTorchReleaseIsRefusedBeforeAnyWork) {
#ifndef MPQ_FAKE_TORCH_RELEASE
  GTEST_SKIP() << "built without the torch plugin";
#else
  const std::string plugin = std::filesystem::path(MPQ_BINARY).parent_path().string() + "/libmpq_torch.so";
  mpq::test::TempDir dir;
  mpq::test::write_all(dir.file("junk.pt"), "junk");
  // ASan wants its runtime first among the preloaded libraries; the stand-in has no part in what it checks.
  const Result r = mpq_run_with("LD_PRELOAD=" MPQ_FAKE_TORCH_RELEASE " ASAN_OPTIONS=verify_asan_link_order=0",
                                "extract " + dir.file("junk.pt") + " -o " + dir.file("i.pkl"));
  EXPECT_EQ(r.code, 1) << r.err;
  const std::string head = "mpq: extract: the torch plugin " + plugin + " was built against LibTorch ";
  EXPECT_EQ(r.err.rfind(head + MPQ_TORCH_BUILD_VERSION, 0), 0u) << r.err;
  EXPECT_NE(r.err.find("but runs with LibTorch 2.99.0 (" MPQ_FAKE_TORCH_RELEASE ")"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("first on LD_LIBRARY_PATH, or rebuild mpq against the one you want"), std::string::npos)
      << r.err;
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("i.pkl")));
  // Without the stand-in the same command gets as far as reading the checkpoint.
  const Result real = mpq_run("extract " + dir.file("junk.pt") + " -o " + dir.file("i.pkl"));
  EXPECT_EQ(real.code, 2) << real.err;
  EXPECT_NE(real.err.find("not a PyTorch checkpoint"), std::string::npos) << real.err;
#endif
}

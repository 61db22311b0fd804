// A sweep of bad inputs, as a hostile new user would try them: malformed
// flags, configs, indicator and geometry files, checkpoints and datasets,
// outputs that are inputs. For every case the command must end with its
// documented exit code (never a signal, never an internal error), say what is
// wrong in one line that names the file or key, and leave every file in the
// work folder byte for byte as it was (no file changed, none left behind).
// The counts are printed at the end.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <sstream>

#include "mpq/config/config.h"
#include "mpq/io/file_util.h"
#include "mpq/io/indicators.h"
#include "mpq/io/pickle.h"
#include "train_fixture.h"

namespace {

namespace fs = std::filesystem;
using mpq::pickle::Value;
using mpq::test::read_all;
using mpq::test::write_all;
using namespace mpq::test::train;

// Every entry under `root`: its kind, and its bytes' hash or a link's target.
std::map<std::string, std::string> snapshot(const std::string& root) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    const std::string p = e.path().string();
    if (e.is_symlink()) m[p] = "link " + fs::read_symlink(e.path()).string();
    else if (e.is_regular_file()) m[p] = mpq::io::sha256_file(p);
    else m[p] = e.is_directory() ? "dir" : "special";
  }
  return m;
}

std::string changes(const std::map<std::string, std::string>& a, const std::map<std::string, std::string>& b) {
  std::string out;
  for (const auto& [p, h] : a)
    if (!b.count(p)) out += " removed " + p;
    else if (b.at(p) != h) out += " changed " + p;
  for (const auto& [p, h] : b)
    if (!a.count(p)) out += " created " + p;
  return out;
}

// The checkpoint's pickle as IValues, to write altered copies of it.
c10::IValue to_ivalue(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kNone: return c10::IValue();
    case Value::Kind::kBool: return v.as_bool();
    case Value::Kind::kInt: return v.as_int();
    case Value::Kind::kFloat: return v.as_double();
    case Value::Kind::kStr: return v.as_str();
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      c10::impl::GenericList l(c10::AnyType::get());
      for (const auto& x : v.items()) l.push_back(to_ivalue(x));
      return l;
    }
    case Value::Kind::kDict: {
      c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
      for (const auto& [k, x] : v.dict_items()) d.insert(k.as_str(), to_ivalue(x));
      return d;
    }
    default: return mpq::torchio::as_tensor(v, "checkpoint");
  }
}

// Writes `src` with `key` set to `value` (or removed where it is None) as `dst`.
void altered(const std::string& src, const std::string& dst, const std::string& key, const c10::IValue& value) {
  const auto ck = mpq::torchio::read_checkpoint(src);
  std::vector<std::pair<std::string, c10::IValue>> meta;
  for (const auto& [k, v] : ck.root.dict_items()) {
    if (k.as_str() == key) continue;
    meta.emplace_back(k.as_str(), to_ivalue(v));
  }
  if (!value.isNone()) meta.emplace_back(key, value);
  mpq::torchio::save_checkpoint(dst, {}, meta);
}

// A shell command line's exit code (128 + N for a signal) and stderr.
struct Ran {
  int code;
  std::string err;
};
Ran sh(const std::string& command) {
  const std::string err = "/tmp/mpq_bad_err." + std::to_string(getpid());
  const int status = std::system(("{ " + command + " ; } 2>" + err).c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), read_all(err)};
}

// The counts of a sweep; judge() checks one command that must fail.
struct Tally {
  int n = 0, aborts = 0, unclear = 0, changed = 0, wrong_code = 0;
  // `r` must end with `code`, never by a signal or an internal error, with
  // exactly one error line (stderr lines that are not progress logs)
  // holding `expect`; `diff` lists the files it changed.
  void judge(const std::string& kind, const Ran& r, int code, const std::string& expect, const std::string& diff) {
    ++n;
    std::vector<std::string> lines;
    std::istringstream in(r.err);
    for (std::string l; std::getline(in, l);)
      if (l.rfind("info: ", 0) != 0 && l.rfind("warn: ", 0) != 0) lines.push_back(l);
    const bool abort = r.code >= 128 || r.err.find("internal error") != std::string::npos;
    const bool clear = lines.size() == 1 && lines[0].find(expect) != std::string::npos;
    aborts += abort;
    unclear += !clear;
    changed += !diff.empty();
    wrong_code += r.code != code;
    if (std::getenv("MPQ_SWEEP_VERBOSE"))
      std::printf("%-10s exit %d  %s\n", kind.c_str(), r.code, lines.empty() ? "(nothing)" : lines.back().c_str());
    EXPECT_FALSE(abort) << r.err;
    EXPECT_EQ(r.code, code) << r.err;
    EXPECT_TRUE(clear) << "expected one error line with '" << expect << "', got:\n" << r.err;
    EXPECT_EQ(diff, "") << r.err;
  }
  void print(const char* what) const {
    std::printf("%s: %d cases, %d aborts, %d unclear messages, %d with files changed, %d other exit codes\n", what, n,
                aborts, unclear, changed, wrong_code);
  }
};

struct Case {
  std::string kind, args;
  int code;
  std::string expect;  // in the one line of the error
};

class BadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    f_ = new Fixture;
    const Fixture& f = *f_;
    const std::string one = "epochs: 1\nwarmup_epochs: 0\nlr: 0.005\ncheckpoint_steps: 0\n";
    for (const std::string kind : {"fp", "pretrain"}) {
      const Result r = mpq_run((kind == "fp" ? "finetune " : "pretrain ") + f.config(kind, kind, one) +
                                   " --set dataloader.fraction=0.25",
                               f.dir);
      ASSERT_EQ(r.code, 0) << r.err;
    }
    const Result x = mpq_run("extract " + f.run_dir("pretrain") + "/last.pt -o " + f.dir.file("ind.pkl"), f.dir);
    ASSERT_EQ(x.code, 0) << x.err;
  }
  static void TearDownTestSuite() {
    delete f_;
    f_ = nullptr;
  }
  static Fixture* f_;
};
Fixture* BadInput::f_ = nullptr;

TEST_F(BadInput, EveryCaseExitsCleanlyInOneLineAndChangesNoFile) {
  const Fixture& f = *f_;
  const auto p = [&](const std::string& n) { return f.dir.file(n); };
  const std::string fp = f.run_dir("fp") + "/last.pt", pre = f.run_dir("pretrain") + "/last.pt";
  const std::string ind = p("ind.pkl"), geo = p("ind.geometry.yaml");
  const std::string r20 = " --i " + ind + " --b 4 3 2 --wb 3 --ab 3 --bops";
  const std::string s20 = "search --geometry " + geo + r20;

  // --- files for the cases
  write_all(p("text.pkl"), "not a pickle\n");
  write_all(p("trunc.pkl"), read_all(ind).substr(0, 100));
  auto ind_with = [&](const std::string& name, const Value& key, const Value& scale) {
    Value table = Value::dict({{key, scale}});
    write_all(p(name), mpq::pickle::write(Value::dict({{Value::str("layer_name"), Value::list({Value::str("conv2")})},
                                                       {Value::str("weight"), Value::dict({{Value::str("conv2"), table}})},
                                                       {Value::str("act"), Value::dict({{Value::str("conv2"), table}})}})));
  };
  ind_with("bool.pkl", Value::str("4"), Value::boolean(true));
  ind_with("bigkey.pkl", Value::str("4294967300"), Value::floating(0.1));
  ind_with("negscale.pkl", Value::str("4"), Value::floating(-0.1));
  ind_with("nan.pkl", Value::str("4"), Value::floating(std::numeric_limits<double>::quiet_NaN()));
  write_all(p("evil.pkl"), std::string("\x80\x02" "cos\nsystem\nX\x02\x00\x00\x00ls\x85R.", 24));
  const std::string layer =
      "  - {name: conv1, type: conv, in: 3, out: 8, kernel: 3, stride: 1, in_hw: [8, 8], params: 216, macs: 13824}\n";
  auto geo_with = [&](const std::string& name, const std::string& conv2) {
    write_all(p(name), "model: tiny\nlayers:\n" + layer + "  - {name: conv2, type: conv, " + conv2 +
                           "}\n  - {name: fc, type: linear, in: 8, out: 10, params: 80, macs: 80}\n");
  };
  const std::string ok2 = "in: 8, out: 8, kernel: 3, stride: 1, in_hw: [8, 8], params: 576, macs: 36864";
  geo_with("tiny.yaml", ok2);
  geo_with("negch.yaml", "in: -8, out: 8, kernel: 3, stride: 1, in_hw: [8, 8], params: 576, macs: 36864");
  geo_with("stride0.yaml", "in: 8, out: 8, kernel: 3, stride: 0, in_hw: [8, 8], params: 576, macs: 36864");
  geo_with("groups0.yaml", "in: 8, out: 8, kernel: 3, stride: 1, groups: 0, in_hw: [8, 8], params: 576, macs: 36864");
  geo_with("groups3.yaml", "in: 8, out: 8, kernel: 3, stride: 1, groups: 3, in_hw: [8, 8], params: 576, macs: 36864");
  geo_with("huge.yaml", "in: 16000000, out: 16000000, kernel: 4000, stride: 1, in_hw: [1000000, 1000000], "
                        "params: 576, macs: 36864");
  geo_with("kernel.yaml", "in: 8, out: 8, kernel: 99, stride: 1, padding: 0, in_hw: [8, 8], params: 576, macs: 36864");
  geo_with("negmacs.yaml", "in: 8, out: 8, kernel: 3, stride: 1, in_hw: [8, 8], params: 576, macs: -5");
  write_all(p("dup.yaml"), "model: tiny\nlayers:\n" + layer + layer);
  write_all(p("deep.yaml"), std::string(5000, '[') + std::string(5000, ']') + "\n");
  write_all(p("notyaml.yaml"), "model: [unclosed\n");
  {
    mpq::io::Indicators t;
    t.layer_names = {"conv2"};
    t.weight = {{{4, 0.01}, {3, 0.02}, {2, 0.04}}};
    t.act = {{{4, 0.1}, {3, 0.2}, {2, 0.4}}};
    mpq::io::save_indicators(p("tiny_ind.pkl"), t);
  }
  fs::create_symlink(ind, p("ind_link.pkl"));
  fs::copy_file(pre, p("ck.svg"));  // a checkpoint where extract would put its plot
  // Checkpoints with damaged position metadata.
  const int64_t big = std::numeric_limits<int64_t>::max();
  altered(fp, p("batch.pt"), "batch", int64_t{-3});
  altered(fp, p("gbatch.pt"), "global_batch", int64_t{-1000});
  altered(fp, p("epoch.pt"), "epoch", big);
  altered(fp, p("epoch9.pt"), "epoch", int64_t{9});
  altered(fp, p("step.pt"), "step", int64_t{-1});
  altered(fp, p("best.pt"), "best_epoch", int64_t{5});
  altered(fp, p("top1.pt"), "best_top1", 250.0);
  altered(fp, p("mode7.pt"), "mode", int64_t{7});
  altered(fp, p("rng7.pt"), "rng", int64_t{7});
  altered(fp, p("meter.pt"), "meter", int64_t{7});
  altered(fp, p("nobatch.pt"), "batch", c10::IValue());
  altered(fp, p("world.pt"), "world_size", int64_t{0});
  altered(pre, p("cands.pt"), "candidate_bits", int64_t{7});
  write_all(p("text.pt"), "not a checkpoint\n");
  write_all(p("trunc.pt"), read_all(fp).substr(0, 4000));
  // Datasets.
  fs::create_directories(p("labels"));
  write_split(p("labels"), "train", 64, 3);
  write_split(p("labels"), "t10k", 16, 4);
  {
    std::string lab = read_all(p("labels/train-labels-idx1-ubyte"));
    lab[8 + 5] = static_cast<char>(200);
    write_all(p("labels/train-labels-idx1-ubyte"), lab);
  }
  fs::create_directories(p("trunc_data"));
  write_split(p("trunc_data"), "train", 64, 3);
  write_split(p("trunc_data"), "t10k", 16, 4);
  write_all(p("trunc_data/train-images-idx3-ubyte"), read_all(p("trunc_data/train-images-idx3-ubyte")).substr(0, 3000));
  fs::create_directories(p("empty_dir"));
  // Configs: a valid finetune config to vary, and its run folder with files a failing run must not touch.
  const std::string ft = f.config("ft", "finetune", "epochs: 1\ncheckpoint_steps: 0\n");
  const std::string fpc = f.config("fpc", "fp", "epochs: 1\ncheckpoint_steps: 0\n");
  fs::create_directories(f.run_dir("ft"));
  write_all(f.run_dir("ft") + "/config.yaml", "# the run's own config, which a failing run must keep\n");
  write_all(f.run_dir("ft") + "/metrics.csv", "epoch,lr\n0,0.1\n");
  auto cfg = [&](const std::string& name, const std::string& kind, const std::string& extra) {
    return f.config(name, kind, extra);
  };
  const std::string base = read_all(ft);
  auto raw_cfg = [&](const std::string& name, const std::string& text) {
    write_all(p(name), text);
    return p(name);
  };
  const std::string resume = " --set resume.path=";

  const std::vector<Case> cases = {
      // --- command line
      {"cli", "frobnicate", 2, "'frobnicate' is not a command"},
      {"cli", "--log-level loud search --model resnet20" + r20, 2, "--log-level: unknown level 'loud'"},
      {"cli", "search --model resnet20" + r20 + " --bogus", 2, "bogus"},
      {"cli", "extract -- --b", 2, "--b"},
      {"cli", "extract -- --input-size", 2, "--input-size"},
      {"cli", "extract " + pre + " -o " + p("x.pkl") + " --input-size 0", 2, "--input-size"},
      {"cli", "extract " + pre + " -o " + p("x.pkl") + " --b 4 3 99", 2, "--b"},
      {"cli", "finetune " + p("nonexistent.yaml"), 2, "nonexistent.yaml"},
      {"cli", "finetune " + p("empty_dir"), 2, "empty_dir"},
      // --- search
      {"search", "search --model resnet20 --i " + p("nonexistent.pkl") + " --b 4 3 2 --wb 3 --ab 3 --bops", 2,
       "nonexistent.pkl"},
      {"search", "search --model resnet20 --i " + p("text.pkl") + " --b 4 3 2 --wb 3 --ab 3 --bops", 2,
       "text.pkl: not a valid pickle"},
      {"search", "search --model resnet20 --i " + p("trunc.pkl") + " --b 4 3 2 --wb 3 --ab 3 --bops", 2, "truncated"},
      {"search", "search --model resnet20 --i " + p("bool.pkl") + " --b 4 --wb 3 --ab 3 --bops", 2,
       "is a bool (expected a number)"},
      {"search", "search --model resnet20 --i " + p("bigkey.pkl") + " --b 4 --wb 3 --ab 3 --bops", 2,
       "not a bit-width from 1 to 32"},
      {"search", "search --model resnet20 --i " + p("negscale.pkl") + " --b 4 --wb 3 --ab 3 --bops", 2,
       "finite and positive"},
      {"search", "search --model resnet20 --i " + p("nan.pkl") + " --b 4 --wb 3 --ab 3 --bops", 2,
       "finite and positive"},
      {"search", "search --model resnet20 --i " + p("evil.pkl") + " --b 4 --wb 3 --ab 3 --bops", 2,
       "mpq runs no code from a pickle"},
      {"search", "search --model resnet18" + r20, 2, "searchable layers"},
      {"search", "search --model resnet51" + r20, 2, "unknown model 'resnet51'"},
      {"search", "search --model resnet20 --i " + ind + " --b 4 3 2", 2, "no constraint enabled"},
      {"search", "search --model resnet20 --i " + ind + " --b 4 3 2 --cr -3", 2, "--cr"},
      {"search", "search --model resnet20 --i " + ind + " --b 4 4 2 --cr 8", 2, "given twice"},
      {"search", "search --model resnet20 --i " + ind + " --b 6 4 3 --cr 8", 2, "no weight indicator for 6 bits"},
      {"search", "search --model resnet20" + r20 + " --time-limit 0", 2, "--time-limit"},
      {"search", "search --model resnet20" + r20 + " --input-size 2000000000", 2, "--input-size"},
      {"search", "search --model resnet20" + r20 + " --in-channels 0", 2, "--in-channels"},
      {"search", "search --model resnet20" + r20 + " --num-classes -1", 2, "--num-classes"},
      {"search", s20 + " --model resnet18", 2, "but --model says 'resnet18'"},
      {"search", s20 + " --cr 1000", 3, "no bit assignment meets --cr 1000"},
      {"output", "search --model resnet20" + r20 + " -o " + ind, 2, "is the same file as --i"},
      {"output", "search --model resnet20" + r20 + " -o " + p("ind_link.pkl"), 2, "is the same file as --i"},
      {"output", s20 + " -o " + geo, 2, "is the same file as --geometry"},
      {"output", "search --model resnet20" + r20 + " -o " + p("missing_dir/pol.yaml"), 2, "does not exist; create it first"},
      {"output", "search --model resnet20" + r20 + " -o " + p("empty_dir"), 2, "is a directory; name a file"},
      {"output", "extract " + pre + " -o " + p("missing_dir/x.pkl"), 2, "does not exist; create it first"},
      {"output", "extract " + pre + " -o " + pre, 2, "is the same file as the checkpoint"},
      {"output", "extract " + p("ck.svg") + " -o " + p("ck.pkl"), 2, "is the same file as the checkpoint"},
      // --- geometry files
      {"geometry", "search --geometry " + p("negch.yaml") + " --i " + p("tiny_ind.pkl") + " --b 4 3 2 --cr 8", 2,
       "in must be from 1 to"},
      {"geometry", "search --geometry " + p("stride0.yaml") + " --i " + p("tiny_ind.pkl") + " --b 4 3 2 --cr 8", 2,
       "stride must be from 1 to"},
      {"geometry", "search --geometry " + p("groups0.yaml") + " --i " + p("tiny_ind.pkl") + " --b 4 3 2 --cr 8", 2,
       "groups must be from 1 to"},
      {"geometry", "search --geometry " + p("groups3.yaml") + " --i " + p("tiny_ind.pkl") + " --b 4 3 2 --cr 8", 2,
       "groups (3) must divide"},
      {"geometry", "search --geometry " + p("huge.yaml") + " --i " + p("tiny_ind.pkl") + " --b 4 3 2 --cr 8", 2,
       "huge.yaml"},
      {"geometry", "search --geometry " + p("kernel.yaml") + " --i " + p("tiny_ind.pkl") + " --b 4 3 2 --cr 8", 2,
       "does not fit"},
      {"geometry", "search --geometry " + p("negmacs.yaml") + " --i " + p("tiny_ind.pkl") + " --b 4 3 2 --cr 8", 2,
       "macs must be from 1 to"},
      {"geometry", "search --geometry " + p("dup.yaml") + " --i " + p("tiny_ind.pkl") + " --b 4 3 2 --cr 8", 2,
       "appears twice"},
      {"geometry", "search --geometry " + p("deep.yaml") + " --i " + p("tiny_ind.pkl") + " --b 4 3 2 --cr 8", 2,
       "nested too deeply (the parser stops at"},
      {"geometry", "search --geometry " + p("notyaml.yaml") + " --i " + p("tiny_ind.pkl") + " --b 4 3 2 --cr 8", 2,
       "notyaml.yaml:"},
      // --- configs
      {"config", "finetune " + cfg("c1", "finetune", "lr: fast\n"), 2, "lr must be a finite number"},
      {"config", "finetune " + raw_cfg("c2.yaml", base + "epochz: 3\n"), 2, "unknown key 'epochz'"},
      {"config", "finetune " + ft + " --set lr", 2, "--set"},
      {"config", "finetune " + ft + " --set nosuch=1", 2, "nosuch"},
      {"config", "finetune " + cfg("c3", "finetune", "epochs: -1\n"), 2, "epochs"},
      {"config", "finetune " + cfg("c4", "finetune", "dataloader: {dataset: fashion_mnist, path: " + f.dir.path() +
                                                        ", batch_size: 0}\n"), 2, "batch_size"},
      {"config", "finetune " + ft + " --set dataloader.fraction=1.5", 2, "fraction"},
      {"config", "finetune " + ft + " --set training_device=tpu", 2, "training_device 'tpu'"},
      {"config", "finetune " + ft + " --set dist_backend=mpi", 2, "dist_backend"},
      {"config", "finetune " + ft + " --set cudnn=fastest", 2, "cudnn"},
      {"config", "finetune " + ft + " --set tf32=maybe", 2, "tf32 must be true or false"},
      {"config", "finetune " + ft + " --set weight_bits=[4,4]", 2, "weight_bits"},
      {"config", "pretrain " + cfg("c5", "fp", "epochs: 1\n"), 2, "fp_model: true trains a full-precision model"},
      {"config", "pretrain " + cfg("c9", "finetune", "epochs: 1\n"), 2, "target_bits"},
      {"config", "eval " + cfg("c6", "finetune", "epochs: 1\n"), 2, "eval needs weights"},
      {"config", "finetune " + raw_cfg("c7.yaml", "name: [unclosed\n"), 2, "c7.yaml:"},
      {"config", "finetune " + raw_cfg("c8.yaml", std::string(3000, '[') + "\n"), 2, "c8.yaml:2:1: not valid YAML: nested too deeply"},
      // --- checkpoints and weights
      {"checkpoint", "finetune " + ft + " --set pre_trained=" + p("text.pt"), 2, "text.pt"},
      {"checkpoint", "finetune " + ft + " --set pre_trained=" + p("trunc.pt"), 2, "a truncated or damaged file?"},
      {"checkpoint", "finetune " + ft + " --set pre_trained=" + p("nonexistent.pt"), 2, "nonexistent.pt"},
      {"checkpoint", "finetune " + ft + " --set pre_trained=" + ind, 2, "ind.pkl"},
      {"checkpoint", "finetune " + fpc + resume + p("batch.pt"), 2, "'batch' is -3"},
      {"checkpoint", "finetune " + fpc + resume + p("gbatch.pt"), 2, "'global_batch' is -1000"},
      {"checkpoint", "finetune " + fpc + resume + p("epoch.pt"), 2, "'epoch' is 9223372036854775807"},
      {"checkpoint", "finetune " + fpc + resume + p("epoch9.pt"), 2, "written at epoch 9"},
      {"checkpoint", "finetune " + fpc + resume + p("step.pt"), 2, "'step' is -1"},
      {"checkpoint", "finetune " + fpc + resume + p("best.pt"), 2, "'best_epoch' is 5"},
      {"checkpoint", "finetune " + fpc + resume + p("top1.pt"), 2, "'best_top1' is 250"},
      {"checkpoint", "finetune " + fpc + resume + p("mode7.pt"), 2, "a checkpoint of an mpq ? run"},
      {"checkpoint", "finetune " + fpc + resume + p("rng7.pt"), 2, "'rng' is not a string"},
      {"checkpoint", "finetune " + fpc + resume + p("meter.pt"), 2, "'meter' is not a list"},
      {"checkpoint", "finetune " + fpc + resume + p("nobatch.pt"), 2, "'batch' is missing"},
      {"checkpoint", "finetune " + fpc + resume + p("world.pt"), 2, "'world_size' is 0"},
      {"checkpoint", "finetune " + fpc + resume + pre, 2, "a checkpoint of an mpq pretrain run"},
      {"checkpoint", "finetune " + fpc + resume + p("text.pt"), 2, "text.pt"},
      {"extract", "extract " + p("text.pt") + " -o " + p("x.pkl"), 2, "text.pt"},
      {"extract", "extract " + fp + " -o " + p("x.pkl") + " --b 4 3 2", 2, "no quantizer scales"},
      {"extract", "extract " + p("cands.pt") + " -o " + p("x.pkl"), 2, "'candidate_bits' is not a list"},
      {"extract", "extract " + pre + " -o " + p("x.pkl") + " --b 4 2", 2, "holds 3 scales but 2"},
      // --- datasets
      {"dataset", "finetune " + fpc + " --set dataloader.path=" + p("nonexistent"), 2, "nonexistent"},
      {"dataset", "finetune " + fpc + " --set dataloader.path=" + p("empty_dir"), 2, "empty_dir"},
      {"dataset", "finetune " + fpc + " --set dataloader.path=" + p("labels"), 2, "holds label 200"},
      {"dataset", "finetune " + fpc + " --set dataloader.num_classes=5", 2, "but dataloader.num_classes is 5"},
      {"dataset", "finetune " + fpc + " --set dataloader.path=" + p("trunc_data"), 2, "train-images-idx3-ubyte"},
      {"dataset", "finetune " + fpc + " --set dataloader.fraction=0.001", 2, "leave 0 training image(s)"},
      {"dataset", "finetune " + fpc + " --set dataloader.val_split=0.001", 2, "holds out no image"},
  };
  Tally t;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.kind + ": mpq " + c.args);
    const auto before = snapshot(f.dir.path());
    const Ran r = sh(std::string(MPQ_BINARY) + " " + c.args + " >/dev/null </dev/null");
    t.judge(c.kind, r, c.code, c.expect, changes(before, snapshot(f.dir.path())));
  }
  t.print("bad-input sweep");
  EXPECT_GE(t.n, 60);
}

// Faults of the process and its surroundings rather than of its inputs: a
// stdout that is full or closed, a checkpoint write that fails (a file-size
// limit stands in for a full disk), SIGTERM, SIGINT and SIGKILL mid-epoch, a
// master that is not there, a closed stderr. Each ends with its documented
// code and one line, and the last checkpoint is intact with nothing
// half-written left beside it.
TEST_F(BadInput, ProcessFaultsEndCleanlyAndKeepTheLastCheckpoint) {
  const Fixture& f = *f_;
  const auto p = [&](const std::string& n) { return f.dir.file(n); };
  const std::string mpq = MPQ_BINARY, pre = f.run_dir("pretrain") + "/last.pt";
  const std::string search = mpq + " search --model resnet20 --i " + p("ind.pkl") + " --b 4 3 2 --wb 3 --ab 3 --bops";
  Tally t;
  // Commands whose output cannot be written change no file.
  auto output_fault = [&](const std::string& kind, const std::string& cmd, int code, const std::string& expect) {
    SCOPED_TRACE(kind + ": " + cmd);
    const auto before = snapshot(f.dir.path());
    t.judge(kind, sh(cmd + " </dev/null"), code, expect, changes(before, snapshot(f.dir.path())));
  };
  output_fault("stdout", search + " >/dev/full", 1, "stdout: write failed (No space left on device)");
  output_fault("stdout", search + " >&-", 1, "stdout is closed; redirect it to a file");
  output_fault("stdout", search + " -o /dev/full >/dev/null", 1, "/dev/full: write failed (No space left on device)");
  output_fault("stdout", mpq + " extract " + pre + " -o " + p("pf.pkl") + " >/dev/full", 1,
               "stdout: write failed (No space left on device)");
  // A run folder after a fault: a readable last.pt and no temporary file.
  auto intact = [&](const std::string& run) {
    EXPECT_NO_THROW(mpq::torchio::read_checkpoint(run + "/last.pt")) << run;
    for (const auto& e : fs::directory_iterator(run))
      EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "left behind: " << e.path();
  };
  const std::string epoch1 = "epochs: 1\nwarmup_epochs: 0\ncheckpoint_steps: 0\n";
  {  // The checkpoint cannot be written: last.pt, best.pt and metrics.csv stay as the first epoch left them.
    SCOPED_TRACE("checkpoint write fails");
    const std::string cfg = f.config("pf_full", "fp", epoch1) + " --set dataloader.fraction=0.25";
    ASSERT_EQ(mpq_run("finetune " + cfg, f.dir).code, 0);
    const std::string run = f.run_dir("pf_full");
    std::map<std::string, std::string> before;
    for (const char* n : {"last.pt", "best.pt", "metrics.csv"}) before[n] = mpq::io::sha256_file(run + "/" + n);
    // SIGXFSZ ignored: a write past the limit fails with EFBIG, as one on a full disk fails with ENOSPC.
    const Ran r = sh("trap '' XFSZ; ulimit -f 1024; exec " + mpq + " finetune " + cfg +
                     " --set epochs=2 --set resume.path=auto >/dev/null");
    std::string diff;
    for (const auto& [n, h] : before)
      if (mpq::io::sha256_file(run + "/" + n) != h) diff += " changed " + n;
    t.judge("disk", r, 1, "last.pt: write failed (File too large)", diff);
    intact(run);
  }
  for (const auto& [sig, name] : {std::pair{SIGTERM, "SIGTERM"}, std::pair{SIGINT, "SIGINT"}}) {
    SCOPED_TRACE(name);
    const std::string run_name = std::string("pf_") + name;
    const int status = run_and_signal("finetune", f.config(run_name, "fp"), f.run_dir(run_name), sig,
                                      p(run_name + ".err"), 2);
    const Ran r{WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), mpq::test::read_all(p(run_name + ".err"))};
    t.judge("signal", r, 5, std::string("interrupted by ") + name + "; saved " + f.run_dir(run_name) + "/last.pt", "");
    intact(f.run_dir(run_name));
  }
  {  // SIGKILL: last.pt is whole; a temporary file a killed write left is removed when the run resumes.
    SCOPED_TRACE("SIGKILL");
    const std::string cfg = f.config("pf_kill", "fp"), run = f.run_dir("pf_kill");
    const int status = run_and_signal("finetune", cfg, run, SIGKILL, p("pf_kill.err"), 2);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the run ended before it was killed";
    EXPECT_NO_THROW(mpq::torchio::read_checkpoint(run + "/last.pt"));
    const std::string stale = run + "/last.pt.tmp.4194305";  // above Linux's largest pid: no process has it
    write_all(stale, read_all(run + "/last.pt").substr(0, 1000));
    const Result r = mpq_run("finetune " + cfg + " --set resume.path=auto", f.dir);
    ++t.n;
    const bool ok = r.code == 0 && r.err.find("removed " + stale) != std::string::npos && !exists(stale);
    t.unclear += !ok;
    EXPECT_TRUE(ok) << r.err;
    intact(run);
  }
  {  // A rank whose master is not there names the address it tried, within dist_timeout.
    const std::string at = "127.0.0.1:" + std::to_string(mpq::test::free_port());
    SCOPED_TRACE("no master at " + at);
    const std::string cfg = f.config("pf_master", "fp", epoch1);
    const auto before = snapshot(f.dir.path());
    const Ran r = sh("MASTER_ADDR=127.0.0.1 MASTER_PORT=" + at.substr(10) +
                     " RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 " + mpq + " finetune " + cfg + " --set dist_timeout=2 >/dev/null");
    t.judge("dist", r, 1, "rank 1: cannot reach the master at " + at, changes(before, snapshot(f.dir.path())));
  }
  {  // A closed stderr: the logs are lost, never written into a checkpoint or the config the run opens.
    SCOPED_TRACE("stderr closed");
    const std::string run = f.run_dir("pf_noerr");
    const Ran r = sh(mpq + " finetune " + f.config("pf_noerr", "fp", "epochs: 1\nwarmup_epochs: 0\n") + " 2>&-");
    ++t.n;
    t.wrong_code += r.code != 0;
    EXPECT_EQ(r.code, 0);
    intact(run);
    EXPECT_NO_THROW(mpq::config::load_config(run + "/config.yaml"));
  }
  t.print("process faults");
  EXPECT_EQ(t.n, 10);
}

}  // namespace

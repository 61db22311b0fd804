// Configs: the original's keys, validation with file:line:col, overrides,
// and every example in configs/ parses.
#include <gtest/gtest.h>

#include <dirent.h>

#include "mpq/common/error.h"
#include "mpq/config/config.h"
#include "mpq/config/options.h"
#include "test_util.h"

using mpq::InputError;
using mpq::config::load_config;

namespace {

// `text` as c.yaml in a fresh folder, loaded.
mpq::config::Config parse(const std::string& text, const std::vector<std::string>& sets = {}) {
  mpq::test::TempDir dir;
  mpq::test::write_all(dir.file("c.yaml"), text);
  return load_config(dir.file("c.yaml"), sets);
}

std::string error_of(const std::string& text, const std::vector<std::string>& sets = {}) {
  try {
    parse(text, sets);
  } catch (const InputError& e) {
    const std::string w = e.what();
    const size_t at = w.find("c.yaml");
    return at == std::string::npos ? w : w.substr(at);
  }
  return "no error";
}

}  // namespace

TEST(Config, OriginalStyleFile) {
  mpq::test::TempDir dir;
  mpq::test::write_all(dir.file("c.yaml"),
                       "name: r18\ntarget_bits: [6, 5, 4, 3, 2]\ngpu: v100_32g\ntraining_device: gpu\n"
                       "dataloader:\n  dataset: imagenet\n  num_classes: 1000\n  path: /data/imagenet\n"
                       "  batch_size: 256\n  workers: 16\n  deterministic: true\n  serialized: false\n  val_split: 0.02\n"
                       "resume:\n  path: \n  lean: false\nlog:\n  num_best_scores: 3\n  print_freq: 20\n"
                       "arch: resnet18\nfreeze_weights: False\npre_trained: /ckpt/r18.pth\n"
                       "quan:\n  act: \n    mode: lsq\n    bit: 2\n    per_channel: false\n    symmetric: false\n"
                       "    all_positive: true\n  weight: \n    mode: lsq\n    bit: 2\n  excepts:\n"
                       "    conv1:\n      act:\n        bit: \n        all_positive: false\n      weight:\n        bit:\n"
                       "    fc:\n      act:\n        bit: 8\n      weight:\n        bit: 8\n"
                       "eval: false\nfp_model: false\nepochs: 5\nsmoothing: 0.1\nopt: sgd\nlr: 0.01\nmomentum: 0.9\n"
                       "weight_decay: 0.000025\nsched: cosine\nmin_lr: 0.00001\ndecay_rate: 0.1\nwarmup_epochs: 0\n"
                       "warmup_lr: 0.00001\ndecay_epochs: 40\ncooldown_epochs: 0\n");
  const auto c = load_config(dir.file("c.yaml"), {"lr=0.02", "dataloader.batch_size=64", "weight_bits=[4, 3]",
                                                  "act_bits=[4, 4]"});
  EXPECT_EQ(c.target_bits, (std::vector<int>{6, 5, 4, 3, 2}));
  EXPECT_EQ(c.dataloader.dataset, "imagenet");
  EXPECT_EQ(c.dataloader.batch_size, 64);
  EXPECT_DOUBLE_EQ(c.lr, 0.02);
  EXPECT_EQ(c.weight_bits, (std::vector<int>{4, 3}));
  EXPECT_EQ(c.pre_trained, "/ckpt/r18.pth");
  EXPECT_TRUE(c.quan_act.all_positive);
  EXPECT_FALSE(c.excepts.at("conv1").act_bit.has_value());
  EXPECT_EQ(c.excepts.at("fc").weight_bit.value(), 8);
  EXPECT_EQ(c.resume_path, "");
  // The resolved config reads back the same.
  mpq::test::write_all(dir.file("r.yaml"), mpq::config::to_yaml(c));
  const auto back = load_config(dir.file("r.yaml"));
  EXPECT_EQ(back.dataloader.batch_size, 64);
  EXPECT_EQ(back.weight_bits, c.weight_bits);
}

TEST(Config, ErrorsNameFileLineAndKey) {
  EXPECT_EQ(error_of("lr: abc\n"), "c.yaml:1:5: lr must be a finite number (got 'abc')");
  EXPECT_EQ(error_of("lrr: 0.1\n"), "c.yaml:1:1: unknown key 'lrr' (did you mean 'lr'?)");
  EXPECT_EQ(error_of("dataloader:\n  batchsize: 3\n"),
            "c.yaml:2:3: unknown key 'dataloader.batchsize' (did you mean 'batch_size'?)");
  EXPECT_EQ(error_of("dataloader:\n  batch_size: 0\n"), "c.yaml:2:15: dataloader.batch_size must be between 1 and 1048576 (got 0)");
  EXPECT_EQ(error_of("dataloader:\n  dataset: fashion-mnist\n"),
            "c.yaml:2:12: dataloader.dataset 'fashion-mnist' is not one of fashion_mnist, mnist, cifar10, imagenet "
            "(did you mean 'fashion_mnist'?)");
  EXPECT_EQ(error_of("dtype: float16\n"), "c.yaml:1:8: dtype 'float16' is not one of float32, float64");
  EXPECT_EQ(error_of("dist_backend: mpi\n"), "c.yaml:1:15: dist_backend 'mpi' is not one of auto, gloo, nccl");
  EXPECT_EQ(error_of("cudnn: fast\n"), "c.yaml:1:8: cudnn 'fast' is not one of benchmark, deterministic, heuristic");
  EXPECT_EQ(error_of("tf32: sometimes\n"), "c.yaml:1:7: tf32 must be true or false (got 'sometimes')");
  EXPECT_EQ(error_of("dist_bucket_mb: 0\n"), "c.yaml:1:17: dist_bucket_mb must be in [0.001, 4096] (got 0)");
  EXPECT_EQ(error_of("target_bits: [6, 1]\n"), "c.yaml:1:18: target_bits holds 1 (bit-widths must be 2 to 16)");
  EXPECT_NE(error_of("pre_trained: True\n").find("pre_trained must be the path of a PyTorch or mpq checkpoint"),
            std::string::npos);
  EXPECT_NE(error_of("weight_bits: [4]\nact_bits: [4, 4]\n").find("weight_bits has 1 entries but act_bits has 2"),
            std::string::npos);
  EXPECT_EQ(error_of("quan:\n  weight:\n    per_channel: true\n"),
            "quan.weight.per_channel: per-channel scales are not supported (mpq learns one scale per tensor); set it to false");
  EXPECT_EQ(error_of("epochs: 2\n", {"epochs"}), "--set epochs: expected key=value, e.g. --set lr=0.01");
  EXPECT_EQ(error_of("[1, 2]\n").find("c.yaml: a config must be a mapping"), 0u);
}

TEST(Config, EveryExampleParses) {
  const std::string dir = std::string(MPQ_SOURCE_DIR) + "/configs";
  DIR* d = ::opendir(dir.c_str());
  ASSERT_NE(d, nullptr);
  int n = 0;
  while (dirent* e = ::readdir(d)) {
    const std::string f = e->d_name;
    if (f.size() < 5 || f.substr(f.size() - 5) != ".yaml") continue;
    SCOPED_TRACE(f);
    EXPECT_NO_THROW({
      const auto c = load_config(dir + "/" + f);
      EXPECT_TRUE(c.notices.empty()) << c.notices.front();  // the shipped files set no key that changes nothing
    });
    ++n;
  }
  ::closedir(d);
  EXPECT_GE(n, 2);
}

TEST(Config, DuplicateKeysAreErrors) {
  mpq::test::TempDir dir;
  mpq::test::write_all(dir.file("d.yaml"), "lr: 0.1\nepochs: 2\nlr: 0.2\n");
  try {
    mpq::config::load_config(dir.file("d.yaml"));
    FAIL() << "accepted a duplicate key";
  } catch (const mpq::InputError& e) {
    EXPECT_EQ(std::string(e.what()), dir.file("d.yaml") + ":3:1: duplicate key 'lr' (first at " + dir.file("d.yaml") + ":1:1)");
  }
}

namespace {

bool has_notice(const mpq::config::Config& c, const std::string& want) {
  for (const auto& n : c.notices)
    if (n.find(want) != std::string::npos) return true;
  return false;
}

}  // namespace

// Each key of the original's that mpq does not act on is refused with the
// reason, or accepted with a notice saying why it changes nothing; none is
// parsed and silently dropped.
TEST(Config, EveryKeyDoesWhatItSaysOrIsRefused) {
  // quan.{act,weight}: only the original's defaults are mpq's quantizers.
  EXPECT_NE(error_of("quan:\n  act: {all_positive: false}\n").find("quan.act.all_positive: false is not supported"),
            std::string::npos);
  EXPECT_NE(error_of("quan:\n  act: {symmetric: true}\n").find("quan.act.symmetric: true is not supported"),
            std::string::npos);
  EXPECT_NE(error_of("quan:\n  weight: {all_positive: true}\n").find("quan.weight.all_positive: true is not supported"),
            std::string::npos);
  EXPECT_NE(error_of("quan:\n  weight: {symmetric: true}\n").find("signed asymmetric"), std::string::npos);
  EXPECT_TRUE(parse("quan:\n  act: {bit: 2}\n  weight: {bit: 2}\n").notices.empty());
  EXPECT_TRUE(has_notice(parse("quan:\n  act: {bit: 4}\n"), "quan.act.bit: ignored because the bits come from"));
  EXPECT_TRUE(has_notice(parse("quan:\n  weight: {bit: 8}\n"), "quan.weight.bit: ignored because"));
  // quan.excepts: the first conv, its BatchNorm and the fc, at 8 bits.
  EXPECT_NE(error_of("arch: resnet18\nquan:\n  excepts:\n    layer1.0.conv1: {weight: {bit: 4}}\n")
                .find("quan.excepts.layer1.0.conv1: mpq keeps exactly the first conv (conv1), its BatchNorm (bn1) "
                      "and the fc (fc) out of the search"),
            std::string::npos);
  EXPECT_NE(error_of("arch: resnet18\nquan:\n  excepts:\n    fc: {weight: {bit: 4}}\n").find(".weight.bit: 4 is not supported"),
            std::string::npos);
  EXPECT_NE(error_of("arch: resnet18\nquan:\n  excepts:\n    fc: {act: {bit: 6}}\n").find(".act.bit: 6 is not supported"),
            std::string::npos);
  EXPECT_NE(error_of("arch: resnet18\nquan:\n  excepts:\n    fc: {act: {all_positive: false}}\n").find("is unsigned"),
            std::string::npos);
  const auto ex = parse("arch: resnet50\nquan:\n  excepts:\n    module.conv1: {act: {bit: 8}, weight: {bit: 8}}\n"
                        "    bn1: {act: {bit: 8}}\n    fc: {act: {bit: 8}, weight: {bit: 8}}\n");
  EXPECT_TRUE(has_notice(ex, "quan.excepts.module.conv1.act: ignored because the first conv's input, the image, is not quantized"));
  EXPECT_TRUE(has_notice(ex, "quan.excepts.bn1: ignored because a BatchNorm has no quantizer"));
  EXPECT_EQ(ex.notices.size(), 2u);
  EXPECT_NO_THROW(parse("arch: mobilenetv1\nquan:\n  excepts:\n    first_conv.0: {weight: {bit: 8}}\n    first_conv.1: {}\n"));
  // resume.lean: refused, with what to do instead; freeze_weights acts (Train.FreezeWeightsTrainsOnlyScalesAndBatchNorm).
  EXPECT_NE(error_of("resume:\n  path: x.pt\n  lean: true\n").find("give the checkpoint as pre_trained instead"),
            std::string::npos);
  EXPECT_TRUE(parse("freeze_weights: true\n").freeze_weights);
  EXPECT_TRUE(parse("freeze_weights: false\nresume: {lean: false}\n").notices.empty());
  // dataloader.deterministic / serialized: mpq is always seeded and in-process.
  EXPECT_TRUE(parse("dataloader: {deterministic: true, serialized: false}\n").notices.empty());
  EXPECT_TRUE(has_notice(parse("dataloader: {deterministic: false}\n"), "always seeded by `seed` and repeatable"));
  EXPECT_TRUE(has_notice(parse("dataloader: {serialized: true}\n"), "dataloader.serialized: ignored because"));
  // decay_rate / decay_epochs: no effect under cosine, the original's values pass quietly.
  EXPECT_TRUE(parse("decay_rate: 0.1\ndecay_epochs: 30\n").notices.empty());
  EXPECT_TRUE(has_notice(parse("decay_rate: 0.5\n"), "decay_rate: ignored because sched is cosine"));
  EXPECT_TRUE(has_notice(parse("decay_epochs: 10\n"), "decay_epochs: ignored because sched is cosine"));
  // log.num_best_scores: range-checked here, the scoreboard is the trainer's (train_test).
  EXPECT_NE(error_of("log: {num_best_scores: 0}\n").find("log.num_best_scores must be between 1 and 100"), std::string::npos);
}

TEST(Config, TheResolvedFileHoldsEveryKeyAndReadsBackTheSame) {
  const auto c = parse("arch: resnet18\ngpu: v100\nlog: {num_best_scores: 5, print_freq: 7}\ndecay_epochs: 30\n"
                       "quan:\n  excepts:\n    conv1: {weight: {bit: 8}}\n    fc: {act: {bit: 8}, weight: {bit: 8}}\n");
  const std::string text = mpq::config::to_yaml(c);
  for (const char* key : {"gpu:", "serialized:", "lean:", "num_best_scores: 5", "print_freq: 7", "freeze_weights:",
                          "quan:", "all_positive:", "symmetric:", "excepts:", "decay_rate:", "decay_epochs:"})
    EXPECT_NE(text.find(key), std::string::npos) << key << " missing from\n" << text;
  const auto back = parse(text);
  EXPECT_EQ(mpq::config::to_yaml(back), text);
  EXPECT_TRUE(back.notices.empty());
  EXPECT_EQ(back.excepts.at("fc").act_bit.value(), 8);
  EXPECT_EQ(back.num_best_scores, 5);
}

// The config is parsed once, in mpq, and reaches the plugin as the rooms'
// options: every key a room uses arrives there, through the request's
// plain struct, as the file set it.
TEST(Config, EveryRoomGetsItsKeysThroughThePluginRequest) {
  const auto c = parse(
      "name: r\noutput_dir: /o\narch: resnet18\npre_trained: /w.pt\npre_trained_strict: false\n"
      "target_bits: [5, 3]\nweight_bits: [4, 3]\nact_bits: [2, 5]\ntraining_device: cpu\n"
      "dataloader: {dataset: cifar10, num_classes: 7, path: /d, batch_size: 9, workers: 3, strict: true,"
      " val_split: 0.25, fraction: 0.5}\nresume: {path: auto}\nlog: {num_best_scores: 4, print_freq: 11}\n"
      "freeze_weights: true\nepochs: 6\nsmoothing: 0.2\nlr: 0.3\nmomentum: 0.8\nweight_decay: 0.001\nmin_lr: 0.002\n"
      "warmup_epochs: 2\nwarmup_lr: 0.004\ncooldown_epochs: 1\nval_cycle: 2\nseed: 17\ndistill: true\nsync_bn: true\n"
      "channels_last: false\nfused_bn: false\ndtype: float64\ncheckpoint_steps: 5\nbn_calib_images: 77\ndist_timeout: 33\n"
      "dist_bucket_mb: 2.5\ndist_backend: gloo\nthreads: 3\ncudnn: deterministic\ntf32: false\neval: true\nfp_model: true\n");
  const mpq::config::RunOptions sent = mpq::config::translate(c);
  const mpq_torch_run_options wire = mpq::config::encode(sent);
  const mpq::config::RunOptions o = mpq::config::decode(wire);
  EXPECT_EQ(o.source, c.source);
  EXPECT_TRUE(o.eval && o.fp_model);
  const auto& d = o.data;
  EXPECT_EQ(d.source, c.source);
  EXPECT_EQ(d.dataset, "cifar10");
  EXPECT_EQ(d.path, "/d");
  EXPECT_EQ(d.num_classes, 7);
  EXPECT_EQ(d.batch_size, 9);
  EXPECT_EQ(d.workers, 3);
  EXPECT_TRUE(d.strict);
  EXPECT_EQ(d.val_split, 0.25);
  EXPECT_EQ(d.fraction, 0.5);
  EXPECT_EQ(d.seed, 17);
  const auto& m = o.model;
  EXPECT_EQ(m.arch, "resnet18");
  EXPECT_EQ(m.num_classes, 7);
  EXPECT_EQ(m.pre_trained, "/w.pt");
  EXPECT_FALSE(m.pre_trained_strict);
  EXPECT_EQ(m.target_bits, (std::vector<int>{5, 3}));
  EXPECT_EQ(m.weight_bits, (std::vector<int>{4, 3}));
  EXPECT_EQ(m.act_bits, (std::vector<int>{2, 5}));
  EXPECT_FALSE(m.channels_last);
  EXPECT_FALSE(m.fused_bn);
  EXPECT_EQ(m.dtype, "float64");
  const auto& s = o.schedule;
  EXPECT_EQ(s.lr, 0.3);
  EXPECT_EQ(s.min_lr, 0.002);
  EXPECT_EQ(s.warmup_lr, 0.004);
  EXPECT_EQ(s.epochs, 6);
  EXPECT_EQ(s.warmup_epochs, 2);
  EXPECT_EQ(s.cooldown_epochs, 1);
  const auto& l = o.loop;
  EXPECT_EQ(l.momentum, 0.8);
  EXPECT_EQ(l.weight_decay, 0.001);
  EXPECT_EQ(l.smoothing, 0.2);
  EXPECT_TRUE(l.distill && l.freeze_weights && l.sync_bn);
  EXPECT_EQ(l.val_cycle, 2);
  EXPECT_EQ(l.print_freq, 11);
  EXPECT_EQ(l.checkpoint_steps, 5);
  EXPECT_EQ(l.dist_bucket_mb, 2.5);
  EXPECT_EQ(l.resume_path, "auto");
  EXPECT_EQ(l.seed, 17);
  EXPECT_EQ(o.evaluation.bn_calib_images, 77);
  EXPECT_EQ(o.evaluation.smoothing, 0.2);
  EXPECT_EQ(o.process.training_device, "cpu");
  EXPECT_EQ(o.process.dist_backend, "gloo");
  EXPECT_EQ(o.process.dist_timeout_s, 33);
  EXPECT_EQ(o.process.threads, 3);
  EXPECT_EQ(o.process.cudnn, "deterministic");
  EXPECT_FALSE(o.process.tf32);
  EXPECT_EQ(o.process.seed, 17);
  EXPECT_EQ(o.files.output_dir, "/o");
  EXPECT_EQ(o.files.name, "r");
  EXPECT_EQ(o.files.num_best_scores, 4);
  EXPECT_EQ(o.files.resolved_yaml, mpq::config::to_yaml(c));
  // The policy file, the other way to give the bits.
  const auto p = parse("policy: /p.yaml\n");
  EXPECT_EQ(mpq::config::decode(mpq::config::encode(mpq::config::translate(p))).model.policy, "/p.yaml");
}

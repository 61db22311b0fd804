// Configs: the original's keys, validation with file:line:col, overrides,
// and every example in configs/ parses.
#include <gtest/gtest.h>

#include <dirent.h>

#include "mpq/common/error.h"
#include "mpq/config/config.h"
#include "test_util.h"

using mpq::InputError;
using mpq::config::load_config;

namespace {

std::string error_of(const std::string& text, const std::vector<std::string>& sets = {}) {
  mpq::test::TempDir dir;
  mpq::test::write_all(dir.file("c.yaml"), text);
  try {
    load_config(dir.file("c.yaml"), sets);
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
    EXPECT_NO_THROW(load_config(dir + "/" + f));
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

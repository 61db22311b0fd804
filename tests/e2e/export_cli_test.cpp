// mpq export end to end on Fashion-MNIST: a short finetune, its export from
// the config (BatchNorm as mpq eval recalibrates it) and from the checkpoint,
// onnxruntime against mpq's fake-quantized logits on all 10,000 test images
// (where Python has onnx and onnxruntime), and bad input.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdlib>
#include <string>

#include "test_util.h"

namespace {

using mpq::test::TempDir;

const char* kFashion = "/usr/share/datasets/fashion-mnist";

struct Result {
  int code;
  std::string out, err;
};

Result run(const std::string& cmd, const TempDir& dir) {
  const std::string full = cmd + " >" + dir.file("stdout") + " 2>" + dir.file("stderr");
  const int status = std::system(full.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, mpq::test::read_all(dir.file("stdout")),
          mpq::test::read_all(dir.file("stderr"))};
}
Result mpq_run(const std::string& args, const TempDir& dir) { return run(std::string(MPQ_BINARY) + " " + args, dir); }

std::string field(const std::string& yaml, const std::string& key) {
  const size_t at = yaml.find("\n" + key + ": ");
  const size_t start = at == std::string::npos ? (yaml.rfind(key + ": ", 0) == 0 ? 0 : std::string::npos) : at + 1;
  if (start == std::string::npos) return "";
  const size_t v = start + key.size() + 2;
  return yaml.substr(v, yaml.find('\n', v) - v);
}

bool exists(const std::string& p) { return ::access(p.c_str(), F_OK) == 0; }

// Python with onnx, onnxruntime and torch, or "" (the reason in *why).
std::string onnx_python(std::string* why) {
  const std::string py = mpq::test::torch_python();
  if (py.empty()) {
    *why = mpq::test::kNoTorchPython;
    return "";
  }
  if (std::system((py + " -c 'import onnx, onnxruntime' >/dev/null 2>&1").c_str()) != 0) {
    *why = "onnx and onnxruntime are not installed in " + py + " (pip install onnx onnxruntime)";
    return "";
  }
  return py;
}

class ExportCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!exists(std::string(kFashion) + "/t10k-images-idx3-ubyte.gz")) return;
    dir_ = new TempDir();
    // Every weight container but int2 (opset 21), a Clip below 8 bits, 8-bit layers without one.
    config_ = dir_->file("ft.yaml");
    mpq::test::write_all(config_, std::string("name: ft\noutput_dir: ") + dir_->file("out") +
                                      "\narch: resnet20\ndataloader: {dataset: fashion_mnist, path: " + kFashion +
                                      ", batch_size: 64, workers: 2, fraction: 0.02}\n"
                                      "epochs: 2\nlr: 0.02\nwarmup_epochs: 1\nwarmup_lr: 0.001\nthreads: 2\n"
                                      "bn_calib_images: 512\nlog: {print_freq: 100}\n"
                                      "weight_bits: [4, 3, 2, 4, 3, 2, 4, 3, 8, 2, 4, 3, 2, 4, 3, 8, 2, 4, 3, 6]\n"
                                      "act_bits:    [4, 4, 3, 3, 2, 2, 4, 4, 8, 3, 3, 2, 2, 4, 4, 8, 3, 3, 6, 5]\n");
    const Result r = mpq_run("finetune " + config_, *dir_);
    trained_ = r.code == 0;
    if (!trained_) std::fprintf(stderr, "finetune failed:\n%s\n", r.err.c_str());
    // The config again, for export and eval: the finetuned weights.
    eval_config_ = dir_->file("ev.yaml");
    mpq::test::write_all(eval_config_, mpq::test::read_all(config_) + "pre_trained: " + dir_->file("out/ft/best.pt") + "\n");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (dir_ == nullptr) GTEST_SKIP() << "dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)";
    ASSERT_TRUE(trained_) << "the finetune run failed";
  }

  static TempDir* dir_;
  static bool trained_;
  static std::string config_, eval_config_;
};
TempDir* ExportCli::dir_ = nullptr;
bool ExportCli::trained_ = false;
std::string ExportCli::config_, ExportCli::eval_config_;

TEST_F(ExportCli, FromTheConfigAgreesWithEvalAndOnnxruntime) {
  const Result ev = mpq_run("eval " + eval_config_, *dir_);
  ASSERT_EQ(ev.code, 0) << ev.err;
  const std::string onnx = dir_->file("cfg.onnx"), ref = dir_->file("ref");
  const Result ex = mpq_run("export " + eval_config_ + " -o " + onnx + " --reference " + ref, *dir_);
  ASSERT_EQ(ex.code, 0) << ex.err;
  EXPECT_EQ(field(ex.out, "opset"), "21");
  EXPECT_EQ(field(ex.out, "batchnorm"), "recalibrated");
  EXPECT_EQ(field(ex.out, "matches_policy"), "true");
  EXPECT_NE(ex.out.find("from_graph: {gbitops: " + field(ev.out, "gbitops")), std::string::npos) << ex.out << ev.out;
  EXPECT_NE(ex.out.find("{name: layer1.1.conv1, op: Conv, weight_bits: 2, weight_container: int4, act_bits: 3"),
            std::string::npos)
      << ex.out;
  EXPECT_NE(ex.out.find("{name: layer2.0.downsample.0, op: Conv, weight_bits: 8, weight_container: int8, act_bits: 8"),
            std::string::npos)
      << ex.out;
  std::string why;
  const std::string py = onnx_python(&why);
  if (py.empty()) GTEST_SKIP() << why;
  const Result ck = run(py + " " + MPQ_SOURCE_DIR + "/tests/e2e/onnx_check.py " + onnx + " " + ref, *dir_);
  EXPECT_EQ(ck.code, 0) << ck.out << ck.err;
  EXPECT_EQ(field(ck.out, "images"), "10000") << ck.out;
  EXPECT_EQ(field(ck.out, "verdict"), "agree") << ck.out;
  EXPECT_EQ(field(ck.out, "unexplained"), "0") << ck.out;
  // The reference logits are mpq eval's forward: the same top-1.
  EXPECT_EQ(field(ck.out, "top1_mpq"), field(ev.out, "top1")) << ck.out << ev.out;
}

TEST_F(ExportCli, FromTheCheckpointAtEveryOpset) {
  const std::string ckpt = dir_->file("out/ft/best.pt");
  std::string sizes[3];
  int i = 0;
  for (const char* opset : {"13", "21", "25"}) {
    const std::string onnx = dir_->file(std::string("ck") + opset + ".onnx");
    const Result ex = mpq_run("export " + ckpt + " -o " + onnx + " --opset " + opset, *dir_);
    ASSERT_EQ(ex.code, 0) << ex.err;
    EXPECT_EQ(field(ex.out, "batchnorm"), "as stored");
    EXPECT_EQ(field(ex.out, "matches_policy"), "true");
    sizes[i++] = field(ex.out, "weight_bytes_stored");
    EXPECT_NE(ex.out.find(std::string("weight_container: ") + (opset == std::string("25") ? "int2" : opset == std::string("21") ? "int4" : "int8")),
              std::string::npos)
        << ex.out;
  }
  // Smaller containers, smaller files.
  EXPECT_GT(std::stol(sizes[0]), std::stol(sizes[1]));
  EXPECT_GT(std::stol(sizes[1]), std::stol(sizes[2]));
  std::string why;
  const std::string py = onnx_python(&why);
  if (py.empty()) GTEST_SKIP() << why;
  const std::string ref = dir_->file("ref_ck");
  ASSERT_EQ(mpq_run("export " + ckpt + " -o " + dir_->file("ck25.onnx") + " --opset 25 --reference " + ref, *dir_).code, 0);
  const Result ck = run(py + " " + MPQ_SOURCE_DIR + "/tests/e2e/onnx_check.py " + dir_->file("ck25.onnx") + " " + ref, *dir_);
  EXPECT_EQ(ck.code, 0) << ck.out << ck.err;
  EXPECT_EQ(field(ck.out, "verdict"), "agree") << ck.out;
}

TEST_F(ExportCli, BadInputIsOneLineExitTwoAndLeavesNoFile) {
  const std::string out = dir_->file("bad.onnx");
  const auto refused = [&](const std::string& args, const std::string& says) {
    const Result r = mpq_run("export " + args, *dir_);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(says), std::string::npos) << args << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(exists(out)) << args;
  };
  // A full-precision checkpoint, as a source and as a config's weights.
  mpq::test::write_all(dir_->file("fp.yaml"), std::string("name: fp\noutput_dir: ") + dir_->file("out") +
                                                  "\narch: resnet20\nfp_model: true\nepochs: 1\n"
                                                  "dataloader: {dataset: fashion_mnist, path: " + kFashion +
                                                  ", fraction: 0.005}\nthreads: 2\n");
  ASSERT_EQ(mpq_run("finetune " + dir_->file("fp.yaml"), *dir_).code, 0);
  refused(dir_->file("out/fp/last.pt") + " -o " + out, "a full-precision checkpoint");
  mpq::test::write_all(dir_->file("fpw.yaml"), mpq::test::read_all(config_) + "pre_trained: " + dir_->file("out/fp/last.pt") + "\n");
  refused(dir_->file("fpw.yaml") + " -o " + out, "holds no quantizer scales");
  refused(dir_->file("fp.yaml") + " -o " + out, "fp_model: true is a full-precision model");
  // A config without weights; a checkpoint that is not mpq's.
  refused(config_ + " -o " + out, "export needs the finetuned weights");
  mpq::test::write_all(dir_->file("other.pt"), std::string("\x80\x02}q\x00.", 6));
  refused(dir_->file("other.pt") + " -o " + out, "legacy (pre-1.6) torch.save file");
  // Outputs: a missing folder, the source itself, an opset out of range.
  refused(eval_config_ + " -o " + dir_->file("nowhere/m.onnx"), "nowhere");
  const std::string before = mpq::test::read_all(eval_config_);
  const Result same = mpq_run("export " + eval_config_ + " -o " + eval_config_, *dir_);
  EXPECT_EQ(same.code, 2) << same.err;
  EXPECT_EQ(mpq::test::read_all(eval_config_), before) << "the source was overwritten";
  refused(eval_config_ + " -o " + out + " --opset 12", "--opset");
  // The finetuned scales load at any bit-width: 12-bit activations need opset 21.
  refused(eval_config_ + " -o " + out + " --opset 20 --set 'act_bits=[12, 4, 3, 3, 2, 2, 4, 4, 8, 3, 3, 2, 2, 4, 4, 8, 3, 3, 6, 5]'",
          "layer1.0.conv1 has 12-bit activations, which opset 20 cannot hold (use --opset 21 or later)");
  refused(eval_config_ + " -o " + out + " --reference " + dir_->file("nowhere/ref"), "nowhere");
}

}  // namespace

// The training commands end to end on a small synthetic dataset written as
// IDX files: exact resume after SIGKILL and SIGTERM, divergence, metrics
// files, finetune and eval of a policy.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "mpq/io/indicators.h"
#include "mpq/io/tb_events.h"
#include "train_fixture.h"

namespace {

using namespace mpq::test::train;

// Runs `command` on config "a" to its end, and on config "b" until `sig`
// once "b" has written `steps` checkpoints; returns "b"'s wait status.
int run_whole_and_stopped(const Fixture& f, const std::string& command, int sig, int steps,
                          const std::string& extra = "") {
  const Result a = mpq_run(command + " " + f.config("a", command, extra), f.dir);
  EXPECT_EQ(a.code, 0) << a.err;
  return run_and_signal(command, f.config("b", command, extra), f.run_dir("b"), sig, f.dir.file("b.err"), steps);
}

// Resumes "b" from its last.pt; it must end bit-identical to "a".
void resume_and_compare(const Fixture& f, const std::string& command) {
  const Result r = mpq_run(command + " " + f.dir.file("b.yaml") + " --set resume.path=auto", f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("resumed from " + f.run_dir("b") + "/last.pt"), std::string::npos) << r.err;
  expect_same_state(f.run_dir("a") + "/last.pt", f.run_dir("b") + "/last.pt");
}

TEST(Train, PretrainKilledMidEpochResumesToTheSameWeights) {
  Fixture f;
  const int status = run_whole_and_stopped(f, "pretrain", SIGKILL, 3);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the run ended before it was killed";
  const auto ck = mpq::torchio::read_checkpoint(f.run_dir("b") + "/last.pt");  // never a torn file
  EXPECT_EQ(ck.root.find("epoch")->as_int(), 0) << "killed in the middle of the first epoch";
  resume_and_compare(f, "pretrain");
}

TEST(Train, FinetuneStoppedBySigtermSavesAndResumesExactly) {
  Fixture f;
  const int status = run_whole_and_stopped(f, "finetune", SIGTERM, 2, "pre_trained: " + f.fp_weights() + "\n");
  const std::string err = mpq::test::read_all(f.dir.file("b.err"));
  ASSERT_TRUE(WIFEXITED(status)) << "SIGTERM must end the run cleanly";
  EXPECT_EQ(WEXITSTATUS(status), 5) << err;
  EXPECT_NE(err.find("interrupted by SIGTERM; saved " + f.run_dir("b") + "/last.pt"), std::string::npos) << err;
  resume_and_compare(f, "finetune");
  // Metrics: one CSV row and one set of TensorBoard scalars per epoch.
  const std::string csv = mpq::test::read_all(f.run_dir("a") + "/metrics.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3) << csv;
  std::string tb;
  for (const auto& e : std::filesystem::directory_iterator(f.run_dir("a")))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) tb = e.path();
  ASSERT_FALSE(tb.empty());
  int val_top1 = 0;
  for (const auto& s : mpq::io::read_tb_scalars(tb)) val_top1 += s.tag == "val/top1";
  EXPECT_EQ(val_top1, 2);
}

TEST(Train, FullPrecisionThenEvalOfAPolicy) {
  Fixture f;
  ASSERT_TRUE(exists(f.fp_weights()));
  // Eval of the fp weights quantized at the policy (BN recalibrated, act scales initialised there).
  const std::string cfg = f.config("ev", "finetune", "pre_trained: " + f.fp_weights() + "\n");
  const Result e = mpq_run("eval " + cfg, f.dir);
  ASSERT_EQ(e.code, 0) << e.err;
  for (const char* k : {"top1: ", "top5: ", "loss: ", "size_mb: ", "gbitops: ", "compression_ratio: ", "bn_recalibrated: true"})
    EXPECT_NE(e.out.find(k), std::string::npos) << k << "\n" << e.out;
  // The synthetic task is easy: the full-precision model learns it.
  const Result efp = mpq_run("eval " + f.config("evfp", "fp", "pre_trained: " + f.fp_weights() + "\n"), f.dir);
  ASSERT_EQ(efp.code, 0) << efp.err;
  const size_t at = efp.out.find("top1: ");
  ASSERT_NE(at, std::string::npos);
  EXPECT_GT(std::stod(efp.out.substr(at + 6)), 60.0) << efp.out;
}

TEST(Train, ImportanceIsTheQuantizationErrorOfTheFloatNetwork) {
  Fixture f;
  const Result fp = mpq_run("finetune " + f.config("fp", "fp", "epochs: 1\nwarmup_epochs: 0\ncheckpoint_steps: 0\n"), f.dir);
  ASSERT_EQ(fp.code, 0) << fp.err;
  const std::string ckpt = f.run_dir("fp") + "/best.pt";
  const std::string cfg = f.config("imp", "pretrain", "pre_trained: " + ckpt + "\n");
  const std::string out = f.dir.file("qerror.pkl");
  const Result r = mpq_run("importance " + cfg + " -o " + out + " --batches 2", f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("on 64 images"), std::string::npos) << r.err;  // 2 batches of 32
  const mpq::io::Indicators ind = mpq::io::load_indicators(out);
  ASSERT_EQ(ind.layer_names.size(), 20u);
  EXPECT_EQ(ind.layer_names[0], "layer1.0.conv1");
  // Errors grow as the bits fall, for every layer, weights and activations.
  for (size_t l = 0; l < 20; ++l)
    for (const auto* t : {&ind.weight[l], &ind.act[l]}) {
      ASSERT_EQ(t->size(), 3u);
      EXPECT_LT(t->at(4), t->at(3)) << ind.layer_names[l];
      EXPECT_LT(t->at(3), t->at(2)) << ind.layer_names[l];
    }
  // The weight error from its definition: rounding at the LSQ initial step size.
  const auto ck = mpq::torchio::read_checkpoint(ckpt);
  torch::Tensor w;
  for (const auto& [k, t] : ck.state)
    if (k == "layer2.0.conv2.weight") w = t.to(torch::kDouble);
  ASSERT_TRUE(w.defined());
  const double mu = w.mean().item<double>(), sd = w.std().item<double>();
  const size_t at = std::find(ind.layer_names.begin(), ind.layer_names.end(), "layer2.0.conv2") - ind.layer_names.begin();
  ASSERT_LT(at, ind.layer_names.size());
  for (int b : {4, 3, 2}) {
    const double s = static_cast<float>(std::max(std::abs(mu - 3 * sd), std::abs(mu + 3 * sd)) / std::pow(2.0, b - 1));
    const double n = -std::pow(2.0, b - 1), p = std::pow(2.0, b - 1) - 1;
    const double expect = ((w / s).clamp(n, p).round() * s - w).pow(2).sum().item<double>();
    EXPECT_NEAR(ind.weight[at].at(b), expect, 1e-5 * expect) << b;
  }
  // The search takes it as it takes learned indicators.
  const Result s = mpq_run("search --model resnet20 --input-size 28 --in-channels 1 --num-classes 10 --i " + out +
                               " --b 4 3 2 --wb 3 --ab 3 --bops",
                           f.dir);
  EXPECT_EQ(s.code, 0) << s.err;
  // Random weights measure nothing: a config without pre_trained is refused.
  const Result none = mpq_run("importance " + f.config("imp0", "pretrain") + " -o " + f.dir.file("x.pkl"), f.dir);
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("pre_trained"), std::string::npos) << none.err;
  EXPECT_FALSE(exists(f.dir.file("x.pkl")));
}

TEST(Train, DivergenceStopsWithTheStep) {
  Fixture f;
  const Result r = mpq_run("finetune " + f.config("nan", "fp", "lr: 1000\nwarmup_epochs: 0\ncheckpoint_steps: 0\n"), f.dir);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("training diverged: non-finite loss at epoch 1, step "), std::string::npos) << r.err;
}

// Weights whose SAT fc has collapsed (every weight rounds to zero) still
// evaluate, as one class for every input: eval says why.
TEST(Train, EvalOfACollapsedFcSaysSo) {
  Fixture f;
  const std::string ft = f.config("ft", "finetune", "epochs: 1\ncheckpoint_steps: 0\npre_trained: " + f.fp_weights() + "\n");
  ASSERT_EQ(mpq_run("finetune " + ft + " --set dataloader.fraction=0.25", f.dir).code, 0);
  auto ck = mpq::torchio::read_checkpoint(f.run_dir("ft") + "/best.pt");
  for (auto& [name, t] : ck.state)
    if (name == "fc.quan_w_fn.s") t = torch::full_like(t, 10.0);
  const std::string collapsed = f.dir.file("collapsed.pt");
  mpq::torchio::save_checkpoint(collapsed, ck.state);
  const Result e = mpq_run("eval " + f.config("ev", "finetune", "pre_trained: " + collapsed + "\n"), f.dir);
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_NE(e.err.find("warning: " + collapsed + ": the 8-bit weights of the fc 'fc' all quantize to one value "
                       "(weight step size 10, "),
            std::string::npos)
      << e.err;
  const Result ok = mpq_run("eval " + f.config("ev2", "finetune", "pre_trained: " + f.run_dir("ft") + "/best.pt\n"), f.dir);
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(ok.err.find("quantize to one value"), std::string::npos) << ok.err;
}

TEST(Train, ResumeRejectsAnotherKindOfCheckpoint) {
  Fixture f;
  ASSERT_EQ(mpq_run("finetune " + f.config("fp", "fp", "epochs: 1\n"), f.dir).code, 0);
  const Result r =
      mpq_run("pretrain " + f.config("p", "pretrain", "resume: {path: " + f.run_dir("fp") + "/last.pt}\n"), f.dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("a checkpoint of an mpq fp run, but this run is pretrain"), std::string::npos) << r.err;
}

// metrics.csv holds a row per epoch that last.pt records and never more: a
// row written past the checkpoint (a crash between the two) is dropped when
// the run resumes, and the epoch's row is written after its checkpoint.
TEST(Train, MetricsNeverRunAheadOfTheCheckpoint) {
  Fixture f;
  const std::string cfg = f.config("m", "fp", "epochs: 1\nwarmup_epochs: 0\ncheckpoint_steps: 0\n");
  ASSERT_EQ(mpq_run("finetune " + cfg + " --set dataloader.fraction=0.25", f.dir).code, 0);
  const std::string csv = f.run_dir("m") + "/metrics.csv";
  mpq::test::write_all(csv, mpq::test::read_all(csv) + "1,0.1,9,9,9,9,9,9,9,9\n");  // an epoch last.pt never saw
  const Result r = mpq_run("finetune " + cfg + " --set dataloader.fraction=0.25 --set epochs=2 --set resume.path=auto",
                           f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string rows = mpq::test::read_all(csv);
  EXPECT_EQ(std::count(rows.begin(), rows.end(), '\n'), 3) << rows;  // header, epochs 0 and 1
  EXPECT_EQ(rows.find("1,0.1,9,9"), std::string::npos) << rows;
  EXPECT_NE(rows.find("\n0,"), std::string::npos) << rows;
  EXPECT_NE(rows.find("\n1,"), std::string::npos) << rows;
  // log.num_best_scores: the scoreboard holds the resumed epoch's validation and the new one, not the dropped row.
  EXPECT_NE(r.err.find("scoreboard 2: epoch "), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("scoreboard 3: "), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("val top1 9.000"), std::string::npos) << r.err;
  const Result one = mpq_run("finetune " + cfg + " --set dataloader.fraction=0.25 --set epochs=3 --set resume.path=auto"
                             " --set log.num_best_scores=1", f.dir);
  ASSERT_EQ(one.code, 0) << one.err;
  EXPECT_NE(one.err.find("scoreboard 1: epoch "), std::string::npos) << one.err;
  EXPECT_EQ(one.err.find("scoreboard 2: "), std::string::npos) << one.err;
}

// freeze_weights: true, as the original: the convs' and the fc's weights stay
// what pre_trained gave; the quantizer scales and BatchNorm train.
TEST(Train, FreezeWeightsTrainsOnlyScalesAndBatchNorm) {
  Fixture f;
  ASSERT_EQ(mpq_run("finetune " + f.config("fp", "fp", "epochs: 1\nwarmup_epochs: 0\n") +
                        " --set dataloader.fraction=0.25", f.dir).code, 0);
  const std::string fp = f.run_dir("fp") + "/last.pt";
  const Result r = mpq_run("finetune " + f.config("fz", "finetune", "epochs: 1\nlr: 0.005\nfreeze_weights: true\n"
                           "pre_trained: " + fp + "\n") + " --set dataloader.fraction=0.25", f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto before = mpq::torchio::read_checkpoint(fp), after = mpq::torchio::read_checkpoint(f.run_dir("fz") + "/last.pt");
  std::map<std::string, torch::Tensor> start(before.state.begin(), before.state.end());
  int frozen = 0, moved = 0;
  for (const auto& [name, t] : after.state) {
    const auto it = start.find(name);
    if (it == start.end() || !t.is_floating_point() || name.find("running_") != std::string::npos) continue;
    const bool trains = name.find("quan_") != std::string::npos || name.find("bn") != std::string::npos;
    if (!trains) {
      EXPECT_TRUE(torch::equal(t, it->second)) << name << " changed under freeze_weights";
      ++frozen;
    } else if (!torch::equal(t, it->second)) {
      ++moved;
    }
  }
  EXPECT_GE(frozen, 21);  // 19 searchable convs, the first conv and the fc (with its bias)
  EXPECT_GT(moved, 10);   // the BatchNorms trained
}

// Python's torch.load, at its default weights_only=True (torch >= 2.6), reads
// the checkpoints every mpq training command writes, and the full-precision
// one's state_dict loads strictly into a ResNet-20 written in PyTorch.
TEST(Train, PythonTorchLoadsTheCheckpointsAndTheirStateDict) {
  const std::string py = mpq::test::torch_python();
  if (py.empty()) GTEST_SKIP() << mpq::test::kNoTorchPython;
  Fixture f;
  // The fixture's warmup stays: at lr 0.02 from the first step, the mixed
  // policy's 2-bit layers diverge from a random start by step 3.
  const std::string one = "epochs: 1\ncheckpoint_steps: 0\n";
  for (const char* kind : {"fp", "finetune", "pretrain"}) {
    const Result r = mpq_run(std::string(kind == std::string("fp") ? "finetune " : std::string(kind) + " ") +
                                 f.config(kind, kind, one),
                             f.dir);
    ASSERT_EQ(r.code, 0) << kind << "\n" << r.err;
    // A quantized finetune from random weights is run, with a warning.
    EXPECT_EQ(r.err.find("no pre_trained: the policy is finetuned from random weights") != std::string::npos,
              kind == std::string("finetune"))
        << kind << "\n" << r.err;
  }
  const std::string script = f.dir.file("load.py");
  mpq::test::write_all(script, R"(import sys, torch, torch.nn as nn
def cbn(i, o, k, s):
    return [nn.Conv2d(i, o, k, s, k // 2, bias=False), nn.BatchNorm2d(o)]
class Block(nn.Module):
    def __init__(self, i, o, s):
        super().__init__()
        self.conv1, self.bn1 = cbn(i, o, 3, s)
        self.conv2, self.bn2 = cbn(o, o, 3, 1)
        self.downsample = nn.Sequential(*cbn(i, o, 1, s)) if s != 1 or i != o else None
    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))
class ResNet20(nn.Module):
    def __init__(self, cin, classes):
        super().__init__()
        self.conv1, self.bn1 = cbn(cin, 16, 3, 1)
        for n, (i, o, s) in enumerate([(16, 16, 1), (16, 32, 2), (32, 64, 2)]):
            setattr(self, 'layer%d' % (n + 1), nn.Sequential(Block(i, o, s), Block(o, o, 1), Block(o, o, 1)))
        self.fc = nn.Linear(64, classes)
    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))
for path in sys.argv[1:]:
    ck = torch.load(path)  # weights_only=True: plain containers and tensors only
    assert isinstance(ck, dict) and 'state_dict' in ck, path
    assert all(isinstance(v, torch.Tensor) for v in ck['state_dict'].values()), path
sd = torch.load(sys.argv[1])['state_dict']
m = ResNet20(sd['conv1.weight'].shape[1], sd['fc.weight'].shape[0])
m.load_state_dict(sd, strict=True)
m.eval()
assert torch.isfinite(m(torch.randn(2, sd['conv1.weight'].shape[1], 28, 28))).all()
print('ok', torch.__version__)
)");
  const std::string cmd = py + " " + script + " " + f.run_dir("fp") + "/last.pt " + f.run_dir("finetune") +
                          "/last.pt " + f.run_dir("pretrain") + "/last.pt > " + f.dir.file("py.out") + " 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << mpq::test::read_all(f.dir.file("py.out"));
  EXPECT_EQ(mpq::test::read_all(f.dir.file("py.out")).rfind("ok 2.", 0), 0u) << mpq::test::read_all(f.dir.file("py.out"));
}

}  // namespace

#include "engine/trainer.h"

TEST(Schedule, WarmupCosineCooldownAsTimm) {
  mpq::config::ScheduleOptions c;
  c.epochs = 10;
  c.lr = 0.1;
  c.min_lr = 0.001;
  c.warmup_epochs = 2;
  c.warmup_lr = 0.01;
  c.cooldown_epochs = 3;
  EXPECT_EQ(mpq::engine::total_epochs(c), 13);
  EXPECT_DOUBLE_EQ(mpq::engine::learning_rate(c, 0), 0.01);
  EXPECT_DOUBLE_EQ(mpq::engine::learning_rate(c, 1), 0.055);
  EXPECT_DOUBLE_EQ(mpq::engine::learning_rate(c, 5), 0.001 + 0.5 * 0.099 * (1 + std::cos(M_PI * 0.5)));
  for (int e = 10; e < 13; ++e) EXPECT_DOUBLE_EQ(mpq::engine::learning_rate(c, e), 0.001);
}

#include <opencv2/imgcodecs.hpp>

// The ImageFolder path through the engine: a tiny tree written with OpenCV,
// a stratified val_split of the training set, a corrupt JPEG skipped and
// listed, or fatal with dataloader.strict.
TEST(Train, ImageFolderWithValSplitAndACorruptImage) {
  mpq::test::TempDir dir;
  for (const char* c : {"ant", "bee"}) {
    std::filesystem::create_directories(dir.file(std::string("train/") + c));
    std::filesystem::create_directories(dir.file(std::string("val/") + c));
    for (int i = 0; i < 8; ++i) {
      cv::Mat m(90, 120, CV_8UC3, c[0] == 'a' ? cv::Scalar(0, 0, 220) : cv::Scalar(220, 0, 0));
      cv::imwrite(dir.file(std::string("train/") + c + "/" + std::to_string(i) + ".jpg"), m);
      if (i < 2) cv::imwrite(dir.file(std::string("val/") + c + "/" + std::to_string(i) + ".jpg"), m);
    }
  }
  const std::string good = mpq::test::read_all(dir.file("train/ant/0.jpg"));
  mpq::test::write_all(dir.file("train/ant/0.jpg"), good.substr(0, good.size() / 2));  // truncated
  const std::string cfg = dir.file("in.yaml");
  mpq::test::write_all(cfg, "name: in\noutput_dir: " + dir.file("out") +
                                "\narch: resnet20\nfp_model: true\nthreads: 2\nepochs: 1\nlr: 0.01\n"
                                "dataloader: {dataset: imagenet, path: " + dir.path() +
                                ", num_classes: 2, batch_size: 4, workers: 2, val_split: 0.25}\n");
  const Result r = mpq_run("finetune " + cfg, dir);
  ASSERT_EQ(r.code, 0) << r.err;
  // 8 per class: 6 train and 2 held out each (stratified); the truncated one is skipped, named.
  EXPECT_NE(r.err.find("12 training images (12 per rank), 4 validation images"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("data: skipping " + dir.file("train/ant/0.jpg")), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("data: 1 undecodable image(s) skipped in "), std::string::npos) << r.err;
  const Result strict = mpq_run("finetune " + cfg + " --set dataloader.strict=true --set name=strict", dir);
  EXPECT_EQ(strict.code, 2);
  EXPECT_NE(strict.err.find("mpq: " + dir.file("train/ant/0.jpg") + ": not a decodable image"), std::string::npos)
      << strict.err;
}

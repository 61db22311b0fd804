// The training commands end to end on a small synthetic dataset written as
// IDX files: exact resume after SIGKILL and SIGTERM, divergence, metrics
// files, finetune and eval of a policy.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <sstream>
#include <thread>

#include <torch/torch.h>

#include "mpq/io/tb_events.h"
#include "test_util.h"
#include "torchio/checkpoint.h"

namespace {

using mpq::test::TempDir;

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// n 28x28 images: class k is a bright 6x6 square at a class-dependent place, plus noise.
void write_split(const std::string& dir, const std::string& prefix, uint32_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string img = be32(2051) + be32(n) + be32(28) + be32(28), lab = be32(2049) + be32(n);
  for (uint32_t i = 0; i < n; ++i) {
    const int k = static_cast<int>(rng() % 10);
    lab.push_back(static_cast<char>(k));
    const int y0 = 2 + (k / 5) * 14, x0 = 2 + (k % 5) * 5;
    for (int y = 0; y < 28; ++y)
      for (int x = 0; x < 28; ++x) {
        const bool on = y >= y0 && y < y0 + 6 && x >= x0 && x < x0 + 6;
        img.push_back(static_cast<char>((on ? 180 : 20) + static_cast<int>(rng() % 60)));
      }
  }
  mpq::test::write_all(dir + "/" + prefix + "-images-idx3-ubyte", img);
  mpq::test::write_all(dir + "/" + prefix + "-labels-idx1-ubyte", lab);
}

struct Fixture {
  TempDir dir;
  Fixture() {
    write_split(dir.path(), "train", 256, 1);
    write_split(dir.path(), "t10k", 64, 2);
  }
  // A config for `kind`: pretrain (candidates 4 3 2), finetune (a mixed policy), fp.
  std::string config(const std::string& name, const std::string& kind, const std::string& extra = "") const {
    std::string c = "name: " + name + "\noutput_dir: " + dir.file("out") + "\narch: resnet20\n" +
                    "dataloader: {dataset: fashion_mnist, path: " + dir.path() + ", batch_size: 32, workers: 2}\n" +
                    "epochs: 2\nlr: 0.05\nwarmup_epochs: 1\nwarmup_lr: 0.001\nthreads: 2\nlog: {print_freq: 4}\n" +
                    "checkpoint_steps: 1\nbn_calib_images: 64\n";
    if (kind == "pretrain") c += "target_bits: [4, 3, 2]\n";
    if (kind == "finetune") {
      c += "weight_bits: [4, 3, 2, 4, 3, 2, 4, 3, 8, 2, 4, 3, 2, 4, 3, 8, 2, 4, 3, 2]\n";
      c += "act_bits:    [4, 4, 3, 3, 2, 2, 4, 4, 8, 3, 3, 2, 2, 4, 4, 8, 3, 3, 2, 2]\n";
    }
    if (kind == "fp") c += "fp_model: true\n";
    // `extra` lines replace the base lines of the same key.
    std::istringstream in(extra);
    for (std::string line; std::getline(in, line);) {
      const std::string key = line.substr(0, line.find(':') + 1);
      const size_t at = c.rfind("\n" + key);
      if (at != std::string::npos) c.erase(at + 1, c.find('\n', at + 1) - at);
      if (c.compare(0, key.size(), key) == 0) c.erase(0, c.find('\n') + 1);
      c += line + "\n";
    }
    const std::string path = dir.file(name + ".yaml");
    mpq::test::write_all(path, c);
    return path;
  }
  std::string run_dir(const std::string& name) const { return dir.file("out/" + name); }
};

struct Result {
  int code;
  std::string err, out;
};

Result mpq_run(const std::string& args, const TempDir& dir) {
  const std::string cmd = std::string(MPQ_BINARY) + " " + args + " >" + dir.file("stdout") + " 2>" + dir.file("stderr");
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, mpq::test::read_all(dir.file("stderr")),
          mpq::test::read_all(dir.file("stdout"))};
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& err) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    FILE* f = std::freopen(err.c_str(), "w", stderr);
    (void)f;
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    std::_Exit(127);
  }
  return pid;
}

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// Starts `command config`, waits until its run folder has a checkpoint at
// least `steps` optimizer steps in (checkpoint_steps: 1 writes one per step),
// then sends `sig`. Returns the exit status.
int run_and_signal(const std::string& command, const std::string& config, const std::string& run_dir, int sig,
                   const std::string& err, int steps) {
  const pid_t pid = spawn({MPQ_BINARY, command, config}, err);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int seen = 0;
  std::string last_seen;
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;  // finished before the signal: the test fails below
    struct stat st;
    if (::stat((run_dir + "/last.pt").c_str(), &st) == 0) {
      const std::string stamp = std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
      if (stamp != last_seen) {
        last_seen = stamp;
        if (++seen >= steps) break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, sig);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

// Every tensor of two checkpoints' model and optimizer state, bit for bit.
void expect_same_state(const std::string& a, const std::string& b) {
  const auto ca = mpq::torchio::read_checkpoint(a), cb = mpq::torchio::read_checkpoint(b);
  ASSERT_EQ(ca.state.size(), cb.state.size());
  for (size_t i = 0; i < ca.state.size(); ++i) {
    ASSERT_EQ(ca.state[i].first, cb.state[i].first);
    EXPECT_TRUE(torch::equal(ca.state[i].second, cb.state[i].second)) << ca.state[i].first;
  }
  const auto* oa = ca.root.find("optimizer");
  const auto* ob = cb.root.find("optimizer");
  ASSERT_TRUE(oa && ob);
  ASSERT_EQ(oa->dict_items().size(), ob->dict_items().size());
  ASSERT_GT(oa->dict_items().size(), 0u);
  for (size_t i = 0; i < oa->dict_items().size(); ++i) {
    const auto& [ka, va] = oa->dict_items()[i];
    const auto& [kb, vb] = ob->dict_items()[i];
    ASSERT_EQ(ka.as_str(), kb.as_str());
    EXPECT_TRUE(torch::equal(mpq::torchio::as_tensor(va, "a"), mpq::torchio::as_tensor(vb, "b"))) << ka.as_str();
  }
  for (const char* k : {"epoch", "batch", "step"})
    EXPECT_EQ(ca.root.find(k)->as_int(), cb.root.find(k)->as_int()) << k;
}

TEST(Train, PretrainKilledMidEpochResumesToTheSameWeights) {
  Fixture f;
  ASSERT_EQ(mpq_run("pretrain " + f.config("a", "pretrain"), f.dir).code, 0);
  const std::string cfg = f.config("b", "pretrain");
  const int status = run_and_signal("pretrain", cfg, f.run_dir("b"), SIGKILL, f.dir.file("b.err"), 3);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the run ended before it was killed";
  const auto ck = mpq::torchio::read_checkpoint(f.run_dir("b") + "/last.pt");  // never a torn file
  EXPECT_EQ(ck.root.find("epoch")->as_int(), 0) << "killed in the middle of the first epoch";
  const Result r = mpq_run("pretrain " + cfg + " --set resume.path=auto", f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("resumed from"), std::string::npos) << r.err;
  expect_same_state(f.run_dir("a") + "/last.pt", f.run_dir("b") + "/last.pt");
}

TEST(Train, FinetuneStoppedBySigtermSavesAndResumesExactly) {
  Fixture f;
  ASSERT_EQ(mpq_run("finetune " + f.config("a", "finetune"), f.dir).code, 0);
  const std::string cfg = f.config("b", "finetune");
  const int status = run_and_signal("finetune", cfg, f.run_dir("b"), SIGTERM, f.dir.file("b.err"), 2);
  ASSERT_TRUE(WIFEXITED(status)) << "SIGTERM must end the run cleanly";
  EXPECT_EQ(WEXITSTATUS(status), 5);
  const std::string err = mpq::test::read_all(f.dir.file("b.err"));
  EXPECT_NE(err.find("interrupted by SIGTERM; saved " + f.run_dir("b") + "/last.pt"), std::string::npos) << err;
  const Result r = mpq_run("finetune " + cfg + " --set resume.path=auto", f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  expect_same_state(f.run_dir("a") + "/last.pt", f.run_dir("b") + "/last.pt");
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
  const Result fp = mpq_run("finetune " + f.config("fp", "fp", "epochs: 5\nlr: 0.1\nwarmup_epochs: 0\ncheckpoint_steps: 0\n"), f.dir);
  ASSERT_EQ(fp.code, 0) << fp.err;
  EXPECT_TRUE(exists(f.run_dir("fp") + "/best.pt"));
  // Eval of the fp weights quantized at the policy (BN recalibrated, act scales initialised there).
  const std::string cfg = f.config("ev", "finetune", "pre_trained: " + f.run_dir("fp") + "/best.pt\n");
  const Result e = mpq_run("eval " + cfg, f.dir);
  ASSERT_EQ(e.code, 0) << e.err;
  for (const char* k : {"top1: ", "top5: ", "loss: ", "size_mb: ", "gbitops: ", "compression_ratio: ", "bn_recalibrated: true"})
    EXPECT_NE(e.out.find(k), std::string::npos) << k << "\n" << e.out;
  // The synthetic task is easy: the full-precision model learns it.
  const Result efp = mpq_run("eval " + f.config("evfp", "fp", "pre_trained: " + f.run_dir("fp") + "/best.pt\n"), f.dir);
  ASSERT_EQ(efp.code, 0) << efp.err;
  const size_t at = efp.out.find("top1: ");
  ASSERT_NE(at, std::string::npos);
  EXPECT_GT(std::stod(efp.out.substr(at + 6)), 60.0) << efp.out;
}

TEST(Train, DivergenceStopsWithTheStep) {
  Fixture f;
  const Result r = mpq_run("finetune " + f.config("nan", "fp", "lr: 1000\nwarmup_epochs: 0\ncheckpoint_steps: 0\n"), f.dir);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("training diverged: non-finite loss at epoch 1, step "), std::string::npos) << r.err;
}

TEST(Train, ResumeRejectsAnotherKindOfCheckpoint) {
  Fixture f;
  ASSERT_EQ(mpq_run("finetune " + f.config("fp", "fp", "epochs: 1\n"), f.dir).code, 0);
  const Result r =
      mpq_run("pretrain " + f.config("p", "pretrain", "resume: {path: " + f.run_dir("fp") + "/last.pt}\n"), f.dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("a checkpoint of an mpq fp run, but this run is pretrain"), std::string::npos) << r.err;
}

}  // namespace

#include "engine/trainer.h"

TEST(Schedule, WarmupCosineCooldownAsTimm) {
  mpq::config::Config c;
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

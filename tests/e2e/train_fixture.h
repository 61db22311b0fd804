// Shared by the training e2e tests: a small synthetic dataset written as
// IDX files, configs for it, and ways to run, signal and compare runs.
#pragma once

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

#include "test_util.h"
#include "torchio/checkpoint.h"

namespace mpq::test::train {

using mpq::test::TempDir;

inline std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// n 28x28 images, classes in turn: class k is a bright 6x6 square at a class-dependent place, plus noise.
inline void write_split(const std::string& dir, const std::string& prefix, uint32_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string img = be32(2051) + be32(n) + be32(28) + be32(28), lab = be32(2049) + be32(n);
  for (uint32_t i = 0; i < n; ++i) {
    const int k = static_cast<int>(i % 10);  // balanced classes: stratified fractions are exact
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
                    "epochs: 2\nlr: 0.02\nwarmup_epochs: 1\nwarmup_lr: 0.001\nthreads: 2\nlog: {print_freq: 4}\n" +
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
  // Full-precision weights trained on the fixture's task (config "fp", 5
  // epochs at lr 0.1), made on the first call; their best.pt. Quantized
  // finetuning starts from trained weights, as it does in use: from random
  // weights the mixed policy's SAT-rescaled fc can run away at the fixture's
  // lr (its weights' step size grows until all of them quantize to zero and
  // the rescale divides by a zero std), on some machines' numerics and not
  // on others'.
  const std::string& fp_weights() const;

 private:
  mutable std::string fp_weights_;
};

struct Result {
  int code;
  std::string err, out;
};

// `env`: variables for the command, as the shell takes them ("A=1 B=2").
inline Result mpq_run(const std::string& args, const TempDir& dir, const std::string& env = "") {
  const std::string cmd =
      env + " " + std::string(MPQ_BINARY) + " " + args + " >" + dir.file("stdout") + " 2>" + dir.file("stderr");
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, mpq::test::read_all(dir.file("stderr")),
          mpq::test::read_all(dir.file("stdout"))};
}

inline const std::string& Fixture::fp_weights() const {
  if (fp_weights_.empty()) {
    const Result r =
        mpq_run("finetune " + config("fp", "fp", "epochs: 5\nlr: 0.1\nwarmup_epochs: 0\ncheckpoint_steps: 0\n"), dir);
    EXPECT_EQ(r.code, 0) << r.err;
    fp_weights_ = run_dir("fp") + "/best.pt";
  }
  return fp_weights_;
}

// Starts argv with stderr to `err` and `env` ("NAME=value") added.
inline pid_t spawn(const std::vector<std::string>& argv, const std::string& err,
                   const std::vector<std::string>& env = {}) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& kv : env) {
      const size_t eq = kv.find('=');
      ::setenv(kv.substr(0, eq).c_str(), kv.substr(eq + 1).c_str(), 1);
    }
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

inline bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// Waits, at most `limit`, until `path` has been written `n` times (each new
// mtime counts once; checkpoint_steps: 1 writes last.pt once per step).
// Stops early when `pid` (if > 0) exits, its wait status in *status. Returns
// the writes seen.
inline int wait_for_writes(const std::string& path, int n, std::chrono::seconds limit, pid_t pid = 0,
                           int* status = nullptr) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int seen = 0;
  std::string stamp;
  while (seen < n && std::chrono::steady_clock::now() < deadline) {
    if (pid > 0 && ::waitpid(pid, status, WNOHANG) == pid) break;
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      const std::string s = std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
      if (s != stamp) stamp = s, ++seen;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return seen;
}

// Starts `command config`, waits until its run folder has a checkpoint at
// least `steps` optimizer steps in (checkpoint_steps: 1 writes one per step),
// then sends `sig`. Returns the exit status.
inline int run_and_signal(const std::string& command, const std::string& config, const std::string& run_dir, int sig,
                   const std::string& err, int steps) {
  const pid_t pid = spawn({MPQ_BINARY, command, config}, err);
  int status = -1;
  wait_for_writes(run_dir + "/last.pt", steps, std::chrono::seconds(120), pid, &status);
  if (status != -1) return status;  // finished before the signal: the test fails below
  ::kill(pid, sig);
  ::waitpid(pid, &status, 0);
  return status;
}

// |x - y| <= tol * max(1, max |x|): an absolute tolerance for tensors of
// magnitude up to 1, relative above it, where float32 summation-order noise
// grows with the values (a gradient summed by two processes, or one, in
// another order). The message gives both figures.
inline void expect_close(const torch::Tensor& x, const torch::Tensor& y, double tol, const std::string& what) {
  const double diff = (x - y).abs().max().item<double>();
  const double scale = std::max(1.0, x.abs().max().item<double>());
  EXPECT_LE(diff, tol * scale) << what << ": max |difference| " << diff << ", max |value| " << scale;
}

// Every tensor of two checkpoints' model and optimizer state, within `tol`
// (0: bit for bit; expect_close).
inline void expect_same_state(const std::string& a, const std::string& b, double tol = 0) {
  const auto ca = mpq::torchio::read_checkpoint(a), cb = mpq::torchio::read_checkpoint(b);
  ASSERT_EQ(ca.state.size(), cb.state.size());
  for (size_t i = 0; i < ca.state.size(); ++i) {
    ASSERT_EQ(ca.state[i].first, cb.state[i].first);
    const torch::Tensor x = ca.state[i].second, y = cb.state[i].second;
    if (tol == 0 || !x.is_floating_point())
      EXPECT_TRUE(torch::equal(x, y)) << ca.state[i].first;
    else
      expect_close(x, y, tol, ca.state[i].first);
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
    const torch::Tensor x = mpq::torchio::as_tensor(va, "a"), y = mpq::torchio::as_tensor(vb, "b");
    if (tol == 0)
      EXPECT_TRUE(torch::equal(x, y)) << ka.as_str();
    else
      expect_close(x, y, tol, ka.as_str());
  }
  for (const char* k : {"epoch", "batch", "step"})
    EXPECT_EQ(ca.root.find(k)->as_int(), cb.root.find(k)->as_int()) << k;
}

// Resumes `config`'s run from `last` on one process (--set
// resume.path=auto): it must continue at the checkpoint's epoch and batch and
// end at `epoch` after `step` optimizer steps in all.
inline void expect_resume_finishes(const Fixture& f, const std::string& config, const std::string& last, int64_t epoch,
                                   int64_t step) {
  const auto before = mpq::torchio::read_checkpoint(last);
  const Result resumed = mpq_run("finetune " + config + " --set resume.path=auto", f.dir);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resumed from " + last + ": epoch " + std::to_string(before.root.find("epoch")->as_int() + 1) +
                             ", batch " + std::to_string(before.root.find("batch")->as_int())),
            std::string::npos)
      << resumed.err;
  const auto after = mpq::torchio::read_checkpoint(last);
  EXPECT_EQ(after.root.find("epoch")->as_int(), epoch);
  EXPECT_EQ(after.root.find("step")->as_int(), step);
}

}  // namespace mpq::test::train

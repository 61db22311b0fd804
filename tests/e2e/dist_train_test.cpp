// Multi-process training on c10d/Gloo over loopback, the processes started
// here with the torchrun variables: two processes with batch B equal one
// process with batch 2B; a lost rank is named; an unreachable master is
// reported with its address; a run resumes on another world size; and,
// where torchrun is installed, one and two torchrun nodes launch mpq.
#include "train_fixture.h"

#include <torch/cuda.h>

#include <algorithm>

#include "dist/dist.h"

namespace {

using namespace mpq::test::train;

using mpq::test::free_port;

std::vector<std::string> torchrun_env(int rank, int world, int port) {
  return {"RANK=" + std::to_string(rank), "WORLD_SIZE=" + std::to_string(world), "LOCAL_RANK=" + std::to_string(rank),
          "LOCAL_WORLD_SIZE=" + std::to_string(world), "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)};
}

// Runs `command config --set ...` on `world` processes; returns each exit status.
std::vector<int> run_world(const Fixture& f, const std::string& command, const std::string& config, int world,
                           const std::vector<std::string>& sets) {
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> argv{MPQ_BINARY, command, config};
    for (const auto& s : sets) argv.insert(argv.end(), {"--set", s});
    pids.push_back(spawn(argv, f.dir.file("rank" + std::to_string(r) + ".err"), torchrun_env(r, world, port)));
  }
  std::vector<int> codes;
  for (pid_t p : pids) {
    int status = 0;
    ::waitpid(p, &status, 0);
    codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  return codes;
}

std::string err_of(const Fixture& f, int rank) { return mpq::test::read_all(f.dir.file("rank" + std::to_string(rank) + ".err")); }

const std::string kSync = "sync_bn: true\nthreads: 1\nepochs: 1\ncheckpoint_steps: 0\nbn_calib_images: 0\n";

// `kind` on one process of batch 2B and on two of batch B, with `sets`
// (e.g. dataloader.fraction of the 256 training images, whose classes are
// balanced); compares the last checkpoints within `tol`.
void compare_one_and_two(const Fixture& f, const char* kind, const std::vector<std::string>& sets, double tol) {
  SCOPED_TRACE(kind);
  const std::string command = std::string(kind) == "fp" ? "finetune" : kind;
  std::string args;
  for (const auto& s : sets) args += " --set " + s;
  const Result one = mpq_run(command + " " + f.config("one", kind, kSync) + args, f.dir);
  ASSERT_EQ(one.code, 0) << one.err;
  std::vector<std::string> two_sets = sets;
  two_sets.push_back("dataloader.batch_size=16");
  const auto codes = run_world(f, command, f.config("two", kind, kSync), 2, two_sets);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << err_of(f, 0) << err_of(f, 1);
  // Weights, BatchNorm statistics, quantizer scales (the indicators) and momenta.
  expect_same_state(f.run_dir("one") + "/last.pt", f.run_dir("two") + "/last.pt", tol);
  EXPECT_NE(err_of(f, 0).find("rank 0/2: joined the group"), std::string::npos) << err_of(f, 0);
  EXPECT_EQ(err_of(f, 1), "") << "only rank 0 logs";
}

// One optimizer step: sharding, the gradient all-reduce, synchronised
// BatchNorm, the averaged activation-scale initialisation and the same mixed
// policy on every rank all show in it.
TEST(Distributed, TwoProcessesOfBatchBEqualOneOfBatch2BAfterOneStep) {
  for (const char* kind : {"fp", "finetune", "pretrain"}) {
    Fixture f;
    // 30 images: one step. The joint step's six backward passes through
    // 2-bit lattices: with LibTorch 2.11 one momentum (layer1.0.conv1's)
    // differs by 1.08e-5 in float32 (under 1e-5 with 1.13), and by 2.9e-6
    // even in float64, the BatchNorm-mean-on-the-lattice tie described in
    // the float64 test below; the multi-step tests bound the rest.
    compare_one_and_two(f, kind, {"dataloader.fraction=0.125"}, kind == std::string("pretrain") ? 2e-5 : 1e-5);
  }
}

// dist_backend named under WORLD_SIZE=1 makes a group of one (how NCCL is
// checked on one GPU); every collective through it must leave the run as it
// is without one, bit for bit.
TEST(Distributed, ANamedBackendMakesAGroupOfOneThatChangesNothing) {
  Fixture f;
  const std::string sets = " --set dataloader.fraction=0.125";
  const Result alone = mpq_run("pretrain " + f.config("alone", "pretrain", kSync) + sets, f.dir);
  ASSERT_EQ(alone.code, 0) << alone.err;
  const auto codes = run_world(f, "pretrain", f.config("one", "pretrain", kSync + "dist_backend: gloo\n"), 1,
                               {"dataloader.fraction=0.125"});
  ASSERT_EQ(codes, (std::vector<int>{0})) << err_of(f, 0);
  EXPECT_NE(err_of(f, 0).find("rank 0/1: joined the group at 127.0.0.1:"), std::string::npos) << err_of(f, 0);
  expect_same_state(f.run_dir("alone") + "/last.pt", f.run_dir("one") + "/last.pt", 0);
}

// Three steps of full-precision finetuning from trained weights at a
// finetuning learning rate.
TEST(Distributed, TwoProcessesOfBatchBEqualOneOfBatch2BOverThreeSteps) {
  Fixture f;
  compare_one_and_two(f, "fp",
                      {"pre_trained=" + f.fp_weights(), "lr=0.005", "warmup_epochs=0",
                       "dataloader.fraction=0.375"},  // 96 images: three steps
                      1e-5);
}

// Quantized finetuning and indicator training over several steps, in
// float64. In float32 the runs drift apart by more than 1e-5 after a few
// quantized steps, and the cause is float summation order, not the
// data-parallel code: runs agree to ~1e-7 until some value lands within
// rounding noise of an LSQ rounding boundary, and training then amplifies the
// flip. One process against itself with 1 and 2 threads (nothing
// distributed) shows the same: on Fashion-MNIST from trained weights,
// quantized finetuning 2.7e-7 after 4 steps (two processes against one:
// 2.4e-7) but 3.7e-3 after 10 (two against one: 8e-4); from random weights
// at lr 0.05 even full precision drifts 1e-6, 6e-5, 5e-4, 1.8e-2 after 1, 2,
// 3, 6 steps. float64 takes that noise down by nine orders of magnitude, so
// what is left to compare is the data-parallel semantics themselves.
// Not covered here: indicator training from random weights in float64
// differs after one step (1.5e-3 in the momenta) whenever 2 bits is one of
// several candidates ({3,2}, {4,3,2}). The cause is a tie, not the
// data-parallel code. With 2-bit weights and 2-bit activations a conv's
// output lies on a coarse lattice (integer multiples of s_w * s_a) and many
// elements share each value; when a channel's batch mean falls on one of
// those values, every such element has x - mean = 0 in exact arithmetic and
// +-1e-16 in float64, its sign set by summation order (one process or two).
// Where the residual branch is zero too, the block's ReLU passes or blocks
// that element's gradient by that sign. Seen in the momenta: only
// layer3.1.bn2's 2-bit BatchNorm copy, one channel, differs in its bias
// gradient (1.3e-4) while its weight gradient, sum(g * xhat), agrees to
// 1e-17, i.e. the flipped element has xhat ~ 0; everything closer to the
// output agrees to 1e-17. In float32 the double statistics are cast to float
// and x - mean is exactly 0 in both runs, so the one-step test above agrees.
TEST(Distributed, QuantizedTwoProcessesOfBatchBEqualOneOfBatch2BOverSeveralStepsInFloat64) {
  Fixture f;
  const std::vector<std::string> sets{"pre_trained=" + f.fp_weights(), "lr=0.005", "warmup_epochs=0",
                                      "dataloader.fraction=0.5", "dtype=float64"};  // 128 images: four steps
  compare_one_and_two(f, "finetune", sets, 1e-5);
  compare_one_and_two(f, "pretrain", sets, 1e-5);
}

TEST(Distributed, ALostRankIsNamedAndTheRunResumesOnOneProcess) {
  Fixture f;
  const std::string cfg = f.config("two", "finetune", "sync_bn: true\nthreads: 1\ndist_timeout: 30\n");
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r)
    pids.push_back(spawn({MPQ_BINARY, "finetune", cfg, "--set", "dataloader.batch_size=16"},
                         f.dir.file("rank" + std::to_string(r) + ".err"), torchrun_env(r, 2, port)));
  // Kill rank 1 once rank 0 has checkpointed a few steps.
  const std::string last = f.run_dir("two") + "/last.pt";
  ASSERT_EQ(wait_for_writes(last, 3, std::chrono::seconds(60)), 3) << err_of(f, 0);
  ::kill(pids[1], SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  int status = 0;
  ::waitpid(pids[0], &status, 0);
  ::waitpid(pids[1], nullptr, 0);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_LT(secs, 30.0);
  const std::string err = err_of(f, 0);
  EXPECT_NE(err.find("failed: lost rank 1"), std::string::npos) << err;
  // Resume on one process of batch 32 (the same global batch: the same batch
  // index): it continues at the same sample and finishes the run.
  expect_resume_finishes(f, cfg, last, 2, 16);
}

TEST(Distributed, AnUnreachableMasterIsReportedWithItsAddress) {
  Fixture f;
  const int port = free_port();
  const pid_t pid = spawn({MPQ_BINARY, "finetune", f.config("x", "fp", "dist_timeout: 2\n")}, f.dir.file("x.err"),
                          torchrun_env(1, 2, port));
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string err = mpq::test::read_all(f.dir.file("x.err"));
  EXPECT_NE(err.find("rank 1: cannot reach the master at 127.0.0.1:" + std::to_string(port)), std::string::npos) << err;
}

// The backend is checked before any rendezvous: asking for one this build or
// machine lacks is a config error (exit 2), not a wait for the master.
TEST(Distributed, AnUnavailableBackendIsAConfigErrorBeforeTheRendezvous) {
  if (mpq::dist::nccl_built() && torch::cuda::is_available()) GTEST_SKIP() << "NCCL and a GPU are both here";
  Fixture f;
  const pid_t pid = spawn({MPQ_BINARY, "finetune", f.config("x", "fp", "dist_timeout: 30\ndist_backend: nccl\n")},
                          f.dir.file("x.err"), torchrun_env(1, 2, free_port()));
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  const std::string err = mpq::test::read_all(f.dir.file("x.err"));
  EXPECT_NE(err.find(mpq::dist::nccl_built() ? "dist_backend: nccl needs CUDA tensors"
                                             : "dist_backend: nccl, but this mpq was built without c10d's NCCL"),
            std::string::npos)
      << err;
  EXPECT_EQ(err.find("cannot reach"), std::string::npos) << err;
}

// training_device: gpu (the original's configs say so) where no GPU is
// visible is one line, exit 2, before anything is trained; cpu and auto
// train on the CPU here.
TEST(Distributed, AGpuAskedForWhereThereIsNoneIsAConfigError) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is here";
  Fixture f;
  const Result r = mpq_run("finetune " + f.config("g", "fp", "training_device: gpu\n"), f.dir);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("training_device: gpu, but no CUDA device is visible to this process"), std::string::npos)
      << r.err;
  const Result bad = mpq_run("finetune " + f.config("b", "fp", "training_device: tpu\n"), f.dir);
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("training_device 'tpu' is not one of auto, cpu, gpu (or cuda)"), std::string::npos) << bad.err;
  const Result cpu = mpq_run("finetune " + f.config("c", "fp", "training_device: cpu\nepochs: 1\n") +
                                 " --set dataloader.fraction=0.125", f.dir);
  EXPECT_EQ(cpu.code, 0) << cpu.err;
  EXPECT_NE(cpu.err.find("device cpu"), std::string::npos) << cpu.err;
}

// GPUs that CUDA cannot use, with a stand-in for the driver's libcuda.so.1:
// a driver too old for this LibTorch's CUDA, and GPUs not ready (error 802).
// training_device: gpu is one line naming the cause, exit 2; auto trains on
// the CPU with a warning that names it, not silently.
TEST(Distributed, GpusCudaCannotUseAreNamed) {
#ifndef MPQ_FAKE_CUDA_DIR
  GTEST_SKIP() << "a CPU-only LibTorch: no CUDA runtime to ask";
#else
  Fixture f;
  const std::string old_driver = "LD_LIBRARY_PATH=" MPQ_FAKE_CUDA_DIR "old${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}";
  const std::string not_ready = "LD_LIBRARY_PATH=" MPQ_FAKE_CUDA_DIR "not_ready${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}";
  const Result old = mpq_run("finetune " + f.config("o", "fp", "training_device: gpu\n"), f.dir, old_driver);
  EXPECT_EQ(old.code, 2) << old.err;
  EXPECT_NE(old.err.find("training_device: gpu, but CUDA cannot be used here: the NVIDIA driver supports CUDA 12.2 "
                         "and this mpq's LibTorch needs CUDA 13."),
            std::string::npos)
      << old.err;
  EXPECT_EQ(std::count(old.err.begin(), old.err.end(), '\n'), 1) << old.err;
  const Result unready = mpq_run("finetune " + f.config("n", "fp", "training_device: gpu\n"), f.dir, not_ready);
  EXPECT_EQ(unready.code, 2) << unready.err;
  EXPECT_NE(unready.err.find("finds no usable GPU: error 802, system not yet initialized"), std::string::npos)
      << unready.err;
  const Result cpu = mpq_run("finetune " + f.config("a", "fp", "epochs: 1\n") + " --set dataloader.fraction=0.125",
                             f.dir, not_ready);
  EXPECT_EQ(cpu.code, 0) << cpu.err;
  EXPECT_NE(cpu.err.find("warning: training_device: auto: training on the CPU, because CUDA cannot be used here: "
                         "CUDA 13."),
            std::string::npos)
      << cpu.err;
  EXPECT_NE(cpu.err.find("device cpu"), std::string::npos) << cpu.err;
#endif
}

TEST(Distributed, TorchrunLaunchesMpq) {
  // The torchrun of the torch wheel whose LibTorch mpq is built against.
  if (mpq::test::torchrun().empty()) GTEST_SKIP() << mpq::test::kNoTorchPython;
  Fixture f;
  const std::string torchrun = mpq::test::torchrun() + " --no-python --master_port=";
  const std::string probe = torchrun + std::to_string(free_port()) + " --nproc_per_node=1 /bin/true >" +
                            f.dir.file("probe") + " 2>&1";
  if (std::system(probe.c_str()) != 0)
    GTEST_SKIP() << "torchrun is installed but cannot start a worker even for /bin/true: "
                 << mpq::test::read_all(f.dir.file("probe"));
  for (const std::string kind : {"finetune", "pretrain"}) {
    SCOPED_TRACE(kind);
    const std::string one_name = kind + "_one", two_name = kind + "_two";
    const Result one =
        mpq_run(kind + " " + f.config(one_name, kind, kSync) + " --set dataloader.fraction=0.125", f.dir);
    ASSERT_EQ(one.code, 0) << one.err;
    const std::string cmd = torchrun + std::to_string(free_port()) + " --nproc_per_node=2 " + MPQ_BINARY + " " + kind +
                            " " + f.config(two_name, kind, kSync) +
                            " --set dataloader.fraction=0.125 --set dataloader.batch_size=16 >" + f.dir.file("tr.out") +
                            " 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << mpq::test::read_all(f.dir.file("tr.out"));
    // The one-step case of TwoProcessesOfBatchBEqualOneOfBatch2BAfterOneStep, with its tolerances.
    expect_same_state(f.run_dir(one_name) + "/last.pt", f.run_dir(two_name) + "/last.pt",
                      kind == "pretrain" ? 2e-5 : 1e-5);
  }
  // Two nodes of one process each, the README's multi-node form: two agents,
  // node 0's serving the store; RANK 1 on node 1 with LOCAL_RANK 0.
  const int port = free_port();
  auto node = [&](int rank) {
    return torchrun + std::to_string(port) + " --nnodes=2 --node_rank=" + std::to_string(rank) +
           " --nproc_per_node=1 --master_addr=127.0.0.1 " + MPQ_BINARY + " finetune " +
           f.config("nodes", "finetune", kSync) + " --set dataloader.fraction=0.125 --set dataloader.batch_size=16 >" +
           f.dir.file("node" + std::to_string(rank)) + " 2>&1";
  };
  const std::string both = node(0) + " & n0=$!; " + node(1) + "; n1=$?; wait $n0; exit $(( $? | n1 ))";
  ASSERT_EQ(std::system(both.c_str()), 0) << mpq::test::read_all(f.dir.file("node0"))
                                          << mpq::test::read_all(f.dir.file("node1"));
  EXPECT_NE(mpq::test::read_all(f.dir.file("node0")).find("rank 0/2: joined the group"), std::string::npos);
  expect_same_state(f.run_dir("finetune_one") + "/last.pt", f.run_dir("nodes") + "/last.pt", 1e-5);
}

}  // namespace

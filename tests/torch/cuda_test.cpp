// mpq on a GPU (CTest label `cuda`): the fused LSQ CUDA kernels against the
// original's 72 golden cases and against the CPU kernels (bitwise: the same
// float operations), the step-size gradient the same run to run,
// training steps on CUDA against the same steps on the CPU (as closely as
// two orders of addition on the CPU agree), and the cudnn
// modes (deterministic: GPU training repeats itself bitwise). Every test that
// needs a GPU skips, with the reason, where none is visible (CI, this
// project's machines).
#include <ATen/detail/CUDAHooksInterface.h>
#include <elf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <torch/cuda.h>
#include <torch/serialize.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/context.h"
#include "engine/joint.h"
#include "float_bits.h"
#include "joint_agreement.h"
#include "models/zoo.h"
#include "mpq/search/geometry.h"
#include "quant/lsq.h"
#include "quant/qmodules.h"
#include "test_util.h"

using namespace mpq;
using quant::Thresholds;

namespace {

#define MPQ_NEED_GPU()                                                                        \
  if (!torch::cuda::is_available())                                                          \
  GTEST_SKIP() << "no CUDA device visible (this build is "                                   \
               << (at::detail::getCUDAHooks().isBuilt() ? "CUDA-enabled" : "CPU-only")      \
               << "); scripts/device_check.sh runs these on a GPU machine"

// The golden tolerances of lsq_test.cpp: elementwise results to a rounding
// tie (one ulp of x / s), the step-size gradient (a sum) relatively.
constexpr double kOutputAtol = 1e-6;
constexpr double kGradScaleRtol = 1e-4;

torch::Tensor get(const c10::Dict<c10::IValue, c10::IValue>& d, int i, const char* key) {
  return d.at(std::to_string(i) + "." + key).toTensor();
}

// One piece of GPU code in a fat binary: a cubin or PTX, and its
// architecture (75 for sm_75 / compute_75).
struct GpuCode {
  bool ptx = false;
  int arch = 0;
};

// The GPU code an ELF file carries in its .nv_fatbin section: fat binaries
// (magic 0xBA55ED50, u16 version, u16 header size, u64 size), each a run of
// entries (u16 kind: 1 PTX, 2 cubin; u16; u32 header size; u64 size; ...;
// u32 architecture at byte 28). Only the headers are read (mapped, not
// loaded: LibTorch's section is some 300 MB).
std::vector<GpuCode> gpu_code(const std::string& path) {
  std::vector<GpuCode> out;
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return out;
  struct stat st {};
  ::fstat(fd, &st);
  const auto size = static_cast<size_t>(st.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return out;
  const auto* base = static_cast<const unsigned char*>(map);
  auto read = [&](size_t at, auto& v) { std::memcpy(&v, base + at, sizeof v); };
  Elf64_Ehdr eh;
  read(0, eh);
  std::vector<Elf64_Shdr> sh(eh.e_shnum);
  for (size_t i = 0; i < sh.size(); ++i) read(eh.e_shoff + i * eh.e_shentsize, sh[i]);
  const char* names = reinterpret_cast<const char*>(base + sh.at(eh.e_shstrndx).sh_offset);
  for (const Elf64_Shdr& h : sh) {
    if (std::string(names + h.sh_name) != ".nv_fatbin") continue;
    size_t at = h.sh_offset;
    const size_t end = h.sh_offset + h.sh_size;
    while (at + 16 <= end) {
      uint32_t magic = 0;
      uint16_t header = 0;
      uint64_t bytes = 0;
      read(at, magic);
      if (magic != 0xBA55ED50u) {  // padding between fat binaries
        at += 8;
        continue;
      }
      read(at + 6, header);
      read(at + 8, bytes);
      for (size_t e = at + header; e < at + header + bytes;) {
        uint16_t kind = 0;
        uint32_t entry_header = 0, arch = 0;
        uint64_t entry_bytes = 0;
        read(e, kind);
        read(e + 4, entry_header);
        read(e + 8, entry_bytes);
        read(e + 28, arch);
        if (kind == 1 || kind == 2) out.push_back({kind == 1, static_cast<int>(arch)});
        e += entry_header + entry_bytes;
      }
      at += header + bytes;
    }
  }
  ::munmap(map, size);
  return out;
}

// Whether a GPU of architecture `arch` runs some of `code`: a cubin of its
// major version and no later minor one, or PTX of no later architecture
// (compiled by the driver when it loads).
bool runs_on(const std::vector<GpuCode>& code, int arch) {
  return std::any_of(code.begin(), code.end(), [arch](const GpuCode& c) {
    return c.ptx ? c.arch <= arch : c.arch / 10 == arch / 10 && c.arch <= arch;
  });
}

// The path of a loaded library whose file name is `name`.
std::string loaded_library(const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    const size_t slash = line.rfind('/');
    if (slash != std::string::npos && line.compare(slash + 1, std::string::npos, name) == 0)
      return line.substr(line.find('/'));
  }
  return {};
}

}  // namespace

// Needs no GPU: mpq's kernels (compiled into this binary) have code for every
// GPU architecture LibTorch itself has code for, so that no GPU PyTorch runs
// on refuses mpq's, and PTX for GPUs after them.
TEST(CudaBuild, KernelsRunOnEveryGpuLibTorchRunsOn) {
  if (!at::detail::getCUDAHooks().isBuilt()) GTEST_SKIP() << "a CPU-only LibTorch: mpq has no CUDA kernels";
  const std::vector<GpuCode> mine = gpu_code("/proc/self/exe");
  const std::string lib = loaded_library("libtorch_cuda.so");
  ASSERT_FALSE(lib.empty()) << "libtorch_cuda.so is not loaded";
  const std::vector<GpuCode> theirs = gpu_code(lib);
  ASSERT_FALSE(mine.empty()) << "no GPU code in this binary";
  ASSERT_FALSE(theirs.empty()) << "no GPU code found in " << lib;
  std::set<int> archs;
  for (const GpuCode& c : theirs) archs.insert(c.arch);
  std::string mine_text;
  for (const GpuCode& c : mine) mine_text += (c.ptx ? " compute_" : " sm_") + std::to_string(c.arch);
  for (const int a : archs) EXPECT_TRUE(runs_on(mine, a)) << "LibTorch runs on sm_" << a << ", mpq's kernels do not:"
                                                          << mine_text;
  EXPECT_TRUE(std::any_of(mine.begin(), mine.end(), [](const GpuCode& c) { return c.ptx; }))
      << "no PTX for GPUs after these:" << mine_text;
  // What the rule is: sm_86's code runs on 8.9, not on 8.0 or 9.0; PTX of 7.5 on all three.
  EXPECT_TRUE(runs_on({{false, 86}}, 89));
  EXPECT_FALSE(runs_on({{false, 86}}, 80));
  EXPECT_FALSE(runs_on({{false, 86}}, 90));
  EXPECT_TRUE(runs_on({{true, 75}}, 80) && runs_on({{true, 75}}, 90) && runs_on({{true, 75}}, 120));
}

TEST(Cuda, LsqGoldenCasesOnTheGpu) {
  MPQ_NEEDS_GOLDEN();
  MPQ_NEED_GPU();
  const std::string bytes = test::read_all(test::golden("lsq_cases.pt"));
  const auto cases = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end())).toGenericDict();
  const YAML::Node meta = YAML::LoadFile(test::golden("lsq_cases.json"));
  ASSERT_EQ(meta.size(), 72u);
  const torch::Device gpu(torch::kCUDA, 0);
  for (const auto& c : meta) {
    const int i = c["case"].as<int>();
    SCOPED_TRACE("case " + std::to_string(i));
    const Thresholds t{c["thd_neg"].as<double>(), c["thd_pos"].as<double>()};
    const bool clamp = c["s_clamped_to_1e-5_1"].as<bool>();
    const double g = c["grad_scale"].as<double>();
    torch::Tensor x = get(cases, i, "x").to(gpu).requires_grad_(true);
    torch::Tensor s = get(cases, i, "s").to(gpu).requires_grad_(true);
    torch::Tensor y = quant::lsq_quantize(x, s, t, g, clamp);
    y.backward(get(cases, i, "grad_out").to(gpu));
    EXPECT_LE((y.cpu() - get(cases, i, "y")).abs().max().item<double>(), kOutputAtol);
    EXPECT_EQ(test::zeros_of_other_sign(y, get(cases, i, "y")), 0) << "the original's zeros are all +0";
    EXPECT_LE((x.grad().cpu() - get(cases, i, "grad_x")).abs().max().item<double>(), kOutputAtol);
    const double gs = s.grad().cpu().item<double>(), ref = get(cases, i, "grad_s").item<double>();
    EXPECT_LE(std::abs(gs - ref), kGradScaleRtol * std::max(1e-6, std::abs(ref))) << gs << " vs " << ref;
  }
}

// Same float operations as the CPU kernels: y and the input gradient equal
// bitwise; the step-size gradient, summed in double in another order, to
// 1e-6 relative, and bitwise the same on a second run; with three
// candidates' scales, the unused two get 0.
TEST(Cuda, LsqKernelsEqualTheCpuKernelsAndAreDeterministic) {
  MPQ_NEED_GPU();
  torch::manual_seed(5);
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{1}, {1000}, {32, 64, 28, 28}})
    for (int bits : {2, 4, 8})
      for (bool relu : {false, true}) {
        SCOPED_TRACE(std::to_string(bits) + " bits, relu " + std::to_string(relu));
        const Thresholds t = quant::thresholds(bits, relu, false);
        const torch::Tensor x0 = torch::randn(shape), go = torch::randn(shape);
        // The candidates' scales, the middle one used: the other two get 0.
        const torch::Tensor s0 = torch::tensor({0.5f, 0.05f, 0.2f});
        auto run = [&](const torch::Device& d) {
          torch::Tensor x = x0.to(d).requires_grad_(true), s = s0.to(d).requires_grad_(true);
          torch::Tensor y = quant::lsq_quantize(x, s, t, 0.01, true, relu, /*index=*/1);
          y.backward(go.to(d));
          return std::vector<torch::Tensor>{y.cpu(), x.grad().cpu(), s.grad().cpu()};
        };
        const auto cpu = run(torch::kCPU), a = run(torch::kCUDA), b = run(torch::kCUDA);
        EXPECT_TRUE(test::same_bits(cpu[0], a[0]));
        EXPECT_TRUE(test::same_bits(cpu[1], a[1]));
        EXPECT_LE((cpu[2] - a[2]).abs().max().item<double>(), 1e-6 * std::max(1e-6, cpu[2].abs().max().item<double>()));
        EXPECT_EQ(a[2][0].item<float>(), 0.f);
        EXPECT_EQ(a[2][2].item<float>(), 0.f);
        EXPECT_TRUE(torch::equal(a[2], b[2])) << "the step-size gradient must not change from run to run";
      }
}

// Channels-last tensors, as mpq trains on a GPU, and a gradient in the other
// layout (the op then takes both in NCHW): the GPU gives the CPU's bits, in
// every combination, with the ReLU absorbed or not.
TEST(Cuda, LsqKernelsTakeEitherLayoutAsTheCpuDoes) {
  MPQ_NEED_GPU();
  torch::manual_seed(7);
  const torch::Tensor x0 = torch::randn({8, 24, 9, 11}), go0 = torch::randn({8, 24, 9, 11});
  const auto nchw = torch::MemoryFormat::Contiguous, cl = torch::MemoryFormat::ChannelsLast;
  for (const auto& [fx, fg] : {std::pair{cl, cl}, {cl, nchw}, {nchw, cl}})
    for (bool relu : {false, true}) {
      SCOPED_TRACE(std::string("x ") + (fx == cl ? "channels-last" : "NCHW") + ", gradient " +
                   (fg == cl ? "channels-last" : "NCHW") + ", relu " + std::to_string(relu));
      const Thresholds t = quant::thresholds(4, relu, false);
      auto run = [&](const torch::Device& d) {
        torch::Tensor x = x0.to(d).contiguous(fx).requires_grad_(true);
        torch::Tensor s = torch::full({1}, 0.3f).to(d).requires_grad_(true);
        torch::Tensor y = quant::lsq_quantize(x, s, t, 0.01, true, relu);
        EXPECT_TRUE(y.is_contiguous(fx));
        y.backward(go0.to(d).contiguous(fg));
        return std::vector<torch::Tensor>{y.cpu().contiguous(), x.grad().cpu().contiguous(), s.grad().cpu()};
      };
      const auto c = run(torch::kCPU), g = run(torch::kCUDA);
      EXPECT_TRUE(test::same_bits(c[0], g[0]));
      EXPECT_TRUE(test::same_bits(c[1], g[1]));
      EXPECT_NEAR(c[2].item<double>(), g[2].item<double>(), 1e-6 * std::abs(c[2].item<double>()));
    }
}

// The kernels share the CPU's clamp of the scale: float(1e-5) and 1 inside,
// the floats beyond them outside, a NaN scale kept NaN with no gradient.
TEST(Cuda, ScalesAtTheClampsEndsGiveTheCpusResults) {
  MPQ_NEED_GPU();
  torch::manual_seed(5);
  const Thresholds t = quant::thresholds(3, false, false);
  const torch::Tensor x0 = torch::randn({1000}) * 3e-5, go = torch::randn({1000});
  for (float scale : {1e-5f, std::nextafter(1e-5f, 0.f), std::nextafter(1e-5f, 1.f), 1.f, std::nextafter(1.f, 2.f),
                      std::nanf("")}) {
    SCOPED_TRACE(scale);
    auto run = [&](const torch::Device& d) {
      torch::Tensor x = x0.to(d).requires_grad_(true), s = torch::full({1}, scale).to(d).requires_grad_(true);
      torch::Tensor y = quant::lsq_quantize(x, s, t, 0.01, /*clamp_scale=*/true);
      y.backward(go.to(d));
      return std::vector<torch::Tensor>{y.cpu(), x.grad().cpu(), s.grad().cpu()};
    };
    const auto cpu = run(torch::kCPU), gpu = run(torch::kCUDA);
    EXPECT_TRUE(torch::allclose(cpu[0], gpu[0], 0, 0, /*equal_nan=*/true));
    EXPECT_TRUE(torch::equal(cpu[1], gpu[1]));
    const float gc = cpu[2].item<float>(), gg = gpu[2].item<float>();
    EXPECT_EQ(gc == 0.f, gg == 0.f) << gc << " vs " << gg;
    EXPECT_NEAR(gc, gg, 1e-6 * std::abs(gc)) << gc << " vs " << gg;
  }
}

// Joint indicator steps on the GPU against the same steps on the CPU, held
// to the bounds two orders of addition keep on the CPU (joint_agreement.h
// says why quantized training agrees no closer, and
// JointStep.TwoOrdersOfAdditionAgreeWithinTheBoundsTheGpuIsHeldTo checks the
// bounds there): one step in double, the tight one (cuDNN's convolutions,
// BatchNorm, the quantizers' composed ops, the multi-tensor SGD, all on the
// GPU); three steps in double; and one step in float, channels-last as mpq
// trains, where the fused LSQ CUDA kernels run. cuDNN's float convolutions
// in full float32 (tf32: false): PyTorch's default TF32 rounds their inputs
// to 10-bit mantissas, far coarser than the CPU's float32.
TEST(Cuda, TrainingStepsOnTheGpuAgreeWithTheCpusAsTwoOrdersOfAdditionDo) {
  MPQ_NEED_GPU();
  engine::apply_tf32(false);
  struct Restore {
    ~Restore() { engine::apply_tf32(true); }
  } restore;
  const torch::Device cpu(torch::kCPU), gpu(torch::kCUDA, 0);
  {
    SCOPED_TRACE("one step in double");
    test::expect_within(test::agreement(test::joint_run(cpu, torch::kDouble, false, 1),
                                        test::joint_run(gpu, torch::kDouble, false, 1)),
                        test::kDoubleOneStep);
  }
  {
    SCOPED_TRACE("three steps in double");
    test::expect_within(test::agreement(test::joint_run(cpu, torch::kDouble, false, 3),
                                        test::joint_run(gpu, torch::kDouble, false, 3)),
                        test::kDoubleThreeSteps);
  }
  {
    SCOPED_TRACE("one step in float, channels-last (the fused LSQ kernels)");
    test::expect_within(test::agreement(test::joint_run(cpu, torch::kFloat, true, 1),
                                        test::joint_run(gpu, torch::kFloat, true, 1)),
                        test::kFloatOneStep);
  }
}

// The config key cudnn sets LibTorch's global cuDNN flags (on every build;
// they only matter on a GPU), and deterministic mode asks cuBLAS for its
// reproducible workspace split unless the user chose one.
TEST(Cuda, CudnnModesSetLibTorchsFlags) {
  at::Context& g = at::globalContext();
  ::unsetenv("CUBLAS_WORKSPACE_CONFIG");
  engine::apply_cudnn_mode("benchmark");
  EXPECT_TRUE(g.benchmarkCuDNN());
  EXPECT_FALSE(g.deterministicCuDNN());
  EXPECT_EQ(std::getenv("CUBLAS_WORKSPACE_CONFIG"), nullptr);
  engine::apply_cudnn_mode("deterministic");
  EXPECT_FALSE(g.benchmarkCuDNN());
  EXPECT_TRUE(g.deterministicCuDNN());
  ASSERT_NE(std::getenv("CUBLAS_WORKSPACE_CONFIG"), nullptr);
  EXPECT_STREQ(std::getenv("CUBLAS_WORKSPACE_CONFIG"), ":4096:8");
  ::setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8", 1);
  engine::apply_cudnn_mode("deterministic");
  EXPECT_STREQ(std::getenv("CUBLAS_WORKSPACE_CONFIG"), ":16:8");
  engine::apply_cudnn_mode("heuristic");
  EXPECT_FALSE(g.benchmarkCuDNN());
  EXPECT_FALSE(g.deterministicCuDNN());
  ::unsetenv("CUBLAS_WORKSPACE_CONFIG");
}

// The config key tf32 sets LibTorch's cuDNN TF32 flag, for convolutions in
// particular, and reading it back afterwards is accepted (LibTorch refuses
// reads where the convolution and RNN flags were set apart).
TEST(Cuda, Tf32KeySetsLibTorchsCudnnFlag) {
  at::Context& g = at::globalContext();
  EXPECT_TRUE(g.allowTF32CuDNN(at::Float32Op::CONV)) << "PyTorch's default, which tf32: true keeps";
  engine::apply_tf32(false);
  EXPECT_FALSE(g.allowTF32CuDNN(at::Float32Op::CONV));
  EXPECT_FALSE(g.allowTF32CuDNN());
  engine::apply_tf32(true);
  EXPECT_TRUE(g.allowTF32CuDNN(at::Float32Op::CONV));
  EXPECT_TRUE(g.allowTF32CuDNN());
}

// cudnn: deterministic makes GPU training repeat itself bit for bit: two
// runs of the same joint and W4A4 finetuning steps end with equal weights.
TEST(Cuda, DeterministicModeRepeatsGpuTrainingBitwise) {
  MPQ_NEED_GPU();
  engine::apply_cudnn_mode("deterministic");
  const std::vector<int> cands = {4, 3, 2};
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({32, 1, 28, 28}).cuda(), y = torch::randint(10, {32}).cuda();
  auto run = [&] {
    torch::manual_seed(0);
    auto q = quant::quantize_for_indicators(models::make_model("resnet20", {10, 1}), cands);
    q.net->to(torch::kCUDA);
    q.net->to_channels_last();
    auto opt = engine::make_sgd(*q.net, 0.01, 0.9, 2.5e-5);
    std::mt19937_64 r(0);
    for (int step = 0; step < 3; ++step)
      engine::joint_step(q, *opt, x, y, 0.1, engine::sample_policy(r, cands, q.convs.size()));
    std::vector<torch::Tensor> w;
    for (const auto& p : q.net->parameters()) w.push_back(p.detach().cpu());
    return w;
  };
  const auto a = run(), b = run();
  ASSERT_EQ(a.size(), b.size());
  bool same = true;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(test::same_bits(a[i], b[i])) << "parameter " << i;
    same = same && test::same_bits(a[i], b[i]);
  }
  if (!same) {
    // Which operators PyTorch itself knows to be nondeterministic on CUDA ran:
    // a third run with its deterministic-algorithm alerts as warnings (the
    // autograd engine replays its threads' warnings on this one).
    struct Collect : c10::WarningHandler {
      std::string ops;
      void process(const c10::Warning& w) override {
        if (w.msg().find("deterministic") != std::string::npos) ops += "\n  " + w.msg().substr(0, w.msg().find('\n'));
      }
    } collect;
    {
      const c10::WarningUtils::WarningHandlerGuard guard(&collect);
      at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/true);
      run();
      at::globalContext().setDeterministicAlgorithms(false, false);
    }
    ADD_FAILURE() << "PyTorch's alerts for nondeterministic operators in these steps:"
                  << (collect.ops.empty() ? std::string(" none (then mpq's own kernels, or an operator PyTorch does "
                                                        "not know as nondeterministic)")
                                          : collect.ops);
  }
  engine::apply_cudnn_mode("benchmark");
}

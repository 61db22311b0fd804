// The fused LSQ op's CUDA kernels, their own source run on the CPU under an
// emulated grid (tests/cuda_emulation.h), against the CPU kernels: their
// indexing, grid-stride loops, in-block reduction trees and the step size's
// finish are checked in every build, where the GPU tests (cuda_test) run
// only on a machine with a GPU. Arithmetic here is the host's, so this is no
// test of the GPU's floating point: cuda_test is.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "cuda_emulation.h"
#include "quant/lsq_cpu.h"
#include "quant/lsq_cuda_kernels.cuh"

namespace {

namespace emu = mpq::test::cuda_emulation;
namespace kernels = mpq::quant::cuda;
namespace cpu = mpq::quant::cpu;

struct Backward {
  std::vector<float> gx, gs;
};

std::vector<float> forward_on_grid(const std::vector<float>& x, const std::vector<float>& s, int64_t index, float n,
                                   float p, bool clamp_scale, int64_t grid) {
  std::vector<float> y(x.size(), -1.f);
  emu::launch(grid, kernels::kThreads, [&] {
    kernels::forward_kernel(x.data(), y.data(), static_cast<int64_t>(x.size()), s.data() + index, n, p, clamp_scale);
  });
  return y;
}

// The backward as lsq_cuda.cu launches it: the partial sums of `grid` blocks,
// then one block's finish into every candidate's gradient.
Backward backward_on_grid(const std::vector<float>& x, const std::vector<float>& go, const std::vector<float>& s,
                          int64_t index, float n, float p, double g, bool clamp_scale, bool relu, int64_t grid) {
  Backward r{std::vector<float>(x.size(), -1.f), std::vector<float>(s.size(), -1.f)};
  std::vector<double> partial(static_cast<size_t>(grid), NAN);
  emu::launch(grid, kernels::kThreads, [&] {
    kernels::backward_kernel(x.data(), go.data(), r.gx.data(), static_cast<int64_t>(x.size()), s.data() + index, n,
                             p, clamp_scale, relu, partial.data());
  });
  emu::launch(1, kernels::kThreads, [&] {
    kernels::finish_kernel(partial.data(), grid, s.data(), index, static_cast<int64_t>(s.size()), clamp_scale, g,
                           r.gs.data());
  });
  return r;
}

// x spread over the quantizer's range and beyond, with exact ends, ties
// between two integers and zeros of both signs strewn through.
std::vector<float> make_x(int64_t numel, float sv, float n, float p, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(numel));
  for (float& v : x) v = normal(rng) * (p - n) * sv * 0.6f;
  const std::vector<float> special = {n * sv, p * sv, (n + 0.5f) * sv, 2.5f * sv, -2.5f * sv, 0.f, -0.f,
                                      (p + 1) * sv, 1.5f * sv};
  for (size_t i = 0; i < x.size(); i += 3) x[i] = special[(i / 3) % special.size()];
  return x;
}

}  // namespace

TEST(LsqCudaEmulated, LaunchShapes) {
  EXPECT_EQ(kernels::backward_blocks(0), 1);
  EXPECT_EQ(kernels::backward_blocks(1), 1);
  EXPECT_EQ(kernels::backward_blocks(4 * kernels::kThreads), 1);
  EXPECT_EQ(kernels::backward_blocks(4 * kernels::kThreads + 1), 2);
  EXPECT_EQ(kernels::backward_blocks(int64_t{1} << 40), kernels::kMaxBlocks);
  EXPECT_EQ(kernels::forward_blocks(1), 1);
  EXPECT_EQ(kernels::forward_blocks(kernels::kThreads + 1), 2);
  EXPECT_EQ(kernels::forward_blocks(int64_t{1} << 40), kernels::kMaxForwardBlocks);
}

// The launch shapes lsq_cuda.cu uses, and grids too small for the data (each
// thread strides over several elements, as on large activations): the
// forward and the input gradient are the CPU kernels' bits, the step size's
// gradient their sum within double rounding, and the other candidates' 0.
TEST(LsqCudaEmulated, KernelsGiveTheCpuKernelsResultsOnAnyGrid) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const std::vector<float> s = {0.5f, 0.0371f, 0.2f};
  const int64_t index = 1;
  const float sv = s[index];
  const double g = 0.01;
  for (const int64_t numel : {1, 255, 256, 257, 1025, 5000, 70001})
    for (const auto& [n, p, relu] : {std::tuple{0.f, 15.f, false}, std::tuple{0.f, 15.f, true},
                                     std::tuple{-8.f, 7.f, false}, std::tuple{-1.f, 0.f, false}})
      for (const int64_t grid : {int64_t{0}, int64_t{3}}) {  // 0: lsq_cuda.cu's own
        SCOPED_TRACE("numel " + std::to_string(numel) + ", [" + std::to_string(n) + ", " + std::to_string(p) + "]" +
                     (relu ? " relu" : "") + ", grid " + (grid ? std::to_string(grid) : std::string("as launched")));
        const std::vector<float> x = make_x(numel, sv, n, p, rng);
        std::vector<float> go(x.size());
        for (float& v : go) v = normal(rng);
        std::vector<float> y_cpu(x.size()), gx_cpu(x.size());
        cpu::forward(x.data(), y_cpu.data(), numel, sv, n, p, cpu::isa());
        const double sum = cpu::backward(x.data(), go.data(), gx_cpu.data(), numel, sv, n, p, relu, cpu::isa());

        const auto y = forward_on_grid(x, s, index, n, p, true, grid ? grid : kernels::forward_blocks(numel));
        const auto b = backward_on_grid(x, go, s, index, n, p, g, true, relu,
                                        grid ? grid : kernels::backward_blocks(numel));
        const size_t bytes = sizeof(float) * x.size();
        EXPECT_EQ(std::memcmp(y.data(), y_cpu.data(), bytes), 0);
        EXPECT_EQ(std::memcmp(b.gx.data(), gx_cpu.data(), bytes), 0);
        // Both sum the same double terms in other orders: each rounding is at most an ulp of the running sum.
        double bound = 0;
        for (const float v : go) bound += std::abs(v);
        bound *= (std::max(std::abs(n), std::abs(p)) + 1) * g * 1e-13;
        EXPECT_NEAR(b.gs[index], sum * g, bound + 1e-6 * std::abs(sum * g));
        EXPECT_EQ(b.gs[0], 0.f);
        EXPECT_EQ(b.gs[2], 0.f);
      }
}

// The finish kernel over more partial sums than its block has threads (a
// backward of over a million elements has 1024): integers, so that any order
// of addition gives the exact sum, which must come out.
TEST(LsqCudaEmulated, FinishSumsEveryPartialSum) {
  for (const int64_t blocks : {int64_t{1}, int64_t{255}, int64_t{257}, kernels::kMaxBlocks}) {
    SCOPED_TRACE("blocks " + std::to_string(blocks));
    std::vector<double> partial(static_cast<size_t>(blocks));
    double exact = 0;
    for (size_t i = 0; i < partial.size(); ++i) exact += partial[i] = static_cast<double>((i * 7919) % 2001) - 1000;
    const std::vector<float> s = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
    std::vector<float> gs(s.size(), -1.f);
    emu::launch(1, kernels::kThreads, [&] {
      kernels::finish_kernel(partial.data(), blocks, s.data(), 3, static_cast<int64_t>(s.size()), true, 0.25,
                             gs.data());
    });
    EXPECT_EQ(gs, (std::vector<float>{0.f, 0.f, 0.f, static_cast<float>(exact * 0.25), 0.f}));
  }
}

// With the clamp on, a scale outside [1e-5, 1] (or NaN) gets no gradient,
// one at either end does; without the clamp every scale does.
TEST(LsqCudaEmulated, FinishFollowsTheClampOfTheScale) {
  const std::vector<double> partial = {2.0, -0.5};
  for (const auto& [sv, clamp, gets] : {std::tuple{2.f, true, false}, std::tuple{1e-6f, true, false},
                                        std::tuple{NAN, true, false}, std::tuple{1.f, true, true},
                                        std::tuple{1e-5f, true, true}, std::tuple{2.f, false, true}}) {
    SCOPED_TRACE("s " + std::to_string(sv) + (clamp ? ", clamped" : ""));
    const std::vector<float> s = {sv, 0.3f};
    std::vector<float> gs(s.size(), -1.f);
    emu::launch(1, kernels::kThreads, [&] {
      kernels::finish_kernel(partial.data(), 2, s.data(), 0, 2, clamp, 0.5, gs.data());
    });
    EXPECT_EQ(gs[0], gets ? 0.75f : 0.f);
    EXPECT_EQ(gs[1], 0.f);
  }
}

// The emulation itself: a barrier that only some of a block's threads reach
// is reported, not run past.
TEST(LsqCudaEmulated, EmulationReportsABarrierNotAllThreadsReach) {
  int passed = 0;
  EXPECT_THROW(emu::launch(2, 64, [&] {
                 if (threadIdx.x == 5) return;
                 __syncthreads();
                 ++passed;
               }),
               std::logic_error);
  EXPECT_EQ(passed, 0);
  int after = 0;
  emu::launch(3, 64, [&] {
    __syncthreads();
    __syncthreads();
    ++after;
  });
  EXPECT_EQ(after, 3 * 64);
}

// The fused LSQ op's CUDA kernels, their launch shapes and the order of the
// step size's sum: included by lsq_cuda.cu (nvcc) and, under a host
// emulation of CUDA's grid, by the CPU tests (tests/cuda_emulation.h), which
// run these very kernels against the CPU ones in every build, GPU or not.
#pragma once

#include <cstdint>

#include "quant/lsq_scale.h"

namespace mpq::quant::cuda {
namespace {

constexpr int kThreads = 256;
// The backward's partial sums: at most this many blocks, each summing a
// fixed, grid-strided set of elements, so the order of every addition is a
// function of numel alone (not of the GPU's SM count).
constexpr int64_t kMaxBlocks = 1024;
constexpr int64_t kMaxForwardBlocks = 65535LL * 8;

// The backward's blocks: one per 4 * kThreads elements, at most kMaxBlocks.
inline int64_t backward_blocks(int64_t numel) {
  const int64_t b = (numel + kThreads * 4 - 1) / (kThreads * 4);
  return b < 1 ? 1 : b > kMaxBlocks ? kMaxBlocks : b;
}

// The forward's blocks: one thread per element, the grid capped (the kernel
// strides over the rest).
inline int64_t forward_blocks(int64_t numel) {
  const int64_t b = (numel + kThreads - 1) / kThreads;
  return b > kMaxForwardBlocks ? kMaxForwardBlocks : b;
}

__global__ void forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t numel,
                               const float* __restrict__ s, float n, float p, bool clamp_scale) {
  const float sv = scale_used(*s, clamp_scale);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    // x / s as a division, v < n ? n : v then v > p ? p : v, and the shared
    // round half to even: the CPU kernel's operations, so the same floats.
    float v = x[i] / sv;
    v = v < n ? n : v;
    v = v > p ? p : v;
    y[i] = round_half_even(v) * sv;
  }
}

__global__ void backward_kernel(const float* __restrict__ x, const float* __restrict__ go, float* __restrict__ gx,
                                int64_t numel, const float* __restrict__ s, float n, float p, bool clamp_scale,
                                bool relu, double* __restrict__ partial) {
  __shared__ double lane[kThreads];
  const float sv = scale_used(*s, clamp_scale);
  double acc = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(kThreads) * gridDim.x) {
    const float v = x[i] / sv;
    const float lo = v < n ? n : v;
    const float vc = lo > p ? p : lo;
    const bool inside = vc == v && (!relu || v > n);
    const float g = go[i];
    gx[i] = inside ? g : 0.f;
    acc += static_cast<double>(g * (round_half_even(vc) - (inside ? v : 0.f)));
  }
  lane[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {  // a fixed tree
    if (threadIdx.x < half) lane[threadIdx.x] += lane[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = lane[0];
}

// One block: the partial sums in a fixed tree, times g, into gs[index];
// the other candidates' elements of gs to 0.
__global__ void finish_kernel(const double* __restrict__ partial, int64_t blocks, const float* __restrict__ s,
                              int64_t index, int64_t k, bool clamp_scale, double g, float* __restrict__ gs) {
  __shared__ double lane[kThreads];
  double acc = 0;
  for (int64_t b = threadIdx.x; b < blocks; b += kThreads) acc += partial[b];
  lane[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) lane[threadIdx.x] += lane[threadIdx.x + half];
    __syncthreads();
  }
  // lane[0] holds the sum for every thread after the tree's last barrier.
  const bool inside = scale_gets_gradient(s[index], clamp_scale);
  for (int64_t j = threadIdx.x; j < k; j += kThreads)
    gs[j] = j == index && inside ? static_cast<float>(lane[0] * g) : 0.f;
}

}  // namespace
}  // namespace mpq::quant::cuda

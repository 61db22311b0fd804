// CUDA kernels of the fused LSQ op; contract in lsq_cuda.h.
#include "quant/lsq_cuda.h"
#include "quant/lsq_scale.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

namespace mpq::quant::cuda {
namespace {

constexpr int kThreads = 256;
// The backward's partial sums: at most this many blocks, each summing a
// fixed, grid-strided set of elements, so the order of every addition is a
// function of numel alone (not of the GPU's SM count).
constexpr int64_t kMaxBlocks = 1024;

int64_t blocks_for(int64_t numel) {
  return std::max<int64_t>(1, std::min<int64_t>(kMaxBlocks, (numel + kThreads * 4 - 1) / (kThreads * 4)));
}

__global__ void forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t numel,
                               const float* __restrict__ s, float n, float p, bool clamp_scale) {
  const float sv = scale_used(*s, clamp_scale);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    // x / s as a division, v < n ? n : v then v > p ? p : v, and rintf's
    // round-half-to-even: the CPU kernel's operations, so the same floats.
    float v = x[i] / sv;
    v = v < n ? n : v;
    v = v > p ? p : v;
    y[i] = rintf(v) * sv;
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
    acc += static_cast<double>(g * (rintf(vc) - (inside ? v : 0.f)));
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

void lsq_forward(const at::Tensor& x, const at::Tensor& s, int64_t index, const at::Tensor& y, float n, float p,
                 bool clamp_scale) {
  const int64_t numel = x.numel();
  if (numel == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t blocks = std::min<int64_t>((numel + kThreads - 1) / kThreads, 65535LL * 8);
  forward_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      x.const_data_ptr<float>(), y.mutable_data_ptr<float>(), numel, s.const_data_ptr<float>() + index, n, p,
      clamp_scale);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void lsq_backward(const at::Tensor& x, const at::Tensor& go, const at::Tensor& s, int64_t index, const at::Tensor& gx,
                  const at::Tensor& gs, float n, float p, double g, bool clamp_scale, bool relu) {
  const int64_t numel = x.numel();
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t blocks = blocks_for(numel);
  const at::Tensor partial = at::empty({blocks}, x.options().dtype(at::kDouble));
  backward_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      x.const_data_ptr<float>(), go.const_data_ptr<float>(), gx.mutable_data_ptr<float>(), numel,
      s.const_data_ptr<float>() + index, n, p, clamp_scale, relu, partial.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  finish_kernel<<<1, kThreads, 0, stream>>>(partial.const_data_ptr<double>(), blocks, s.const_data_ptr<float>(), index,
                                            s.numel(), clamp_scale, g, gs.mutable_data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace mpq::quant::cuda

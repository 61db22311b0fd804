// The fused LSQ op's CUDA launches (contract in lsq_cuda.h); the kernels are
// in lsq_cuda_kernels.cuh.
#include "quant/lsq_cuda.h"
#include "quant/lsq_cuda_kernels.cuh"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace mpq::quant::cuda {

void lsq_forward(const at::Tensor& x, const at::Tensor& s, int64_t index, const at::Tensor& y, float n, float p,
                 bool clamp_scale) {
  const int64_t numel = x.numel();
  if (numel == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t blocks = forward_blocks(numel);
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
  const int64_t blocks = backward_blocks(numel);
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

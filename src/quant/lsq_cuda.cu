// The fused LSQ op's CUDA launches (contract in lsq_cuda.h); the kernels are
// in lsq_cuda_kernels.cuh.
#include "quant/lsq_cuda.h"
#include "quant/lsq_cuda_kernels.cuh"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#ifndef MPQ_CUDA_CODES
#define MPQ_CUDA_CODES "(not recorded)"
#endif

namespace mpq::quant::cuda {

std::string kernels_missing(c10::DeviceIndex device) {
  const c10::cuda::CUDAGuard guard(device);
  cudaFuncAttributes a{};
  const cudaError_t e = cudaFuncGetAttributes(&a, forward_kernel);
  if (e == cudaSuccess) return {};
  (void)cudaGetLastError();  // not sticky: clear it, so no later check reports it
  if (e != cudaErrorNoKernelImageForDevice && e != cudaErrorInvalidDeviceFunction) C10_CUDA_CHECK(e);
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(device);
  return c10::str("cuda:", static_cast<int>(device), " (", p->name, ", compute capability ", p->major, ".", p->minor,
                  ") cannot run this mpq's CUDA kernels: they were compiled for ", MPQ_CUDA_CODES,
                  " (TORCH_CUDA_ARCH_LIST at build time). Rebuild with TORCH_CUDA_ARCH_LIST unset (mpq's default "
                  "covers every GPU its LibTorch runs on) or naming ", p->major, ".", p->minor,
                  ", or set training_device: cpu");
}

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

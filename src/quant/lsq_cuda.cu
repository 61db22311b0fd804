// The fused LSQ kernels' launches (contract in lsq_cuda.h); the kernels are
// in lsq_cuda_kernels.cuh.
#include "quant/lsq_cuda.h"
#include "quant/lsq_cuda_kernels.cuh"

#include <cuda_runtime.h>

#ifndef MPQ_CUDA_CODES
#define MPQ_CUDA_CODES "(not recorded)"
#endif

namespace mpq::quant::cuda {

cudaError_t forward(const float* x, float* y, int64_t numel, const float* s, float n, float p, bool clamp_scale,
                    cudaStream_t stream) {
  if (numel == 0) return cudaSuccess;
  forward_kernel<<<static_cast<unsigned>(forward_blocks(numel)), kThreads, 0, stream>>>(x, y, numel, s, n, p,
                                                                                         clamp_scale);
  return cudaGetLastError();
}

int64_t backward_partials(int64_t numel) { return backward_blocks(numel); }

cudaError_t backward(const float* x, const float* go, float* gx, int64_t numel, const float* s, int64_t index,
                     int64_t k, float n, float p, double g, bool clamp_scale, bool relu, double* partial, float* gs,
                     cudaStream_t stream) {
  const int64_t blocks = backward_blocks(numel);
  backward_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, go, gx, numel, s + index, n, p,
                                                                          clamp_scale, relu, partial);
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  finish_kernel<<<1, kThreads, 0, stream>>>(partial, blocks, s, index, k, clamp_scale, g, gs);
  return cudaGetLastError();
}

cudaError_t kernel_image() {
  cudaFuncAttributes a{};
  return cudaFuncGetAttributes(&a, forward_kernel);
}

const char* compiled_for() { return MPQ_CUDA_CODES; }

}  // namespace mpq::quant::cuda

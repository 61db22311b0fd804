// The fused LSQ kernels' launches (src/quant/lsq_cuda.cu), the GPU side of
// lsq_quantize (lsq.h, which passes them its tensors' memory and current
// stream): the same arithmetic as the CPU kernels, element for element (IEEE
// division, rounding half to even). The scale is read on the device, so
// neither pass synchronises with the host. Raw pointers and the CUDA runtime
// only, so that nvcc, which compiles this unit once per GPU architecture,
// parses no ATen header. Compiled in where LibTorch is a CUDA build
// (MPQ_HAVE_CUDA). Each launch returns CUDA's error for it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace mpq::quant::cuda {

// y[i] = round(clamp(x[i] / s', n, p)) * s' with s' = *s, or clamp(*s,
// 1e-5, 1) with `clamp_scale`; x and y dense, in one layout; s on the device.
cudaError_t forward(const float* x, float* y, int64_t numel, const float* s, float n, float p, bool clamp_scale,
                    cudaStream_t stream);

// How many doubles the backward's `partial` must hold for `numel` elements.
int64_t backward_partials(int64_t numel);

// gx[i] = go[i] where the clamp left x[i] / s' unchanged (and, with `relu`,
// x[i] > 0), else 0; gs[index] = g * sum(go * ds) (ds = round(v) - v
// inside, n or p outside), or 0 where `clamp_scale` and s[index] lies
// outside [1e-5, 1]; gs's other k - 1 elements 0. The sum is taken in
// double in a fixed order that depends on numel only, so it is the same run
// to run and on every GPU.
cudaError_t backward(const float* x, const float* go, float* gx, int64_t numel, const float* s, int64_t index,
                     int64_t k, float n, float p, double g, bool clamp_scale, bool relu, double* partial, float* gs,
                     cudaStream_t stream);

// cudaSuccess where the current GPU runs this build's kernels; else CUDA's
// error (cudaErrorNoKernelImageForDevice, ...).
cudaError_t kernel_image();

// What the kernels were compiled for ("sm_75,...,compute_75").
const char* compiled_for();

}  // namespace mpq::quant::cuda

// The fused LSQ kernels on CUDA tensors (src/quant/lsq_cuda.cu), the GPU
// side of lsq_quantize (lsq.h): the same arithmetic as the CPU kernels,
// element for element (IEEE division, rounding half to even), on the current
// stream. The scale is read on the device, so neither pass synchronises
// with the host. Compiled in where LibTorch is a CUDA build (MPQ_HAVE_CUDA).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace mpq::quant::cuda {

// Empty where this build's kernels have code that GPU `device` runs; else
// one line: the GPU, what the kernels were compiled for, what to do.
std::string kernels_missing(c10::DeviceIndex device);

// y[i] = round(clamp(x[i] / s', n, p)) * s' with s' = s[index], or
// clamp(s[index], 1e-5, 1) with `clamp_scale`. x and y: dense float32, one
// layout; s: the candidates' scales, contiguous float32 on x's device.
void lsq_forward(const at::Tensor& x, const at::Tensor& s, int64_t index, const at::Tensor& y, float n, float p,
                 bool clamp_scale);

// gx[i] = go[i] where the clamp left x[i] / s' unchanged (and, with `relu`,
// x[i] > 0), else 0; gs[index] = g * sum(go * ds) (ds = round(v) - v
// inside, n or p outside), or 0 where `clamp_scale` and s[index] lies
// outside [1e-5, 1]; gs's other elements 0 (gs: contiguous, s's size).
// The sum is taken in double in a fixed order that depends on numel only,
// so it is the same run to run and on every GPU.
void lsq_backward(const at::Tensor& x, const at::Tensor& go, const at::Tensor& s, int64_t index, const at::Tensor& gx,
                  const at::Tensor& gs, float n, float p, double g, bool clamp_scale, bool relu);

}  // namespace mpq::quant::cuda

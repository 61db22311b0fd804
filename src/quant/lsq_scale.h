// The candidate scale as the LSQ op uses it, shared by the CPU code
// (lsq.cpp) and the CUDA kernels (lsq_cuda.cu) so that the two cannot
// disagree. Indicator training clamps every scale into [1e-5, 1] the way
// torch.clamp does on a float tensor: bounds and comparisons in float (so a
// scale of exactly float(1e-5) is inside), and a NaN scale stays NaN and
// gets no gradient.
#pragma once

#if defined(__CUDACC__)
#define MPQ_HOST_DEVICE __host__ __device__
#else
#define MPQ_HOST_DEVICE
#endif

namespace mpq::quant {

inline constexpr float kScaleMin = 1e-5f, kScaleMax = 1.0f;

// clamp(s, 1e-5, 1) with `clamp_scale`, else s.
MPQ_HOST_DEVICE inline float scale_used(float s, bool clamp_scale) {
  if (!clamp_scale) return s;
  const float lo = s < kScaleMin ? kScaleMin : s;
  return lo > kScaleMax ? kScaleMax : lo;
}

// Whether the clamp passes the gradient on to the scale: always without the
// clamp; with it, for a scale in [1e-5, 1], both ends included.
MPQ_HOST_DEVICE inline bool scale_gets_gradient(float s, bool clamp_scale) {
  return !clamp_scale || (s >= kScaleMin && s <= kScaleMax);
}

}  // namespace mpq::quant

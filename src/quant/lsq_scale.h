// The scalar pieces of the LSQ op that its CPU code (lsq.cpp, lsq_cpu.cpp)
// and its CUDA kernels (lsq_cuda_kernels.cuh) share, so that the two cannot
// disagree: the rounding, and the candidate scale as the op uses it.
//
// Indicator training clamps every scale into [1e-5, 1] the way
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

// Round half to even for |v| < 2^22 (|v| <= 2^15 after the clamp): adding
// and subtracting 1.5 * 2^23 leaves the float rounded to an integer in the
// nearest-even mode. Every zero comes out +0, as in the original's
// round_pass ((round(v) - v) + v), where rint would keep v's sign.
inline constexpr float kRoundMagic = 12582912.0f;
MPQ_HOST_DEVICE inline float round_half_even(float v) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(__fadd_rn(v, kRoundMagic), kRoundMagic);  // never contracted or reassociated
#else
  const float t = v + kRoundMagic;  // not folded: no -ffast-math
  return t - kRoundMagic;
#endif
}

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

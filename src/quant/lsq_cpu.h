// The fused LSQ op's CPU kernels (lsq.h), on raw float arrays: built for
// SSE2 (every x86-64) and for AVX2, picked at run time by what the CPU has.
// Both give the same bits: the same operations per element, in the same
// order, and the step size's gradient summed in the same double lanes.
#pragma once

#include <cstdint>

namespace mpq::quant::cpu {

enum class Isa { kBaseline, kAvx2 };

// The widest kernels this CPU runs, lowered by limit_isa.
Isa isa();
// Holds the kernels to at most `isa` from now on (benchmarks' A/B runs and
// tests); the CPU's own limit still applies.
void limit_isa(Isa isa);

// y = round(clamp(x / s, n, p)) * s, round half to even.
void forward(const float* x, float* y, int64_t numel, float s, float n, float p, Isa isa);

// Writes the input gradient (go inside [n, p], else 0; with `relu`, x <= 0
// outside too) and returns sum(go * ds), ds = round(v) - v inside, n or p
// outside, v = x / s: summed in double over fixed chunks and four lanes, so
// that it does not depend on the thread count.
double backward(const float* x, const float* go, float* gx, int64_t numel, float s, float n, float p, bool relu,
                Isa isa);

}  // namespace mpq::quant::cpu

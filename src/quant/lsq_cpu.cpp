#include "quant/lsq_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "quant/lsq_scale.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MPQ_LSQ_AVX2 1
#else
#define MPQ_LSQ_AVX2 0
#endif

namespace mpq::quant::cpu {

namespace {

// Elements per unit of parallel work; the backward's partial sums are per
// chunk, so their number and order depend only on numel.
constexpr int64_t kChunk = 1 << 14;

std::atomic<int> g_limit{static_cast<int>(Isa::kAvx2)};

Isa cpu_isa() {
#if MPQ_LSQ_AVX2
  static const Isa best = __builtin_cpu_supports("avx2") ? Isa::kAvx2 : Isa::kBaseline;
  return best;
#else
  return Isa::kBaseline;
#endif
}

// x / s stays a division (not a multiplication by 1/s) to round exactly as
// PyTorch does. Branch-free; GCC vectorises it for the baseline.
void forward_baseline(const float* __restrict px, float* __restrict py, int64_t begin, int64_t end, float sv, float n,
                      float p) {
  for (int64_t i = begin; i < end; ++i) {
    float v = px[i] / sv;
    v = v < n ? n : v;
    v = v > p ? p : v;
    py[i] = round_half_even(v) * sv;
  }
}

// One element of the backward pass, without branches: writes the input
// gradient and returns go * ds. "Inside" is "the clamp left v unchanged",
// which also holds at v == n and v == p.
inline float grad_element(float x, float go, float& gx, float sv, float n, float p, bool relu) {
  const float v = x / sv;
  const float lo = v < n ? n : v;
  const float vc = lo > p ? p : lo;
  const bool inside = vc == v && (!relu || v > n);
  gx = inside ? go : 0.f;
  return go * (round_half_even(vc) - (inside ? v : 0.f));
}

// The last elements of a chunk, into lane 0, then the lanes summed in order.
double finish_chunk(double lane[4], const float* px, const float* pg, float* pgx, int64_t i, int64_t end, float sv,
                    float n, float p, bool relu) {
  for (; i < end; ++i) lane[0] += static_cast<double>(grad_element(px[i], pg[i], pgx[i], sv, n, p, relu));
  double acc = 0;
  for (int k = 0; k < 4; ++k) acc += lane[k];
  return acc;
}

#if defined(__SSE2__)
// Four elements: the input gradient stored, go * ds returned. max_ps(n, v)
// is v < n ? n : v and min_ps(p, v) is v > p ? p : v, NaN included.
inline __m128 grad4(const float* px, const float* pg, float* pgx, __m128 vs, __m128 vn, __m128 vp, bool relu) {
  const __m128 magic = _mm_set1_ps(kRoundMagic);
  const __m128 v = _mm_div_ps(_mm_loadu_ps(px), vs);
  const __m128 g = _mm_loadu_ps(pg);
  const __m128 vc = _mm_min_ps(vp, _mm_max_ps(vn, v));
  __m128 inside = _mm_cmpeq_ps(vc, v);
  if (relu) inside = _mm_and_ps(inside, _mm_cmpgt_ps(v, vn));
  const __m128 q = _mm_sub_ps(_mm_add_ps(vc, magic), magic);
  const __m128 ds = _mm_sub_ps(q, _mm_and_ps(inside, v));
  _mm_storeu_ps(pgx, _mm_and_ps(inside, g));
  return _mm_mul_ps(g, ds);
}
#endif

// Lane k sums the products of elements begin + k, + 4 + k, + 8 + k, ... in
// order; the kernels of every instruction set keep exactly this order.
double backward_chunk_baseline(const float* __restrict px, const float* __restrict pg, float* __restrict pgx,
                               int64_t begin, int64_t end, float sv, float n, float p, bool relu) {
  double lane[4] = {0, 0, 0, 0};
  int64_t i = begin;
#if defined(__SSE2__)
  // GCC 12 does not vectorise grad_element's selects: SSE2 by hand.
  const __m128 vs = _mm_set1_ps(sv), vn = _mm_set1_ps(n), vp = _mm_set1_ps(p);
  __m128d acc_lo = _mm_setzero_pd(), acc_hi = _mm_setzero_pd();
  for (; i + 4 <= end; i += 4) {
    const __m128 prod = grad4(px + i, pg + i, pgx + i, vs, vn, vp, relu);
    acc_lo = _mm_add_pd(acc_lo, _mm_cvtps_pd(prod));
    acc_hi = _mm_add_pd(acc_hi, _mm_cvtps_pd(_mm_movehl_ps(prod, prod)));
  }
  _mm_storeu_pd(lane, acc_lo);
  _mm_storeu_pd(lane + 2, acc_hi);
#endif
  return finish_chunk(lane, px, pg, pgx, i, end, sv, n, p, relu);
}

#if MPQ_LSQ_AVX2
// The same operations eight elements at a time. No FMA: the target is AVX2
// alone, so nothing is contracted that the baseline rounds twice.
__attribute__((target("avx2"))) void forward_avx2(const float* __restrict px, float* __restrict py, int64_t begin,
                                                  int64_t end, float sv, float n, float p) {
  const __m256 vs = _mm256_set1_ps(sv), vn = _mm256_set1_ps(n), vp = _mm256_set1_ps(p);
  const __m256 magic = _mm256_set1_ps(kRoundMagic);
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m256 v = _mm256_div_ps(_mm256_loadu_ps(px + i), vs);
    const __m256 vc = _mm256_min_ps(vp, _mm256_max_ps(vn, v));
    const __m256 q = _mm256_sub_ps(_mm256_add_ps(vc, magic), magic);
    _mm256_storeu_ps(py + i, _mm256_mul_ps(q, vs));
  }
  forward_baseline(px, py, i, end, sv, n, p);
}

__attribute__((target("avx2"))) double backward_chunk_avx2(const float* __restrict px, const float* __restrict pg,
                                                           float* __restrict pgx, int64_t begin, int64_t end, float sv,
                                                           float n, float p, bool relu) {
  const __m256 vs = _mm256_set1_ps(sv), vn = _mm256_set1_ps(n), vp = _mm256_set1_ps(p);
  const __m256 magic = _mm256_set1_ps(kRoundMagic);
  __m256d acc = _mm256_setzero_pd();  // lanes 0..3, as the baseline's acc_lo and acc_hi
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m256 v = _mm256_div_ps(_mm256_loadu_ps(px + i), vs);
    const __m256 g = _mm256_loadu_ps(pg + i);
    const __m256 vc = _mm256_min_ps(vp, _mm256_max_ps(vn, v));
    __m256 inside = _mm256_cmp_ps(vc, v, _CMP_EQ_OQ);
    if (relu) inside = _mm256_and_ps(inside, _mm256_cmp_ps(v, vn, _CMP_GT_OQ));
    const __m256 q = _mm256_sub_ps(_mm256_add_ps(vc, magic), magic);
    const __m256 ds = _mm256_sub_ps(q, _mm256_and_ps(inside, v));
    _mm256_storeu_ps(pgx + i, _mm256_and_ps(inside, g));
    const __m256 prod = _mm256_mul_ps(g, ds);
    acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(prod)));    // elements i .. i + 3
    acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(prod, 1)));  // then i + 4 .. i + 7
  }
  if (i + 4 <= end) {
    const __m128 prod = grad4(px + i, pg + i, pgx + i, _mm256_castps256_ps128(vs), _mm256_castps256_ps128(vn),
                              _mm256_castps256_ps128(vp), relu);
    acc = _mm256_add_pd(acc, _mm256_cvtps_pd(prod));
    i += 4;
  }
  double lane[4];
  _mm256_storeu_pd(lane, acc);
  return finish_chunk(lane, px, pg, pgx, i, end, sv, n, p, relu);
}
#endif

}  // namespace

Isa isa() { return std::min(cpu_isa(), static_cast<Isa>(g_limit.load(std::memory_order_relaxed))); }

void limit_isa(Isa isa) { g_limit.store(static_cast<int>(isa), std::memory_order_relaxed); }

void forward(const float* x, float* y, int64_t numel, float s, float n, float p, Isa isa) {
  at::parallel_for(0, numel, kChunk, [=](int64_t begin, int64_t end) {
#if MPQ_LSQ_AVX2
    if (isa == Isa::kAvx2) return forward_avx2(x, y, begin, end, s, n, p);
#endif
    forward_baseline(x, y, begin, end, s, n, p);
  });
}

double backward(const float* x, const float* go, float* gx, int64_t numel, float s, float n, float p, bool relu,
                Isa isa) {
  const int64_t chunks = (numel + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(std::max<int64_t>(chunks, 1)), 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t begin = c * kChunk, end = std::min(numel, begin + kChunk);
      double sum;
#if MPQ_LSQ_AVX2
      if (isa == Isa::kAvx2) {
        sum = backward_chunk_avx2(x, go, gx, begin, end, s, n, p, relu);
      } else
#endif
      {
        sum = backward_chunk_baseline(x, go, gx, begin, end, s, n, p, relu);
      }
      partial[static_cast<size_t>(c)] = sum;
    }
  });
  double sum = 0;
  for (double v : partial) sum += v;
  return sum;
}

}  // namespace mpq::quant::cpu

#include "models/bn_relu.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/autograd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

namespace mpq::models {

namespace {

std::atomic<bool> g_fusion{true};

// The chunk kernels below are plain loops over a tile's floats, which GCC
// vectorises; built once per instruction set and picked at load time, as
// LibTorch picks its own kernels, so one binary uses AVX-512 where the CPU
// has it and runs everywhere else. -DMPQ_CPU_CLONES= builds the baseline
// alone (to test it on any CPU).
#ifndef MPQ_CPU_CLONES
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MPQ_CPU_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define MPQ_CPU_CLONES
#endif
#endif

// The [rows, C] (NHWC) matrix is walked in tiles of k whole rows, k * C
// >= 256 floats where C allows: a tile's elements are contiguous, so the
// inner loops run over hundreds of floats instead of one row's C, with the
// per-channel values repeated k times beside them. Chunks of tiles, about
// 16 KiB, are the unit of parallel work; their sizes depend only on the
// shape, so the partial sums, and their order, do not depend on the thread
// count.
struct Geometry {
  int64_t c, tile, chunk, numel, chunks;  // tile and chunk in elements
};

Geometry geometry(int64_t c, int64_t numel) {
  Geometry g{};
  g.c = c;
  g.tile = c * std::max<int64_t>(1, 256 / c);
  g.chunk = g.tile * std::max<int64_t>(1, 4096 / g.tile);
  g.numel = numel;
  g.chunks = (numel + g.chunk - 1) / g.chunk;
  return g;
}

// Per-channel values repeated over a tile: out[t] = v[t % C].
std::vector<float> tiled(const Geometry& g, const float* v) {
  std::vector<float> out(static_cast<size_t>(g.tile));
  for (int64_t t = 0; t < g.tile; ++t) out[static_cast<size_t>(t)] = v[t % g.c];
  return out;
}

// Sums over a chunk run in float over blocks of kBlock tiles, each block's
// sums folded into per-channel doubles: vector-width float arithmetic, with
// an error that does not grow with the chunk.
constexpr int64_t kBlock = 16;

// Adds a tile of float sums into per-channel doubles.
inline void fold(const float* __restrict t, int64_t tile, int64_t c, double* __restrict acc) {
  for (int64_t q = 0; q < tile; q += c)
    for (int64_t j = 0; j < c; ++j) acc[j] += t[q + j];
}

// A chunk of n elements (whole rows): the per-channel mean and sum of
// squared deviations from it, in two passes over the cached chunk (no
// E[x^2] - E[x]^2 cancellation). scratch: 2 tiles of floats.
MPQ_CPU_CLONES
void stats_chunk(const float* __restrict x, int64_t n, int64_t tile, int64_t c, double* __restrict mean,
                 double* __restrict m2, float* __restrict scratch) {
  float* __restrict acc = scratch;
  float* __restrict mt = scratch + tile;
  for (int64_t j = 0; j < c; ++j) mean[j] = 0, m2[j] = 0;
  for (int64_t b = 0; b < n; b += kBlock * tile) {
    for (int64_t t = 0; t < tile; ++t) acc[t] = 0.f;
    for (int64_t o = b; o < std::min(n, b + kBlock * tile); o += tile) {
      const int64_t m = std::min(tile, n - o);
      for (int64_t t = 0; t < m; ++t) acc[t] += x[o + t];
    }
    fold(acc, tile, c, mean);
  }
  const double rows = static_cast<double>(n / c);
  for (int64_t j = 0; j < c; ++j) mean[j] /= rows;
  for (int64_t t = 0; t < tile; ++t) mt[t] = static_cast<float>(mean[t % c]);
  for (int64_t b = 0; b < n; b += kBlock * tile) {
    for (int64_t t = 0; t < tile; ++t) acc[t] = 0.f;
    for (int64_t o = b; o < std::min(n, b + kBlock * tile); o += tile) {
      const int64_t m = std::min(tile, n - o);
      for (int64_t t = 0; t < m; ++t) {
        const float d = x[o + t] - mt[t];
        acc[t] += d * d;
      }
    }
    fold(acc, tile, c, m2);
  }
}

// y = relu((x - mean) * scale + bias [+ residual]), the per-channel values
// tiled; NaN stays NaN, as in torch's relu.
MPQ_CPU_CLONES
void normalize_chunk(const float* __restrict x, const float* __restrict res, float* __restrict y, int64_t n,
                     int64_t tile, const float* __restrict mean, const float* __restrict scale,
                     const float* __restrict bias) {
  for (int64_t o = 0; o < n; o += tile) {
    const int64_t m = std::min(tile, n - o);
    if (res != nullptr) {
      for (int64_t t = 0; t < m; ++t) {
        const float v = (x[o + t] - mean[t]) * scale[t] + bias[t] + res[o + t];
        y[o + t] = v < 0.f ? 0.f : v;
      }
    } else {
      for (int64_t t = 0; t < m; ++t) {
        const float v = (x[o + t] - mean[t]) * scale[t] + bias[t];
        y[o + t] = v < 0.f ? 0.f : v;
      }
    }
  }
}

// relu's gradient as torch's threshold_backward gives it: zero where the
// output is <= 0, the incoming gradient elsewhere (NaN outputs pass it).
// Callers load both first, so the select vectorises.
inline float relu_grad(float out, float dy) { return out <= 0.f ? 0.f : dy; }

// A chunk's per-channel sums of g = relu_grad(out, dy) and of
// g * (x - mean), the mean tiled; g goes to `g_out` where that is given (the
// residual's gradient). scratch: 2 tiles of floats.
MPQ_CPU_CLONES
void grad_sums_chunk(const float* __restrict x, const float* __restrict out, const float* __restrict dy,
                     float* __restrict g_out, int64_t n, int64_t tile, int64_t c, const float* __restrict mean,
                     double* __restrict sg, double* __restrict sgx, float* __restrict scratch) {
  float* __restrict t0 = scratch;
  float* __restrict t1 = scratch + tile;
  for (int64_t j = 0; j < c; ++j) sg[j] = 0, sgx[j] = 0;
  for (int64_t b = 0; b < n; b += kBlock * tile) {
    for (int64_t t = 0; t < tile; ++t) t0[t] = 0.f, t1[t] = 0.f;
    for (int64_t o = b; o < std::min(n, b + kBlock * tile); o += tile) {
      const int64_t m = std::min(tile, n - o);
      if (g_out != nullptr) {
        for (int64_t t = 0; t < m; ++t) {
          const float ov = out[o + t], d = dy[o + t], xv = x[o + t];
          const float g = relu_grad(ov, d);
          g_out[o + t] = g;
          t0[t] += g;
          t1[t] += g * (xv - mean[t]);
        }
      } else {
        for (int64_t t = 0; t < m; ++t) {
          const float ov = out[o + t], d = dy[o + t], xv = x[o + t];
          const float g = relu_grad(ov, d);
          t0[t] += g;
          t1[t] += g * (xv - mean[t]);
        }
      }
    }
    fold(t0, tile, c, sg);
    fold(t1, tile, c, sgx);
  }
}

// dx = a * g + b * (x - mean) + c0, the per-channel values tiled; g read
// from `g` where given, else recomputed from out and dy.
MPQ_CPU_CLONES
void grad_input_chunk(const float* __restrict x, const float* __restrict out, const float* __restrict dy,
                      const float* __restrict g, float* __restrict dx, int64_t n, int64_t tile,
                      const float* __restrict mean, const float* __restrict a, const float* __restrict b,
                      const float* __restrict c0) {
  for (int64_t o = 0; o < n; o += tile) {
    const int64_t m = std::min(tile, n - o);
    if (g != nullptr) {
      for (int64_t t = 0; t < m; ++t) dx[o + t] = a[t] * g[o + t] + b[t] * (x[o + t] - mean[t]) + c0[t];
    } else {
      for (int64_t t = 0; t < m; ++t) {
        const float ov = out[o + t], d = dy[o + t];
        dx[o + t] = a[t] * relu_grad(ov, d) + b[t] * (x[o + t] - mean[t]) + c0[t];
      }
    }
  }
}

// Calls f(chunk, first_element, elements, scratch) for every chunk, in
// parallel; scratch: 2 tiles of floats of the calling thread's.
template <class F>
void for_chunks(const Geometry& g, const F& f) {
  at::parallel_for(0, g.chunks, 1, [&](int64_t kb, int64_t ke) {
    std::vector<float> scratch(static_cast<size_t>(2 * g.tile));
    for (int64_t k = kb; k < ke; ++k) f(k, k * g.chunk, std::min(g.chunk, g.numel - k * g.chunk), scratch.data());
  });
}

torch::Tensor channel_vector(int64_t c) { return torch::empty({c}, torch::dtype(torch::kFloat)); }

// The forward and backward of both variants (with and without the residual).
torch::Tensor fused_forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& res,
                            const torch::Tensor& weight, const torch::Tensor& bias, const torch::Tensor& mean,
                            const torch::Tensor& invstd) {
  const Geometry geo = geometry(x.size(1), x.numel());
  const torch::Tensor w = weight.contiguous(), b = bias.contiguous();
  const torch::Tensor scale = invstd * w;
  const std::vector<float> mt = tiled(geo, mean.data_ptr<float>()), st = tiled(geo, scale.data_ptr<float>()),
                           bt = tiled(geo, b.data_ptr<float>());
  torch::Tensor y = torch::empty_like(x);
  const float *px = x.data_ptr<float>(), *pr = res.defined() ? res.data_ptr<float>() : nullptr;
  float* py = y.data_ptr<float>();
  for_chunks(geo, [&](int64_t, int64_t o, int64_t n, float*) {
    normalize_chunk(px + o, pr ? pr + o : nullptr, py + o, n, geo.tile, mt.data(), st.data(), bt.data());
  });
  ctx->save_for_backward({x, y, w, mean, invstd});
  return y;
}

struct FusedGrads {
  torch::Tensor dx, dres, dweight, dbias;
};

FusedGrads fused_backward(torch::autograd::AutogradContext* ctx, const torch::Tensor& grad, bool residual) {
  const auto saved = ctx->get_saved_variables();
  const torch::Tensor &x = saved[0], &out = saved[1], &w = saved[2], &mean = saved[3], &invstd = saved[4];
  const torch::Tensor dy = grad.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t c = x.size(1), rows = x.numel() / c;
  const Geometry geo = geometry(c, x.numel());
  FusedGrads r;
  if (residual) r.dres = torch::empty_like(x);
  const float *px = x.data_ptr<float>(), *po = out.data_ptr<float>(), *pd = dy.data_ptr<float>();
  const std::vector<float> mt = tiled(geo, mean.data_ptr<float>());
  float* pg = residual ? r.dres.data_ptr<float>() : nullptr;
  std::vector<double> psg(static_cast<size_t>(geo.chunks * c)), psgx(static_cast<size_t>(geo.chunks * c));
  for_chunks(geo, [&](int64_t k, int64_t o, int64_t n, float* scratch) {
    grad_sums_chunk(px + o, po + o, pd + o, pg ? pg + o : nullptr, n, geo.tile, c, mt.data(), psg.data() + k * c,
                    psgx.data() + k * c, scratch);
  });
  // The chunks' sums added in chunk order.
  std::vector<double> sg(static_cast<size_t>(c), 0.0), sgx(static_cast<size_t>(c), 0.0);
  for (int64_t k = 0; k < geo.chunks; ++k)
    for (int64_t j = 0; j < c; ++j) {
      sg[static_cast<size_t>(j)] += psg[static_cast<size_t>(k * c + j)];
      sgx[static_cast<size_t>(j)] += psgx[static_cast<size_t>(k * c + j)];
    }
  r.dweight = channel_vector(c);
  r.dbias = channel_vector(c);
  float *pdw = r.dweight.data_ptr<float>(), *pdb = r.dbias.data_ptr<float>();
  std::vector<float> a(static_cast<size_t>(c)), b(static_cast<size_t>(c)), c0(static_cast<size_t>(c));
  const float *pw = w.data_ptr<float>(), *pi = invstd.data_ptr<float>();
  for (int64_t j = 0; j < c; ++j) {
    const auto u = static_cast<size_t>(j);
    const double inv = pi[j], aj = inv * pw[j];
    const double mean_g = sg[u] / static_cast<double>(rows), mean_gxhat = sgx[u] * inv / static_cast<double>(rows);
    pdb[j] = static_cast<float>(sg[u]);
    pdw[j] = static_cast<float>(sgx[u] * inv);
    a[u] = static_cast<float>(aj);
    b[u] = static_cast<float>(-aj * inv * mean_gxhat);
    c0[u] = static_cast<float>(-aj * mean_g);
  }
  const std::vector<float> ta = tiled(geo, a.data()), tb = tiled(geo, b.data()), tc = tiled(geo, c0.data());
  r.dx = torch::empty_like(x);
  float* pdx = r.dx.data_ptr<float>();
  for_chunks(geo, [&](int64_t, int64_t o, int64_t n, float*) {
    grad_input_chunk(px + o, po + o, pd + o, pg ? pg + o : nullptr, pdx + o, n, geo.tile, mt.data(), ta.data(),
                     tb.data(), tc.data());
  });
  return r;
}

// The two variants as autograd functions (apply takes no undefined tensors,
// so the residual is an input only where there is one).
struct BnRelu : torch::autograd::Function<BnRelu> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias, const torch::Tensor& mean,
                               const torch::Tensor& invstd) {
    return fused_forward(ctx, x, torch::Tensor(), weight, bias, mean, invstd);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    FusedGrads r = fused_backward(ctx, g[0], false);
    return {r.dx, r.dweight, r.dbias, torch::Tensor(), torch::Tensor()};
  }
};

struct BnAddRelu : torch::autograd::Function<BnAddRelu> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& residual, const torch::Tensor& weight, const torch::Tensor& bias,
                               const torch::Tensor& mean, const torch::Tensor& invstd) {
    return fused_forward(ctx, x, residual, weight, bias, mean, invstd);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    FusedGrads r = fused_backward(ctx, g[0], true);
    return {r.dx, r.dres, r.dweight, r.dbias, torch::Tensor(), torch::Tensor()};
  }
};

bool cpu_float(const torch::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.layout() == torch::kStrided;
}

}  // namespace

void set_bn_relu_fusion(bool on) { g_fusion = on; }
bool bn_relu_fusion() { return g_fusion; }

bool bn_relu_fusable(const torch::Tensor& x, const torch::Tensor& residual, const torch::Tensor& weight,
                     const torch::Tensor& bias) {
  if (!g_fusion || !cpu_float(x) || x.dim() != 4 || !x.is_contiguous(at::MemoryFormat::ChannelsLast)) return false;
  const int64_t c = x.size(1);
  if (c == 0 || x.numel() / c < 2) return false;  // torch's own error for one value per channel
  if (!cpu_float(weight) || weight.numel() != c || !cpu_float(bias) || bias.numel() != c) return false;
  return !residual.defined() || (cpu_float(residual) && residual.sizes() == x.sizes() &&
                                 residual.is_contiguous(at::MemoryFormat::ChannelsLast));
}

torch::Tensor bn_relu_train(const torch::Tensor& x, const torch::Tensor& residual, const torch::Tensor& weight,
                            const torch::Tensor& bias, const torch::Tensor& running_mean,
                            const torch::Tensor& running_var, double factor, double eps) {
  RECORD_FUNCTION(residual.defined() ? "mpq::bn_add_relu" : "mpq::bn_relu", std::vector<c10::IValue>());
  const int64_t c = x.size(1);
  const Geometry geo = geometry(c, x.numel());
  torch::Tensor mean = channel_vector(c), invstd = channel_vector(c);
  {
    const torch::Tensor xd = x.detach();
    const float* px = xd.data_ptr<float>();
    std::vector<double> pmean(static_cast<size_t>(geo.chunks * c)), pm2(static_cast<size_t>(geo.chunks * c));
    for_chunks(geo, [&](int64_t k, int64_t o, int64_t n, float* scratch) {
      stats_chunk(px + o, n, geo.tile, c, pmean.data() + k * c, pm2.data() + k * c, scratch);
    });
    // Chan et al.'s merge of the chunks' (count, mean, M2), in chunk order, in double.
    std::vector<double> m(static_cast<size_t>(c), 0.0), m2(static_cast<size_t>(c), 0.0);
    double n = 0;
    for (int64_t k = 0; k < geo.chunks; ++k) {
      const auto nk = static_cast<double>(std::min(geo.chunk, geo.numel - k * geo.chunk) / c), tot = n + nk;
      for (int64_t j = 0; j < c; ++j) {
        const auto u = static_cast<size_t>(j), v = static_cast<size_t>(k * c + j);
        const double delta = pmean[v] - m[u];
        m[u] += delta * nk / tot;
        m2[u] += pm2[v] + delta * delta * n * nk / tot;
      }
      n = tot;
    }
    torch::Tensor unbiased = channel_vector(c);
    float *pm = mean.data_ptr<float>(), *pi = invstd.data_ptr<float>(), *pu = unbiased.data_ptr<float>();
    for (int64_t j = 0; j < c; ++j) {
      const auto u = static_cast<size_t>(j);
      pm[j] = static_cast<float>(m[u]);
      pi[j] = static_cast<float>(1.0 / std::sqrt(m2[u] / n + eps));
      pu[j] = static_cast<float>(m2[u] / (n - 1));
    }
    torch::NoGradGuard no_grad;
    if (running_mean.defined()) running_mean.mul_(1 - factor).add_(mean.to(running_mean.options()), factor);
    if (running_var.defined()) running_var.mul_(1 - factor).add_(unbiased.to(running_var.options()), factor);
  }
  if (residual.defined()) return BnAddRelu::apply(x, residual, weight, bias, mean, invstd);
  return BnRelu::apply(x, weight, bias, mean, invstd);
}

}  // namespace mpq::models

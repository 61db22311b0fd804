#include "models/conv.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <atomic>
#include <cstring>

#include "mpq/common/error.h"

namespace mpq::models {

namespace {

std::atomic<bool> g_own_weight_grad{true};

std::vector<int64_t> vec(at::IntArrayRef a) { return std::vector<int64_t>(a.begin(), a.end()); }

// Rows of patches per GEMM: the patch buffer stays near 1 MiB (in L2/L3 while
// the GEMM reads it), and at least 64 rows, so a call has work enough.
int64_t chunk_rows(int64_t patch) { return std::max<int64_t>(64, (int64_t{1} << 18) / std::max<int64_t>(patch, 1)); }

class ConvFunction : public torch::autograd::Function<ConvFunction> {
 public:
  // Without a bias: conv2d adds it after, as LibTorch's autograd cannot take
  // an undefined tensor among a Function's inputs.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["stride"] = vec(stride);
    ctx->saved_data["padding"] = vec(padding);
    ctx->saved_data["dilation"] = vec(dilation);
    ctx->saved_data["groups"] = groups;
    return at::convolution(x, w, {}, stride, padding, dilation, false, {0, 0}, groups);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &w = saved[1];
    const std::vector<int64_t> stride = ctx->saved_data["stride"].toIntVector();
    const std::vector<int64_t> padding = ctx->saved_data["padding"].toIntVector();
    const std::vector<int64_t> dilation = ctx->saved_data["dilation"].toIntVector();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const torch::Tensor& go = grad_out[0];
    const torch::autograd::variable_list none{torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    torch::autograd::variable_list out{torch::Tensor(), torch::Tensor()};
    if (!(need_w && own_weight_grad(x, w, groups))) {
      auto [gx, gw, gb] = at::convolution_backward(go, x, w, std::nullopt, stride, padding, dilation, false, {0, 0},
                                                   groups, {need_x, need_w, false});
      out = {gx, gw};
    } else {
      if (need_x)
        out[0] = std::get<0>(at::convolution_backward(go, x, w, std::nullopt, stride, padding, dilation, false,
                                                      {0, 0}, groups, {true, false, false}));
      out[1] = conv_weight_grad(x, go, w.sizes(), stride, padding, dilation);
      if (out[1].strides() != w.strides()) out[1] = out[1].contiguous(w.suggest_memory_format());
    }
    out.insert(out.end(), none.begin(), none.end());
    return out;
  }
};

}  // namespace

void set_own_weight_grad(bool on) { g_own_weight_grad = on; }

bool own_weight_grad(const torch::Tensor& x, const torch::Tensor& weight, int64_t groups) {
  if (!g_own_weight_grad || groups != 1 || !x.device().is_cpu() || x.scalar_type() != torch::kFloat ||
      weight.scalar_type() != torch::kFloat || x.dim() != 4 || weight.dim() != 4)
    return false;
  if (!x.is_contiguous(at::MemoryFormat::ChannelsLast)) return false;
  // Where it pays on an AVX2 CPU, measured per layer with bench/conv_bench:
  // at least 64 channels in and out and a kernel wider than 1x1 (all of
  // ResNet-18's 3x3 convs). Narrower patches (ResNet-20's 16- and 32-channel
  // layers) and 1x1 convs (a copy per pixel for a thin product) run slower
  // than LibTorch's; grouped and depthwise convs are not products of this shape.
  return x.size(1) >= 64 && weight.size(0) >= 64 && weight.size(2) * weight.size(3) > 1;
}

torch::Tensor conv_weight_grad(const torch::Tensor& x, const torch::Tensor& grad_out, at::IntArrayRef weight_sizes,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  MPQ_ASSERT(x.dim() == 4 && grad_out.dim() == 4 && weight_sizes.size() == 4);
  MPQ_ASSERT(x.is_contiguous(at::MemoryFormat::ChannelsLast) && x.scalar_type() == torch::kFloat);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = weight_sizes[0], kh = weight_sizes[2], kw = weight_sizes[3];
  MPQ_ASSERT(weight_sizes[1] == C && grad_out.size(0) == N && grad_out.size(1) == K);
  const int64_t Ho = grad_out.size(2), Wo = grad_out.size(3);
  const int64_t sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1], dh = dilation[0], dw = dilation[1];
  const int64_t patch = kh * kw * C, M = N * Ho * Wo;
  // The output gradient as an [M, K] matrix, rows (n, ho, wo): channels-last.
  const torch::Tensor g = grad_out.contiguous(at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({M, K});
  torch::Tensor acc = torch::empty({K, patch}, x.options());
  if (M == 0) return acc.zero_().view({K, kh, kw, C}).permute({0, 3, 1, 2});
  const int64_t rows = std::min(M, chunk_rows(patch));
  torch::Tensor cols = torch::empty({rows, patch}, x.options());
  const float* px = x.data_ptr<float>();
  float* pc = cols.data_ptr<float>();
  const bool dense_row = dw == 1;  // a patch row's kw pixels are adjacent in x
  for (int64_t m0 = 0; m0 < M; m0 += rows) {
    const int64_t r = std::min(rows, M - m0);
    at::parallel_for(0, r, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t m = m0 + i, n = m / (Ho * Wo), ho = (m / Wo) % Ho, wo = m % Wo;
        float* dst = pc + i * patch;
        for (int64_t a = 0; a < kh; ++a, dst += kw * C) {
          const int64_t hi = ho * sh - ph + a * dh;
          if (hi < 0 || hi >= H) {
            std::memset(dst, 0, sizeof(float) * static_cast<size_t>(kw * C));
            continue;
          }
          const float* src = px + (n * H + hi) * W * C;
          const int64_t w0 = wo * sw - pw;
          if (dense_row && w0 >= 0 && w0 + kw <= W) {
            std::memcpy(dst, src + w0 * C, sizeof(float) * static_cast<size_t>(kw * C));
            continue;
          }
          for (int64_t b = 0; b < kw; ++b) {
            const int64_t wi = w0 + b * dw;
            if (wi < 0 || wi >= W)
              std::memset(dst + b * C, 0, sizeof(float) * static_cast<size_t>(C));
            else
              std::memcpy(dst + b * C, src + wi * C, sizeof(float) * static_cast<size_t>(C));
          }
        }
      }
    });
    const torch::Tensor gt = g.narrow(0, m0, r).t();
    const torch::Tensor cv = cols.narrow(0, 0, r);
    if (m0 == 0)
      at::mm_out(acc, gt, cv);
    else
      acc.addmm_(gt, cv);
  }
  // [K, kh, kw, C] in memory: the weight's channels-last layout.
  return acc.view({K, kh, kw, C}).permute({0, 3, 1, 2});
}

torch::Tensor conv2d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  if (!(torch::GradMode::is_enabled() && weight.requires_grad() && own_weight_grad(x, weight, groups)))
    return torch::conv2d(x, weight, bias, stride, padding, dilation, groups);
  const torch::Tensor y = ConvFunction::apply(x, weight, stride, padding, dilation, groups);
  return bias.defined() ? y + bias.view({1, -1, 1, 1}) : y;
}

torch::Tensor Conv2dImpl::forward(const torch::Tensor& x) {
  const auto* pad = std::get_if<torch::ExpandingArray<2>>(&options.padding());
  if (pad == nullptr || !std::holds_alternative<torch::enumtype::kZeros>(options.padding_mode()))
    return torch::nn::Conv2dImpl::forward(x);
  return conv2d(x, weight, bias, *options.stride(), **pad, *options.dilation(), options.groups());
}

}  // namespace mpq::models

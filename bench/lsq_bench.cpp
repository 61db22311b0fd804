// Fused LSQ op against the composed-op formulation (what the original runs),
// and the fused op's CPU kernels for the baseline instruction set (SSE2)
// against those for AVX2 where the CPU has it: forward + backward on a
// ResNet-50-sized weight and activation, all variants interleaved in each
// round, medians of N rounds. Then the host's cost of one call, forward and
// backward, on a 16-element tensor, where the arithmetic is nothing: the
// fused op (as an activation quantizer that absorbs a ReLU), torch's ReLU
// (the op it replaces), and the composed formulation. On a GPU a small
// network's step waits for this cost, not for the kernels.
// Usage: lsq_bench [repeats] [threads]. MPQ_DEVICE=cuda (or cuda:N): all of
// it on that GPU (each timing ends when the GPU is done; no baseline column).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "mpq/common/malloc_tuning.h"
#include "torch_bench.h"
#include "quant/lsq.h"
#include "quant/lsq_cpu.h"

using namespace mpq::quant;

using mpq::bench::bench_device;
using mpq::bench::finish;
using mpq::bench::median;

namespace {

enum class Variant { kComposed, kFusedBaseline, kFused };

double step_ms(const torch::Tensor& x0, const torch::Tensor& go, Variant v, bool all_positive) {
  const Thresholds t = thresholds(4, all_positive, false);
  const double g = 1.0 / std::sqrt(t.pos * x0.numel());
  cpu::limit_isa(v == Variant::kFusedBaseline ? cpu::Isa::kBaseline : cpu::Isa::kAvx2);
  torch::Tensor x = x0.detach().requires_grad_(true);
  torch::Tensor s = torch::full({1}, 0.05, x0.options()).requires_grad_(true);
  finish(x0.device());
  const auto t0 = std::chrono::steady_clock::now();
  torch::Tensor y =
      v == Variant::kComposed ? lsq_quantize_reference(x, s, t, g, false) : lsq_quantize(x, s, t, g, false);
  y.backward(go);
  finish(x0.device());
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  cpu::limit_isa(cpu::Isa::kAvx2);
  return ms;
}

// Microseconds per call of `op` on a tiny input, forward and backward,
// timed over `calls` calls.
template <typename Op>
double call_us(const torch::Device& d, int calls, Op&& op) {
  const torch::Tensor x0 = torch::rand({1, 16, 1, 1}, torch::TensorOptions(d));
  const torch::Tensor go = torch::ones_like(x0);
  torch::Tensor x = x0.detach().requires_grad_(true);
  torch::Tensor s = torch::full({5}, 0.05, x0.options()).requires_grad_(true);
  finish(d);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) op(x, s).backward(go);
  finish(d);
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / calls;
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 11;
  // As mpq's torch commands do; MPQ_MALLOC=system measures glibc's defaults.
  std::fprintf(stderr, "%s\n", mpq::tune_malloc_for_training().c_str());
  if (argc > 2) torch::set_num_threads(std::atoi(argv[2]));
  torch::manual_seed(0);
  const torch::Device dev = bench_device("lsq_bench");
  const bool avx2 = dev.is_cpu() && cpu::isa() == cpu::Isa::kAvx2;
  struct Case {
    const char* name;
    torch::Tensor x;
    bool act;
  } cases[] = {
      {"weight 512x512x3x3 (layer4 conv2)", torch::randn({512, 512, 3, 3}).to(dev) * 0.02, false},
      {"activation 32x256x56x56 (layer1 input)", torch::relu(torch::randn({32, 256, 56, 56})).to(dev), true},
  };
  std::printf("device %s, threads %d, fused kernels %s\n"
              "| tensor | composed (ms) | fused (ms) | speed-up |%s\n|---|---|---|---|%s\n",
              dev.str().c_str(), torch::get_num_threads(),
              dev.is_cuda() ? "CUDA" : avx2 ? "AVX2" : "baseline (no AVX2 here)",
              avx2 ? " fused, baseline kernels (ms) | AVX2 / baseline, median of paired ratios |" : "",
              avx2 ? "---|---|" : "");
  for (const auto& c : cases) {
    const torch::Tensor go = torch::randn_like(c.x);
    std::vector<double> composed, fused, baseline, ratio;
    for (int r = 0; r < repeats + 1; ++r) {  // round 0 warms up
      const double a = step_ms(c.x, go, Variant::kComposed, c.act);
      const double b = step_ms(c.x, go, Variant::kFused, c.act);
      const double base = avx2 ? step_ms(c.x, go, Variant::kFusedBaseline, c.act) : b;
      if (r == 0) continue;
      composed.push_back(a);
      fused.push_back(b);
      baseline.push_back(base);
      ratio.push_back(base / b);
    }
    std::printf("| %s | %.2f | %.2f | %.2fx |", c.name, median(composed), median(fused),
                median(composed) / median(fused));
    if (avx2) std::printf(" %.2f | %.2fx |", median(baseline), median(ratio));
    std::printf("\n");
  }
  const Thresholds t = thresholds(4, true, false);
  const double g = 1.0 / std::sqrt(t.pos * 16);
  std::vector<double> relu, fused, composed;
  for (int r = 0; r < repeats + 1; ++r) {  // round 0 warms up
    const double a = call_us(dev, 2000, [](const torch::Tensor& x, const torch::Tensor&) { return torch::relu(x); });
    const double b = call_us(dev, 2000, [&](const torch::Tensor& x, const torch::Tensor& s) {
      return lsq_quantize(x, s, t, g, true, /*relu=*/true, 2);
    });
    const double c = call_us(dev, 500, [&](const torch::Tensor& x, const torch::Tensor& s) {
      return lsq_quantize_reference(torch::relu(x), s.narrow(0, 2, 1), t, g, true);
    });
    if (r == 0) continue;
    relu.push_back(a);
    fused.push_back(b);
    composed.push_back(c);
  }
  std::printf("\nhost cost of one call, forward and backward, 16 elements (us, medians of %d rounds):\n"
              "| torch ReLU | fused LSQ with ReLU | composed LSQ with ReLU |\n|---|---|---|\n"
              "| %.1f | %.1f | %.1f |\n",
              repeats, median(relu), median(fused), median(composed));
  return 0;
}

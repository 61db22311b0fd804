// Fused LSQ op against the composed-op formulation (what the original runs),
// and the fused op's CPU kernels for the baseline instruction set (SSE2)
// against those for AVX2 where the CPU has it: forward + backward on a
// ResNet-50-sized weight and activation, all variants interleaved in each
// round, medians of N rounds. Usage: lsq_bench [repeats] [threads]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "mpq/common/malloc_tuning.h"
#include "quant/lsq.h"
#include "quant/lsq_cpu.h"

using namespace mpq::quant;

namespace {

enum class Variant { kComposed, kFusedBaseline, kFused };

double step_ms(const torch::Tensor& x0, const torch::Tensor& go, Variant v, bool all_positive) {
  const Thresholds t = thresholds(4, all_positive, false);
  const double g = 1.0 / std::sqrt(t.pos * x0.numel());
  cpu::limit_isa(v == Variant::kFusedBaseline ? cpu::Isa::kBaseline : cpu::Isa::kAvx2);
  torch::Tensor x = x0.detach().requires_grad_(true);
  torch::Tensor s = torch::full({1}, 0.05).requires_grad_(true);
  const auto t0 = std::chrono::steady_clock::now();
  torch::Tensor y =
      v == Variant::kComposed ? lsq_quantize_reference(x, s, t, g, false) : lsq_quantize(x, s, t, g, false);
  y.backward(go);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  cpu::limit_isa(cpu::Isa::kAvx2);
  return ms;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 11;
  // As mpq's torch commands do; MPQ_MALLOC=system measures glibc's defaults.
  std::fprintf(stderr, "%s\n", mpq::tune_malloc_for_training().c_str());
  if (argc > 2) torch::set_num_threads(std::atoi(argv[2]));
  torch::manual_seed(0);
  const bool avx2 = cpu::isa() == cpu::Isa::kAvx2;
  struct Case {
    const char* name;
    torch::Tensor x;
    bool act;
  } cases[] = {
      {"weight 512x512x3x3 (layer4 conv2)", torch::randn({512, 512, 3, 3}) * 0.02, false},
      {"activation 32x256x56x56 (layer1 input)", torch::relu(torch::randn({32, 256, 56, 56})), true},
  };
  std::printf("threads %d, fused kernels %s\n"
              "| tensor | composed (ms) | fused (ms) | speed-up |%s\n|---|---|---|---|%s\n",
              torch::get_num_threads(), avx2 ? "AVX2" : "baseline (no AVX2 here)",
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
  return 0;
}

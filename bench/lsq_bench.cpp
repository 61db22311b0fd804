// Fused LSQ op against the composed-op formulation (what the original runs):
// forward + backward on a ResNet-50-sized weight and activation, median of N.
// Usage: lsq_bench [repeats] [threads]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <torch/torch.h>

#include "mpq/common/malloc_tuning.h"
#include "quant/lsq.h"

using namespace mpq::quant;

namespace {

double median_ms(const torch::Tensor& x0, bool fused, int repeats, bool all_positive) {
  const Thresholds t = thresholds(4, all_positive, false);
  const double g = 1.0 / std::sqrt(t.pos * x0.numel());
  torch::Tensor go = torch::randn_like(x0);
  std::vector<double> ms;
  for (int r = 0; r < repeats + 1; ++r) {
    torch::Tensor x = x0.detach().requires_grad_(true);
    torch::Tensor s = torch::full({1}, 0.05).requires_grad_(true);
    const auto t0 = std::chrono::steady_clock::now();
    torch::Tensor y = fused ? lsq_quantize(x, s, t, g, false) : lsq_quantize_reference(x, s, t, g, false);
    y.backward(go);
    const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) ms.push_back(dt);  // first run warms up
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 11;
  // As mpq's torch commands do; MPQ_MALLOC=system measures glibc's defaults.
  std::fprintf(stderr, "%s\n", mpq::tune_malloc_for_training().c_str());
  if (argc > 2) torch::set_num_threads(std::atoi(argv[2]));
  torch::manual_seed(0);
  struct Case {
    const char* name;
    torch::Tensor x;
    bool act;
  } cases[] = {
      {"weight 512x512x3x3 (layer4 conv2)", torch::randn({512, 512, 3, 3}) * 0.02, false},
      {"activation 32x256x56x56 (layer1 input)", torch::relu(torch::randn({32, 256, 56, 56})), true},
  };
  std::printf("threads %d\n| tensor | composed (ms) | fused (ms) | speed-up |\n|---|---|---|---|\n", torch::get_num_threads());
  for (const auto& c : cases) {
    const double a = median_ms(c.x, false, repeats, c.act), b = median_ms(c.x, true, repeats, c.act);
    std::printf("| %s | %.2f | %.2f | %.2fx |\n", c.name, a, b, a / b);
  }
  return 0;
}

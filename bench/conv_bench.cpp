// The weight gradient of a channels-last float convolution on the CPU:
// LibTorch's (at::convolution_backward, oneDNN) against mpq's patch GEMM
// (models::conv_weight_grad), interleaved, per layer shape of ResNet-18
// (224², batch 16) and ResNet-20 (28², batch 128), with the forward for
// scale and the largest relative difference between the two gradients.
// Usage: conv_bench [repeats] [threads]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <torch/torch.h>

#include "models/conv.h"
#include "mpq/common/malloc_tuning.h"

namespace {

struct Shape {
  const char* model;
  int64_t n, c, h, k, kernel, stride, pad;
};

template <typename F>
double time_ms(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 7;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  (void)mpq::tune_malloc_for_training();
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  const std::vector<Shape> shapes = {
      {"resnet18", 16, 3, 224, 64, 7, 2, 3},   {"resnet18", 16, 64, 56, 64, 3, 1, 1},
      {"resnet18", 16, 64, 56, 128, 3, 2, 1},  {"resnet18", 16, 64, 56, 128, 1, 2, 0},
      {"resnet18", 16, 128, 28, 128, 3, 1, 1}, {"resnet18", 16, 256, 14, 256, 3, 1, 1},
      {"resnet18", 16, 512, 7, 512, 3, 1, 1},  {"resnet20", 128, 16, 28, 16, 3, 1, 1},
      {"resnet20", 128, 16, 28, 32, 3, 2, 1},  {"resnet20", 128, 32, 14, 32, 3, 1, 1},
      {"resnet20", 128, 32, 14, 64, 3, 2, 1},  {"resnet20", 128, 64, 7, 64, 3, 1, 1},
  };
  std::printf("conv_bench: weight gradient, median of %d, %d threads, torch %s\n", repeats, threads, TORCH_VERSION);
  std::printf("%-9s %-22s %10s %12s %10s %7s %9s %s\n", "model", "layer", "fwd ms", "libtorch ms", "mpq ms", "ratio",
              "rel.diff", "used");
  const auto cl = torch::MemoryFormat::ChannelsLast;
  for (const Shape& s : shapes) {
    const torch::Tensor x = torch::randn({s.n, s.c, s.h, s.h}).contiguous(cl);
    const torch::Tensor w = torch::randn({s.k, s.c, s.kernel, s.kernel}).contiguous(cl);
    const std::vector<int64_t> st{s.stride, s.stride}, pd{s.pad, s.pad}, dl{1, 1};
    const torch::Tensor y = torch::conv2d(x, w, {}, st, pd, dl, 1);
    const torch::Tensor go = torch::randn_like(y).contiguous(cl);
    auto lib = [&] {
      return std::get<1>(at::convolution_backward(go, x, w, std::nullopt, st, pd, dl, false, {0, 0}, 1,
                                                  {false, true, false}));
    };
    auto own = [&] { return mpq::models::conv_weight_grad(x, go, w.sizes(), st, pd, dl); };
    const torch::Tensor a = lib(), b = own();
    const double diff = ((a - b).abs().max() / a.abs().max()).item<double>();
    std::vector<double> tf, tl, tm;
    for (int r = 0; r < repeats + 1; ++r) {
      const double f = time_ms([&] { (void)torch::conv2d(x, w, {}, st, pd, dl, 1); });
      const double l = time_ms([&] { (void)lib(); });
      const double m = time_ms([&] { (void)own(); });
      if (r == 0) continue;  // warm-up
      tf.push_back(f);
      tl.push_back(l);
      tm.push_back(m);
    }
    char layer[64];
    std::snprintf(layer, sizeof layer, "%lldx%lld %lldx%lld s%lld %lld²", static_cast<long long>(s.c),
                  static_cast<long long>(s.k), static_cast<long long>(s.kernel), static_cast<long long>(s.kernel),
                  static_cast<long long>(s.stride), static_cast<long long>(s.h));
    const double ml = median(tl), mm = median(tm);
    std::printf("%-9s %-22s %10.2f %12.2f %10.2f %6.2fx %9.1e %s\n", s.model, layer, median(tf), ml, mm, ml / mm, diff,
                mpq::models::own_weight_grad(x, w, 1) ? "mpq" : "libtorch");
  }
  return 0;
}

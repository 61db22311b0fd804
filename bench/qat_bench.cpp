// A quantization-aware training step (forward, loss, backward, SGD) at W4A4
// against the same step in full precision, in one run: median over N steps
// after warm-up. Usage: qat_bench [steps] [threads]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <torch/torch.h>

#include "models/zoo.h"
#include "mpq/search/geometry.h"
#include "quant/qmodules.h"

using namespace mpq;

namespace {

double median_step_s(models::Net net, int batch, int channels, int hw, int classes, int steps) {
  net->train();
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).nesterov(true));
  torch::Tensor x = torch::randn({batch, channels, hw, hw});
  torch::Tensor y = torch::randint(classes, {batch});
  std::vector<double> t;
  for (int i = 0; i < steps + 2; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    opt.zero_grad();
    torch::Tensor loss = torch::cross_entropy_loss(net->forward(x), y, {}, at::Reduction::Mean, -100, 0.1);
    loss.backward();
    opt.step();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i >= 2) t.push_back(dt);  // two warm-up steps (scale initialisation, allocator)
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 9;
  if (argc > 2) torch::set_num_threads(std::atoi(argv[2]));
  struct Case {
    const char* model;
    int batch, channels, hw, classes;
  } cases[] = {{"resnet20", 128, 1, 28, 10}, {"resnet18", 16, 3, 224, 1000}};
  std::printf("threads %d\n| model | batch | FP step (ms) | W4A4 step (ms) | ratio | FP img/s | W4A4 img/s |\n"
              "|---|---|---|---|---|---|---|\n",
              torch::get_num_threads());
  for (const auto& c : cases) {
    torch::manual_seed(0);
    const double fp = median_step_s(models::make_model(c.model, {c.classes, c.channels}), c.batch, c.channels, c.hw,
                                    c.classes, steps);
    torch::manual_seed(0);
    const auto names = search::zoo_geometry(c.model, {c.hw, c.hw, c.channels, c.classes}).searchable_names();
    const std::vector<int> bits(names.size(), 4);
    auto q = quant::quantize_for_finetune(models::make_model(c.model, {c.classes, c.channels}), names, bits, bits);
    const double qs = median_step_s(q.net, c.batch, c.channels, c.hw, c.classes, steps);
    std::printf("| %s | %d | %.1f | %.1f | %.2fx | %.0f | %.0f |\n", c.model, c.batch, fp * 1e3, qs * 1e3, qs / fp,
                c.batch / fp, c.batch / qs);
  }
  return 0;
}

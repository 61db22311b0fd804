// What a training step would make a GPU wait for, counted on the CPU in
// every build: the operators that copy a value to the host or whose output
// size depends on the data (.item(), nonzero, masked_select, equal,
// unique, repeat_interleave without a size; each a stream synchronisation on
// a GPU) and the step's deliberate reads of scalars (mpq::read_scalars, one
// transfer for all of them). A step must make none of the first and a fixed
// number of the second, the same for a network of 21 convolutions as for
// one of 28: not one per layer or parameter. The device check counts the
// same on a GPU with CUDA's sync debug mode, where copies to the host by
// .to(kCPU), which are no operators on the CPU, count too.
#include <gtest/gtest.h>

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "engine/joint.h"
#include "engine/meters.h"
#include "models/zoo.h"
#include "mpq/search/geometry.h"
#include "quant/qmodules.h"

using namespace mpq;

namespace {

struct Reads {
  int deliberate = 0;                 // mpq::read_scalars
  std::map<std::string, int> others;  // operators that would synchronise on a GPU
};

std::mutex g_mutex;
Reads* g_reads = nullptr;

bool synchronises(const std::string& op) {
  static const std::set<std::string> ops = {
      "aten::_local_scalar_dense", "aten::nonzero",  "aten::nonzero_numpy",        "aten::masked_select",
      "aten::equal",               "aten::_unique2", "aten::unique_consecutive",   "aten::unique_dim",
      "aten::repeat_interleave",   "aten::allclose"};
  return ops.count(op) != 0;
}

// The operators running on this thread, outermost first.
thread_local std::vector<std::string> t_running;

// LibTorch's CPU kernel of a full std or var reduction reads its mean back
// with .item() (the mean's value is needed on the host there); its CUDA
// kernel does not. Such reads are the CPU's own, not the step's.
bool inside_cpu_only_read() {
  for (const std::string& op : t_running)
    if (op == "aten::std" || op == "aten::var") return true;
  return false;
}

template <typename F>
Reads count_reads(F&& f) {
  Reads r;
  {
    const std::lock_guard<std::mutex> lock(g_mutex);
    g_reads = &r;
  }
  const at::CallbackHandle handle = at::addGlobalCallback(
      at::RecordFunctionCallback(
          [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
            const std::string name = fn.name();
            {
              const std::lock_guard<std::mutex> lock(g_mutex);
              if (g_reads != nullptr) {
                if (name == "mpq::read_scalars") ++g_reads->deliberate;
                else if (synchronises(name) && !inside_cpu_only_read()) ++g_reads->others[name];
              }
            }
            t_running.push_back(name);
            return nullptr;
          },
          [](const at::RecordFunction&, at::ObserverContext*) {
            if (!t_running.empty()) t_running.pop_back();
          })
          .scopes({at::RecordScope::FUNCTION}));
  f();
  at::removeCallback(handle);
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_reads = nullptr;
  return r;
}

std::string describe(const Reads& r) {
  std::string s = std::to_string(r.deliberate) + " read_scalars";
  for (const auto& [op, n] : r.others) s += ", " + op + " x" + std::to_string(n);
  return s;
}

// The steps of finetuning (full precision and W4A4, as `mpq finetune` runs
// them: forward, label-smoothing loss, backward, the meter's read, SGD) and
// of indicator training (the joint step over candidates 6..2), after two
// steps that initialise the quantizers' scales.
struct StepReads {
  Reads fp, w4a4, joint;
};

StepReads step_reads(const std::string& model) {
  torch::manual_seed(0);
  const int hw = 32, channels = 3, classes = 10;
  const torch::Tensor x = torch::randn({2, channels, hw, hw}).contiguous(torch::MemoryFormat::ChannelsLast);
  const torch::Tensor y = torch::randint(classes, {2});
  const auto names = search::zoo_geometry(model, {hw, hw, channels, classes}).searchable_names();
  StepReads out;
  auto finetune = [&](models::Net net) {
    net->train();
    net->to_channels_last();
    auto opt = engine::make_sgd(*net, 0.01, 0.9, 2.5e-5);
    engine::Meter meter;
    auto step = [&] {
      opt->zero_grad();
      const torch::Tensor logits = net->forward(x);
      const torch::Tensor loss = engine::label_smoothing_ce(logits, y, 0.1);
      loss.backward();
      meter.add(logits.detach(), y, loss);
      opt->step();
    };
    step();
    step();
    return count_reads(step);
  };
  out.fp = finetune(models::make_model(model, {classes, channels}));
  const std::vector<int> four(names.size(), 4);
  out.w4a4 =
      finetune(quant::quantize_for_finetune(models::make_model(model, {classes, channels}), names, four, four).net);
  const std::vector<int> cands = {6, 5, 4, 3, 2};
  auto q = quant::quantize_for_indicators(models::make_model(model, {classes, channels}), cands);
  q.net->to_channels_last();
  auto opt = engine::make_sgd(*q.net, 0.01, 0.9, 2.5e-5);
  std::mt19937_64 rng(0);
  auto step = [&] { engine::joint_step(q, *opt, x, y, 0.1, engine::sample_policy(rng, cands, q.convs.size())); };
  step();
  step();
  out.joint = count_reads(step);
  return out;
}

}  // namespace

TEST(HostSync, TrainingStepsReadBackOnceAndNotPerLayer) {
  const StepReads r20 = step_reads("resnet20"), mb = step_reads("mobilenetv1");
  for (const auto& [what, a, b] : {std::tuple{"FP", r20.fp, mb.fp}, std::tuple{"W4A4", r20.w4a4, mb.w4a4},
                                   std::tuple{"joint", r20.joint, mb.joint}}) {
    SCOPED_TRACE(std::string(what) + " step: ResNet-20 " + describe(a) + "; MobileNet-V1 " + describe(b));
    EXPECT_TRUE(a.others.empty());
    EXPECT_TRUE(b.others.empty());
    // The finetune step's meter, the joint step's losses with its gradients' flags: one read each.
    EXPECT_EQ(a.deliberate, 1);
    EXPECT_EQ(b.deliberate, 1);
  }
}

// The counter sees what it should: a tensor's .item() and a boolean mask's
// indexing are each counted, the mean that the CPU's std reads back is not.
TEST(HostSync, TheCounterSeesItemAndMaskedIndexing) {
  const torch::Tensor t = torch::arange(6.0);
  const Reads r = count_reads([&] {
    (void)t.sum().item<double>();
    (void)t.index({t > 2});
    (void)t.std();
  });
  EXPECT_EQ(r.others, (std::map<std::string, int>{{"aten::_local_scalar_dense", 1}, {"aten::nonzero", 1}}))
      << describe(r);
  EXPECT_EQ(r.deliberate, 0);
}

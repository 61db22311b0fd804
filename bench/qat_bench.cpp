// A quantization-aware training step (forward, loss, backward, SGD) at W4A4
// against the same step in full precision, interleaved in one run: medians
// over N steps after warm-up. Usage: qat_bench [steps] [threads]
// Environment: MPQ_NCHW=1 NCHW instead of channels-last; MPQ_CASE=resnet20
// one model only; MPQ_PROFILE=DIR Chrome traces of three steps of each;
// MPQ_MALLOC=system glibc's malloc defaults instead of mpq's settings;
// MPQ_RELU_AB=1 also the W4A4 step with every ReLU its own op (none absorbed
// by the next conv's quantizer), interleaved, on stderr; MPQ_BN_AB=1 also
// the FP step with torch's own BatchNorm, add and ReLU (models/bn_relu.h's
// fusion off), interleaved, on stderr; MPQ_SGD_AB=1 also the W4A4 step with
// LibTorch's per-parameter SGD instead of mpq's multi-tensor one (the same
// groups and bits), interleaved, on stderr; MPQ_LSQ_AB=1 (on a CPU with AVX2)
// also the W4A4 step with the LSQ op's baseline (SSE2) CPU kernels,
// interleaved, on stderr; MPQ_BN_FUSION=0 that fusion off for
// the whole run; MPQ_DEVICE=cuda (or
// cuda:N) the steps on a GPU, each timed to its end (synchronised), the
// host synchronisations of one step of each kind counted with CUDA's sync
// debug mode, and the host's part of each step (until its work is queued);
// MPQ_DEVICE_WORK=1 one more step of each under LibTorch's profiler, the
// kernels it ran on the GPU (the operators on the CPU), counted and timed
// (MPQ_DEVICE_WORK=DIR: and their Chrome traces in DIR); MPQ_CUDA_GRAPH=1
// (on a GPU) the FP and W4A4 steps also replayed as CUDA graphs, timed;
// MPQ_CUDNN=deterministic|heuristic cuDNN's algorithm choice
// (config key cudnn; benchmark, mpq's default, otherwise); MPQ_TF32=0
// cuDNN's float32 convolutions in full float32 (config key tf32: false;
// TF32 where the GPU has it, PyTorch's default, otherwise); MPQ_BATCH=N
// another batch size; MPQ_HW=N another image size (MPQ_BATCH=1 MPQ_HW=8 on
// the CPU: steps with almost no arithmetic, so mostly the host's cost of
// dispatching operators and building the autograd graph, which is what a
// small network's step on a GPU waits for).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <torch/torch.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#if MPQ_HAVE_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif
#include <c10/util/Exception.h>

#include "models/bn_relu.h"
#include "models/zoo.h"
#include "mpq/common/malloc_tuning.h"
#include "torch_bench.h"
#include "mpq/config/config.h"
#include "mpq/search/geometry.h"
#include "engine/context.h"
#include "engine/joint.h"
#include "quant/lsq_cpu.h"
#include "quant/qmodules.h"

using namespace mpq;

using mpq::bench::bench_device;
using mpq::bench::finish;
using mpq::bench::median;

namespace {

// The layout of mpq's training (config key channels_last), unless MPQ_NCHW is set.
bool channels_last() { return std::getenv("MPQ_NCHW") == nullptr; }

// The host synchronisations `f` makes, counted with CUDA's sync debug mode
// (each synchronising call warns); -1 on the CPU.
template <typename F>
int count_syncs(const torch::Device& d, F&& f) {
#if MPQ_HAVE_CUDA
  if (d.is_cuda()) {
    struct Counter : c10::WarningHandler {
      int n = 0;
      void process(const c10::Warning& w) override { n += w.msg().find("synchroniz") != std::string::npos; }
    } counter;
    finish(d);
    {
      c10::WarningUtils::WarningHandlerGuard guard(&counter);
      c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_WARN);
      f();
      c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
    }
    finish(d);
    return counter.n;
  }
#endif
  f();
  return -1;
}

// What one run of `f` puts on the device, from LibTorch's (Kineto's)
// profiler: on a GPU the kernels, copies and fills it ran and their summed
// time; on the CPU the operators it recorded (nested ones too) and theirs.
struct DeviceWork {
  int64_t events = 0;
  double ms = 0;
};
template <typename F>
DeviceWork device_work(const torch::Device& d, const std::string& trace, F&& f) {
  namespace prof = torch::profiler::impl;
  namespace kin = torch::autograd::profiler;
  finish(d);
  std::set<prof::ActivityType> acts{prof::ActivityType::CPU};
  if (d.is_cuda()) acts.insert(prof::ActivityType::CUDA);
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
  kin::prepareProfiler(config, acts);
  kin::enableProfiler(config, acts);
  f();
  finish(d);
  const std::unique_ptr<kin::ProfilerResult> r = kin::disableProfiler();
  if (!trace.empty()) r->save(trace);
  DeviceWork w;
  for (const auto& e : r->events())
    if (e.deviceType() == (d.is_cuda() ? c10::DeviceType::CUDA : c10::DeviceType::CPU)) {
      ++w.events;
      w.ms += static_cast<double>(e.durationNs()) * 1e-6;
    }
  return w;
}

// One training step: forward, label-smoothing cross-entropy, backward, SGD
// (mpq's multi-tensor SGD, as its finetune runs it).
struct Trainer {
  Trainer(models::Net n, int batch, int channels, int hw, int classes, torch::Device d)
      : net(std::move(n)),
        dev(d),
        x(torch::randn({batch, channels, hw, hw})),
        y(torch::randint(classes, {batch})) {
    net->train();
    net->to(dev);
    x = x.to(dev);
    y = y.to(dev);
    if (channels_last()) {
      net->to_channels_last();
      x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    }
    // mpq's training optimizer, as the original's bench sets its own up:
    // lr 0.01, Nesterov momentum 0.9, weight decay 2.5e-5 on >= 2-D weights.
    opt = engine::make_sgd(*net, 0.01, 0.9, 2.5e-5);
  }
  // The step's time to its end; `host` gets the part before the wait for
  // the GPU (on a GPU, how long the host took to queue the step's work).
  double step() {
    const auto t0 = std::chrono::steady_clock::now();
    step_only();
    host.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    finish(dev);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  void step_only() {
    opt->zero_grad();
    torch::Tensor loss = torch::cross_entropy_loss(net->forward(x), y, {}, at::Reduction::Mean, -100, 0.1);
    loss.backward();
    opt->step();
  }
  models::Net net;
  torch::Device dev;
  std::unique_ptr<torch::optim::SGD> opt;
  torch::Tensor x, y;
  std::vector<double> host;
};

// MPQ_CUDA_GRAPH=1, on a GPU: the median time of `steps` replays of one of
// t's steps captured as a CUDA graph (PyTorch's recipe for a whole network:
// warm-up steps on a side stream, then forward, backward and SGD captured
// there), what launching the step's kernels one by one costs against
// replaying them. Data and bit-widths stay fixed, so it is a measurement,
// not a way to train. Throws where the step cannot be captured.
double graph_step(Trainer& t, int steps) {
#if MPQ_HAVE_CUDA
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, t.dev.index());
  at::cuda::CUDAGraph graph;
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    for (int i = 0; i < 3; ++i) t.step_only();
    side.synchronize();
    graph.capture_begin();
    t.step_only();
    graph.capture_end();
  }
  finish(t.dev);
  std::vector<double> v;
  for (int i = 0; i < steps + 2; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    graph.replay();
    finish(t.dev);
    if (i >= 2) v.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(v);
#else
  (void)t;
  (void)steps;
  throw std::runtime_error("this build has no CUDA");
#endif
}

// One A/B line on stderr: step `what` as `base` against `other`, interleaved
// (step i of each ran next to the other's): medians and paired ratios.
void report_ab(const char* model, const char* what, const char* base, const std::vector<double>& tb,
               const char* other, const std::vector<double>& to) {
  std::vector<double> r;
  for (size_t i = 0; i < tb.size(); ++i) r.push_back(to[i] / tb[i]);
  std::fprintf(stderr, "%s: %s %s median %.1f ms, %s %.1f ms; %s / %s: medians %.3fx, median of paired ratios %.3fx\n",
               model, what, base, median(tb) * 1e3, other, median(to) * 1e3, other, base, median(to) / median(tb),
               median(r));
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 9;
  // As mpq's torch commands do; MPQ_MALLOC=system measures glibc's defaults.
  std::fprintf(stderr, "%s\n", mpq::tune_malloc_for_training().c_str());
  if (argc > 2) torch::set_num_threads(std::atoi(argv[2]));
  if (const char* f = std::getenv("MPQ_BN_FUSION"); f && std::string(f) == "0") models::set_bn_relu_fusion(false);
  struct Case {
    const char* model;
    int batch, channels, hw, classes;
  } cases[] = {{"resnet20", 128, 1, 28, 10}, {"resnet18", 16, 3, 224, 1000}, {"mobilenetv1", 16, 3, 224, 1000}};
  const torch::Device dev = bench_device("qat_bench");
  const char* cudnn = std::getenv("MPQ_CUDNN");
  const std::string cudnn_mode = cudnn ? cudnn : "benchmark";
  if (!config::is_cudnn_mode(cudnn_mode)) {
    std::fprintf(stderr, "qat_bench: MPQ_CUDNN=%s is not one of %s\n", cudnn, config::kCudnnModeList);
    return 2;
  }
  engine::apply_cudnn_mode(cudnn_mode);
  const char* tf32 = std::getenv("MPQ_TF32");
  const bool tf32_on = tf32 == nullptr || std::string(tf32) != "0";
  engine::apply_tf32(tf32_on);
  if (const char* b = std::getenv("MPQ_BATCH"))
    for (auto& c : cases) c.batch = std::atoi(b);
  if (const char* hw = std::getenv("MPQ_HW"))
    for (auto& c : cases) c.hw = std::atoi(hw);
  std::printf("device %s, threads %d, cudnn %s, tf32 %s\n| model | batch | FP step (ms) | W4A4 step (ms) | ratio | FP img/s | W4A4 img/s | "
              "joint 6..2 img/s | joint / FP |\n|---|---|---|---|---|---|---|---|---|\n",
              dev.str().c_str(), torch::get_num_threads(), cudnn_mode.c_str(), tf32_on ? "on" : "off");
  for (const auto& c : cases) {
    if (const char* only = std::getenv("MPQ_CASE"); only && std::string(only) != c.model) continue;
    torch::manual_seed(0);
    Trainer fp(models::make_model(c.model, {c.classes, c.channels}), c.batch, c.channels, c.hw, c.classes, dev);
    torch::manual_seed(0);
    const auto names = search::zoo_geometry(c.model, {c.hw, c.hw, c.channels, c.classes}).searchable_names();
    const std::vector<int> bits(names.size(), 4);
    auto w4a4 = [&] {
      return quant::quantize_for_finetune(models::make_model(c.model, {c.classes, c.channels}), names, bits, bits);
    };
    Trainer q(w4a4().net, c.batch, c.channels, c.hw, c.classes, dev);
    std::unique_ptr<Trainer> separate;
    if (std::getenv("MPQ_RELU_AB") != nullptr) {
      torch::manual_seed(0);
      quant::QuantizedNet qn = w4a4();
      for (auto& conv : qn.convs) conv->input_after_relu = false;
      separate = std::make_unique<Trainer>(qn.net, c.batch, c.channels, c.hw, c.classes, dev);
    }
    std::unique_ptr<Trainer> composed;
    if (std::getenv("MPQ_BN_AB") != nullptr) {
      torch::manual_seed(0);
      composed = std::make_unique<Trainer>(models::make_model(c.model, {c.classes, c.channels}), c.batch, c.channels,
                                           c.hw, c.classes, dev);
    }
    std::unique_ptr<Trainer> per_param;
    if (std::getenv("MPQ_SGD_AB") != nullptr) {
      torch::manual_seed(0);
      per_param = std::make_unique<Trainer>(w4a4().net, c.batch, c.channels, c.hw, c.classes, dev);
      per_param->opt =
          std::make_unique<torch::optim::SGD>(per_param->opt->param_groups(), torch::optim::SGDOptions(0.01));
    }
    // MPQ_LSQ_AB=1: the same W4A4 network again, its LSQ kernels held to the baseline instruction set.
    const bool lsq_ab = std::getenv("MPQ_LSQ_AB") != nullptr && quant::cpu::isa() == quant::cpu::Isa::kAvx2;
    auto baseline_lsq_step = [&] {
      quant::cpu::limit_isa(quant::cpu::Isa::kBaseline);
      const double t = q.step();
      q.host.pop_back();  // q's host parts are its AVX2 steps'
      quant::cpu::limit_isa(quant::cpu::Isa::kAvx2);
      return t;
    };
    auto composed_step = [&] {
      const models::BnReluFusionScope off(false);
      return composed->step();
    };
    // Interleaved, so all see the same machine; two warm-up steps each.
    std::vector<double> tf, tq, ts, tc, tp, tl;
    for (int i = 0; i < steps + 2; ++i) {
      const double a = fp.step(), b = q.step(), d = separate ? separate->step() : 0;
      const double e = composed ? composed_step() : 0;
      const double g = per_param ? per_param->step() : 0;
      const double l = lsq_ab ? baseline_lsq_step() : 0;
      if (i >= 2) {
        tf.push_back(a);
        tq.push_back(b);
        ts.push_back(d);
        tc.push_back(e);
        tp.push_back(g);
        tl.push_back(l);
      }
    }
    // The measured steps' host parts (the two warm-ups left out).
    auto host_part = [&](const Trainer& t) { return median({t.host.begin() + 2, t.host.begin() + 2 + steps}); };
    const double hf = host_part(fp), hq = host_part(q);
    if (lsq_ab) report_ab(c.model, "W4A4 with LSQ kernels", "AVX2", tq, "baseline", tl);
    if (per_param) report_ab(c.model, "W4A4 with SGD", "multi-tensor", tq, "per-parameter", tp);
    if (composed) report_ab(c.model, "FP with BatchNorm+add+ReLU", "fused", tf, "composed", tc);
    if (separate) report_ab(c.model, "W4A4 with ReLUs", "absorbed", tq, "separate", ts);
    const double mf = median(tf), mq = median(tq);
    // On a shared machine: the spread of each, and the median of the ratios
    // of adjacent steps (which saw the same neighbours), on stderr.
    std::vector<double> paired;
    for (size_t i = 0; i < tf.size(); ++i) paired.push_back(tq[i] / tf[i]);
    const auto [f_lo, f_hi] = std::minmax_element(tf.begin(), tf.end());
    const auto [q_lo, q_hi] = std::minmax_element(tq.begin(), tq.end());
    std::fprintf(stderr, "%s: FP min %.1f median %.1f max %.1f ms; W4A4 min %.1f median %.1f max %.1f ms; "
                 "min / min %.2fx, median of paired ratios %.2fx\n", c.model, *f_lo * 1e3, mf * 1e3, *f_hi * 1e3,
                 *q_lo * 1e3, mq * 1e3, *q_hi * 1e3, *q_lo / *f_lo, median(paired));
    // MPQ_PROFILE=DIR: three more steps of each under the autograd profiler,
    // written as Chrome traces DIR/<model>_{fp,w4a4}.json.
    if (const char* dir = std::getenv("MPQ_PROFILE")) {
      for (auto [t, tag] : {std::pair<Trainer*, const char*>{&fp, "fp"}, {&q, "w4a4"}}) {
        torch::autograd::profiler::RecordProfile guard(std::string(dir) + "/" + c.model + "_" + tag + ".json");
        for (int i = 0; i < 3; ++i) t->step();
      }
    }
    // The joint indicator step (METHOD.md §3) over candidates 6..2: K + 1 = 6 passes.
    torch::manual_seed(0);
    const std::vector<int> cands = {6, 5, 4, 3, 2};
    auto qj = quant::quantize_for_indicators(models::make_model(c.model, {c.classes, c.channels}), cands);
    qj.net->to(dev);
    if (channels_last()) qj.net->to_channels_last();
    auto opt = engine::make_sgd(*qj.net, 0.01, 0.9, 2.5e-5);
    std::mt19937_64 rng(0);
    std::vector<double> tj, hj;
    auto joint = [&] { engine::joint_step(qj, *opt, fp.x, fp.y, 0.1, engine::sample_policy(rng, cands, qj.convs.size())); };
    for (int i = 0; i < std::max(3, steps / 3) + 1; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      joint();
      const auto t1 = std::chrono::steady_clock::now();
      finish(dev);
      if (i >= 1) {
        tj.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        hj.push_back(std::chrono::duration<double>(t1 - t0).count());
      }
    }
    const double mj = median(tj);
    if (dev.is_cuda()) {
      std::fprintf(stderr, "%s: host synchronisations in one step: FP %d, W4A4 %d, joint %d\n", c.model,
                   count_syncs(dev, [&] { fp.step_only(); }), count_syncs(dev, [&] { q.step_only(); }),
                   count_syncs(dev, joint));
      // Where a step makes no synchronisation, its host part is the time the
      // host took to queue its kernels: near the whole step, the step is
      // bound by launches and LibTorch's own work, not by the GPU.
      std::fprintf(stderr, "%s: host part of a step (medians): FP %.2f of %.2f ms, W4A4 %.2f of %.2f ms, "
                   "joint %.2f of %.2f ms\n", c.model, hf * 1e3, mf * 1e3, hq * 1e3, mq * 1e3, median(hj) * 1e3,
                   mj * 1e3);
    }
    std::printf("| %s | %d | %.1f | %.1f | %.2fx | %.1f | %.1f | %.1f | %.2fx |\n", c.model, c.batch, mf * 1e3,
                mq * 1e3, mq / mf, c.batch / mf, c.batch / mq, c.batch / mj, mj / mf);
    // The row out before the profiler runs, which a GPU machine's runtime may
    // not take kindly.
    std::fflush(stdout);
    // MPQ_DEVICE_WORK=1: one more step of each under the profiler, what it
    // ran on the device (on a GPU: how many kernels, and how long they took
    // summed, against the step's time above).
    if (const char* work = std::getenv("MPQ_DEVICE_WORK")) {
      // MPQ_DEVICE_WORK=DIR (not 1): those steps' Chrome traces too, DIR/<model>_<step>_device.json.
      auto trace = [&](const char* step) {
        if (std::string(work) == "1") return std::string();
        return std::string(work) + "/" + c.model + "_" + step + "_device.json";
      };
      const DeviceWork a = device_work(dev, trace("fp"), [&] { fp.step_only(); }),
                       b = device_work(dev, trace("w4a4"), [&] { q.step_only(); }),
                       j = device_work(dev, trace("joint"), joint);
      std::fprintf(stderr, "%s: %s in one step (summed ms): FP %lld (%.2f), W4A4 %lld (%.2f), joint %lld (%.2f)\n",
                   c.model, dev.is_cuda() ? "GPU kernels, copies and fills" : "CPU operators recorded",
                   static_cast<long long>(a.events), a.ms, static_cast<long long>(b.events), b.ms,
                   static_cast<long long>(j.events), j.ms);
    }
    if (std::getenv("MPQ_CUDA_GRAPH") != nullptr && dev.is_cuda()) {
      std::fflush(stderr);
      for (auto [t, tag, eager] : {std::tuple<Trainer*, const char*, double>{&fp, "FP", mf}, {&q, "W4A4", mq}}) {
        try {
          std::fprintf(stderr, "%s: %s step replayed as a CUDA graph: %.2f ms (launched op by op: %.2f ms)\n",
                       c.model, tag, graph_step(*t, steps) * 1e3, eager * 1e3);
        } catch (const std::exception& e) {
          const std::string what = e.what();
          std::fprintf(stderr, "%s: %s step as a CUDA graph: not captured: %s\n", c.model, tag,
                       what.substr(0, what.find('\n')).c_str());
        }
        std::fflush(stderr);
      }
    }
  }
  return 0;
}

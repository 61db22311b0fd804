// The joint indicator-training step of METHOD.md §3 and the optimizer rules it
// shares with finetuning (METHOD.md §5).
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include <torch/optim/sgd.h>
#include <torch/types.h>

#include "quant/qmodules.h"

namespace mpq::engine {

// Label-smoothing cross-entropy, the original's (timm's) form:
// (1 - eps) * nll + eps * mean over classes of -log p.
torch::Tensor label_smoothing_ce(const torch::Tensor& logits, const torch::Tensor& target, double eps);

// torch::optim::SGD's update, the same operations in the same order (so the
// same bits on the CPU, and the same state, checkpoints and options), done
// for all of a group's parameters at once with ATen's multi-tensor
// (_foreach_) ops: on a GPU a few kernels per group and step instead of four
// or five per parameter, which for a small network is most of the step's
// launches. PyTorch's own SGD does the same on CUDA (foreach by default).
class ForeachSgd : public torch::optim::SGD {
 public:
  using torch::optim::SGD::SGD;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

// SGD with Nesterov momentum (a ForeachSgd); weight decay only on parameters
// of dimension > 1 (not on biases, BatchNorm or quantizer scales).
std::unique_ptr<torch::optim::SGD> make_sgd(torch::nn::Module& net, double lr, double momentum, double weight_decay);

// Clamps every gradient element into [-clip, clip], then drops the gradient
// of any parameter whose gradient is all zero, so the optimizer leaves it
// alone (no momentum, no weight decay). Returns the scalars of `read_back`
// (e.g. the step's losses), read in the same transfer to the host: on a GPU,
// one synchronisation for both.
std::vector<double> clip_and_drop_zero_grads(torch::nn::Module& net, double clip,
                                             const std::vector<torch::Tensor>& read_back = {});

// One mixed policy: every searchable layer draws uniformly from the candidates.
std::vector<int> sample_policy(std::mt19937_64& rng, const std::vector<int>& candidates, size_t layers);

// One joint step: zero the gradients; forward/backward at every candidate
// (all layers and BN copies at that bit-width), then at `mixed` (one
// bit-width per layer, BN copies following); clip, drop zero gradients, step.
// Returns the losses in that order (candidates..., mixed).
//
// `options.distill`: in-place distillation; the first candidate learns from
// the labels, every other forward from the first candidate's softmax
// (detached). `options.before_last_backward` runs before the mixed policy's
// backward, `options.after_backward` once all gradients are in, before the
// clip (the distributed gradient all-reduce, overlapped with that backward).
struct JointOptions {
  double smoothing = 0.1;
  double clip = 1.0;
  bool distill = false;
  std::function<void()> before_last_backward;
  std::function<void()> after_backward;
};
std::vector<double> joint_step(quant::QuantizedNet& q, torch::optim::Optimizer& opt, const torch::Tensor& x,
                               const torch::Tensor& y, const std::vector<int>& mixed, const JointOptions& options);
inline std::vector<double> joint_step(quant::QuantizedNet& q, torch::optim::Optimizer& opt, const torch::Tensor& x,
                                      const torch::Tensor& y, double smoothing, const std::vector<int>& mixed,
                                      double clip = 1.0) {
  JointOptions o;
  o.smoothing = smoothing;
  o.clip = clip;
  return joint_step(q, opt, x, y, mixed, o);
}

}  // namespace mpq::engine

#include "engine/joint.h"

#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_clamp_max.h>
#include <ATen/ops/_foreach_clamp_min.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <torch/nn/functional/activation.h>

#include <limits>

#include "engine/host_read.h"
#include "mpq/common/error.h"

namespace mpq::engine {

torch::Tensor label_smoothing_ce(const torch::Tensor& logits, const torch::Tensor& target, double eps) {
  const torch::Tensor logp = torch::log_softmax(logits, -1);
  const torch::Tensor nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1);
  const torch::Tensor smooth = -logp.mean(-1);
  return ((1.0 - eps) * nll + eps * smooth).mean();
}

torch::Tensor ForeachSgd::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const torch::optim::SGDOptions&>(group.options());
    std::vector<torch::Tensor> params, grads;
    for (const auto& p : group.params())
      if (p.grad().defined()) {
        params.push_back(p);
        grads.push_back(p.grad());
      }
    if (params.empty()) continue;
    // d_p = grad + weight_decay * p (a new tensor: the gradients stay as they are).
    std::vector<torch::Tensor> d_p = o.weight_decay() != 0 ? at::_foreach_add(grads, params, o.weight_decay()) : grads;
    if (o.momentum() != 0) {
      // A parameter's first step starts its buffer as a copy of d_p; later
      // ones take buf = momentum * buf + (1 - dampening) * d_p.
      std::vector<torch::Tensor> bufs(params.size()), old_bufs, old_d_p;
      for (size_t i = 0; i < params.size(); ++i) {
        auto it = state_.find(params[i].unsafeGetTensorImpl());
        if (it == state_.end()) {
          bufs[i] = torch::clone(d_p[i]).detach();
          auto state = std::make_unique<torch::optim::SGDParamState>();
          state->momentum_buffer(bufs[i]);
          state_[params[i].unsafeGetTensorImpl()] = std::move(state);
        } else {
          bufs[i] = static_cast<torch::optim::SGDParamState&>(*it->second).momentum_buffer();
          old_bufs.push_back(bufs[i]);
          old_d_p.push_back(d_p[i]);
        }
      }
      if (!old_bufs.empty()) {
        at::_foreach_mul_(old_bufs, o.momentum());
        at::_foreach_add_(old_bufs, old_d_p, 1 - o.dampening());
      }
      d_p = o.nesterov() ? at::_foreach_add(d_p, bufs, o.momentum()) : bufs;
    }
    at::_foreach_add_(params, d_p, -o.lr());
  }
  return loss;
}

std::unique_ptr<torch::optim::SGD> make_sgd(torch::nn::Module& net, double lr, double momentum, double weight_decay) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : net.parameters())
    if (p.requires_grad()) (p.dim() > 1 ? decay : no_decay).push_back(p);  // frozen ones (freeze_weights) stay out
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::SGDOptions>(
                                 torch::optim::SGDOptions(lr).momentum(momentum).nesterov(true).weight_decay(weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::SGDOptions>(
                                    torch::optim::SGDOptions(lr).momentum(momentum).nesterov(true).weight_decay(0)));
  return std::make_unique<ForeachSgd>(groups, torch::optim::SGDOptions(lr));
}

std::vector<double> clip_and_drop_zero_grads(torch::nn::Module& net, double clip,
                                             const std::vector<torch::Tensor>& read_back) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> with_grad, grads;
  for (auto& p : net.parameters())
    if (p.grad().defined()) {
      with_grad.push_back(p);
      grads.push_back(p.mutable_grad());
    }
  // All gradients at once (a few multi-tensor kernels on a GPU, not three
  // per parameter); clamp_min then clamp_max is clamp, bit for bit. A
  // gradient is all zero exactly where its largest magnitude is 0 (NaN
  // counts as nonzero either way).
  std::vector<torch::Tensor> values;
  if (!grads.empty()) {
    at::_foreach_clamp_min_(grads, -clip);
    at::_foreach_clamp_max_(grads, clip);
    values = at::_foreach_norm(grads, std::numeric_limits<double>::infinity());
  }
  values.insert(values.end(), read_back.begin(), read_back.end());
  // Whether each gradient is all zero decides, on the host, which parameters
  // the optimizer skips: one transfer for all of them and `read_back` (one
  // synchronisation per step on a GPU, not one per parameter).
  const std::vector<double> v = read_scalars(values);
  for (size_t i = 0; i < with_grad.size(); ++i)
    if (v[i] == 0) with_grad[i].mutable_grad() = torch::Tensor();
  return std::vector<double>(v.begin() + static_cast<std::ptrdiff_t>(with_grad.size()), v.end());
}

std::vector<int> sample_policy(std::mt19937_64& rng, const std::vector<int>& candidates, size_t layers) {
  MPQ_ASSERT(!candidates.empty());
  std::uniform_int_distribution<size_t> pick(0, candidates.size() - 1);
  std::vector<int> out(layers);
  for (auto& b : out) b = candidates[pick(rng)];
  return out;
}

std::vector<double> joint_step(quant::QuantizedNet& q, torch::optim::Optimizer& opt, const torch::Tensor& x,
                               const torch::Tensor& y, const std::vector<int>& mixed, const JointOptions& o) {
  MPQ_CHECK(mixed.size() == q.convs.size(), "joint step: a mixed policy of ", mixed.size(), " bit-widths for ",
            q.convs.size(), " searchable layers");
  q.net->train();
  opt.zero_grad();
  std::vector<torch::Tensor> loss_values;  // read back with the gradients' flags
  torch::Tensor teacher;  // distillation: the first candidate's probabilities
  auto run = [&](bool last) {
    const torch::Tensor out = q.net->forward(x);
    torch::Tensor loss;
    if (teacher.defined()) {
      loss = -(teacher * torch::log_softmax(out, -1)).sum(-1).mean();
    } else {
      loss = label_smoothing_ce(out, y, o.smoothing);
      if (o.distill) teacher = torch::softmax(out.detach(), -1);
    }
    if (last && o.before_last_backward) o.before_last_backward();
    loss.backward();  // gradients accumulate over the candidates and the mixed policy
    loss_values.push_back(loss.detach());
  };
  for (int b : q.candidates) {
    q.set_uniform(b);
    run(false);
  }
  q.set_mixed(mixed);
  run(true);
  if (o.after_backward) o.after_backward();
  std::vector<double> losses = clip_and_drop_zero_grads(*q.net, o.clip, loss_values);
  opt.step();
  return losses;
}

}  // namespace mpq::engine

#include "quant/qmodules.h"

#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/linear.h>

#include <cmath>

#include "mpq/common/error.h"

namespace mpq::quant {

namespace F = torch::nn::functional;

QConv2dImpl::QConv2dImpl(const torch::nn::Conv2dImpl& src, const std::vector<int>& bits, bool clamp_scale,
                         bool quantize_input)
    : weight_bits(bits.front()), act_bits(bits.front()) {
  const auto& o = src.options;
  const auto vec = [](const torch::ExpandingArray<2>& a) { return std::vector<int64_t>(a->begin(), a->end()); };
  stride_ = vec(o.stride());
  dilation_ = vec(o.dilation());
  groups_ = o.groups();
  padding_ = vec(std::get<torch::ExpandingArray<2>>(o.padding()));
  weight = register_parameter("weight", src.weight.detach().clone());
  if (src.bias.defined()) bias = register_parameter("bias", src.bias.detach().clone());
  quan_w_fn = register_module("quan_w_fn", LsqQuantizer(LsqQuantizerOptions{bits, false, false, clamp_scale}));
  quan_w_fn->init_from_weight(weight);
  if (quantize_input)
    quan_a_fn = register_module("quan_a_fn", LsqQuantizer(LsqQuantizerOptions{bits, true, false, clamp_scale}));
}

void QConv2dImpl::set_bits(int w, int a) {
  weight_bits = w;
  act_bits = a;
}

bool QConv2dImpl::absorbs_relu() const { return input_after_relu && quan_a_fn && act_bits > 0 && act_bits < 32; }

torch::Tensor QConv2dImpl::forward(torch::Tensor x) {
  if (input_probe) input_probe(absorbs_relu() ? torch::relu(x) : x);
  if (quan_a_fn) x = quan_a_fn->forward(x, act_bits, absorbs_relu());
  const torch::Tensor w = quan_w_fn->forward(weight, weight_bits);
  return torch::conv2d(x, w, bias, stride_, padding_, dilation_, groups_);
}

torch::Tensor sat_factor(const torch::Tensor& wq) {
  return 1.0 / (std::sqrt(static_cast<double>(wq.size(0))) * wq.std());
}

QLinearImpl::QLinearImpl(const torch::nn::LinearImpl& src, int b, bool sat_) : bits(b), sat(sat_) {
  weight = register_parameter("weight", src.weight.detach().clone());
  if (src.bias.defined()) bias = register_parameter("bias", src.bias.detach().clone());
  quan_w_fn = register_module("quan_w_fn", LsqQuantizer(LsqQuantizerOptions{{b}, false, false, false}));
  quan_w_fn->init_from_weight(weight);
  quan_a_fn = register_module("quan_a_fn", LsqQuantizer(LsqQuantizerOptions{{b}, true, false, false}));
}

torch::Tensor QLinearImpl::forward(torch::Tensor x) {
  x = quan_a_fn->forward(x, bits);
  torch::Tensor w = quan_w_fn->forward(weight, bits);
  if (!sat) return torch::linear(x, w, bias);
  const torch::Tensor factor = sat_factor(w.detach());
  if (is_training()) return torch::linear(x, w * factor, bias);
  return torch::linear(x, w, bias.defined() ? bias / factor : bias);
}

SwitchableBatchNorm2dImpl::SwitchableBatchNorm2dImpl(const models::BatchNormImpl& src, const std::vector<int>& bits)
    : bits_(bits) {
  bns = register_module("bns", torch::nn::ModuleList());
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < bits.size(); ++i) {
    models::BatchNorm b(src.options);
    b->weight.copy_(src.weight);
    b->bias.copy_(src.bias);
    b->running_mean.copy_(src.running_mean);
    b->running_var.copy_(src.running_var);
    b->num_batches_tracked.copy_(src.num_batches_tracked);
    bns->push_back(b);
    typed_.push_back(b);
  }
}

void SwitchableBatchNorm2dImpl::select(int bits) {
  for (size_t i = 0; i < bits_.size(); ++i)
    if (bits_[i] == bits) {
      active_ = static_cast<int>(i);
      return;
    }
  throw InputError(detail::concat("switchable BatchNorm: ", bits, " bits is not one of its candidates"));
}

torch::Tensor SwitchableBatchNorm2dImpl::forward(torch::Tensor x) { return typed_[static_cast<size_t>(active_)]->forward(x); }
torch::Tensor SwitchableBatchNorm2dImpl::forward_relu(const torch::Tensor& x, const torch::Tensor& residual) {
  return typed_[static_cast<size_t>(active_)]->forward_relu(x, residual);
}

void QuantizedNet::set_uniform(int bits) { set_mixed(std::vector<int>(convs.size(), bits)); }

void QuantizedNet::set_mixed(const std::vector<int>& bits) {
  MPQ_ASSERT(bits.size() == convs.size());
  for (size_t i = 0; i < convs.size(); ++i) {
    convs[i]->set_bits(bits[i], bits[i]);
    if (i < bns.size()) bns[i]->select(bits[i]);
  }
}

namespace {

torch::nn::Conv2dImpl& as_conv(const models::Slot& s) {
  auto* c = dynamic_cast<torch::nn::Conv2dImpl*>(s.layer->ptr().get());
  MPQ_CHECK(c != nullptr, "quantize: layer ", s.name, " is already quantized or not a Conv2d");
  return *c;
}

}  // namespace

QuantizedNet quantize_for_indicators(models::Net net, const std::vector<int>& candidates) {
  MPQ_CHECK(!candidates.empty(), "quantize: no candidate bit-widths");
  QuantizedNet q;
  q.net = net;
  q.candidates = candidates;
  const auto slots = net->slots();
  for (size_t i = 1; i < slots.size(); ++i) {  // slot 0: the first conv, excepted
    const auto& s = slots[i];
    if (s.is_linear) continue;  // the fc, excepted
    QConv2d qc(as_conv(s), candidates, /*clamp_scale=*/true, /*quantize_input=*/true);
    qc->input_after_relu = s.after_relu;
    net->replace(s, torch::nn::AnyModule(qc));
    auto* b = dynamic_cast<models::BatchNormImpl*>(s.bn->ptr().get());
    MPQ_ASSERT(b != nullptr, "no float BatchNorm after ", s.name);
    SwitchableBatchNorm2d sb(*b, candidates);
    net->replace_bn(s, torch::nn::AnyModule(sb));
    q.names.push_back(s.name);
    q.convs.push_back(qc);
    q.bns.push_back(sb);
  }
  q.set_uniform(candidates.front());
  return q;
}

QuantizedNet quantize_for_finetune(models::Net net, const std::vector<std::string>& names,
                                   const std::vector<int>& weight_bits, const std::vector<int>& act_bits) {
  MPQ_CHECK(weight_bits.size() == names.size() && act_bits.size() == names.size(), "policy: ", names.size(),
            " layers but ", weight_bits.size(), " weight_bits and ", act_bits.size(), " act_bits");
  QuantizedNet q;
  q.net = net;
  const auto slots = net->slots();
  size_t k = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    const auto& s = slots[i];
    if (s.is_linear) {
      auto* l = dynamic_cast<torch::nn::LinearImpl*>(s.layer->ptr().get());
      MPQ_ASSERT(l != nullptr, "the fc is not a Linear");
      net->replace(s, torch::nn::AnyModule(QLinear(*l, 8, /*sat=*/true)));
      continue;
    }
    if (i == 0) {  // the first conv: W8, the image unquantized
      net->replace(s, torch::nn::AnyModule(QConv2d(as_conv(s), std::vector<int>{8}, false, /*quantize_input=*/false)));
      continue;
    }
    MPQ_CHECK(k < names.size(), "policy: has ", names.size(), " layers but the model has more searchable layers (next: ",
              s.name, ")");
    MPQ_CHECK(names[k] == s.name || names[k] == "module." + s.name, "policy: searchable layer ", k, " is '", names[k],
              "' but the model's is '", s.name, "' (a policy for another model?)");
    for (int b : {weight_bits[k], act_bits[k]})
      MPQ_CHECK(b >= 2 && b <= 16, "policy: layer '", s.name, "' has ", b, " bits (expected 2 to 16)");
    QConv2d qc(as_conv(s), std::vector<int>{weight_bits[k]}, false, true);
    if (act_bits[k] != weight_bits[k]) {  // the activation quantizer holds its own bit-width
      qc->quan_a_fn = qc->replace_module("quan_a_fn", LsqQuantizer(LsqQuantizerOptions{{act_bits[k]}, true, false, false}));
    }
    qc->set_bits(weight_bits[k], act_bits[k]);
    qc->input_after_relu = s.after_relu;
    net->replace(s, torch::nn::AnyModule(qc));
    q.names.push_back(s.name);
    q.convs.push_back(qc);
    ++k;
  }
  MPQ_CHECK(k == names.size(), "policy: has ", names.size(), " layers but the model has ", k, " searchable layers");
  return q;
}

std::string sat_collapse(torch::nn::Module& net) {
  torch::NoGradGuard no_grad;
  for (const auto& item : net.named_modules()) {
    auto* l = dynamic_cast<QLinearImpl*>(item.value().get());
    if (l == nullptr || !l->sat) continue;
    const bool training = l->quan_w_fn->is_training();
    l->quan_w_fn->eval();  // no lazy initialisation of its scale
    const torch::Tensor wq = l->quan_w_fn->forward(l->weight, l->bits);
    l->quan_w_fn->train(training);
    if (wq.std().item<double>() > 0) continue;
    return detail::concat("the ", l->bits, "-bit weights of the fc '", item.key(),
                          "' all quantize to one value (weight step size ", l->quan_w_fn->s.max().item<double>(),
                          ", largest |weight| ", l->weight.abs().max().item<double>(),
                          "), so its SAT rescale divides by a zero std");
  }
  return "";
}

}  // namespace mpq::quant

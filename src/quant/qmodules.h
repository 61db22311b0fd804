// Quantized layers and the function that quantizes a zoo network by layer
// name (METHOD.md §2, §3, §5).
//
// Parameter paths stay those of the float network plus the quantizers, as the
// original names them: "layer1.0.conv1.weight", "layer1.0.conv1.quan_w_fn.s",
// "layer1.0.conv1.quan_a_fn.s", and "layer1.0.bn1.bns.2.running_mean" for the
// switchable BatchNorm's copy of the third candidate.
#pragma once

#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "models/zoo.h"
#include "quant/lsq.h"

namespace mpq::quant {

// Conv2d with LSQ on its weight (signed) and, unless `quantize_input` is
// false (the first conv: the image is not quantized), its input (unsigned).
class QConv2dImpl : public torch::nn::Module, public models::ReluAbsorber {
 public:
  QConv2dImpl(const torch::nn::Conv2dImpl& src, const std::vector<int>& bits, bool clamp_scale, bool quantize_input);
  torch::Tensor forward(torch::Tensor x);
  void set_bits(int weight_bits, int act_bits);
  // True when the input is a ReLU's that the owner may leave to this layer
  // (Slot::after_relu) and the input quantizer is on: it then quantizes relu(x).
  bool absorbs_relu() const override;
  bool input_after_relu = false;
  // When set, called with every input, as the activation quantizer receives
  // it (after the owner's ReLU), before it is quantized (mpq importance).
  std::function<void(const torch::Tensor&)> input_probe;
  const std::vector<int64_t>& stride() const { return stride_; }
  const std::vector<int64_t>& padding() const { return padding_; }
  const std::vector<int64_t>& dilation() const { return dilation_; }
  int64_t groups() const { return groups_; }

  torch::Tensor weight, bias;
  LsqQuantizer quan_w_fn{nullptr}, quan_a_fn{nullptr};
  int weight_bits, act_bits;

 private:
  std::vector<int64_t> stride_, padding_, dilation_;
  int64_t groups_ = 1;
};
TORCH_MODULE(QConv2d);

// Linear with LSQ on weight and input; `sat`: the finetuning fc's SAT rescale
// (training: weight * 1 / (sqrt(out) * std(weight_q)), std detached; eval: the
// bias divided by that factor instead).
class QLinearImpl : public torch::nn::Module {
 public:
  QLinearImpl(const torch::nn::LinearImpl& src, int bits, bool sat);
  torch::Tensor forward(torch::Tensor x);

  torch::Tensor weight, bias;
  LsqQuantizer quan_w_fn{nullptr}, quan_a_fn{nullptr};
  int bits;
  bool sat;
};
TORCH_MODULE(QLinear);

// SAT's factor for quantized fc weights `wq` [out, in]: 1 / (sqrt(out) *
// std(wq)), the std of the values given (callers detach them); infinite when
// every weight quantizes to one value (see sat_collapse).
torch::Tensor sat_factor(const torch::Tensor& wq);

// One BatchNorm per candidate bit-width ("bns.0", "bns.1", ...), each a copy
// of the float BatchNorm it replaces; `select` picks the one in use.
class SwitchableBatchNorm2dImpl : public torch::nn::Module, public models::BnReluFuser {
 public:
  SwitchableBatchNorm2dImpl(const models::BatchNormImpl& src, const std::vector<int>& bits);
  torch::Tensor forward(torch::Tensor x);
  torch::Tensor forward_relu(const torch::Tensor& x, const torch::Tensor& residual) override;
  void select(int bits);
  torch::nn::ModuleList bns;

 private:
  std::vector<int> bits_;
  std::vector<models::BatchNorm> typed_;
  int active_ = 0;
};
TORCH_MODULE(SwitchableBatchNorm2d);

// A zoo network turned into its quantized form, with handles on the layers.
struct QuantizedNet {
  models::Net net;
  std::vector<std::string> names;       // searchable layers, in order
  std::vector<QConv2d> convs;           // searchable convs
  std::vector<SwitchableBatchNorm2d> bns;  // indicator training: the BN after each searchable conv
  std::vector<int> candidates;

  // Indicator training: every searchable layer (weights, activations, BN) at `bits`.
  void set_uniform(int bits);
  // Indicator training: per-layer bits (weights and activations alike).
  void set_mixed(const std::vector<int>& bits);
};

// Indicator training (METHOD.md §3): searchable convs get one scale per
// candidate, clamped into [1e-5, 1]; the BN after each becomes switchable;
// the first conv, its BN and the fc stay in full precision.
QuantizedNet quantize_for_indicators(models::Net net, const std::vector<int>& candidates);

// Finetuning (METHOD.md §5): searchable layer `names[i]` gets weight_bits[i] and
// act_bits[i]; the first conv W8 with the image unquantized; the fc W8A8 with
// the SAT rescale. InputError when the names differ from the model's
// searchable layers (naming the first difference).
QuantizedNet quantize_for_finetune(models::Net net, const std::vector<std::string>& names,
                                   const std::vector<int>& weight_bits, const std::vector<int>& act_bits);

// Why a finetuned network's loss can turn non-finite on its own: where the
// SAT fc's quantized weights are all one value (its weight step size grew
// until every weight rounds to zero), the rescale divides by a zero std.
// Says so, with the step size and the largest weight; empty otherwise.
std::string sat_collapse(torch::nn::Module& net);

}  // namespace mpq::quant

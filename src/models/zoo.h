// The model zoo (METHOD.md §6): ResNet-18/50 with torchvision's layout and names,
// MobileNet-V1 with the original's names, CIFAR-style ResNet-20.
//
// Every conv and the fc sit in a `Slot`: a registered child held as an
// AnyModule, so the quantization library can swap a layer for its quantized
// version under the same name and parameter paths ("layer1.0.conv1.weight").
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/options/batchnorm.h>
#include <torch/nn/modules/container/any.h>
#include <torch/types.h>

namespace mpq::models {

struct ZooOptions {
  int num_classes = 1000;
  int in_channels = 3;
};

// A swappable layer: its full name, its owner, and the callable in use; for
// a conv, also the BatchNorm that follows it (swappable the same way).
struct Slot {
  std::string name;        // "layer1.0.conv1", "fc"
  torch::nn::Module* owner;
  std::string local;       // name within the owner: "conv1", "0", "fc"
  torch::nn::AnyModule* layer;
  bool is_linear = false;
  torch::nn::Module* bn_owner = nullptr;  // null for the fc
  std::string bn_local;                   // "bn1", "1", "bn"
  torch::nn::AnyModule* bn = nullptr;
  // Its input is a ReLU's output used nowhere else, which the owner leaves
  // to the layer when the layer absorbs it (see ReluAbsorber).
  bool after_relu = false;
};

// A layer that can apply the ReLU before it itself: a quantized conv whose
// unsigned input quantizer clamps at zero anyway, which spares the ReLU's
// pass over memory in both directions, with the same numbers.
struct ReluAbsorber {
  virtual ~ReluAbsorber() = default;
  virtual bool absorbs_relu() const = 0;
};

// Receives a network's forward as a sequence of operations on values, for
// exporters: what forward() computes, op by op, in forward order. Values are
// the sink's own handles. A ReLU a quantized layer absorbs is written out:
// its input quantizer's clamp at zero makes the two the same numbers.
class GraphSink {
 public:
  using Value = int;
  virtual ~GraphSink() = default;
  virtual Value layer(const Slot& s, Value x) = 0;      // the conv or linear held in `s`
  virtual Value batchnorm(const Slot& s, Value x) = 0;  // the BatchNorm after the conv in `s`
  virtual Value relu(Value x) = 0;
  virtual Value add(Value a, Value b) = 0;
  virtual Value max_pool(Value x, int kernel, int stride, int padding) = 0;
  virtual Value global_avg_pool(Value x) = 0;  // [N, C, H, W] -> [N, C]
};

// A zoo network: forward plus the slots of its conv and linear layers in
// forward order (the geometry tables' order).
class NetImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  virtual std::vector<Slot> slots() = 0;
  // Writes forward's operations on input `x` to `g` and returns the logits'
  // value; InputError for a network that cannot (the zoo's all can).
  virtual GraphSink::Value describe(GraphSink& g, GraphSink::Value x);
  // Replaces the layer in `slot` with `m`, keeping its registered name.
  void replace(const Slot& slot, torch::nn::AnyModule m);
  // Replaces the BatchNorm after the conv in `slot`, keeping its name.
  void replace_bn(const Slot& slot, torch::nn::AnyModule m);
  // Puts every 4-D parameter and buffer in the channels-last layout (NHWC in
  // memory), which oneDNN and cuDNN convolve without reordering, and makes
  // forward move the stem's output to it (a one-channel input's layout is
  // ambiguous, so the stem may not). Values and names are unchanged.
  void to_channels_last();
  bool channels_last() const { return channels_last_; }

 protected:
  // The stem's output in the network's layout.
  torch::Tensor in_layout(const torch::Tensor& t) const;

 private:
  bool channels_last_ = false;
};

using Net = std::shared_ptr<NetImpl>;

// A BatchNorm that computes relu(bn(x) + residual) itself (`residual` may
// be undefined), in fewer passes over memory where it can.
struct BnReluFuser {
  virtual ~BnReluFuser() = default;
  virtual torch::Tensor forward_relu(const torch::Tensor& x, const torch::Tensor& residual) = 0;
};

// relu(bn(x) + residual) through `bn`'s fused path where it has one.
torch::Tensor bn_relu(torch::nn::AnyModule& bn, const torch::Tensor& x,
                      const torch::Tensor& residual = torch::Tensor());

// The zoo's BatchNorm: torch's BatchNorm2d (same parameters, buffers and
// names), plus SyncBatchNorm's semantics when a reducer is installed: in
// training, the mean and variance are those of the global batch (per-channel
// sums all-reduced, with gradients flowing back through the reduction).
class BatchNormImpl : public torch::nn::Cloneable<BatchNormImpl>, public BnReluFuser {
 public:
  explicit BatchNormImpl(int64_t channels) : BatchNormImpl(torch::nn::BatchNormOptions(channels)) {}
  explicit BatchNormImpl(const torch::nn::BatchNormOptions& options);
  void reset() override;
  void reset_running_stats();
  torch::Tensor forward(const torch::Tensor& x);
  // relu(forward(x) + residual), one fused op in CPU training (models/bn_relu.h).
  torch::Tensor forward_relu(const torch::Tensor& x, const torch::Tensor& residual) override;

  torch::nn::BatchNormOptions options;
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
};
TORCH_MODULE(BatchNorm);

// Installs (or, with an empty function, removes) the in-place sum over ranks
// every BatchNorm uses in training. A no-op reducer gives the same arithmetic
// on one process, so one and several processes compute alike.
void set_batchnorm_sync(std::function<void(torch::Tensor&)> sum_in_place);
bool batchnorm_sync_enabled();

// Owns the reducer it installs: removed when the owner goes, by an exception
// too, so no BatchNorm outlives its run's group still calling into it.
class BatchNormSync {
 public:
  BatchNormSync() = default;
  BatchNormSync(BatchNormSync&& o) noexcept : installed_(o.installed_) { o.installed_ = false; }
  BatchNormSync& operator=(BatchNormSync&& o) noexcept {
    std::swap(installed_, o.installed_);
    return *this;
  }
  BatchNormSync(const BatchNormSync&) = delete;
  BatchNormSync& operator=(const BatchNormSync&) = delete;
  ~BatchNormSync() {
    if (installed_) set_batchnorm_sync({});
  }
  // Installs `sum_in_place`, or with an empty function removes the reducer.
  void install(std::function<void(torch::Tensor&)> sum_in_place) {
    installed_ = static_cast<bool>(sum_in_place);
    set_batchnorm_sync(std::move(sum_in_place));
  }

 private:
  bool installed_ = false;
};

// Names: resnet18, resnet50, mobilenetv1, resnet20. InputError listing the
// known names otherwise.
Net make_model(const std::string& name, const ZooOptions& options = {});
const std::vector<std::string>& model_names();

}  // namespace mpq::models

#include "models/zoo.h"

#include <torch/nn/functional.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <torch/autograd.h>

#include "models/bn_relu.h"
#include "mpq/common/error.h"

namespace mpq::models {

namespace nn = torch::nn;

namespace {

std::function<void(torch::Tensor&)>& bn_reducer() {
  static std::function<void(torch::Tensor&)> f;
  return f;
}

// Sum over ranks; the gradient of a sum over ranks is the sum of the ranks' gradients.
struct AllReduceSum : torch::autograd::Function<AllReduceSum> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& x) {
    torch::Tensor y = x.clone();
    bn_reducer()(y);
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list g) {
    torch::Tensor gx = g[0].clone();
    bn_reducer()(gx);
    return {gx};
  }
};

}  // namespace

void set_batchnorm_sync(std::function<void(torch::Tensor&)> sum_in_place) { bn_reducer() = std::move(sum_in_place); }
bool batchnorm_sync_enabled() { return static_cast<bool>(bn_reducer()); }

BatchNormImpl::BatchNormImpl(const torch::nn::BatchNormOptions& o) : options(o) { reset(); }

void BatchNormImpl::reset() {
  const int64_t c = options.num_features();
  weight = register_parameter("weight", torch::ones({c}));
  bias = register_parameter("bias", torch::zeros({c}));
  running_mean = register_buffer("running_mean", torch::zeros({c}));
  running_var = register_buffer("running_var", torch::ones({c}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::tensor(0, torch::kLong));
}

void BatchNormImpl::reset_running_stats() {
  torch::NoGradGuard no_grad;
  running_mean.zero_();
  running_var.fill_(1);
  num_batches_tracked.zero_();
}

namespace {

// Counts a training batch and returns the running statistics' factor, as
// torch's BatchNorm: the momentum, or the cumulative average when it is None.
double count_batch(BatchNormImpl& b) {
  torch::NoGradGuard no_grad;
  b.num_batches_tracked += 1;
  return b.options.momentum() ? *b.options.momentum() : 1.0 / b.num_batches_tracked.item<double>();
}

}  // namespace

torch::Tensor BatchNormImpl::forward(const torch::Tensor& x) {
  MPQ_CHECK(x.dim() == 4, "BatchNorm2d: expected a 4-d input, got ", x.dim(), " dimensions");
  if (!is_training() || !bn_reducer()) {
    const double factor = is_training() ? count_batch(*this) : 0.0;
    return torch::batch_norm(x, weight, bias, running_mean, running_var, is_training(), factor, options.eps(),
                             at::globalContext().userEnabledCuDNN());
  }
  const int64_t c = x.size(1);
  // Sums in double: E[x^2] - E[x]^2 cancels badly in float when |mean| >> std.
  const torch::Tensor xd = x.to(torch::kDouble);
  const torch::Tensor sums = torch::cat({xd.sum({0, 2, 3}), (xd * xd).sum({0, 2, 3}),
                                         torch::full({1}, static_cast<double>(x.numel() / c), xd.options())});
  const torch::Tensor g = AllReduceSum::apply(sums);
  // The count stays on the device: reading it here would stall a GPU's
  // stream once per BatchNorm. A constant, as it was on the host: no gradient.
  const torch::Tensor n = g.slice(0, 2 * c, 2 * c + 1).detach();
  const torch::Tensor mean_d = g.slice(0, 0, c) / n;
  const torch::Tensor mean = mean_d.to(x.scalar_type());
  const torch::Tensor var = (g.slice(0, c, 2 * c) / n - mean_d * mean_d).clamp_min(0).to(x.scalar_type());
  {
    const double m = count_batch(*this);
    torch::NoGradGuard no_grad;
    running_mean.mul_(1 - m).add_(mean.detach() * m);
    // The unbiased variance's factor m * n / max(1, n - 1) in double, then in
    // var's type: as the scalar it was when n was read to the host.
    running_var.mul_(1 - m).add_(var.detach() * (n * m / (n - 1).clamp_min(1)).to(var.scalar_type()));
  }
  const auto v = [c](const torch::Tensor& t) { return t.view({1, c, 1, 1}); };
  return (x - v(mean)) * v(torch::rsqrt(var + options.eps()) * weight) + v(bias);
}

namespace {

// relu(y + residual) in torch's ops; `residual` may be undefined.
torch::Tensor add_relu(const torch::Tensor& y, const torch::Tensor& residual) {
  return torch::relu(residual.defined() ? y + residual : y);
}

}  // namespace

torch::Tensor BatchNormImpl::forward_relu(const torch::Tensor& x, const torch::Tensor& residual) {
  if (is_training() && !bn_reducer() && bn_relu_fusable(x, residual, weight, bias))
    return bn_relu_train(x, residual, weight, bias, running_mean, running_var, count_batch(*this), options.eps());
  return add_relu(forward(x), residual);
}

torch::Tensor bn_relu(nn::AnyModule& bn, const torch::Tensor& x, const torch::Tensor& residual) {
  if (auto* f = dynamic_cast<BnReluFuser*>(bn.ptr().get())) return f->forward_relu(x, residual);
  return add_relu(bn.forward(x), residual);
}

namespace {

bool absorbs_relu(const nn::AnyModule& next) {
  const auto* a = dynamic_cast<const ReluAbsorber*>(next.ptr().get());
  return a != nullptr && a->absorbs_relu();
}

// relu(bn(x)), the ReLU left to `next` where it absorbs it.
torch::Tensor bn_relu_before(const nn::AnyModule& next, nn::AnyModule& bn, const torch::Tensor& x) {
  return absorbs_relu(next) ? bn.forward(x) : bn_relu(bn, x);
}

}  // namespace

void NetImpl::to_channels_last() {
  torch::NoGradGuard no_grad;
  for (auto& p : parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
  for (auto& b : buffers())
    if (b.dim() == 4) b.set_data(b.data().contiguous(torch::MemoryFormat::ChannelsLast));
  channels_last_ = true;
}

torch::Tensor NetImpl::in_layout(const torch::Tensor& t) const {
  return channels_last_ && t.dim() == 4 ? t.contiguous(torch::MemoryFormat::ChannelsLast) : t;
}

GraphSink::Value NetImpl::describe(GraphSink&, GraphSink::Value) {
  throw InputError("export: this network does not describe its graph (only the zoo's do)");
}

void NetImpl::replace(const Slot& slot, nn::AnyModule m) {
  slot.owner->replace_module(slot.local, m.ptr());
  *slot.layer = std::move(m);
}

void NetImpl::replace_bn(const Slot& slot, nn::AnyModule m) {
  MPQ_ASSERT(slot.bn != nullptr, "no BatchNorm after ", slot.name);
  slot.bn_owner->replace_module(slot.bn_local, m.ptr());
  *slot.bn = std::move(m);
}

namespace {

nn::AnyModule conv(int64_t in, int64_t out, int k, int stride, int pad, int64_t groups = 1) {
  return nn::AnyModule(nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).groups(groups).bias(false)));
}

// Registers an AnyModule child and returns it for storage.
nn::AnyModule reg(nn::Module& owner, const std::string& name, nn::AnyModule m) {
  owner.register_module(name, m.ptr());
  return m;
}

nn::AnyModule bn(nn::Module& owner, const std::string& name, int64_t channels) {
  return reg(owner, name, nn::AnyModule(BatchNorm(channels)));
}

// torchvision's BasicBlock (expansion 1) and Bottleneck (expansion 4, stride on conv2).
class BlockImpl : public nn::Module {
 public:
  BlockImpl(int64_t inplanes, int64_t planes, int stride, bool bottleneck) : bottleneck_(bottleneck) {
    const int64_t out = planes * (bottleneck ? 4 : 1);
    if (bottleneck) {
      conv1 = reg(*this, "conv1", conv(inplanes, planes, 1, 1, 0));
      bn1 = bn(*this, "bn1", planes);
      conv2 = reg(*this, "conv2", conv(planes, planes, 3, stride, 1));
      bn2 = bn(*this, "bn2", planes);
      conv3 = reg(*this, "conv3", conv(planes, out, 1, 1, 0));
      bn3 = bn(*this, "bn3", out);
    } else {
      conv1 = reg(*this, "conv1", conv(inplanes, planes, 3, stride, 1));
      bn1 = bn(*this, "bn1", planes);
      conv2 = reg(*this, "conv2", conv(planes, planes, 3, 1, 1));
      bn2 = bn(*this, "bn2", planes);
    }
    if (stride != 1 || inplanes != out) {
      downsample = register_module("downsample", nn::Sequential());
      ds_conv = reg(*downsample, "0", conv(inplanes, out, 1, stride, 0));
      ds_bn = bn(*downsample, "1", out);
    }
  }

  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor y = bn_relu_before(conv2, bn1, conv1.forward(x));
    if (bottleneck_) y = bn_relu_before(conv3, bn2, conv2.forward(y));
    const torch::Tensor identity = downsample ? ds_bn.forward(ds_conv.forward(x)) : x;
    return bn_relu(bottleneck_ ? bn3 : bn2, (bottleneck_ ? conv3 : conv2).forward(y), identity);
  }

  // forward's ops; `slots` holds this block's slots from `first` on, in add_slots' order.
  GraphSink::Value describe(GraphSink& g, GraphSink::Value x, const std::vector<Slot>& slots, size_t first) {
    const Slot &c1 = slots[first], &c2 = slots[first + 1];
    GraphSink::Value y = g.relu(g.batchnorm(c1, g.layer(c1, x)));
    y = g.batchnorm(c2, g.layer(c2, y));
    size_t next = first + 2;
    if (bottleneck_) {
      const Slot& c3 = slots[next++];
      y = g.batchnorm(c3, g.layer(c3, g.relu(y)));
    }
    const GraphSink::Value identity = downsample ? g.batchnorm(slots[next], g.layer(slots[next], x)) : x;
    return g.relu(g.add(y, identity));
  }
  size_t num_slots() const { return 2 + (bottleneck_ ? 1 : 0) + (downsample ? 1 : 0); }

  void add_slots(const std::string& prefix, std::vector<Slot>& out) {
    out.push_back({prefix + "conv1", this, "conv1", &conv1, false, this, "bn1", &bn1});
    out.push_back({prefix + "conv2", this, "conv2", &conv2, false, this, "bn2", &bn2, /*after_relu=*/true});
    if (bottleneck_) out.push_back({prefix + "conv3", this, "conv3", &conv3, false, this, "bn3", &bn3, true});
    if (downsample)
      out.push_back({prefix + "downsample.0", downsample.get(), "0", &ds_conv, false, downsample.get(), "1", &ds_bn});
  }

  nn::AnyModule conv1, conv2, conv3, ds_conv;
  nn::AnyModule bn1, bn2, bn3, ds_bn;
  nn::Sequential downsample{nullptr};

 private:
  bool bottleneck_;
};
TORCH_MODULE(Block);

// ResNets: torchvision's ImageNet stem, or the CIFAR 3x3 stem with 16 channels.
class ResNetImpl : public NetImpl {
 public:
  ResNetImpl(const std::vector<int>& blocks, bool bottleneck, bool cifar, const ZooOptions& o) : cifar_(cifar) {
    const int64_t stem = cifar ? 16 : 64;
    conv1 = reg(*this, "conv1", cifar ? conv(o.in_channels, stem, 3, 1, 1) : conv(o.in_channels, stem, 7, 2, 3));
    bn1 = bn(*this, "bn1", stem);
    int64_t inplanes = stem;
    for (size_t s = 0; s < blocks.size(); ++s) {
      const int64_t planes = stem << s;
      auto stage = register_module("layer" + std::to_string(s + 1), nn::Sequential());
      for (int b = 0; b < blocks[s]; ++b) {
        Block blk(inplanes, planes, (s > 0 && b == 0) ? 2 : 1, bottleneck);
        stage->push_back(blk);
        blocks_.push_back(blk);
        names_.push_back("layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".");
        inplanes = planes * (bottleneck ? 4 : 1);
      }
      stages_.push_back(stage);
    }
    fc = reg(*this, "fc", nn::AnyModule(nn::Linear(inplanes, o.num_classes)));
  }

  torch::Tensor forward(torch::Tensor x) override {
    x = bn_relu(bn1, in_layout(conv1.forward(x)));
    if (!cifar_) x = torch::max_pool2d(x, 3, 2, 1);
    for (auto& b : blocks_) x = b->forward(x);
    x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
    return fc.forward(x);
  }

  GraphSink::Value describe(GraphSink& g, GraphSink::Value x) override {
    const std::vector<Slot> s = slots();
    x = g.relu(g.batchnorm(s[0], g.layer(s[0], x)));
    if (!cifar_) x = g.max_pool(x, 3, 2, 1);
    size_t k = 1;
    for (auto& b : blocks_) {
      x = b->describe(g, x, s, k);
      k += b->num_slots();
    }
    return g.layer(s.back(), g.global_avg_pool(x));
  }

  std::vector<Slot> slots() override {
    std::vector<Slot> out{{"conv1", this, "conv1", &conv1, false, this, "bn1", &bn1}};
    for (size_t i = 0; i < blocks_.size(); ++i) blocks_[i]->add_slots(names_[i], out);
    out.push_back({"fc", this, "fc", &fc, true, nullptr, "", nullptr});
    return out;
  }

  nn::AnyModule conv1, bn1, fc;

 private:
  bool cifar_;
  std::vector<nn::Sequential> stages_;
  std::vector<Block> blocks_;
  std::vector<std::string> names_;
};

// MobileNet-V1 (Howard et al. 2017) with the names of METHOD.md §6:
// first_conv.{0 conv, 1 bn}, features.stageS.unitU.{dw_conv,pw_conv}.{conv,bn}, fc.
class ConvBnImpl : public nn::Module {
 public:
  ConvBnImpl(int64_t in, int64_t out, int k, int stride, int64_t groups) {
    c = reg(*this, "conv", conv(in, out, k, stride, k / 2, groups));
    b = bn(*this, "bn", out);
  }
  torch::Tensor forward(torch::Tensor x) {
    return next != nullptr ? bn_relu_before(*next, b, c.forward(x)) : bn_relu(b, c.forward(x));
  }
  nn::AnyModule c, b;
  const nn::AnyModule* next = nullptr;  // the next unit's conv, the only reader of this ReLU
};
TORCH_MODULE(ConvBn);

class MobileNetV1Impl : public NetImpl {
 public:
  explicit MobileNetV1Impl(const ZooOptions& o) {
    first = register_module("first_conv", nn::Sequential());
    first_conv = reg(*first, "0", conv(o.in_channels, 32, 3, 2, 1));
    first_bn = bn(*first, "1", 32);
    auto features = register_module("features", nn::Sequential());
    const std::vector<std::pair<int64_t, int>> stages = {{64, 1}, {128, 2}, {256, 2}, {512, 6}, {1024, 2}};
    int64_t c = 32;
    for (size_t s = 0; s < stages.size(); ++s) {
      auto stage = nn::Sequential();
      features->register_module("stage" + std::to_string(s + 1), stage.ptr());
      for (int u = 0; u < stages[s].second; ++u) {
        auto unit = nn::Sequential();
        stage->register_module("unit" + std::to_string(u + 1), unit.ptr());
        ConvBn dw(c, c, 3, (s > 0 && u == 0) ? 2 : 1, c), pw(c, stages[s].first, 1, 1, 1);
        unit->register_module("dw_conv", dw.ptr());
        unit->register_module("pw_conv", pw.ptr());
        const std::string p = "features.stage" + std::to_string(s + 1) + ".unit" + std::to_string(u + 1) + ".";
        units_.push_back({p + "dw_conv.conv", dw});
        units_.push_back({p + "pw_conv.conv", pw});
        c = stages[s].first;
      }
    }
    fc = reg(*this, "fc", nn::AnyModule(nn::Linear(1024, o.num_classes)));
    // No shortcuts: each ReLU but the last feeds only the next conv, which may absorb it.
    for (size_t i = 0; i + 1 < units_.size(); ++i) units_[i].second->next = &units_[i + 1].second->c;
  }

  torch::Tensor forward(torch::Tensor x) override {
    x = bn_relu_before(units_.front().second->c, first_bn, in_layout(first_conv.forward(x)));
    for (auto& [name, u] : units_) x = u->forward(x);
    x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
    return fc.forward(x);
  }

  GraphSink::Value describe(GraphSink& g, GraphSink::Value x) override {
    const std::vector<Slot> s = slots();
    for (size_t i = 0; i + 1 < s.size(); ++i) x = g.relu(g.batchnorm(s[i], g.layer(s[i], x)));
    return g.layer(s.back(), g.global_avg_pool(x));
  }

  std::vector<Slot> slots() override {
    std::vector<Slot> out{{"first_conv.0", first.get(), "0", &first_conv, false, first.get(), "1", &first_bn}};
    for (auto& [name, u] : units_)
      out.push_back({name, u.get(), "conv", &u->c, false, u.get(), "bn", &u->b, /*after_relu=*/true});
    out.push_back({"fc", this, "fc", &fc, true, nullptr, "", nullptr});
    return out;
  }

  nn::AnyModule first_conv, first_bn, fc;
  nn::Sequential first{nullptr};

 private:
  std::vector<std::pair<std::string, ConvBn>> units_;
};

}  // namespace

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = {"resnet18", "resnet50", "mobilenetv1", "resnet20"};
  return names;
}

Net make_model(const std::string& name, const ZooOptions& o) {
  MPQ_CHECK(o.num_classes > 0 && o.in_channels > 0, name, ": classes and input channels must be positive");
  Net net;
  if (name == "resnet18") net = std::make_shared<ResNetImpl>(std::vector<int>{2, 2, 2, 2}, false, false, o);
  else if (name == "resnet50") net = std::make_shared<ResNetImpl>(std::vector<int>{3, 4, 6, 3}, true, false, o);
  else if (name == "resnet20") net = std::make_shared<ResNetImpl>(std::vector<int>{3, 3, 3}, false, true, o);
  else if (name == "mobilenetv1") net = std::make_shared<MobileNetV1Impl>(o);
  if (net) return net;
  std::string known;
  for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  throw InputError("arch: unknown model '" + name + "' (known: " + known + ")");
}

}  // namespace mpq::models

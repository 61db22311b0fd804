#include "engine/export.h"

#include <cmath>
#include <cstring>
#include <map>

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "mpq/common/error.h"
#include "mpq/common/log.h"
#include "mpq/io/file_util.h"
#include "quant/qmodules.h"

namespace mpq::engine {

namespace ox = onnx_export;

namespace {

ox::Attribute ints(const char* name, std::vector<int64_t> v) {
  ox::Attribute a;
  a.kind = ox::Attribute::Kind::kInts;
  a.name = name;
  a.ints = std::move(v);
  return a;
}
ox::Attribute int1(const char* name, int64_t v) {
  ox::Attribute a;
  a.name = name;
  a.i = v;
  return a;
}
ox::Attribute float1(const char* name, float v) {
  ox::Attribute a;
  a.kind = ox::Attribute::Kind::kFloat;
  a.name = name;
  a.f = v;
  return a;
}

std::string float_bytes(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * sizeof(float));
}

std::vector<int64_t> dims_of(const torch::Tensor& t) { return {t.sizes().begin(), t.sizes().end()}; }

float scale_of(const quant::LsqQuantizerImpl& q, int bits) {
  return q.s.detach().to(torch::kCPU, torch::kFloat)[q.index_of(bits)].item<float>();
}

// Builds the graph while replaying its arithmetic on the probe batch.
class OnnxSink : public models::GraphSink {
 public:
  // `channels_last`: the network's layout, which the replay follows so that
  // its convolutions run the same kernels as the forward's.
  OnnxSink(const std::string& arch, int opset, const torch::Tensor& probe, bool channels_last)
      : opset_(opset), format_(channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous) {
    g_.name = arch;
    g_.opset = opset;
    g_.metadata.emplace_back("mpq.arch", arch);
    // The layout mpq ran the network in (the graph itself is NCHW): a check
    // that replays the graph in torch uses it to run the same kernels.
    g_.metadata.emplace_back("mpq.layout", channels_last ? "channels_last" : "nchw");
    std::vector<int64_t> in = dims_of(probe);
    in[0] = -1;
    g_.inputs.push_back({"input", ox::kFloat, in});
    values_.push_back({"input", probe});
  }

  Value layer(const models::Slot& s, Value x) override {
    auto* mod = s.layer->ptr().get();
    if (auto* c = dynamic_cast<quant::QConv2dImpl*>(mod)) return conv(s, *c, x);
    if (auto* l = dynamic_cast<quant::QLinearImpl*>(mod)) return linear(s, *l, x);
    if (dynamic_cast<torch::nn::Conv2dImpl*>(mod) || dynamic_cast<torch::nn::LinearImpl*>(mod))
      throw InputError("export: layer " + s.name +
                       " is in full precision: a full-precision model; export takes a finetuned mixed-precision one "
                       "(best.pt or last.pt of `mpq finetune`)");
    MPQ_ASSERT(false, "export: layer ", s.name, " is of an unknown type");
    return -1;
  }

  Value batchnorm(const models::Slot& s, Value x) override {
    auto* b = dynamic_cast<models::BatchNormImpl*>(s.bn->ptr().get());
    if (b == nullptr)
      throw InputError("export: the BatchNorm after " + s.name +
                       " is switchable (an indicator-training network); export takes a finetuned one");
    const std::string p = s.name.substr(0, s.name.size() - s.local.size()) + s.bn_local;  // its state-dict path
    const std::string out = p + ".out";
    for (const auto& [k, t] : {std::pair<const char*, torch::Tensor>{"weight", b->weight}, {"bias", b->bias},
                               {"running_mean", b->running_mean}, {"running_var", b->running_var}})
      add_float(p + "." + k, t);
    const torch::Tensor y = torch::batch_norm(t(x), b->weight, b->bias, b->running_mean, b->running_var, false, 0,
                                              b->options.eps(), false);
    node("BatchNormalization", p + "/BatchNormalization",
         {n(x), p + ".weight", p + ".bias", p + ".running_mean", p + ".running_var"}, {out},
         {float1("epsilon", static_cast<float>(b->options.eps()))});
    return value(out, y);
  }

  Value relu(Value x) override {
    const std::string out = "relu_" + std::to_string(++relus_);
    node("Relu", out, {n(x)}, {out});
    return value(out, torch::relu(t(x)));
  }

  Value add(Value a, Value b) override {
    const std::string out = "add_" + std::to_string(++adds_);
    node("Add", out, {n(a), n(b)}, {out});
    return value(out, t(a) + t(b));
  }

  Value max_pool(Value x, int k, int s, int p) override {
    const std::string out = "maxpool_" + std::to_string(++pools_);
    node("MaxPool", out, {n(x)}, {out}, {ints("kernel_shape", {k, k}), ints("strides", {s, s}), ints("pads", {p, p, p, p})});
    return value(out, torch::max_pool2d(t(x), k, s, p));
  }

  Value global_avg_pool(Value x) override {
    const std::string pooled = "global_pool", flat = "flatten";
    node("GlobalAveragePool", pooled, {n(x)}, {pooled});
    const torch::Tensor y = torch::adaptive_avg_pool2d(t(x), {1, 1});
    value(pooled, y);
    node("Flatten", flat, {pooled}, {flat}, {int1("axis", 1)});
    return value(flat, y.flatten(1));
  }

  // The graph with `logits` as its output.
  ox::Graph finish(Value logits) {
    const std::string old = n(logits);
    for (auto& nd : g_.nodes)
      for (auto& o : nd.outputs)
        if (o == old) o = "logits";
    for (size_t i = 0; i < g_.values.size(); ++i)
      if (g_.values[i].name == old) {
        ox::ValueInfo v = g_.values[i];
        v.name = "logits";
        g_.outputs.push_back(v);
        g_.values.erase(g_.values.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
    return std::move(g_);
  }
  torch::Tensor result(Value v) const { return t(v); }

 private:
  struct Val {
    std::string name;
    torch::Tensor t;
  };
  const std::string& n(Value v) const { return values_[static_cast<size_t>(v)].name; }
  const torch::Tensor& t(Value v) const { return values_[static_cast<size_t>(v)].t; }

  Value value(const std::string& name, torch::Tensor t, int data_type = ox::kFloat) {
    std::vector<int64_t> d = dims_of(t);
    if (!d.empty()) d[0] = -1;
    g_.values.push_back({name, data_type, d});
    values_.push_back({name, std::move(t)});
    return static_cast<Value>(values_.size() - 1);
  }
  void node(const char* op, const std::string& name, std::vector<std::string> in, std::vector<std::string> out,
            std::vector<ox::Attribute> attrs = {}) {
    g_.nodes.push_back({op, name, std::move(in), std::move(out), std::move(attrs)});
  }
  void add_float(const std::string& name, const torch::Tensor& t) {
    g_.initializers.push_back({name, ox::kFloat, dims_of(t), float_bytes(t)});
  }
  void add_scalar(const std::string& name, float v) { g_.initializers.push_back({name, ox::kFloat, {}, float_bytes(torch::tensor(v))}); }
  const std::string& zero_point(int data_type) {
    auto it = zero_points_.find(data_type);
    if (it != zero_points_.end()) return it->second;
    const std::string name = std::string("zero_point_") + ox::type_name(data_type);
    g_.initializers.push_back({name, data_type, {}, ox::pack_integers({0}, data_type)});
    return zero_points_[data_type] = name;
  }

  // The weight as DequantizeLinear(integers, scale); returns its value in float.
  torch::Tensor weight(const std::string& layer, const quant::LsqQuantizerImpl& q, const torch::Tensor& w, int bits,
                       std::string& out) {
    const int container = ox::weight_container(bits, opset_);
    if (container == 0)
      throw InputError(detail::concat("export: layer ", layer, " has ", bits, "-bit weights, which opset ", opset_,
                                      " cannot hold (", bits <= 16 ? "use --opset 21 or later" : "at most 16 bits", ")"));
    const quant::Thresholds th = quant::thresholds(bits, q.options().all_positive, q.options().symmetric);
    float s = scale_of(q, bits);
    MPQ_CHECK(std::isfinite(s) && s != 0, "export: layer ", layer, " has a weight scale of ", s,
              " (a damaged checkpoint?)");
    const torch::Tensor wf = w.detach().to(torch::kCPU, torch::kFloat).contiguous();
    // As the LSQ forward: x / s, clamped, rounded half to even.
    torch::Tensor codes = torch::round((wf / s).clamp(th.neg, th.pos)).to(torch::kInt).contiguous();
    const torch::Tensor dequantized =
        (codes.to(torch::kFloat) * s).contiguous(wf.dim() == 4 ? format_ : torch::MemoryFormat::Contiguous);
    if (s < 0) {
      // The SAT-rescaled fc trains its weight scale through zero freely (its
      // output does not depend on the scale's sign). Same values with a
      // positive scale, q * s = (-q) * |s|, where -q fits the range.
      if (codes.min().item<int>() > th.neg && -codes.max().item<int>() >= th.neg) {
        codes = -codes;
        s = -s;
      } else {
        mpq::log::warn("export: layer {} keeps its negative weight scale {} (its integers would not fit {} bits "
                       "negated); some runtimes refuse negative scales", layer, s, bits);
      }
    }
    std::vector<int32_t> v(codes.data_ptr<int32_t>(), codes.data_ptr<int32_t>() + codes.numel());
    g_.initializers.push_back({layer + ".weight_q", container, dims_of(wf), ox::pack_integers(v, container)});
    add_scalar(layer + ".weight_scale", s);
    out = layer + ".weight_dq";
    node("DequantizeLinear", layer + "/weight_dq", {layer + ".weight_q", layer + ".weight_scale"}, {out});
    g_.metadata.emplace_back("mpq.weight_bits." + layer, std::to_string(bits));
    return dequantized;
  }

  // The input as Clip + QuantizeLinear + DequantizeLinear; returns its value.
  Value activation(const std::string& layer, const quant::LsqQuantizerImpl& q, int bits, Value x) {
    MPQ_CHECK(q.options().all_positive, "export: the input quantizer of ", layer, " is signed; only unsigned ones export");
    const int container = ox::act_container(bits, opset_);
    if (container == 0)
      throw InputError(detail::concat("export: layer ", layer, " has ", bits, "-bit activations, which opset ", opset_,
                                      " cannot hold (", bits <= 16 ? "use --opset 21 or later" : "at most 16 bits", ")"));
    const float s = scale_of(q, bits);
    MPQ_CHECK(std::isfinite(s) && s > 0, "export: layer ", layer, " has an activation scale of ", s,
              " (a damaged checkpoint?)");
    const float top = static_cast<float>(std::ldexp(1.0, bits) - 1);
    add_scalar(layer + ".act_scale", s);
    torch::Tensor y = t(x);
    std::string in = n(x);
    if (bits < ox::type_bits(container)) {
      const float hi = top * s;  // in float, as the graph holds it
      add_scalar(layer + ".act_min", 0.0f);
      add_scalar(layer + ".act_max", hi);
      node("Clip", layer + "/act_clip", {in, layer + ".act_min", layer + ".act_max"}, {layer + ".act_clip"});
      y = y.clamp(0.0, hi);
      value(layer + ".act_clip", y);
      in = layer + ".act_clip";
    }
    const std::string& zp = zero_point(container);
    const float cmax = static_cast<float>(std::ldexp(1.0, ox::type_bits(container)) - 1);
    const torch::Tensor codes = torch::round(y / s).clamp(0.0, cmax);
    node("QuantizeLinear", layer + "/act_q", {in, layer + ".act_scale", zp}, {layer + ".act_q"});
    value(layer + ".act_q", codes, container);
    node("DequantizeLinear", layer + "/act_dq", {layer + ".act_q", layer + ".act_scale", zp}, {layer + ".act_dq"});
    g_.metadata.emplace_back("mpq.act_bits." + layer, std::to_string(bits));
    return value(layer + ".act_dq", codes * s);
  }

  Value conv(const models::Slot& s, quant::QConv2dImpl& c, Value x) {
    MPQ_CHECK(!c.quan_w_fn->options().clamp_scale && c.quan_w_fn->options().bits.size() == 1, "export: layer ", s.name,
              " holds every candidate's scales (an indicator-training network); export takes a finetuned one");
    Value in = x;
    if (c.quan_a_fn) in = activation(s.name, *c.quan_a_fn, c.act_bits, x);
    std::string w;
    const torch::Tensor wv = weight(s.name, *c.quan_w_fn, c.weight, c.weight_bits, w);
    std::vector<std::string> inputs{n(in), w};
    if (c.bias.defined()) {
      add_float(s.name + ".bias", c.bias);
      inputs.push_back(s.name + ".bias");
    }
    const auto& st = c.stride();
    const auto& pd = c.padding();
    const auto& dl = c.dilation();
    node("Conv", s.name + "/Conv", inputs, {s.name + ".out"},
         {ints("kernel_shape", {wv.size(2), wv.size(3)}), ints("strides", st), ints("pads", {pd[0], pd[1], pd[0], pd[1]}),
          ints("dilations", dl), int1("group", c.groups())});
    const torch::Tensor b = c.bias.defined() ? c.bias.detach().to(torch::kCPU, torch::kFloat) : torch::Tensor();
    return value(s.name + ".out", torch::conv2d(t(in), wv, b, st, pd, dl, c.groups()).contiguous(format_));
  }

  Value linear(const models::Slot& s, quant::QLinearImpl& l, Value x) {
    const Value in = activation(s.name, *l.quan_a_fn, l.bits, x);
    std::string w;
    const torch::Tensor wv = weight(s.name, *l.quan_w_fn, l.weight, l.bits, w);
    torch::Tensor bias = l.bias.defined() ? l.bias.detach().to(torch::kCPU, torch::kFloat) : torch::Tensor();
    if (l.sat && bias.defined()) {
      bias = bias / quant::sat_factor(wv);  // the SAT rescale in eval, as QLinear's
    }
    std::vector<std::string> inputs{n(in), w};
    if (bias.defined()) {
      add_float(s.name + ".bias", bias);
      inputs.push_back(s.name + ".bias");
    }
    node("Gemm", s.name + "/Gemm", inputs, {s.name + ".out"}, {int1("transB", 1)});
    return value(s.name + ".out", torch::linear(t(in), wv, bias));
  }

  ox::Graph g_;
  int opset_;
  torch::MemoryFormat format_;
  std::vector<Val> values_;
  std::map<int, std::string> zero_points_;
  int relus_ = 0, adds_ = 0, pools_ = 0;
};

}  // namespace

void write_npy(const std::string& path, const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous().cpu();
  const bool f32 = c.scalar_type() == torch::kFloat;
  MPQ_ASSERT(f32 || c.scalar_type() == torch::kLong);
  std::string shape;
  for (int64_t d : c.sizes()) shape += std::to_string(d) + ",";
  if (c.dim() > 1) shape.pop_back();
  std::string header = std::string("{'descr': '") + (f32 ? "<f4" : "<i8") + "', 'fortran_order': False, 'shape': (" +
                       shape + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // the data starts at a multiple of 64
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * c.element_size());
  io::write_file_atomic(path, out);
}


OnnxBuild build_onnx_graph(models::NetImpl& net, const std::string& arch, int opset, const torch::Tensor& probe) {
  MPQ_CHECK(opset >= ox::kMinOpset && opset <= ox::kMaxOpset, "export: --opset ", opset, " is not supported (",
            ox::kMinOpset, " to ", ox::kMaxOpset, ")");
  MPQ_ASSERT(probe.dim() == 4 && probe.scalar_type() == torch::kFloat && probe.device().is_cpu());
  torch::NoGradGuard no_grad;
  OnnxSink sink(arch, opset, probe.contiguous(), net.channels_last());
  const models::GraphSink::Value out = net.describe(sink, 0);
  OnnxBuild b;
  b.replay_logits = sink.result(out);
  b.graph = sink.finish(out);
  return b;
}

}  // namespace mpq::engine

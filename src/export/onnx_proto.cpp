// The ONNX file itself, through ONNX's protobuf classes (Debian's libonnx-dev).
#include "export/onnx_graph.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

#include "mpq/common/error.h"
#include "mpq/common/text.h"
#include "mpq/io/file_util.h"
#include "mpq/search/geometry.h"

namespace mpq::onnx_export {

namespace {

void set_type(onnx::ValueInfoProto* v, const ValueInfo& info) {
  v->set_name(info.name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(info.data_type);
  auto* shape = tt->mutable_shape();
  for (int64_t d : info.dims) {
    auto* dim = shape->add_dim();
    if (d < 0) dim->set_dim_param("batch");
    else dim->set_dim_value(d);
  }
}

}  // namespace

void write_model(const Graph& g, const std::string& path) {
  onnx::ModelProto m;
  m.set_ir_version(ir_version(g.opset));
  m.set_producer_name("mpq");
  m.set_producer_version("0.1.0");
  m.set_domain("org.mpq");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(g.opset);
  for (const auto& [k, v] : g.metadata) {
    auto* p = m.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  }
  onnx::GraphProto* graph = m.mutable_graph();
  graph->set_name(g.name);
  for (const auto& v : g.inputs) set_type(graph->add_input(), v);
  for (const auto& v : g.outputs) set_type(graph->add_output(), v);
  for (const auto& v : g.values) set_type(graph->add_value_info(), v);
  for (const auto& t : g.initializers) {
    auto* p = graph->add_initializer();
    p->set_name(t.name);
    p->set_data_type(t.data_type);
    for (int64_t d : t.dims) p->add_dims(d);
    p->set_raw_data(t.raw);
  }
  for (const auto& n : g.nodes) {
    auto* p = graph->add_node();
    p->set_op_type(n.op);
    p->set_name(n.name);
    for (const auto& i : n.inputs) p->add_input(i);
    for (const auto& o : n.outputs) p->add_output(o);
    for (const auto& a : n.attributes) {
      auto* ap = p->add_attribute();
      ap->set_name(a.name);
      switch (a.kind) {
        case Attribute::Kind::kInt:
          ap->set_type(onnx::AttributeProto::INT);
          ap->set_i(a.i);
          break;
        case Attribute::Kind::kInts:
          ap->set_type(onnx::AttributeProto::INTS);
          for (int64_t x : a.ints) ap->add_ints(x);
          break;
        case Attribute::Kind::kFloat:
          ap->set_type(onnx::AttributeProto::FLOAT);
          ap->set_f(a.f);
          break;
      }
    }
  }
  std::string bytes;
  MPQ_CHECK_T(RuntimeError, m.SerializeToString(&bytes), path, ": the ONNX model could not be serialized (over 2 GiB?)");
  io::write_file_atomic(path, bytes);
}

// ------------------------------------------------------------------ reading back

namespace {

struct Reader {
  std::string path;
  std::map<std::string, const onnx::TensorProto*> inits;
  std::map<std::string, const onnx::NodeProto*> producer;
  std::map<std::string, std::vector<int64_t>> shapes;
  std::map<std::string, std::string> meta;

  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(path + ": " + what + " (not a graph `mpq export` wrote?)");
  }
  const onnx::TensorProto& init(const std::string& name) const {
    auto it = inits.find(name);
    if (it == inits.end()) fail("'" + name + "' is not an initializer");
    return *it->second;
  }
  const onnx::NodeProto* made_by(const std::string& value, const char* op) const {
    auto it = producer.find(value);
    return it != producer.end() && it->second->op_type() == op ? it->second : nullptr;
  }
  float scalar(const std::string& name) const {
    const onnx::TensorProto& t = init(name);
    if (t.data_type() != kFloat) fail("'" + name + "' is not a float");
    if (t.raw_data().size() == 4) {
      float f;
      std::copy(t.raw_data().data(), t.raw_data().data() + 4, reinterpret_cast<char*>(&f));
      return f;
    }
    if (t.float_data_size() == 1) return t.float_data(0);
    fail("'" + name + "' is not a scalar");
  }
  int64_t attr_int(const onnx::NodeProto& n, const char* key, int64_t dflt) const {
    for (const auto& a : n.attribute())
      if (a.name() == key) return a.i();
    return dflt;
  }
  std::vector<int64_t> attr_ints(const onnx::NodeProto& n, const char* key) const {
    for (const auto& a : n.attribute())
      if (a.name() == key) return {a.ints().begin(), a.ints().end()};
    return {};
  }
  const std::vector<int64_t>& shape(const std::string& value) const {
    auto it = shapes.find(value);
    if (it == shapes.end()) fail("value '" + value + "' has no shape in value_info");
    return it->second;
  }
};

}  // namespace

GraphSummary summarize_model(const std::string& path) {
  const std::string bytes = io::read_file(path);
  onnx::ModelProto m;
  Reader r;
  r.path = path;
  if (!m.ParseFromString(bytes)) r.fail("not an ONNX protobuf");
  GraphSummary s;
  s.file_bytes = static_cast<int64_t>(bytes.size());
  s.ir_version = m.ir_version();
  for (const auto& o : m.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") s.opset = static_cast<int>(o.version());
  for (const auto& p : m.metadata_props()) r.meta[p.key()] = p.value();
  const onnx::GraphProto& g = m.graph();
  for (const auto& t : g.initializer()) r.inits[t.name()] = &t;
  for (const auto& n : g.node())
    for (const auto& o : n.output()) r.producer[o] = &n;
  const auto add_shapes = [&](const auto& list) {
    for (const auto& v : list) {
      std::vector<int64_t> dims;
      for (const auto& d : v.type().tensor_type().shape().dim()) dims.push_back(d.has_dim_value() ? d.dim_value() : -1);
      r.shapes[v.name()] = dims;
    }
  };
  add_shapes(g.input());
  add_shapes(g.output());
  add_shapes(g.value_info());

  search::ModelGeometry geo;
  std::vector<int> wbits, abits;
  for (const auto& n : g.node()) {
    if (n.op_type() != "Conv" && n.op_type() != "Gemm") continue;
    if (n.input_size() < 2) r.fail("node '" + n.name() + "' has no weight input");
    LayerSummary l;
    l.op = n.op_type();
    const std::string layer = n.name().substr(0, n.name().rfind('/'));
    l.name = layer;
    // Weights: DequantizeLinear of an integer initializer.
    const onnx::NodeProto* wdq = r.made_by(n.input(1), "DequantizeLinear");
    if (wdq == nullptr) r.fail("the weight of '" + n.name() + "' does not come from a DequantizeLinear");
    const onnx::TensorProto& wq = r.init(wdq->input(0));
    l.weight_container = wq.data_type();
    if (type_bits(l.weight_container) > 16 || l.weight_container == kFloat)
      r.fail("the weight of '" + n.name() + "' is stored as " + type_name(l.weight_container));
    int64_t count = 1;
    std::vector<int64_t> wdims(wq.dims().begin(), wq.dims().end());
    for (int64_t d : wdims) count *= d;
    l.params = count;
    l.stored_bytes = static_cast<int64_t>(wq.raw_data().size());
    auto bits_it = r.meta.find("mpq.weight_bits." + layer);
    if (bits_it == r.meta.end()) r.fail("no metadata mpq.weight_bits." + layer);
    const std::optional<long long> wb = parse_int(bits_it->second);
    if (!wb) r.fail("metadata mpq.weight_bits." + layer + " is '" + bits_it->second + "', not a bit-width");
    l.weight_bits = static_cast<int>(*wb);
    if (l.weight_bits < 2 || l.weight_bits > type_bits(l.weight_container))
      r.fail("layer " + layer + ": " + std::to_string(l.weight_bits) + "-bit weights in a " +
             type_name(l.weight_container) + " container");
    const int64_t lo = -(int64_t{1} << (l.weight_bits - 1)), hi = (int64_t{1} << (l.weight_bits - 1)) - 1;
    for (int32_t v : unpack_integers(wq.raw_data(), l.weight_container, static_cast<size_t>(count)))
      if (v < lo || v > hi)
        r.fail("layer " + layer + ": a stored weight " + std::to_string(v) + " lies outside the " +
               std::to_string(l.weight_bits) + "-bit range");
    l.packed_bytes = (count * l.weight_bits + 7) / 8;
    // The input: DequantizeLinear(QuantizeLinear([Clip](x))) or a float.
    const std::string x = n.input(0);
    if (const onnx::NodeProto* adq = r.made_by(x, "DequantizeLinear")) {
      const onnx::NodeProto* aq = r.made_by(adq->input(0), "QuantizeLinear");
      if (aq == nullptr || aq->input_size() < 3) r.fail("the input of '" + n.name() + "' is not a QuantizeLinear's");
      l.act_container = r.init(aq->input(2)).data_type();
      l.act_bits = type_bits(l.act_container);
      if (const onnx::NodeProto* clip = r.made_by(aq->input(0), "Clip")) {
        if (clip->input_size() < 3) r.fail("Clip '" + clip->name() + "' has no bounds");
        const double levels = static_cast<double>(r.scalar(clip->input(2))) / r.scalar(aq->input(1));
        l.act_bits = static_cast<int>(std::lround(std::log2(levels + 1)));
        if (std::fabs(levels - (std::ldexp(1.0, l.act_bits) - 1)) > 1e-3 * levels)
          r.fail("Clip '" + clip->name() + "' bounds the input at " + std::to_string(levels) +
                 " steps, not 2^b - 1 for any b");
      }
    }
    search::LayerGeometry lg;
    lg.name = layer;
    if (l.op == "Conv") {
      if (wdims.size() != 4) r.fail("the weight of '" + n.name() + "' is not 4-d");
      const std::vector<int64_t>& in = r.shape(x);
      const std::vector<int64_t>& out = r.shape(n.output(0));
      if (in.size() != 4 || out.size() != 4) r.fail("'" + n.name() + "' has no 4-d input and output shapes");
      const std::vector<int64_t> strides = r.attr_ints(n, "strides"), pads = r.attr_ints(n, "pads");
      lg.type = "conv";
      lg.groups = static_cast<int>(r.attr_int(n, "group", 1));
      lg.out = wdims[0];
      lg.in = wdims[1] * lg.groups;
      lg.kernel = static_cast<int>(wdims[2]);
      lg.stride = strides.empty() ? 1 : static_cast<int>(strides[0]);
      lg.padding = pads.empty() ? 0 : static_cast<int>(pads[0]);
      lg.in_h = static_cast<int>(in[2]);
      lg.in_w = static_cast<int>(in[3]);
      lg.out_h = static_cast<int>(out[2]);
      lg.out_w = static_cast<int>(out[3]);
      lg.params = count;
      lg.macs = count * lg.out_h * lg.out_w;
      lg.original_macs = search::original_conv_macs(lg);
    } else {
      if (wdims.size() != 2) r.fail("the weight of '" + n.name() + "' is not 2-d");
      lg.type = "linear";
      lg.out = wdims[0];
      lg.in = wdims[1];
      lg.params = lg.macs = lg.original_macs = count;
    }
    // Searchable: the convs with a quantized input; excepted: the first conv
    // and the fc, whose weights and inputs must be at 8 bits.
    lg.searchable = l.op == "Conv" && l.act_bits > 0;
    if (!lg.searchable && (l.weight_bits != 8 || (l.op == "Gemm" && l.act_bits != 8)))
      r.fail("layer " + layer + " is excepted from the search but not at 8 bits");
    (lg.searchable ? s.searchable : s.excepted).push_back(layer);
    if (lg.searchable) {
      wbits.push_back(l.weight_bits);
      abits.push_back(l.act_bits);
    }
    geo.layers.push_back(lg);
    s.layers.push_back(l);
  }
  if (s.layers.empty()) r.fail("no Conv or Gemm node");
  if (s.searchable.empty()) r.fail("no quantized conv");
  s.report = search::policy_report(geo, wbits, abits);
  return s;
}

}  // namespace mpq::onnx_export

// Geometry files: user-described models for `mpq search --geometry`.
#include <algorithm>
#include <set>
#include <sstream>

#include "common/yaml_util.h"
#include "mpq/common/error.h"
#include "mpq/io/file_util.h"
#include "mpq/search/geometry.h"

namespace mpq::search {

namespace {

using yaml::as_bool;
using yaml::as_int;
using yaml::as_string;
using yaml::where;

const std::vector<std::string> kLayerKeys = {"name", "type", "in", "out", "kernel", "stride", "padding", "groups",
                                             "in_hw", "out_hw", "params", "macs", "searchable"};
const std::vector<std::string> kTopKeys = {"model", "input_hw", "layers"};

// Bounds that keep every product the search forms (MACs x 32 x 32 bits,
// summed over layers) inside int64 and double's exact integers.
constexpr int64_t kMaxCount = 1'000'000'000'000'000;  // params, MACs: 1e15
constexpr int64_t kMaxChannels = 1 << 24, kMaxSide = 1 << 20, kMaxKernel = 1 << 12;

// An integer under `key` of layer `ctx` within [lo, hi], named where it is not.
int64_t ranged(const std::string& file, const YAML::Node& n, const std::string& ctx, const char* key, int64_t lo,
               int64_t hi) {
  const int64_t v = as_int(file, n, key);
  MPQ_CHECK(v >= lo && v <= hi, where(file, n), ": ", ctx, key, " must be from ", lo, " to ", hi, " (got ", v, ")");
  return v;
}

void read_hw(const std::string& file, const YAML::Node& n, const std::string& key, int& h, int& w) {
  MPQ_CHECK(n.IsSequence() && n.size() == 2, where(file, n), ": ", key, " must be a list [H, W]");
  h = static_cast<int>(ranged(file, n[0], "", key.c_str(), 1, kMaxSide));
  w = static_cast<int>(ranged(file, n[1], "", key.c_str(), 1, kMaxSide));
}

std::vector<LayerGeometry> read_layers(const std::string& file, const YAML::Node& list) {
  MPQ_CHECK(list.IsSequence() && list.size() > 0, where(file, list), ": layers must be a non-empty list");
  std::vector<LayerGeometry> layers;
  std::set<std::string> names;
  bool any_explicit = false;
  for (const auto& n : list) {
    yaml::check_keys(file, n, "layers[]", kLayerKeys);
    LayerGeometry l;
    MPQ_CHECK(n["name"], where(file, n), ": layer has no 'name'");
    l.name = as_string(file, n["name"], "name");
    MPQ_CHECK(names.insert(l.name).second, where(file, n), ": layer '", l.name, "' appears twice");
    const std::string ctx = "layer '" + l.name + "': ";
    if (n["type"]) {
      l.type = as_string(file, n["type"], "type");
      MPQ_CHECK(l.type == "conv" || l.type == "linear", where(file, n["type"]), ": ", ctx,
                "type must be conv or linear (got '", l.type, "')");
    }
    for (const char* key : {"params", "macs"}) {
      MPQ_CHECK(n[key], where(file, n), ": ", ctx, "missing '", key, "'");
      (std::string(key) == "params" ? l.params : l.macs) = ranged(file, n[key], ctx, key, 1, kMaxCount);
    }
    if (n["in"]) l.in = ranged(file, n["in"], ctx, "in", 1, kMaxChannels);
    if (n["out"]) l.out = ranged(file, n["out"], ctx, "out", 1, kMaxChannels);
    if (n["kernel"]) l.kernel = static_cast<int>(ranged(file, n["kernel"], ctx, "kernel", 1, kMaxKernel));
    if (n["stride"]) l.stride = static_cast<int>(ranged(file, n["stride"], ctx, "stride", 1, kMaxKernel));
    if (n["padding"]) l.padding = static_cast<int>(ranged(file, n["padding"], ctx, "padding", 0, kMaxKernel));
    else if (l.kernel > 0) l.padding = l.kernel / 2;  // "same" padding, as every zoo conv
    if (n["groups"]) {
      l.groups = static_cast<int>(ranged(file, n["groups"], ctx, "groups", 1, kMaxChannels));
      MPQ_CHECK((l.in == 0 || l.in % l.groups == 0) && (l.out == 0 || l.out % l.groups == 0), where(file, n["groups"]),
                ": ", ctx, "groups (", l.groups, ") must divide in (", l.in, ") and out (", l.out, ")");
    }
    if (n["in_hw"]) read_hw(file, n["in_hw"], "in_hw", l.in_h, l.in_w);
    if (n["out_hw"]) read_hw(file, n["out_hw"], "out_hw", l.out_h, l.out_w);
    if (l.type == "conv" && l.kernel > 0 && l.in_h > 0)
      MPQ_CHECK(l.in_h + 2 * l.padding >= l.kernel && l.in_w + 2 * l.padding >= l.kernel, where(file, n), ": ", ctx,
                "a ", l.kernel, "x", l.kernel, " kernel does not fit its padded ", l.in_h, "x", l.in_w, " input");
    if (n["searchable"]) {
      l.searchable = as_bool(file, n["searchable"], "searchable");
      any_explicit = true;
    }
    l.original_macs = original_conv_macs(l);
    MPQ_CHECK(l.original_macs >= 1 && l.original_macs <= kMaxCount, where(file, n), ": ", ctx,
              "its shape makes ", l.original_macs, " MACs, outside 1 to ", kMaxCount, " (check in, out, kernel, in_hw)");
    layers.push_back(std::move(l));
  }
  if (!any_explicit) {  // METHOD.md §2: every conv except the first
    bool first = true;
    for (auto& l : layers) {
      l.searchable = l.type == "conv" && !first;
      if (l.type == "conv") first = false;
    }
  }
  bool any = false;
  int64_t params = 0, macs = 0;
  for (const auto& l : layers) {
    any |= l.searchable;
    params += l.params;  // each <= 1e15: no overflow before the check below
    macs += std::max(l.macs, l.original_macs);
    MPQ_CHECK(params <= kMaxCount && macs <= kMaxCount, file, ": the layers hold more than ", kMaxCount,
              " parameters or MACs in all; no network this large can be searched exactly");
  }
  MPQ_CHECK(any, file, ": no searchable layer (mark layers with 'searchable: true')");
  return layers;
}

}  // namespace

ModelGeometry load_geometry(const std::string& path, const std::string& model) {
  return load_geometry_text(io::read_file(path), path, model);
}

ModelGeometry load_geometry_text(const std::string& text, const std::string& path, const std::string& model) {
  const YAML::Node root = yaml::load_yaml_string(text, path);
  ModelGeometry g;
  if (root.IsMap() && !root["layers"]) {
    // A mapping from model names to layer lists.
    std::vector<std::string> names;
    for (const auto& kv : root) names.push_back(kv.first.Scalar());
    MPQ_CHECK(!model.empty() || names.size() == 1, path, ": holds several models (", [&] {
      std::string s;
      for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
      return s;
    }(), "); pick one with --model");
    const std::string pick = model.empty() ? names[0] : model;
    const YAML::Node list = root[pick];
    if (!list) {
      const std::string hint = yaml::close_match(pick, names);
      throw InputError(path + ": has no model '" + pick + "'" + (hint.empty() ? "" : " (did you mean '" + hint + "'?)"));
    }
    g.model = pick;
    g.layers = read_layers(path, list);
  } else {
    yaml::check_keys(path, root, "", kTopKeys);
    MPQ_CHECK(root["layers"], path, ": no 'layers' list");
    g.model = root["model"] ? as_string(path, root["model"], "model") : (model.empty() ? "custom" : model);
    MPQ_CHECK(model.empty() || model == g.model, path, ": describes model '", g.model, "', but --model says '", model,
              "'; drop --model (the file names its model) or fix the file's 'model' key");
    if (root["input_hw"]) read_hw(path, root["input_hw"], "input_hw", g.input_h, g.input_w);
    g.layers = read_layers(path, root["layers"]);
  }
  if (g.input_h == 0 && !g.layers.empty() && g.layers[0].in_h > 0) {
    g.input_h = g.layers[0].in_h;
    g.input_w = g.layers[0].in_w;
  }
  return g;
}

std::string geometry_to_yaml(const ModelGeometry& g) {
  std::ostringstream os;
  os << "# mpq layer geometry: forward order; params = weight elements, macs per image\n";
  os << "model: " << g.model << "\n";
  if (g.input_h > 0) os << "input_hw: [" << g.input_h << ", " << g.input_w << "]\n";
  os << "layers:\n";
  for (const auto& l : g.layers) {
    os << "  - {name: \"" << l.name << "\", type: " << l.type;
    if (l.in > 0) os << ", in: " << l.in << ", out: " << l.out;
    if (l.type == "conv" && l.kernel > 0)
      os << ", kernel: " << l.kernel << ", stride: " << l.stride << ", padding: " << l.padding << ", groups: " << l.groups;
    if (l.in_h > 0) os << ", in_hw: [" << l.in_h << ", " << l.in_w << "], out_hw: [" << l.out_h << ", " << l.out_w << "]";
    os << ", params: " << l.params << ", macs: " << l.macs << ", searchable: " << (l.searchable ? "true" : "false") << "}\n";
  }
  return os.str();
}

}  // namespace mpq::search

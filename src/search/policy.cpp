// Policy files: one emitter for YAML and JSON, and the reader.
#include "mpq/search/policy.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "config/yaml_util.h"
#include "mpq/common/error.h"

namespace mpq::search {

namespace {

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string num(double v, const char* fmt = "%.10g") {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

template <typename T, typename F>
std::string list(const std::vector<T>& xs, F f) {
  std::string s = "[";
  for (size_t i = 0; i < xs.size(); ++i) s += (i ? ", " : "") + f(xs[i]);
  return s + "]";
}

// A tiny ordered document: (key, scalar-or-flow text, children). Scalars are
// written in a form valid in both YAML and JSON.
struct Node {
  std::string key, text;
  std::vector<Node> kids;
  Node& add(std::string k, std::string v) {
    kids.push_back({std::move(k), std::move(v), {}});
    return *this;
  }
  Node& map(std::string k) {
    kids.push_back({std::move(k), "", {}});
    return kids.back();
  }
};

void emit_yaml(std::ostringstream& os, const Node& n, int indent) {
  for (const auto& k : n.kids) {
    os << std::string(indent, ' ') << k.key << ":";
    if (k.kids.empty()) {
      os << " " << k.text << "\n";
    } else {
      os << "\n";
      emit_yaml(os, k, indent + 2);
    }
  }
}

void emit_json(std::ostringstream& os, const Node& n, int indent) {
  os << "{\n";
  for (size_t i = 0; i < n.kids.size(); ++i) {
    const auto& k = n.kids[i];
    os << std::string(indent + 2, ' ') << quoted(k.key) << ": ";
    if (k.kids.empty()) os << k.text;
    else emit_json(os, k, indent + 2);
    os << (i + 1 < n.kids.size() ? ",\n" : "\n");
  }
  os << std::string(indent, ' ') << "}";
}

Node document(const Policy& p) {
  MPQ_ASSERT(p.problem && p.result);
  const SearchProblem& pr = *p.problem;
  const SearchResult& r = *p.result;
  const auto& c = pr.constraints;
  Node root;
  root.add("model", quoted(p.model));
  if (!p.geometry.empty()) root.add("geometry", quoted(p.geometry));
  root.map("indicators").add("path", quoted(p.indicators_path)).add("sha256", quoted(p.indicators_sha256));
  root.add("candidates", list(pr.bits, [](int b) { return std::to_string(b); }));
  root.add("alpha", num(pr.alpha));
  root.add("outlier_rule", p.outlier_rule ? "true" : "false");
  Node& cons = root.map("constraints");
  cons.add("bops", c.bops ? "true" : "false");
  if (c.wb > 0) cons.add("wb", num(c.wb));
  if (c.ab > 0) cons.add("ab", num(c.ab));
  cons.add("cr", num(c.cr));
  cons.add("macs", pr.macs_count == MacsCount::kOriginal ? "\"original\"" : "\"exact\"");
  root.add("layers", list(pr.names, quoted));
  root.add("weight_bits", list(r.w_bits, [](int b) { return std::to_string(b); }));
  root.add("act_bits", list(r.a_bits, [](int b) { return std::to_string(b); }));
  Node& s = root.map("solver");
  s.add("method", quoted(p.method))
      .add("status", quoted(status_name(r.status)))
      .add("objective", num(r.objective, "%.8f"))
      .add("bound", num(r.bound, "%.8f"))
      .add("gap", num(r.relative_gap(), "%.3g"))
      .add("time_s", num(r.seconds, "%.6f"))
      .add("pairs", std::to_string(r.pairs))
      .add("pairs_after_pruning", std::to_string(r.pairs_kept))
      .add("pairs_within_gap", std::to_string(r.pairs_left))
      .add("search_nodes", std::to_string(r.dfs_nodes))
      .add("cbc_nodes", std::to_string(r.cbc_nodes));
  const Report& rep = p.report;
  Node& o = root.map("report");
  o.add("avg_weight_bits", num(rep.avg_weight_bits, "%.4f"))
      .add("avg_act_bits", num(rep.avg_act_bits, "%.4f"))
      .add("compression_ratio", num(rep.compression_ratio, "%.4f"))
      .add("fp_size_mb", num(rep.fp_size_mb, "%.3f"))
      .add("size_mb", num(rep.size_mb, "%.3f"))
      .add("gbitops", num(rep.gbitops, "%.3f"));
  if (rep.target_gbitops > 0) o.add("target_gbitops", num(rep.target_gbitops, "%.3f"));
  return root;
}

}  // namespace

std::string policy_yaml(const Policy& p) {
  std::ostringstream os;
  os << "# mpq search policy: weight_bits/act_bits per searchable layer, in `layers` order\n";
  emit_yaml(os, document(p), 0);
  return os.str();
}

std::string policy_json(const Policy& p) {
  std::ostringstream os;
  emit_json(os, document(p), 0);
  os << "\n";
  return os.str();
}

PolicyBits load_policy(const std::string& path) {
  const YAML::Node root = config::load_yaml_file(path);
  MPQ_CHECK(root.IsMap(), path, ": not a policy file (expected a mapping written by `mpq search`)");
  PolicyBits p;
  if (root["model"]) p.model = config::as_string(path, root["model"], "model");
  auto read_list = [&](const char* key, auto conv) {
    const YAML::Node n = root[key];
    MPQ_CHECK(n, path, ": no '", key, "' (is this a policy file from `mpq search`?)");
    MPQ_CHECK(n.IsSequence(), config::where(path, n), ": ", key, " must be a list");
    for (const auto& x : n) conv(x);
  };
  read_list("layers", [&](const YAML::Node& x) { p.layers.push_back(config::as_string(path, x, "layers[]")); });
  for (auto [key, out] : {std::pair{"weight_bits", &p.weight_bits}, {"act_bits", &p.act_bits}})
    read_list(key, [&, key = key, out = out](const YAML::Node& x) {
      const int64_t b = config::as_int(path, x, key);
      MPQ_CHECK(b >= 1 && b <= 32, config::where(path, x), ": ", key, " holds ", b, " (expected 1 to 32 bits)");
      out->push_back(static_cast<int>(b));
    });
  MPQ_CHECK(p.weight_bits.size() == p.layers.size() && p.act_bits.size() == p.layers.size(), path, ": ",
            p.layers.size(), " layers but ", p.weight_bits.size(), " weight_bits and ", p.act_bits.size(), " act_bits");
  return p;
}

}  // namespace mpq::search

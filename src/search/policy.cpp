// Policy files: one emitter for YAML and JSON, and the reader.
#include "mpq/search/policy.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "common/yaml_util.h"
#include "search/doc.h"
#include "mpq/common/error.h"
#include "mpq/io/file_util.h"

namespace mpq::search {

namespace {

std::string ints(const std::vector<int>& xs) {
  return list(xs, [](int b) { return std::to_string(b); });
}

// What every file of `mpq search` says about the problem it answers.
void problem_header(Node& root, const Policy& p) {
  const SearchProblem& pr = *p.problem;
  const auto& c = pr.constraints;
  root.add("model", quoted(p.model));
  if (!p.geometry.empty()) root.add("geometry", quoted(p.geometry));
  root.map("indicators").add("path", quoted(p.indicators_path)).add("sha256", quoted(p.indicators_sha256));
  if (pr.wbits == pr.abits) root.add("candidates", ints(pr.wbits));
  else root.map("candidates").add("weight", ints(pr.wbits)).add("act", ints(pr.abits));
  root.add("alpha", num(pr.alpha));
  root.add("outlier_rule", p.outlier_rule ? "true" : "false");
  Node& cons = root.map("constraints");
  cons.add("bops", c.bops ? "true" : "false");
  if (c.wb > 0) cons.add("wb", num(c.wb));
  if (c.ab > 0) cons.add("ab", num(c.ab));
  cons.add("cr", num(c.cr));
  cons.add("macs", pr.macs_count == MacsCount::kOriginal ? "\"original\"" : "\"exact\"");
  if (!pr.cost_table.empty()) {
    cons.add("cost_table", quoted(pr.cost_table));
    if (!pr.cost_unit.empty()) cons.add("cost_unit", quoted(pr.cost_unit));
  }
  if (c.max_cost > 0) cons.add("max_cost", num(c.max_cost));
  if (c.max_act_bytes > 0) cons.add("max_act_bytes", num(c.max_act_bytes, "%.0f"));
  if (!pr.rules.empty()) {
    std::vector<std::string> rules;
    for (const auto& r : pr.rules) rules.push_back(r.text);
    cons.add("rules", list(rules, quoted));
  }
  root.add("layers", list(pr.names, quoted));
}

void report_node(Node& o, const Report& rep) {
  o.add("avg_weight_bits", num(rep.avg_weight_bits, "%.4f"))
      .add("avg_act_bits", num(rep.avg_act_bits, "%.4f"))
      .add("compression_ratio", num(rep.compression_ratio, "%.4f"))
      .add("fp_size_mb", num(rep.fp_size_mb, "%.3f"))
      .add("size_mb", num(rep.size_mb, "%.3f"))
      .add("gbitops", num(rep.gbitops, "%.3f"));
  if (rep.target_gbitops > 0) o.add("target_gbitops", num(rep.target_gbitops, "%.3f"));
  if (rep.cost >= 0) o.add("cost", num(rep.cost, "%.8g"));
  if (rep.peak_act_bytes >= 0)
    o.add("peak_act_bytes", std::to_string(rep.peak_act_bytes)).add("peak_act_layer", quoted(rep.peak_act_layer));
}

Node document(const Policy& p) {
  MPQ_ASSERT(p.problem && p.result);
  const SearchResult& r = *p.result;
  Node root;
  problem_header(root, p);
  root.add("weight_bits", ints(r.w_bits));
  root.add("act_bits", ints(r.a_bits));
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
  report_node(root.map("report"), p.report);
  return root;
}

// One point of a sweep as a flow mapping.
std::string point_text(const SweepPoint& pt, bool with_budget) {
  Node n;
  if (with_budget) n.add("budget", num(pt.budget, "%.6g"));
  if (with_budget) n.add("status", quoted(status_name(pt.result.status)));
  const bool solved = has_solution(pt.result.status);
  if (solved) {
    n.add("objective", num(pt.result.objective, "%.8f")).add("bound", num(pt.result.bound, "%.8f"));
    if (with_budget) n.add("exact_from", num(pt.used, "%.6g"));
    Node rep;
    report_node(rep, pt.report);
    for (const auto& k : rep.kids) n.kids.push_back(k);
    n.add("weight_bits", ints(pt.result.w_bits)).add("act_bits", ints(pt.result.a_bits));
  } else {
    n.add("message", quoted(pt.result.message));
    for (const auto& [flag, value] : pt.result.reachable) n.add("reachable_" + flag.substr(2), num(value, "%.6g"));
  }
  if (!pt.label.empty()) n.add("label", quoted(pt.label));
  if (with_budget) n.add("time_ms", num(pt.result.seconds * 1e3, "%.3f"));
  return flow(n);
}

Node sweep_document(const Policy& header, const Sweep& sw) {
  Node root;
  problem_header(root, header);
  Node& s = root.map("sweep");
  s.add("resource", quoted(sw.resource))
      .add("unit", quoted(sw.resource == "bops" ? "average W x A bits" : "compression ratio"))
      .add("from", num(sw.from))
      .add("to", num(sw.to))
      .add("points", std::to_string(sw.points.size()))
      .add("optimal", std::to_string(sw.count(Status::kOptimal)))
      .add("infeasible", std::to_string(sw.count(Status::kInfeasible)))
      .add("time_s", num(sw.seconds, "%.6f"));
  if (sw.chosen) root.seq("chosen", {point_text(*sw.chosen, true)});
  std::vector<std::string> pts, uni;
  for (const auto& pt : sw.points) pts.push_back(point_text(pt, true));
  for (const auto& pt : sw.uniform) uni.push_back(point_text(pt, false));
  root.seq("points", pts);
  if (!uni.empty()) root.seq("uniform", uni);
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

std::string sweep_yaml(const Policy& header, const Sweep& sw) {
  std::ostringstream os;
  os << "# mpq search --sweep: one exact search per budget; each point's optimum holds for every budget from\n"
        "# exact_from to budget\n";
  emit_yaml(os, sweep_document(header, sw), 0);
  return os.str();
}

std::string sweep_json(const Policy& header, const Sweep& sw) {
  std::ostringstream os;
  emit_json(os, sweep_document(header, sw), 0);
  os << "\n";
  return os.str();
}

PolicyBits load_policy(const std::string& path) { return load_policy_text(io::read_file(path), path); }

PolicyBits load_policy_text(const std::string& text, const std::string& path) {
  const YAML::Node root = yaml::load_yaml_string(text, path);
  MPQ_CHECK(root.IsMap(), path, ": not a policy file (expected a mapping written by `mpq search`)");
  MPQ_CHECK(!root["sweep"], path, ": a sweep of many policies, not one; run `mpq search` at the budget you chose "
            "(a point's `budget`) for its policy file");
  PolicyBits p;
  if (root["model"]) p.model = yaml::as_string(path, root["model"], "model");
  auto read_list = [&](const char* key, auto conv) {
    const YAML::Node n = root[key];
    MPQ_CHECK(n, path, ": no '", key, "' (is this a policy file from `mpq search`?)");
    MPQ_CHECK(n.IsSequence(), yaml::where(path, n), ": ", key, " must be a list");
    for (const auto& x : n) conv(x);
  };
  read_list("layers", [&](const YAML::Node& x) { p.layers.push_back(yaml::as_string(path, x, "layers[]")); });
  for (auto [key, out] : {std::pair{"weight_bits", &p.weight_bits}, {"act_bits", &p.act_bits}})
    read_list(key, [&, key = key, out = out](const YAML::Node& x) {
      const int64_t b = yaml::as_int(path, x, key);
      MPQ_CHECK(b >= 1 && b <= 32, yaml::where(path, x), ": ", key, " holds ", b, " (expected 1 to 32 bits)");
      out->push_back(static_cast<int>(b));
    });
  MPQ_CHECK(p.weight_bits.size() == p.layers.size() && p.act_bits.size() == p.layers.size(), path, ": ",
            p.layers.size(), " layers but ", p.weight_bits.size(), " weight_bits and ", p.act_bits.size(), " act_bits");
  return p;
}

}  // namespace mpq::search

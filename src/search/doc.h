// A tiny ordered document emitted as YAML or JSON, for the policy and sweep
// files (private to the search component).
#pragma once

#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace mpq::search {

inline std::string quoted(const std::string& s) {
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

inline std::string num(double v, const char* fmt = "%.10g") {
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
// A node with `items` is a sequence of flow texts (one per line).
struct Node {
  std::string key, text;
  std::vector<Node> kids;
  std::vector<std::string> items;
  Node& seq(std::string k, std::vector<std::string> xs) {
    kids.push_back({std::move(k), "", {}, std::move(xs)});
    return *this;
  }
  Node& add(std::string k, std::string v) {
    kids.push_back({std::move(k), std::move(v), {}, {}});
    return *this;
  }
  Node& map(std::string k) {
    kids.push_back({std::move(k), "", {}, {}});
    return kids.back();
  }
};

inline void emit_yaml(std::ostringstream& os, const Node& n, int indent) {
  for (const auto& k : n.kids) {
    os << std::string(indent, ' ') << k.key << ":";
    if (!k.items.empty()) {
      os << "\n";
      for (const auto& x : k.items) os << std::string(indent + 2, ' ') << "- " << x << "\n";
    } else if (k.kids.empty()) {
      os << " " << k.text << "\n";
    } else {
      os << "\n";
      emit_yaml(os, k, indent + 2);
    }
  }
}

inline void emit_json(std::ostringstream& os, const Node& n, int indent) {
  os << "{\n";
  for (size_t i = 0; i < n.kids.size(); ++i) {
    const auto& k = n.kids[i];
    os << std::string(indent + 2, ' ') << quoted(k.key) << ": ";
    if (!k.items.empty()) {
      os << "[\n";
      for (size_t j = 0; j < k.items.size(); ++j)
        os << std::string(indent + 4, ' ') << k.items[j] << (j + 1 < k.items.size() ? ",\n" : "\n");
      os << std::string(indent + 2, ' ') << "]";
    } else if (k.kids.empty()) os << k.text;
    else emit_json(os, k, indent + 2);
    os << (i + 1 < n.kids.size() ? ",\n" : "\n");
  }
  os << std::string(indent, ' ') << "}";
}

// {"k": v, ...} of a node's scalar children: valid in YAML and JSON alike.
inline std::string flow(const Node& n) {
  std::string s = "{";
  for (size_t i = 0; i < n.kids.size(); ++i) s += (i ? ", " : "") + quoted(n.kids[i].key) + ": " + n.kids[i].text;
  return s + "}";
}

}  // namespace mpq::search

#include "common/yaml_util.h"

#include <algorithm>
#include <map>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <yaml-cpp/depthguard.h>

#include "mpq/common/error.h"

namespace mpq::yaml {

namespace {
std::string mark_str(const std::string& file, const YAML::Mark& m) {
  if (m.line < 0) return file;
  return file + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}
}  // namespace

YAML::Node load_yaml_string(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {
    throw InputError(mark_str(source, e.mark) + ": not valid YAML: nested too deeply (the parser stops at " + std::to_string(e.depth()) +
                     " levels); no config or geometry file needs that");
  } catch (const YAML::Exception& e) {
    throw InputError(mark_str(source, e.mark) + ": not valid YAML: " + e.msg);
  }
}

std::string where(const std::string& file, const YAML::Node& node) { return mark_str(file, node.Mark()); }

std::string close_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    // Levenshtein distance, two rows.
    std::vector<size_t> prev(c.size() + 1), cur(c.size() + 1);
    for (size_t j = 0; j <= c.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= word.size(); ++i) {
      cur[0] = i;
      for (size_t j = 1; j <= c.size(); ++j)
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (word[i - 1] == c[j - 1] ? 0 : 1)});
      std::swap(prev, cur);
    }
    if (prev[c.size()] < best_d) {
      best_d = prev[c.size()];
      best = c;
    }
  }
  return best;
}

void check_keys(const std::string& file, const YAML::Node& map, const std::string& path,
                const std::vector<std::string>& known) {
  MPQ_CHECK(map.IsMap(), where(file, map), ": ", path.empty() ? "the document" : path, " must be a mapping");
  std::map<std::string, YAML::Node> seen;  // yaml-cpp keeps the first of duplicate keys silently
  for (const auto& kv : map) {
    const std::string key = kv.first.Scalar();
    if (auto it = seen.find(key); it != seen.end())
      throw InputError(where(file, kv.first) + ": duplicate key '" + (path.empty() ? "" : path + ".") + key +
                       "' (first at " + where(file, it->second) + ")");
    seen.emplace(key, kv.first);
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    const std::string hint = close_match(key, known);
    throw InputError(where(file, kv.first) + ": unknown key '" + (path.empty() ? "" : path + ".") + key + "'" +
                     (hint.empty() ? "" : " (did you mean '" + hint + "'?)"));
  }
}

namespace {
[[noreturn]] void bad(const std::string& file, const YAML::Node& n, const std::string& key, const char* what) {
  throw InputError(where(file, n) + ": " + key + " must be " + what + " (got '" + (n.IsScalar() ? n.Scalar() : std::string(n.IsSequence() ? "a list" : n.IsMap() ? "a mapping" : "nothing")) + "')");
}
}  // namespace

double as_double(const std::string& file, const YAML::Node& n, const std::string& key) {
  if (!n.IsScalar()) bad(file, n, key, "a number");
  const std::string& s = n.Scalar();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v)) bad(file, n, key, "a finite number");
  return v;
}

int64_t as_int(const std::string& file, const YAML::Node& n, const std::string& key) {
  if (!n.IsScalar()) bad(file, n, key, "an integer");
  const std::string& s = n.Scalar();
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE) bad(file, n, key, "an integer");
  return v;
}

bool as_bool(const std::string& file, const YAML::Node& n, const std::string& key) {
  if (!n.IsScalar()) bad(file, n, key, "true or false");
  const std::string& s = n.Scalar();
  if (s == "true" || s == "True" || s == "yes") return true;
  if (s == "false" || s == "False" || s == "no") return false;
  bad(file, n, key, "true or false");
}

std::string as_string(const std::string& file, const YAML::Node& n, const std::string& key) {
  if (!n.IsScalar()) bad(file, n, key, "a string");
  return n.Scalar();
}

}  // namespace mpq::yaml

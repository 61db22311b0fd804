// What the search takes beyond the paper: per-layer rules (pins, bounds,
// W = A, ties), activation sizes for the activation memory budget, and cost
// tables.
#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <tuple>

#include "common/yaml_util.h"
#include "mpq/common/error.h"
#include "mpq/common/text.h"
#include "mpq/io/file_util.h"
#include "mpq/search/search.h"

namespace mpq::search {

namespace {

bool is_pattern(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

// The searchable layers a rule's name or pattern selects; InputError when none.
std::vector<size_t> select(const SearchProblem& p, const LayerRule& rule, const std::string& name) {
  std::vector<size_t> out;
  for (size_t l = 0; l < p.num_layers(); ++l)
    if (is_pattern(name) ? fnmatch(name.c_str(), p.names[l].c_str(), 0) == 0 : p.names[l] == name) out.push_back(l);
  if (out.empty()) {
    const std::string hint = is_pattern(name) ? "" : yaml::close_match(name, p.names);
    throw InputError(rule.text + ": " + (is_pattern(name) ? "the pattern '" + name + "' matches" : "'" + name + "' is") +
                     " no searchable layer" + (hint.empty() ? "" : " (did you mean '" + hint + "'?)") +
                     "; the policy file's `layers` lists them");
  }
  return out;
}

int parse_bits(const std::string& flag, const std::string& value, const std::string& s, bool star_ok) {
  if (star_ok && s == "*") return 0;
  const auto b = parse_int(s);
  MPQ_CHECK(b && *b >= 1 && *b <= 32, flag, " ", value, ": '", s, "' is not a bit-width (1 to 32",
            star_ok ? ", or * for no bound" : "", ")");
  return static_cast<int>(*b);
}

std::string list_str(const std::vector<int>& bits) {
  std::string s;
  for (int b : bits) s += (s.empty() ? "" : " ") + std::to_string(b);
  return s;
}

}  // namespace

LayerRule parse_layer_rule(LayerRule::Kind kind, const std::string& flag, const std::string& value) {
  LayerRule r;
  r.kind = kind;
  r.text = flag + " " + value;
  MPQ_CHECK(!value.empty(), flag, ": needs a value");
  if (kind == LayerRule::Kind::kTie) {
    std::stringstream ss(value);
    std::string name;
    while (std::getline(ss, name, ',')) {
      MPQ_CHECK(!name.empty(), r.text, ": an empty layer name (give names or patterns separated by commas)");
      r.layers.push_back(name);
    }
    return r;
  }
  if (kind == LayerRule::Kind::kSameWA) {
    r.layers.push_back(value);
    return r;
  }
  const size_t eq = value.rfind('=');
  const size_t slash = value.rfind('/');
  MPQ_CHECK(eq != std::string::npos && eq > 0 && slash != std::string::npos && slash > eq, r.text,
            ": expected LAYER=W/A (e.g. ", flag, " layer4.2.conv3=8/8)");
  r.layers.push_back(value.substr(0, eq));
  const bool star = kind != LayerRule::Kind::kPin;
  r.w = parse_bits(flag, value, value.substr(eq + 1, slash - eq - 1), star);
  r.a = parse_bits(flag, value, value.substr(slash + 1), star);
  MPQ_CHECK(r.w != 0 || r.a != 0, r.text, ": bounds neither side; drop the rule or give W or A");
  return r;
}

void apply_layer_rules(SearchProblem& p, const std::vector<LayerRule>& rules) {
  const size_t KW = p.wbits.size(), KA = p.abits.size();
  if (p.allowed.empty()) p.allowed.assign(p.num_layers(), std::vector<char>(KW * KA, 1));
  std::vector<std::vector<std::string>> touched(p.num_layers());  // the rules on each layer, for messages
  std::vector<int> parent(p.num_layers());
  std::iota(parent.begin(), parent.end(), 0);
  std::function<int(int)> find = [&](int x) { return parent[x] == x ? x : parent[x] = find(parent[x]); };
  for (const LayerRule& r : rules) {
    using K = LayerRule::Kind;
    auto in = [&](const std::vector<int>& list, int b) { return std::find(list.begin(), list.end(), b) != list.end(); };
    std::vector<size_t> layers;
    for (const auto& name : r.layers) {
      const auto sel = select(p, r, name);
      layers.insert(layers.end(), sel.begin(), sel.end());
    }
    if (r.kind == K::kPin) {
      MPQ_CHECK(in(p.wbits, r.w), r.text, ": ", r.w, " bits is not a weight candidate (", list_str(p.wbits),
                "); add it to --b or --wbits");
      MPQ_CHECK(in(p.abits, r.a), r.text, ": ", r.a, " bits is not an activation candidate (", list_str(p.abits),
                "); add it to --b or --abits");
    }
    if (r.kind == K::kTie) {
      MPQ_CHECK(layers.size() >= 2, r.text, ": ties one layer to itself; name two or more layers");
      for (size_t l : layers) parent[find(static_cast<int>(l))] = find(static_cast<int>(layers[0]));
    }
    for (size_t l : layers) {
      touched[l].push_back(r.text);
      if (r.kind == K::kTie) continue;
      for (size_t i = 0; i < KW; ++i)
        for (size_t j = 0; j < KA; ++j) {
          const int w = p.wbits[i], a = p.abits[j];
          bool ok = true;
          switch (r.kind) {
            case K::kPin: ok = w == r.w && a == r.a; break;
            case K::kMin: ok = (r.w == 0 || w >= r.w) && (r.a == 0 || a >= r.a); break;
            case K::kMax: ok = (r.w == 0 || w <= r.w) && (r.a == 0 || a <= r.a); break;
            case K::kSameWA: ok = w == a; break;
            case K::kTie: break;
          }
          if (!ok) p.allowed[l][i * KA + j] = 0;
        }
    }
  }
  auto join = [](const std::vector<std::string>& xs) {
    std::string s;
    for (const auto& x : xs) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  for (size_t l = 0; l < p.num_layers(); ++l) {
    const auto& a = p.allowed[l];
    MPQ_CHECK(std::find(a.begin(), a.end(), 1) != a.end(), "search: the rules leave layer '", p.names[l],
              "' no (weight, act) pair among the candidates (", join(touched[l]), "); they contradict each other");
  }
  bool any_tie = false;
  for (size_t l = 0; l < p.num_layers(); ++l) any_tie |= find(static_cast<int>(l)) != static_cast<int>(l);
  if (any_tie) {
    p.tie.resize(p.num_layers());
    std::map<int, std::vector<size_t>> groups;
    for (size_t l = 0; l < p.num_layers(); ++l) groups[p.tie[l] = find(static_cast<int>(l))].push_back(l);
    for (const auto& [g, members] : groups) {
      if (members.size() < 2) continue;
      bool common = false;
      for (size_t k = 0; k < KW * KA && !common; ++k) {
        bool all = true;
        for (size_t l : members) all &= p.allowed[l][k] != 0;
        common = all;
      }
      std::set<std::string> why;
      for (size_t l : members) why.insert(touched[l].begin(), touched[l].end());
      MPQ_CHECK(common, "search: the tied layers '", p.names[members[0]], "' and '", p.names[members[1]],
                "' have no (weight, act) pair in common under the rules (",
                join(std::vector<std::string>(why.begin(), why.end())), "); they contradict each other");
    }
  }
  p.rules.insert(p.rules.end(), rules.begin(), rules.end());
}

int64_t SearchProblem::act_bytes(size_t l, int a_bits) const {
  MPQ_ASSERT(l < act_elems.size(), "activation sizes not set");
  return (act_elems[l] * a_bits + 7) / 8;
}

void apply_activation_sizes(SearchProblem& p, const ModelGeometry& g) {
  auto elems = [&](const LayerGeometry& l) -> int64_t {
    if (l.type == "linear") {
      MPQ_CHECK(l.in > 0, "--max-act-mem: layer '", l.name, "' of ", g.model,
                " does not give its input features ('in'); add it to the geometry file");
      return l.in;
    }
    MPQ_CHECK(l.in > 0 && l.in_h > 0 && l.in_w > 0, "--max-act-mem: layer '", l.name, "' of ", g.model,
              " does not give its input shape ('in' and 'in_hw'); add them to the geometry file");
    return l.in * l.in_h * l.in_w;
  };
  p.act_elems.clear();
  p.excepted_act.clear();
  for (const LayerGeometry& l : g.layers) {
    if (l.searchable) p.act_elems.push_back(elems(l));
    else p.excepted_act.emplace_back(l.name, elems(l));
  }
  MPQ_ASSERT(p.act_elems.size() == p.num_layers());
}

double SearchProblem::cost_budget() const { return constraints.max_cost - excepted_cost; }

CostTable load_cost_table(const std::string& path) {
  const std::string text = io::read_file(path);
  CostTable t;
  t.path = path;
  std::map<std::string, size_t> index;
  std::map<std::tuple<std::string, int, int>, int> seen;  // -> line
  std::stringstream in(text);
  std::string line;
  int lineno = 0;
  bool header = false, has_unit = false;
  int unit_line = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string cell;
    while (std::getline(ls, cell, ',')) {
      const size_t a = cell.find_first_not_of(" \t"), b = cell.find_last_not_of(" \t");
      f.push_back(a == std::string::npos ? "" : cell.substr(a, b - a + 1));
    }
    if (!line.empty() && line.back() == ',') f.push_back("");
    const std::string at = path + ":" + std::to_string(lineno);
    if (!header) {
      const bool ok4 = f.size() == 4 && f[0] == "layer" && f[1] == "w_bits" && f[2] == "a_bits" && f[3] == "cost";
      const bool ok5 = f.size() == 5 && f[0] == "layer" && f[1] == "w_bits" && f[2] == "a_bits" && f[3] == "cost" &&
                       f[4] == "unit";
      MPQ_CHECK(ok4 || ok5, at, ": the first line must be the header 'layer,w_bits,a_bits,cost' (or with ',unit'); "
                "see docs/FORMATS.md");
      header = true;
      has_unit = ok5;
      continue;
    }
    MPQ_CHECK(f.size() == (has_unit ? 5u : 4u), at, ": ", f.size(), " fields where the header has ", has_unit ? 5 : 4);
    MPQ_CHECK(!f[0].empty(), at, ": empty layer name");
    auto bits = [&](const std::string& s, const char* what) {
      const auto b = parse_int(s);
      MPQ_CHECK(b && *b >= 1 && *b <= 32, at, ": ", what, " '", s, "' is not a bit-width (1 to 32)");
      return static_cast<int>(*b);
    };
    const int w = bits(f[1], "w_bits"), a = bits(f[2], "a_bits");
    const bool special = f[3] == "nan" || f[3] == "NaN" || f[3] == "inf" || f[3] == "-inf";
    const auto cost = parse_double(f[3]);
    MPQ_CHECK(cost || special, at, ": cost '", f[3], "' is not a number", has_unit ? "" : " (units go in a 'unit' column)");
    MPQ_CHECK(cost && *cost >= 0, at, ": cost ", f[3], " must be finite and not negative");
    const double c = *cost;
    if (has_unit) {
      MPQ_CHECK(!f[4].empty(), at, ": empty unit");
      if (t.unit.empty()) {
        t.unit = f[4];
        unit_line = lineno;
      }
      MPQ_CHECK(f[4] == t.unit, at, ": unit '", f[4], "' differs from '", t.unit, "' on line ", unit_line,
                "; convert the table to one unit");
    }
    const auto key = std::make_tuple(f[0], w, a);
    const auto [it, fresh] = seen.emplace(key, lineno);
    MPQ_CHECK(fresh, at, ": a second row for layer '", f[0], "' at ", w, "/", a, " bits (the first is on line ",
              it->second, ")");
    auto [li, new_layer] = index.emplace(f[0], t.layers.size());
    if (new_layer) {
      t.layers.push_back(f[0]);
      t.cost.emplace_back();
    }
    t.cost[li->second][{w, a}] = c;
  }
  MPQ_CHECK(header, path, ": empty cost table (expected the header 'layer,w_bits,a_bits,cost' and one row per layer "
            "and pair)");
  MPQ_CHECK(!t.layers.empty(), path, ": the cost table has a header but no rows");
  return t;
}

void apply_cost_table(SearchProblem& p, const ModelGeometry& g, const CostTable& t) {
  std::map<std::string, size_t> searchable;
  for (size_t l = 0; l < p.num_layers(); ++l) searchable[p.names[l]] = l;
  std::vector<std::string> all;
  for (const auto& l : g.layers) all.push_back(l.name);
  auto strip = [](std::string s) { return s.rfind("module.", 0) == 0 ? s.substr(7) : s; };
  p.cost.assign(p.num_layers(), std::vector<double>(p.num_pairs(), -1.0));
  p.excepted_cost = 0;
  std::vector<bool> listed(p.num_layers(), false);
  for (size_t k = 0; k < t.layers.size(); ++k) {
    const std::string name = strip(t.layers[k]);
    const auto it = searchable.find(name);
    if (it == searchable.end()) {
      const bool known = std::find(all.begin(), all.end(), name) != all.end();
      const std::string hint = yaml::close_match(name, all);
      MPQ_CHECK(known, t.path, ": layer '", t.layers[k], "' is not a layer of ", g.model,
                hint.empty() ? "" : " (did you mean '" + hint + "'?)");
      // An excepted layer: it runs at 8/8 bits.
      const auto e = t.cost[k].find({8, 8});
      MPQ_CHECK(e != t.cost[k].end(), t.path, ": layer '", t.layers[k],
                "' is kept at 8 bits but has no 8/8 row; add it or leave the layer out of the table");
      p.excepted_cost += e->second;
      continue;
    }
    listed[it->second] = true;
    for (size_t i = 0; i < p.wbits.size(); ++i)
      for (size_t j = 0; j < p.abits.size(); ++j) {
        const auto c = t.cost[k].find({p.wbits[i], p.abits[j]});
        MPQ_CHECK(c != t.cost[k].end(), t.path, ": no row for layer '", t.layers[k], "' at ", p.wbits[i], "/",
                  p.abits[j], " bits (every searchable layer needs a row for every candidate pair)");
        p.cost[it->second][i * p.abits.size() + j] = c->second;
      }
  }
  for (size_t l = 0; l < p.num_layers(); ++l)
    MPQ_CHECK(listed[l], t.path, ": no rows for layer '", p.names[l],
              "' (every searchable layer needs a row for every candidate pair)");
  p.cost_table = t.path;
  p.cost_unit = t.unit;
}

}  // namespace mpq::search

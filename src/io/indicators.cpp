#include "mpq/io/indicators.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>

#include "mpq/common/error.h"
#include "mpq/io/pickle.h"

namespace mpq::io {

namespace {

std::string strip_module(const std::string& name) {
  return name.rfind("module.", 0) == 0 ? name.substr(7) : name;
}

std::map<int, double> read_table(const std::string& path, const std::string& which, const std::string& layer,
                                 const pickle::Value& v) {
  MPQ_CHECK(v.kind() == pickle::Value::Kind::kDict, path, ": ", which, "['", layer, "'] must be a dict of bit-width to scale, found ",
            v.kind_name());
  std::map<int, double> table;
  for (const auto& [k, x] : v.dict_items()) {
    long long wide = 0;  // range-checked before it narrows to an int
    if (k.kind() == pickle::Value::Kind::kStr) {
      char* end = nullptr;
      errno = 0;
      wide = std::strtoll(k.as_str().c_str(), &end, 10);
      MPQ_CHECK(!k.as_str().empty() && *end == '\0' && errno == 0, path, ": ", which, "['", layer, "'] has key ",
                k.repr(40), " (expected bit-widths like '4')");
    } else {
      MPQ_CHECK(k.kind() == pickle::Value::Kind::kInt, path, ": ", which, "['", layer, "'] has key ", k.repr(40),
                " (expected bit-widths like '4')");
      wide = k.as_int();
    }
    MPQ_CHECK(wide >= 1 && wide <= 32, path, ": ", which, "['", layer, "'] has key ", k.repr(40),
              ", not a bit-width from 1 to 32");
    const int bits = static_cast<int>(wide);
    // A bool is a number to pickle (True == 1) but never a scale.
    MPQ_CHECK(x.kind() == pickle::Value::Kind::kFloat || x.kind() == pickle::Value::Kind::kInt, path, ": ", which, "['",
              layer, "']['", bits, "'] is a ", x.kind_name(), " (expected a number)");
    const double s = x.as_double();
    MPQ_CHECK(std::isfinite(s) && s > 0, path, ": ", which, "['", layer, "']['", bits, "'] = ", s,
              " (scales must be finite and positive)");
    MPQ_CHECK(table.emplace(bits, s).second, path, ": ", which, "['", layer, "'] has bit-width ", bits, " twice");
  }
  MPQ_CHECK(!table.empty(), path, ": ", which, "['", layer, "'] is empty");
  return table;
}

}  // namespace

Indicators load_indicators(const std::string& path) {
  const pickle::Value root = pickle::read_file(path);
  MPQ_CHECK(root.kind() == pickle::Value::Kind::kDict, path, ": expected a dict with 'weight', 'act' and 'layer_name', found a ",
            root.kind_name(), ": ", root.repr(60));
  const pickle::Value* names = root.find("layer_name");
  const pickle::Value* weight = root.find("weight");
  const pickle::Value* act = root.find("act");
  for (auto [v, key] : {std::pair{names, "layer_name"}, {weight, "weight"}, {act, "act"}})
    MPQ_CHECK(v != nullptr, path, ": no '", key, "' entry (is this an indicator file? `mpq extract` writes one)");
  MPQ_CHECK(names->kind() == pickle::Value::Kind::kList || names->kind() == pickle::Value::Kind::kTuple, path,
            ": 'layer_name' must be a list, found ", names->kind_name());
  MPQ_CHECK(weight->kind() == pickle::Value::Kind::kDict && act->kind() == pickle::Value::Kind::kDict, path,
            ": 'weight' and 'act' must be dicts");
  Indicators ind;
  std::set<std::string> seen;
  for (const auto& n : names->items()) {
    MPQ_CHECK(n.kind() == pickle::Value::Kind::kStr, path, ": 'layer_name' holds a ", n.kind_name(), " (expected str)");
    const std::string& raw = n.as_str();
    const std::string name = strip_module(raw);
    MPQ_CHECK(seen.insert(name).second, path, ": layer '", name, "' is listed twice in 'layer_name'");
    const pickle::Value* w = weight->find(raw);
    const pickle::Value* a = act->find(raw);
    MPQ_CHECK(w != nullptr, path, ": 'weight' has no entry for layer '", raw, "'");
    MPQ_CHECK(a != nullptr, path, ": 'act' has no entry for layer '", raw, "'");
    ind.layer_names.push_back(name);
    ind.weight.push_back(read_table(path, "weight", raw, *w));
    ind.act.push_back(read_table(path, "act", raw, *a));
  }
  MPQ_CHECK(!ind.layer_names.empty(), path, ": 'layer_name' is empty");
  return ind;
}

void save_indicators(const std::string& path, const Indicators& ind, bool module_prefix) {
  MPQ_ASSERT(ind.weight.size() == ind.layer_names.size() && ind.act.size() == ind.layer_names.size());
  auto table = [](const std::map<int, double>& t) {
    pickle::DictItems items;
    for (auto it = t.rbegin(); it != t.rend(); ++it)  // highest bits first, as the original
      items.emplace_back(pickle::Value::str(std::to_string(it->first)), pickle::Value::floating(it->second));
    return pickle::Value::dict(std::move(items));
  };
  pickle::DictItems w, a;
  pickle::List names;
  for (size_t l = 0; l < ind.layer_names.size(); ++l) {
    const std::string n = (module_prefix ? "module." : "") + ind.layer_names[l];
    w.emplace_back(pickle::Value::str(n), table(ind.weight[l]));
    a.emplace_back(pickle::Value::str(n), table(ind.act[l]));
    names.push_back(pickle::Value::str(n));
  }
  pickle::DictItems root;
  root.emplace_back(pickle::Value::str("weight"), pickle::Value::dict(std::move(w)));
  root.emplace_back(pickle::Value::str("act"), pickle::Value::dict(std::move(a)));
  root.emplace_back(pickle::Value::str("layer_name"), pickle::Value::list(std::move(names)));
  write_file_atomic(path, pickle::write(pickle::Value::dict(std::move(root))));
}

void check_indicators(const Indicators& ind, const std::vector<std::string>& layers, const std::vector<int>& wbits,
                      const std::vector<int>& abits, const std::string& source) {
  const size_t n = std::min(ind.layer_names.size(), layers.size());
  MPQ_CHECK(ind.layer_names.size() <= layers.size(), source, ": has ", ind.layer_names.size(),
            " layers but the model has ", layers.size(), " searchable layers (indicators for another model?); extra layer '",
            ind.layer_names[n], "'");
  MPQ_CHECK(ind.layer_names.size() >= layers.size(), source, ": has ", ind.layer_names.size(),
            " layers but the model has ", layers.size(), " searchable layers (indicators for another model?); missing layer '",
            layers[n], "'");
  for (size_t i = 0; i < n; ++i)
    MPQ_CHECK(ind.layer_names[i] == layers[i], source, ": searchable layer ", i, " is '", ind.layer_names[i],
              "' but the model's is '", layers[i], "' (indicators for another model?)");
  for (size_t l = 0; l < layers.size(); ++l) {
    for (int b : wbits)
      MPQ_CHECK(ind.weight[l].count(b), source, ": layer '", layers[l], "' has no weight indicator for ", b,
                " bits (pass candidates the file holds with --b or --wbits)");
    for (int b : abits)
      MPQ_CHECK(ind.act[l].count(b), source, ": layer '", layers[l], "' has no activation indicator for ", b,
                " bits (pass candidates the file holds with --b or --abits)");
  }
}

}  // namespace mpq::io

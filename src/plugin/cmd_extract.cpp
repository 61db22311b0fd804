// mpq extract (SPEC §3): the learned scales of every searchable layer's
// weight and activation quantizers, as the original's indicator pickle.
#include <map>

#include <spdlog/spdlog.h>

#include "mpq/common/error.h"
#include "mpq/io/indicators.h"
#include "plugin/commands.h"
#include "torchio/checkpoint.h"

namespace mpq::plugin {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

void run_extract(const std::vector<std::string>& args) {
  std::string ckpt, out;
  std::vector<int> bits;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "-o" && i + 1 < args.size()) {
      out = args[++i];
    } else if (args[i] == "--b") {
      while (i + 1 < args.size() && args[i + 1].rfind("-", 0) != 0) bits.push_back(std::stoi(args[++i]));
    } else {
      ckpt = args[i];
    }
  }
  MPQ_ASSERT(!ckpt.empty() && !out.empty(), "extract: the command line should have been validated");
  const torchio::Checkpoint ck = torchio::read_checkpoint(ckpt);
  // The candidates: --b, or the checkpoint's own record of them.
  if (bits.empty()) {
    const pickle::Value* b = ck.root.find("candidate_bits");
    MPQ_CHECK(b != nullptr, ckpt, ": does not record its candidate bit-widths (a checkpoint of the original code?); "
              "pass them in the order of training with --b, e.g. --b 6 5 4 3 2");
    for (const auto& x : b->items()) bits.push_back(static_cast<int>(x.as_int()));
  }
  // Searchable layers, in state-dict order: those with both quantizers.
  std::vector<std::string> layers;
  std::map<std::string, torch::Tensor> w, a;
  for (const auto& [name, t] : ck.state) {
    for (const auto& [suffix, table] : {std::pair{".quan_w_fn.s", &w}, std::pair{".quan_a_fn.s", &a}}) {
      if (!ends_with(name, suffix)) continue;
      const std::string layer = name.substr(0, name.size() - std::string(suffix).size());
      MPQ_CHECK(t.dim() == 1 && t.numel() == static_cast<int64_t>(bits.size()), ckpt, ": ", name, " holds ", t.numel(),
                " scales but ", bits.size(), " candidate bit-widths were given");
      (*table)[layer] = t.to(torch::kDouble);
      if (table == &w) layers.push_back(layer);
    }
  }
  MPQ_CHECK(!layers.empty(), ckpt, ": no quantizer scales (*.quan_w_fn.s) found; is this an indicator-training checkpoint?");
  io::Indicators ind;
  for (const auto& layer : layers) {
    MPQ_CHECK(a.count(layer), ckpt, ": layer ", layer, " has a weight quantizer but no activation quantizer");
    std::map<int, double> wt, at;
    for (size_t k = 0; k < bits.size(); ++k) {
      wt[bits[k]] = w[layer][static_cast<int64_t>(k)].item<double>();
      at[bits[k]] = a[layer][static_cast<int64_t>(k)].item<double>();
    }
    ind.layer_names.push_back(layer);
    ind.weight.push_back(std::move(wt));
    ind.act.push_back(std::move(at));
  }
  io::save_indicators(out, ind, /*module_prefix=*/true);
  spdlog::info("extract: {} layers x {} bit-widths written to {}", layers.size(), bits.size(), out);
}

}  // namespace mpq::plugin

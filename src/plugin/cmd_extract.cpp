// mpq extract (METHOD.md §3): the learned scales of every searchable layer's
// weight and activation quantizers, as the original's indicator pickle.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>


#include "mpq/common/log.h"
#include "mpq/common/error.h"
#include "mpq/io/indicators.h"
#include "mpq/search/geometry.h"
#include "plugin/commands.h"
#include "torchio/checkpoint.h"

namespace mpq::plugin {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// OUT without its .pkl: where the files beside the indicators go.
std::string stem(const std::string& out) { return ends_with(out, ".pkl") ? out.substr(0, out.size() - 4) : out; }

// For a zoo network, the geometry file `mpq search --geometry` reads, beside
// the indicators; input channels and classes come from the weights.
void write_geometry(const torchio::Checkpoint& ck, const std::vector<std::string>& layers, const std::string& out,
                    int input_size) {
  const pickle::Value* arch = ck.root.find("arch");
  const auto& zoo = search::zoo_models();
  if (arch == nullptr || arch->kind() != pickle::Value::Kind::kStr ||
      std::find(zoo.begin(), zoo.end(), arch->as_str()) == zoo.end()) {
    mpq::log::info("extract: no geometry file (the checkpoint's arch is not a zoo network); describe the network "
                 "for `mpq search --geometry` yourself (docs/FORMATS.md)");
    return;
  }
  const std::string name = arch->as_str();
  search::InputShape in;
  int side = name == "resnet20" ? 32 : 224;
  if (const pickle::Value* s = ck.root.find("input_size"); s && s->kind() == pickle::Value::Kind::kInt && s->as_int() > 0)
    side = static_cast<int>(s->as_int());  // mpq checkpoints record the size they were trained at
  in.height = in.width = input_size > 0 ? input_size : side;
  for (const auto& [k, t] : ck.state) {
    if ((k == "conv1.weight" || k == "first_conv.0.weight") && t.dim() == 4) in.channels = static_cast<int>(t.size(1));
    if (k == "fc.weight" && t.dim() == 2) in.num_classes = static_cast<int>(t.size(0));
  }
  const search::ModelGeometry g = search::zoo_geometry(name, in);
  MPQ_CHECK(g.searchable_names() == layers, "extract: the checkpoint's quantized layers are not ", name,
            "'s searchable layers");
  const std::string path = stem(out) + ".geometry.yaml";
  io::write_file_atomic(path, search::geometry_to_yaml(g));
  mpq::log::info("extract: geometry of {} at {}x{} written to {}", name, in.height, in.width, path);
}

}  // namespace

// The indicators as a table on stdout, highest bits first; '*' marks a value
// the search's outlier rule erases (smaller than at the next higher bit-width).
void print_indicator_table(const io::Indicators& ind, std::vector<int> bits) {
  std::sort(bits.rbegin(), bits.rend());
  std::string head = "| layer |";
  for (const char* kind : {"W", "A"})
    for (int b : bits) head += " " + std::string(kind) + std::to_string(b) + " |";
  std::printf("%s\n|---|", head.c_str());
  for (size_t k = 0; k < 2 * bits.size(); ++k) std::printf("---|");
  std::printf("\n");
  for (size_t l = 0; l < ind.layer_names.size(); ++l) {
    std::printf("| %s |", ind.layer_names[l].c_str());
    for (const auto* table : {&ind.weight[l], &ind.act[l]}) {
      std::vector<double> v;
      for (int b : bits) v.push_back(table->at(b));
      for (size_t k = 0; k < v.size(); ++k)
        std::printf(" %.6g%s |", v[k], k > 0 && v[k] < v[k - 1] ? "*" : "");
    }
    std::printf("\n");
  }
  MPQ_CHECK_T(RuntimeError, std::fflush(stdout) == 0 && !std::ferror(stdout), "stdout: write failed (",
              std::strerror(errno), ")");
}

void run_extract(const ExtractOptions& o) {
  const std::string& ckpt = o.checkpoint;
  const std::string& out = o.output;
  MPQ_ASSERT(!ckpt.empty() && !out.empty(), "extract: the command line should have been validated");
  // Every file written, before anything is: none may be the checkpoint.
  for (const std::string& written : {out, stem(out) + ".svg", stem(out) + ".geometry.yaml"})
    io::check_output_is_not_an_input(written == out ? "-o" : "extract's output", written, {{"the checkpoint", ckpt}});
  std::vector<int> bits = o.bits;
  const torchio::Checkpoint ck = torchio::read_checkpoint(ckpt);
  // The candidates: --b, or the checkpoint's own record of them.
  if (bits.empty()) {
    const pickle::Value* b = ck.root.find("candidate_bits");
    MPQ_CHECK(b != nullptr, ckpt, ": does not record its candidate bit-widths (a checkpoint of the original code?); "
              "pass them in the order of training with --b, e.g. --b 6 5 4 3 2");
    MPQ_CHECK(b->kind() == pickle::Value::Kind::kList || b->kind() == pickle::Value::Kind::kTuple, ckpt,
              ": 'candidate_bits' is not a list of bit-widths; pass them in the order of training with --b");
    for (const auto& x : b->items()) {
      MPQ_CHECK(x.kind() == pickle::Value::Kind::kInt && x.as_int() >= 1 && x.as_int() <= 32, ckpt,
                ": 'candidate_bits' holds something other than a bit-width from 1 to 32; pass them with --b");
      bits.push_back(static_cast<int>(x.as_int()));
    }
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
  print_indicator_table(ind, bits);  // first: a stdout that fails leaves no file written
  io::save_indicators(out, ind, /*module_prefix=*/true);
  mpq::log::info("extract: {} layers x {} bit-widths written to {}", layers.size(), bits.size(), out);
  const std::string plot = stem(out) + ".svg";
  io::write_file_atomic(plot, io::indicators_svg(ind, bits));
  mpq::log::info("extract: plot of the indicators written to {}", plot);
  write_geometry(ck, layers, out, o.input_size);
}

}  // namespace mpq::plugin

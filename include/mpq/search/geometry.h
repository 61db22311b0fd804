// Torch-free per-layer geometry of the zoo models and of user-described ones.
//
// A ModelGeometry lists every conv and linear layer in forward order with its
// shape at a given input size, its weight element count (`params`, biases
// ignored) and its multiply-accumulates (`macs` = params x output H x W for a
// conv, params for a linear). The search reads BitOPs and size from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mpq::search {

struct LayerGeometry {
  std::string name;          // module path, torchvision style: "layer1.0.conv1", "fc"
  std::string type = "conv";  // "conv" or "linear"
  int64_t in = 0, out = 0;   // channels (features for a linear); 0 when unknown
  int kernel = 0, stride = 0, padding = 0, groups = 1;  // convs only; 0 when unknown
  int in_h = 0, in_w = 0, out_h = 0, out_w = 0;  // convs only; 0 when unknown
  int64_t params = 0;        // weight elements
  int64_t macs = 0;          // multiply-accumulates per image
  // MACs as the original search script counts them for BitOPs: its hook
  // computes each output side as (H + 2p - k) / s + 1 *without* flooring and
  // truncates the product, so strided convs count a little more (ResNet-50
  // conv1: 119,067,648 against 118,013,952). The paper's reported figures
  // and policies rest on this count; equal to `macs` for stride-1 convs and
  // linears, and for layers whose shape a geometry file does not give.
  int64_t original_macs = 0;
  bool searchable = false;   // quantized at searched bits; false: excepted, 8 bits (METHOD.md §2)
};

struct ModelGeometry {
  std::string model;     // "resnet50", or the name a geometry file gives
  int input_h = 0, input_w = 0;
  std::vector<LayerGeometry> layers;  // forward order

  std::vector<const LayerGeometry*> searchable() const;
  std::vector<std::string> searchable_names() const;
  int64_t excepted_params() const;  // sum over non-searchable layers
  int64_t excepted_macs(bool original_count = false) const;
  int64_t total_params() const;
};

// Shape of the input a zoo model is described at.
struct InputShape {
  int height = 224, width = 224;
  int channels = 3;
  int num_classes = 1000;
};

// The original's BitOPs count of one layer (see LayerGeometry::original_macs);
// `macs` when the layer's shape is not known.
int64_t original_conv_macs(const LayerGeometry& l);

// Zoo names: resnet18, resnet50, mobilenetv1, resnet20 (CIFAR style).
const std::vector<std::string>& zoo_models();

// Geometry of a zoo model. Searchable layers: every conv but the first.
// Throws InputError for an unknown name (listing the known ones) or an input
// too small for the network's strides.
ModelGeometry zoo_geometry(const std::string& model, const InputShape& input = {});

// Reads a geometry file (YAML or JSON; documented in docs/FORMATS.md):
//   {model: NAME, input_hw: [H, W], layers: [{name, type, params, macs, ...}]}
// or a mapping from model names to such layer lists (as
// ../shared/golden/geometry_224.json), from which `model` picks one.
// Layers without an explicit `searchable` follow METHOD.md §2: every conv but the
// first is searchable, everything else is excepted at 8 bits.
ModelGeometry load_geometry(const std::string& path, const std::string& model = "");
// The same from a geometry file's text; `source` names it in messages.
ModelGeometry load_geometry_text(const std::string& text, const std::string& source, const std::string& model = "");

// The geometry as YAML, in the format load_geometry reads.
std::string geometry_to_yaml(const ModelGeometry& g);

}  // namespace mpq::search

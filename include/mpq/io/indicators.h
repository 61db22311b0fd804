// Importance-indicator files (METHOD.md §3): the learned LSQ scale of every
// searchable layer at every candidate bit-width, as the original's pickle
//   {'weight': {layer: {'6': s, '5': s, ...}}, 'act': {...}, 'layer_name': [...]}
// with bit-width keys as strings and layer names in searchable order, maybe
// prefixed with 'module.'.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "mpq/io/file_util.h"

namespace mpq::io {

struct Indicators;

// A plot of the indicators as an SVG document: two panels (weight,
// activation), the layers along x, log10 of the scale along y, one line per
// bit-width; red rings mark the outliers the search's rule erases (a value
// smaller than at the next higher bit-width).
std::string indicators_svg(const Indicators& ind, std::vector<int> bits);

struct Indicators {
  std::vector<std::string> layer_names;  // searchable order, 'module.' prefix removed
  // weight[l][bits] and act[l][bits]: the scale of layer l at that bit-width.
  std::vector<std::map<int, double>> weight, act;
};

// Reads and validates an indicator file: every layer of layer_name has a
// weight and an act table, bit keys are integers 1..32, values finite and
// positive. Throws InputError naming the file and what was found.
Indicators load_indicators(const std::string& path);

// Writes the original's pickle layout; `module_prefix` adds 'module.' to the
// names as the original's extractor does. Atomic (temporary file + rename).
void save_indicators(const std::string& path, const Indicators& ind, bool module_prefix = true);

// Checks the file against a model's searchable layers (same names, same
// order) and candidate bit-widths (present for every layer), naming the first
// missing or extra layer or bit-width. `source` names the file in messages.
// `wbits` must be present among the weight scales, `abits` among the activation ones.
void check_indicators(const Indicators& ind, const std::vector<std::string>& layers, const std::vector<int>& wbits,
                      const std::vector<int>& abits, const std::string& source);

}  // namespace mpq::io

// A random search instance of many layers with monotone indicators (scales
// grow as bits drop), for the search tests that need a problem CBC cannot
// prove optimal in seconds.
#pragma once

#include <map>
#include <random>
#include <string>

#include "mpq/io/indicators.h"
#include "mpq/search/geometry.h"

namespace mpq::test {

inline void make_synthetic(int layers, unsigned seed, search::ModelGeometry& g, io::Indicators& ind) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  g.model = "synthetic";
  for (int l = 0; l < layers; ++l) {
    search::LayerGeometry lg;
    lg.name = "l" + std::to_string(l);
    lg.params = 1000 + static_cast<int64_t>(u(rng) * 1e6);
    lg.macs = lg.original_macs = static_cast<int64_t>(u(rng) * 1e8) + 1;
    lg.searchable = true;
    g.layers.push_back(lg);
    ind.layer_names.push_back(lg.name);
    std::map<int, double> w, a;
    double sw = 0.01 + u(rng) * 0.05, sa = 0.01 + u(rng) * 0.05;
    for (int b = 8; b >= 2; --b, sw *= 1.2 + u(rng), sa *= 1.2 + u(rng)) {
      w[b] = sw;
      a[b] = sa;
    }
    ind.weight.push_back(w);
    ind.act.push_back(a);
  }
}

}  // namespace mpq::test

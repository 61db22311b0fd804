// Why the torch plugin did not load, in one line with what to do: the
// loader's message (dlerror) names a missing library or symbol, which says
// whether LibTorch itself, its CUDA part, a CUDA library of the toolkit's or
// one of mpq's own dependencies is missing, or whether another LibTorch than
// the one mpq was built against came first on the loader's path.
#pragma once

#include <string>

namespace mpq::cli {

struct TorchBuildInfo {
  std::string version;  // the LibTorch mpq was built against, e.g. "2.11.0"; "" unknown
  std::string libdir;   // its lib/ folder at build time; "" unknown
};

// `plugin`: the plugin's path; `dlerr`: dlerror()'s text for it.
std::string plugin_load_failure(const std::string& plugin, const std::string& dlerr, const TorchBuildInfo& build);

}  // namespace mpq::cli

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

// Why a plugin that loaded must not run, or "" where it may: `reported` is
// what the plugin says of the LibTorch it runs with ("<version>\t<library>",
// mpq_torch_libtorch_fn). Another release (major.minor) than the build's is
// refused, as LibTorch's C++ ABI is not kept between releases even where every
// symbol resolves; a patch release, or a version either side cannot tell, is
// not.
std::string libtorch_mismatch(const std::string& plugin, const std::string& reported, const TorchBuildInfo& build);

}  // namespace mpq::cli

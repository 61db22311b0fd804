#include "cli/plugin_diagnosis.h"

#include <cxxabi.h>

#include <cstdlib>
#include <initializer_list>
#include <memory>

namespace mpq::cli {

namespace {

bool starts_with_any(const std::string& s, std::initializer_list<const char*> prefixes) {
  for (const char* p : prefixes)
    if (s.rfind(p, 0) == 0) return true;
  return false;
}

std::string basename_of(const std::string& p) {
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// A C++ symbol readable, and cut where it would swamp the line.
std::string readable_symbol(const std::string& mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> d(abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status), std::free);
  std::string s = status == 0 && d ? std::string(d.get()) : mangled;
  constexpr size_t kMax = 120;
  if (s.size() > kMax) s = s.substr(0, kMax) + "...";
  return s;
}

// The release mpq was built against, or the one it supports where unknown.
std::string version_of(const TorchBuildInfo& b) { return b.version.empty() ? std::string("2.11") : b.version; }

std::string built_against(const TorchBuildInfo& b) {
  std::string s = "LibTorch " + version_of(b);
  if (!b.libdir.empty()) s += " (" + b.libdir + ")";
  return s;
}

std::string put_libdir_first(const TorchBuildInfo& b) {
  return "put the lib/ folder of " + built_against(b) + " first on LD_LIBRARY_PATH";
}

// What to do when another LibTorch than the build's is the one found.
std::string use_the_builds_or_rebuild(const TorchBuildInfo& b) {
  return put_libdir_first(b) + ", or rebuild mpq against the one you want (MPQ_LIBTORCH=<its torch folder> "
         "bash scripts/build.sh)";
}

// "2.11" of "2.11.0", "2.11.0a0+git1234" or "2.11"; "" where it does not start with two numbers.
std::string release_of(const std::string& version) {
  size_t i = 0;
  const auto digits = [&] {
    const size_t from = i;
    while (i < version.size() && version[i] >= '0' && version[i] <= '9') ++i;
    return i > from;
  };
  if (!digits() || i >= version.size() || version[i] != '.') return "";
  ++i;
  if (!digits()) return "";
  return version.substr(0, i);
}

}  // namespace

std::string plugin_load_failure(const std::string& plugin, const std::string& dlerr, const TorchBuildInfo& build) {
  const std::string head = "the torch plugin " + plugin;
  const std::string cannot_open = ": cannot open shared object file";
  const size_t at = dlerr.find(cannot_open);
  if (at != std::string::npos && basename_of(dlerr.substr(0, at)) != basename_of(plugin)) {
    const std::string lib = basename_of(dlerr.substr(0, at));
    if (starts_with_any(lib, {"libtorch_cuda", "libc10_cuda"}))
      return head + " was built against a CUDA " + built_against(build) + " and cannot find its CUDA part " + lib +
             ": the LibTorch on the loader's path is a CPU build or incomplete; " + put_libdir_first(build) +
             " (bash scripts/install_torch.sh installs it), or rebuild mpq against the CPU LibTorch";
    if (starts_with_any(lib, {"libtorch", "libc10", "libshm", "libgomp-"}))
      return head + " needs " + built_against(build) + ", which is missing (" + lib +
             " not found): reinstall it with bash scripts/install_torch.sh, or put the lib/ folder of a LibTorch " +
             version_of(build) + " on LD_LIBRARY_PATH";
    if (starts_with_any(lib, {"libcuda", "libcublas", "libcudnn", "libnccl", "libcufft", "libcurand", "libcusparse",
                              "libcusolver", "libcupti", "libcufile", "libnvJitLink", "libnvrtc", "libnvshmem",
                              "libnvToolsExt"}))
      return head + ": a CUDA library that " + built_against(build) + " needs is missing (" + lib +
             " not found): install the CUDA 13.0 toolkit with cuDNN and NCCL, or take every CUDA piece from PyPI "
             "(MPQ_TORCH_FULL=1 bash scripts/install_torch.sh), or add the folder holding it to LD_LIBRARY_PATH";
    return head + " needs " + lib + ", which is not found: install mpq's dependencies (bash scripts/install_deps.sh), "
           "or add the folder holding it to LD_LIBRARY_PATH";
  }
  const std::string undefined = "undefined symbol: ";
  if (const size_t u = dlerr.find(undefined); u != std::string::npos) {
    std::string sym = dlerr.substr(u + undefined.size());
    sym = sym.substr(0, sym.find_first_of(" \t\n,"));
    return head + " does not fit the libraries found at run time (undefined symbol " + readable_symbol(sym) +
           "): another LibTorch than the one it was built against comes first on the loader's path; " +
           use_the_builds_or_rebuild(build);
  }
  if (dlerr.find("version `GLIBCXX_") != std::string::npos || dlerr.find("version `CXXABI_") != std::string::npos ||
      dlerr.find("version `GLIBC_") != std::string::npos)
    return head + " needs a newer C or C++ runtime than the one found (" + dlerr +
           "): run mpq on the system it was built for (Debian 12 or newer), or rebuild it here";
  return head + " could not be loaded (" + dlerr + ")";
}

std::string libtorch_mismatch(const std::string& plugin, const std::string& reported, const TorchBuildInfo& build) {
  const size_t tab = reported.find('\t');
  const std::string version = reported.substr(0, tab);
  const std::string library = tab == std::string::npos ? std::string() : reported.substr(tab + 1);
  const std::string built = release_of(build.version), running = release_of(version);
  if (built.empty() || running.empty() || built == running) return "";
  return "the torch plugin " + plugin + " was built against " + built_against(build) + " but runs with LibTorch " +
         version + (library.empty() ? std::string() : " (" + library + ")") +
         ", and LibTorch's C++ interface changes from one release to the next: " + use_the_builds_or_rebuild(build);
}

}  // namespace mpq::cli

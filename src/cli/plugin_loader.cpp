// Finds and loads libmpq_torch.so, and runs one torch subcommand there.
#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/plugin_diagnosis.h"
#include "mpq/common/error.h"
#include "mpq/config/config.h"
#include "mpq/plugin/torch_plugin.h"

namespace mpq::cli {

namespace {

std::string exe_dir() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.find_last_of('/'));
}

// Candidate paths, in order: $MPQ_TORCH_PLUGIN, next to the executable, ../lib/mpq.
std::vector<std::string> candidates() {
  std::vector<std::string> c;
  if (const char* env = std::getenv(MPQ_TORCH_PLUGIN_ENV); env && *env) c.emplace_back(env);
  const std::string dir = exe_dir();
  c.push_back(dir + "/" MPQ_TORCH_PLUGIN_FILE);
  c.push_back(dir + "/../lib/mpq/" MPQ_TORCH_PLUGIN_FILE);
  return c;
}

// The LibTorch this mpq was built against (CMake passes it in).
TorchBuildInfo torch_build_info() {
  TorchBuildInfo b;
#ifdef MPQ_TORCH_BUILD_VERSION
  b.version = MPQ_TORCH_BUILD_VERSION;
#endif
#ifdef MPQ_TORCH_BUILD_LIBDIR
  b.libdir = MPQ_TORCH_BUILD_LIBDIR;
#endif
  return b;
}

}  // namespace

void run_torch_command(mpq_torch_request req) {
  const std::string command = req.command;
  void* handle = nullptr;
  std::string plugin_path;
  std::string tried, failure;  // failure: why the first plugin found did not load
  for (const auto& path : candidates()) {
    if (::access(path.c_str(), F_OK) != 0) {
      tried += (tried.empty() ? "" : ", ") + path + " (missing)";
      continue;
    }
    handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle) {
      spdlog::debug("torch plugin: loaded {}", path);
      plugin_path = path;
      break;
    }
    const std::string err = ::dlerror();
    tried += (tried.empty() ? "" : ", ") + path + " (" + err + ")";
    if (failure.empty()) failure = plugin_load_failure(path, err, torch_build_info());
  }
  MPQ_CHECK_T(RuntimeError, handle != nullptr || failure.empty(), command, ": ", failure);
  MPQ_CHECK_T(RuntimeError, handle != nullptr, command,
              ": not available in this build: the torch plugin " MPQ_TORCH_PLUGIN_FILE " could not be loaded (tried ",
              tried, "); build with -DMPQ_WITH_TORCH=ON or point " MPQ_TORCH_PLUGIN_ENV " at the plugin");
  auto abi = reinterpret_cast<mpq_torch_abi_fn>(::dlsym(handle, MPQ_TORCH_ABI_SYMBOL));
  auto run = reinterpret_cast<mpq_torch_run_fn>(::dlsym(handle, MPQ_TORCH_RUN_SYMBOL));
  MPQ_CHECK_T(RuntimeError, abi && run, command, ": the torch plugin lacks its entry points (a stale build? rebuild mpq)");
  MPQ_CHECK_T(RuntimeError, abi() == MPQ_TORCH_PLUGIN_ABI, command, ": the torch plugin speaks ABI ", abi(),
              " but mpq speaks ", MPQ_TORCH_PLUGIN_ABI, " (rebuild both from one tree)");
  auto libtorch = reinterpret_cast<mpq_torch_libtorch_fn>(::dlsym(handle, MPQ_TORCH_LIBTORCH_SYMBOL));
  MPQ_ASSERT(libtorch != nullptr, "the torch plugin speaks ABI ", MPQ_TORCH_PLUGIN_ABI, " without ",
             MPQ_TORCH_LIBTORCH_SYMBOL);
  const char* said = libtorch();
  const std::string reported = said ? said : "";
  const size_t tab = reported.find('\t');
  spdlog::debug("torch plugin: runs with LibTorch {} ({})", reported.substr(0, tab),
                tab == std::string::npos ? std::string("library unknown") : reported.substr(tab + 1));
  const std::string mismatch = libtorch_mismatch(plugin_path, reported, torch_build_info());
  MPQ_CHECK_T(RuntimeError, mismatch.empty(), command, ": ", mismatch);
  req.abi = MPQ_TORCH_PLUGIN_ABI;
  mpq_torch_response resp{};
  const int code = run(&req, &resp);
  resp.error[sizeof resp.error - 1] = '\0';
  if (code != 0) throw Error(resp.error[0] ? resp.error : command + " failed", static_cast<ExitCode>(code));
  // The plugin stays loaded until exit: libtorch does not support unloading.
}

mpq_torch_config_args config_args(const std::string& config, const std::vector<std::string>& sets,
                                  std::vector<const char*>& storage) {
  storage.clear();
  for (const auto& s : sets) storage.push_back(s.c_str());
  return {config.c_str(), static_cast<int>(storage.size()), storage.data()};
}

config::RunOptions parse_run(const std::string& config, const std::vector<std::string>& sets) {
  const config::Config c = config::load_config(config, sets);
  const char* rank = std::getenv("RANK");
  if (rank == nullptr || std::string(rank) == "0")
    for (const std::string& n : c.notices) spdlog::warn("{}: {}", c.source, n);
  return config::translate(c);
}

Command config_command(CLI::App& app, const char* name, const char* help) {
  struct Args {
    std::string config;
    std::vector<std::string> sets;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(name, help);
  sub->add_option("config", a->config, "YAML config (the original's keys)")->required()->check(CLI::ExistingFile);
  sub->add_option("--set", a->sets, "override a config key: --set lr=0.01 (repeatable)");
  const std::string command = name;
  return {sub, [a, command] {
            // Parsed here, torch-free, before any data or model is touched; the plugin takes it typed.
            const config::RunOptions run = parse_run(a->config, a->sets);
            const mpq_torch_run_options wire = config::encode(run);
            std::vector<const char*> sets;
            mpq_torch_request req{};
            req.command = command.c_str();
            req.run = &wire;
            req.config = config_args(a->config, a->sets, sets);
            run_torch_command(req);
          }};
}

}  // namespace mpq::cli

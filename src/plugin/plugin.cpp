// libmpq_torch.so: the torch subcommands behind include/mpq/plugin/torch_plugin.h.
// Nothing leaves an entry point but a return code and one line of text.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <dlfcn.h>

#include <caffe2/core/common.h>
#include <c10/util/Exception.h>
#include <c10/util/Logging.h>

#include "mpq/common/log.h"
#include "mpq/common/error.h"
#include "mpq/common/malloc_tuning.h"
#include "mpq/plugin/torch_plugin.h"
#include "engine/torch_error.h"
#include "plugin/commands.h"

namespace {

int fail(mpq_torch_response* r, int code, const std::string& msg) {
  r->exit_code = code;
  std::snprintf(r->error, sizeof r->error, "%s", msg.c_str());
  return code;
}

// The run mpq translated; a request without one is a bug of mpq's.
mpq::config::RunOptions run_of(const mpq_torch_request& req) {
  MPQ_ASSERT(req.run != nullptr, "torch plugin: a ", req.command, " request without its run options");
  return mpq::config::decode(*req.run);
}

std::vector<std::string> config_sets(const mpq_torch_request& req) {
  std::vector<std::string> sets;
  for (int i = 0; i < req.config.num_sets; ++i) sets.push_back(req.config.sets[i] ? req.config.sets[i] : "");
  return sets;
}

// c10's own log lines (glog style, often with a whole C++ backtrace) about
// failures that mpq reports itself in one line, such as a master it cannot
// reach: kept from --log-level debug on, or when TORCH_CPP_LOG_LEVEL asks.
void quiet_torch_logging() {
  if (std::getenv("TORCH_CPP_LOG_LEVEL") != nullptr || mpq::log::enabled(mpq::log::Level::debug)) return;
  FLAGS_caffe2_log_level = c10::GLOG_FATAL;
  c10::UpdateLoggingLevelsFromFlags();
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int mpq_torch_plugin_abi(void) { return MPQ_TORCH_PLUGIN_ABI; }

// The version libtorch_cpu reports of itself (its build options, a map
// lookup), and the file it was loaded from: not necessarily the LibTorch this
// plugin was compiled against.
extern "C" __attribute__((visibility("default"))) const char* mpq_torch_plugin_libtorch(void) {
  static const std::string reported = [] {
    std::string version, library;
    try {
      const auto& options = caffe2::GetBuildOptions();
      if (const auto it = options.find("TORCH_VERSION"); it != options.end()) version = it->second;
    } catch (...) {
      // An unknown version is let through; the loader then relies on its symbols having resolved.
    }
    Dl_info info{};
    if (::dladdr(reinterpret_cast<void*>(&caffe2::GetBuildOptions), &info) != 0 && info.dli_fname != nullptr)
      library = info.dli_fname;
    return version + "\t" + library;
  }();
  return reported.c_str();
}

extern "C" __attribute__((visibility("default"))) int mpq_torch_plugin_run(const mpq_torch_request* req,
                                                                           mpq_torch_response* resp) {
  if (resp == nullptr) return 1;
  resp->exit_code = 0;
  resp->error[0] = '\0';
  if (req == nullptr || req->abi != MPQ_TORCH_PLUGIN_ABI) return fail(resp, 1, "torch plugin: ABI mismatch; rebuild mpq");
  try {
    const std::string command = req->command ? req->command : "";
    const auto str = [](const char* p) { return std::string(p ? p : ""); };
    quiet_torch_logging();
    mpq::log::debug("{}", mpq::tune_malloc_for_training());
    if (command == "extract") {
      const mpq_torch_extract_args& a = req->extract;
      mpq::plugin::ExtractOptions o{str(a.checkpoint), str(a.output), {}, a.input_size};
      if (a.bits != nullptr) o.bits.assign(a.bits, a.bits + std::max(0, a.num_bits));
      mpq::plugin::run_extract(o);
      return 0;
    }
    if (command == "export") {
      mpq::plugin::ExportRequest r;
      r.source = str(req->config.config);
      if (req->run) r.run = mpq::config::decode(*req->run);
      r.sets = config_sets(*req);
      r.output = str(req->export_.output);
      r.reference_dir = str(req->export_.reference_dir);
      r.opset = req->export_.opset;
      mpq::plugin::run_export(r);
      return 0;
    }
    if (command == "importance") {
      mpq::plugin::ImportanceRequest r;
      r.run = run_of(*req);
      r.output = str(req->importance.output);
      r.batches = req->importance.batches;
      mpq::plugin::run_importance(r);
      return 0;
    }
    if (command == "pretrain" || command == "finetune" || command == "eval") {
      mpq::plugin::run_config_command(command, run_of(*req));
      return 0;
    }
    return fail(resp, 1, command + ": unknown torch command (mpq and its plugin come from different builds?)");
  } catch (const mpq::Error& e) {
    return fail(resp, static_cast<int>(e.exit_code()), e.what());
  } catch (const c10::Error& e) {
    return fail(resp, 1, mpq::engine::describe_torch_error(e));
  } catch (const std::bad_alloc&) {
    return fail(resp, 1, "out of memory");
  } catch (const std::exception& e) {
    return fail(resp, 1, std::string("internal error: ") + e.what() + "; please report this");
  } catch (...) {
    return fail(resp, 1, "internal error: unknown exception; please report this");
  }
}

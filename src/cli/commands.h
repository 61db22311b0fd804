// Subcommand registration (CLI11 "subcommands in files"): each cmd_<name>.cpp
// adds its subcommand to the app and returns what runs it once parsing is
// done and logging is set up.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "mpq/config/options.h"
#include "mpq/plugin/torch_plugin.h"

namespace mpq::cli {

// A subcommand and its body; the body throws mpq::Error on failure.
struct Command {
  CLI::App* sub;
  std::function<void()> run;
};

Command setup_search(CLI::App& app);
Command setup_pretrain(CLI::App& app);
Command setup_extract(CLI::App& app);
Command setup_finetune(CLI::App& app);
Command setup_eval(CLI::App& app);
Command setup_export(CLI::App& app);
Command setup_importance(CLI::App& app);

// The request's view of a config and its --set overrides; `storage` holds
// the pointers and must outlive the request.
mpq_torch_config_args config_args(const std::string& config, const std::vector<std::string>& sets,
                                  std::vector<const char*>& storage);

// The config and its overrides parsed and checked, torch-free, once: its
// notices ("KEY: ignored because ...") logged (on rank 0 of a distributed
// run), then translated into the options the plugin's engine takes.
config::RunOptions parse_run(const std::string& config, const std::vector<std::string>& sets);

// A torch subcommand that takes a YAML config and --set overrides.
Command config_command(CLI::App& app, const char* name, const char* help);

// Loads libmpq_torch.so and runs the request there (its abi is filled in).
// Throws mpq::Error (exit 1) when the plugin cannot be found, naming the
// paths tried, or when one found does not load, saying what it lacks (its
// LibTorch, a CUDA library, a symbol) and what to do; and mpq::Error with
// the plugin's exit code when it fails.
void run_torch_command(mpq_torch_request req);

}  // namespace mpq::cli

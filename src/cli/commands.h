// Subcommand registration (CLI11 "subcommands in files"): each cmd_<name>.cpp
// adds its subcommand to the app and returns what runs it once parsing is
// done and logging is set up.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace mpq::cli {

// Options shared by every subcommand.
struct Globals {
  std::string log_level;
};

// A subcommand and its body; the body throws mpq::Error on failure.
struct Command {
  CLI::App* sub;
  std::function<void()> run;
};

Command setup_search(CLI::App& app, const Globals& g);
Command setup_pretrain(CLI::App& app, const Globals& g);
Command setup_extract(CLI::App& app, const Globals& g);
Command setup_finetune(CLI::App& app, const Globals& g);
Command setup_eval(CLI::App& app, const Globals& g);

// A torch subcommand that takes a YAML config and --set overrides.
Command config_command(CLI::App& app, const Globals& g, const char* name, const char* help);

// Loads libmpq_torch.so and runs `command` with `args` there. Throws
// mpq::Error (exit 1) when the plugin cannot be found or loaded, naming the
// paths tried, and mpq::Error with the plugin's exit code when it fails.
void run_torch_command(const std::string& command, const std::vector<std::string>& args, const Globals& g);

}  // namespace mpq::cli

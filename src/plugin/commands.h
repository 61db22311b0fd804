// The torch subcommands the plugin runs; each throws mpq::Error on failure.
#pragma once

#include <string>
#include <vector>

namespace mpq::plugin {

struct ExtractOptions {
  std::string checkpoint, output;
  std::vector<int> bits;  // empty: the checkpoint's record of its candidates
  int input_size = 0;     // 0: the checkpoint's record, else the model's default
};

// mpq extract: indicators out of a checkpoint, a table of them on stdout,
// their plot and, for a zoo network, the geometry file beside the output.
void run_extract(const ExtractOptions& o);

// mpq pretrain|finetune|eval CONFIG [--set key=value]...
void run_config_command(const std::string& command, const std::string& config, const std::vector<std::string>& sets);

}  // namespace mpq::plugin

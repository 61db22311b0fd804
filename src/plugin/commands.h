// The torch subcommands the plugin runs; each throws mpq::Error on failure.
#pragma once

#include <string>
#include <vector>

namespace mpq::plugin {

// mpq extract CKPT -o OUT [--b BITS...] [--input-size N]: indicators out of
// a checkpoint, a table of them on stdout, and for a zoo network the
// geometry file beside OUT.
void run_extract(const std::vector<std::string>& args);

// mpq pretrain|finetune|eval CONFIG [--set key=value]...
void run_config_command(const std::string& command, const std::vector<std::string>& args);

}  // namespace mpq::plugin

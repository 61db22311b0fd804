// The torch subcommands the plugin runs; each throws mpq::Error on failure.
#pragma once

#include <string>
#include <vector>

namespace mpq::plugin {

// mpq extract CKPT -o OUT [--b BITS...]: indicators out of a checkpoint.
void run_extract(const std::vector<std::string>& args);

}  // namespace mpq::plugin

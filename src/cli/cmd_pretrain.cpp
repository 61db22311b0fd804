// mpq pretrain: joint training of the importance indicators (SPEC §3). Runs in the torch plugin.
#include "cli/commands.h"

namespace mpq::cli {

Command setup_pretrain(CLI::App& app, const Globals& g) {
  return config_command(app, g, "pretrain", "joint training of the importance indicators (SPEC §3)");
}

}  // namespace mpq::cli

// mpq pretrain: joint training of the importance indicators. Runs in the torch plugin.
#include "cli/commands.h"

namespace mpq::cli {

Command setup_pretrain(CLI::App& app) {
  return config_command(app, "pretrain", "joint training of the importance indicators");
}

}  // namespace mpq::cli

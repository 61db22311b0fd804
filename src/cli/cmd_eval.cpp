// mpq eval: accuracy, size and BitOPs of a policy, after BN recalibration. Runs in the torch plugin.
#include "cli/commands.h"

namespace mpq::cli {

Command setup_eval(CLI::App& app) {
  return config_command(app, "eval", "accuracy, size and BitOPs of a policy, after BN recalibration");
}

}  // namespace mpq::cli

// mpq finetune: LSQ quantization-aware finetuning of a policy (SPEC §5). Runs in the torch plugin.
#include "cli/commands.h"

namespace mpq::cli {

Command setup_finetune(CLI::App& app, const Globals& g) {
  return config_command(app, g, "finetune", "LSQ quantization-aware finetuning of a policy (SPEC §5)");
}

}  // namespace mpq::cli

// mpq finetune: LSQ quantization-aware finetuning of a policy. Runs in the torch plugin.
#include "cli/commands.h"

namespace mpq::cli {

Command setup_finetune(CLI::App& app) {
  return config_command(app, "finetune", "LSQ quantization-aware finetuning of a policy");
}

}  // namespace mpq::cli

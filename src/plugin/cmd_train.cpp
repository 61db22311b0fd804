// mpq pretrain, finetune and eval: the run mpq translated, into the training engine.
#include "engine/trainer.h"
#include "mpq/common/error.h"
#include "plugin/commands.h"

namespace mpq::plugin {

void run_config_command(const std::string& command, const config::RunOptions& run) {
  if (command == "eval" || run.eval) {
    engine::evaluate(run);
  } else if (command == "pretrain") {
    MPQ_CHECK(!run.fp_model, run.source, ": fp_model: true trains a full-precision model; run it with `mpq finetune`");
    engine::train(run, engine::Mode::kJoint);
  } else {
    engine::train(run, run.fp_model ? engine::Mode::kFullPrecision : engine::Mode::kFinetune);
  }
}

}  // namespace mpq::plugin

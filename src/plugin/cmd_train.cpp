// mpq pretrain, finetune and eval: the config, then the training engine.
#include "engine/trainer.h"
#include <cstdlib>
#include <string>

#include "mpq/common/error.h"
#include "mpq/common/log.h"
#include "mpq/config/config.h"
#include "plugin/commands.h"

namespace mpq::plugin {

void run_config_command(const std::string& command, const std::string& config, const std::vector<std::string>& sets) {
  const config::Config c = config::load_config(config, sets);
  // Keys that change nothing, once (on rank 0 of a distributed run).
  const char* rank = std::getenv("RANK");
  if (rank == nullptr || std::string(rank) == "0")
    for (const std::string& n : c.notices) log::warn("{}: {}", c.source, n);
  if (command == "eval" || c.eval) {
    engine::evaluate(c);
  } else if (command == "pretrain") {
    MPQ_CHECK(!c.fp_model, c.source, ": fp_model: true trains a full-precision model; run it with `mpq finetune`");
    engine::train(c, engine::Mode::kJoint);
  } else {
    engine::train(c, c.fp_model ? engine::Mode::kFullPrecision : engine::Mode::kFinetune);
  }
}

}  // namespace mpq::plugin

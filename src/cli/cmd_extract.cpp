// mpq extract: the learned scales of a pretrain checkpoint as an indicator
// file (SPEC §3). Runs in the torch plugin.
#include <memory>

#include "cli/commands.h"

namespace mpq::cli {

Command setup_extract(CLI::App& app, const Globals& g) {
  struct Args {
    std::string checkpoint, output;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("extract", "indicators out of a pretrain checkpoint (mpq's or the original's)");
  sub->add_option("checkpoint", a->checkpoint, "checkpoint from `mpq pretrain` or the original code")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-o,--output", a->output, "indicator file to write (pickle)")->required();
  return {sub, [a, &g] { run_torch_command("extract", {a->checkpoint, "-o", a->output}, g); }};
}

}  // namespace mpq::cli

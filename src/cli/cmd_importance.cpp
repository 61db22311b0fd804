// mpq importance: a baseline importance that needs no joint training, as an
// indicator file `mpq search` reads. Runs in the torch plugin.
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "mpq/config/config.h"
#include "mpq/io/file_util.h"

namespace mpq::cli {

Command setup_importance(CLI::App& app) {
  struct Args {
    std::string config, output;
    std::vector<std::string> sets;
    int batches = 8;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "importance", "baseline indicators without joint training: every layer's quantization error at every candidate");
  sub->add_option("config", a->config,
                  "a pretrain config: its network, pre_trained (full-precision) weights, target_bits and data")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-o,--output", a->output, "indicator file to write (pickle, as `mpq extract` writes)")->required();
  sub->add_option("--batches", a->batches, "training batches whose activations are measured (default 8)")
      ->check(CLI::Range(1, 100000));
  sub->add_option("--set", a->sets, "override a config key: --set dataloader.path=/data (repeatable)");
  return {sub, [a] {
            const config::RunOptions run = parse_run(a->config, a->sets);
            const mpq_torch_run_options wire = config::encode(run);
            io::check_output_is_not_an_input("-o", a->output, {{"the config", a->config}});
            io::check_output_writable("-o", a->output);
            std::vector<const char*> sets;
            mpq_torch_request req{};
            req.command = "importance";
            req.run = &wire;
            req.config = config_args(a->config, a->sets, sets);
            req.importance = {a->output.c_str(), a->batches};
            run_torch_command(req);
          }};
}

}  // namespace mpq::cli

// mpq extract: the learned scales of a pretrain checkpoint as an indicator
// file. Runs in the torch plugin.
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "mpq/io/file_util.h"

namespace mpq::cli {

Command setup_extract(CLI::App& app) {
  struct Args {
    std::string checkpoint, output;
    std::vector<int> bits;
    int input_size = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("extract", "indicators out of a pretrain checkpoint (mpq's or the original's)");
  sub->add_option("checkpoint", a->checkpoint, "checkpoint from `mpq pretrain` or the original code")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-o,--output", a->output, "indicator file to write (pickle)")->required();
  sub->add_option("--b,--bits", a->bits,
                  "candidate bit-widths in the order of training (needed for the original's checkpoints)")
      ->check(CLI::Range(2, 16));
  sub->add_option("--input-size", a->input_size,
                  "input height and width for the geometry file (default 224; resnet20: 32)")
      ->check(CLI::Range(1, 4096));
  return {sub, [a] {
            // Before the plugin loads: the indicator file and the plot and geometry beside it go there.
            io::check_output_writable("-o", a->output);
            mpq_torch_request req{};
            req.command = "extract";
            req.extract = {a->checkpoint.c_str(), a->output.c_str(), static_cast<int>(a->bits.size()),
                           a->bits.empty() ? nullptr : a->bits.data(), a->input_size};
            run_torch_command(req);
          }};
}

}  // namespace mpq::cli

// mpq export: the finetuned mixed-precision network as an ONNX graph with
// integer weights. Runs in the torch plugin.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "mpq/config/config.h"
#include "mpq/io/file_util.h"

namespace mpq::cli {

Command setup_export(CLI::App& app) {
  struct Args {
    std::string source, output, reference;
    std::vector<std::string> sets;
    int opset = 21;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("export", "the finetuned mixed-precision network as ONNX with integer weights");
  sub->add_option("source", a->source,
                  "a finetune config (as mpq eval takes it: BatchNorm recalibrated the same way) or a checkpoint of "
                  "`mpq finetune` (BatchNorm as stored)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-o,--output", a->output, "the .onnx file to write")->required();
  sub->add_option("--opset", a->opset,
                  "ONNX opset: weights in int8 always, int4 from 21, int2 from 25; activations above 8 bits need 21")
      ->check(CLI::Range(13, 25))
      ->default_val(21);
  sub->add_option("--reference", a->reference,
                  "also write the validation set's inputs.npy, labels.npy and the fake-quantized model's logits.npy "
                  "into this folder, to check a runtime against");
  sub->add_option("--set", a->sets, "override a config key: --set dataloader.path=/data (repeatable)");
  return {sub, [a] {
            // Torch-free checks first: a config is validated, outputs are writable and none is the input.
            std::optional<config::RunOptions> run;
            if (!io::looks_like_checkpoint(a->source)) run = parse_run(a->source, a->sets);
            io::check_output_is_not_an_input("-o", a->output, {{"the source", a->source}});
            io::check_output_writable("-o", a->output);
            if (!a->reference.empty()) {
              io::check_output_is_not_an_input("--reference", a->reference, {{"the source", a->source}, {"-o", a->output}});
              io::check_output_writable("--reference", a->reference);
            }
            std::optional<mpq_torch_run_options> wire;
            if (run) wire = config::encode(*run);
            std::vector<const char*> sets;
            mpq_torch_request req{};
            req.command = "export";
            req.run = wire ? &*wire : nullptr;
            req.config = config_args(a->source, a->sets, sets);
            req.export_ = {a->output.c_str(), a->opset, a->reference.c_str()};
            run_torch_command(req);
          }};
}

}  // namespace mpq::cli

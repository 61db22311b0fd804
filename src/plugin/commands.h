// The torch subcommands the plugin runs; each throws mpq::Error on failure.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "mpq/config/options.h"
#include "mpq/io/indicators.h"

namespace mpq::plugin {

struct ExtractOptions {
  std::string checkpoint, output;
  std::vector<int> bits;  // empty: the checkpoint's record of its candidates
  int input_size = 0;     // 0: the checkpoint's record, else the model's default
};

// Indicators as a Markdown table on stdout, highest bits first; '*' marks a
// value the search's outlier rule erases (cmd_extract.cpp).
void print_indicator_table(const io::Indicators& ind, std::vector<int> bits);

// mpq extract: indicators out of a checkpoint, a table of them on stdout,
// their plot and, for a zoo network, the geometry file beside the output.
void run_extract(const ExtractOptions& o);

struct ExportRequest {
  std::string source;  // a config (as mpq eval takes) or a finetune checkpoint
  std::optional<config::RunOptions> run;  // a config source, as mpq translated it
  std::vector<std::string> sets;          // a checkpoint source: overrides of the config it records
  std::string output, reference_dir;
  int opset = 21;
};

// mpq export: the ONNX graph of a finetuned network, its report on stdout.
void run_export(const ExportRequest& r);

struct ImportanceRequest {
  config::RunOptions run;  // a pretrain config's: network, pre_trained weights, candidates, data
  std::string output;
  int batches = 8;
};

// mpq importance: a baseline importance that needs no joint training (the
// quantization error of every layer at every candidate), as an indicator file.
void run_importance(const ImportanceRequest& r);

// mpq pretrain|finetune|eval CONFIG [--set key=value]...
void run_config_command(const std::string& command, const config::RunOptions& run);

}  // namespace mpq::plugin

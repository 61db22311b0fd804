// The training engine behind mpq pretrain, finetune and eval (METHOD.md §3, §5).
//
// A run lives in <output_dir>/<name>/: config.yaml (the resolved config),
// last.pt and best.pt (checkpoints), metrics.csv and a TensorBoard event
// file. Checkpoints hold the model, the optimizer's momentum buffers, the
// epoch and the position in it, the policy generator's state and the epoch's
// running metrics, and are written atomically; `resume.path` (a checkpoint,
// or `auto` for the run folder's last.pt) continues exactly where it stopped.
//
// Distributed (torchrun variables set): one c10d group; rank 0's weights are
// broadcast, gradients averaged, BatchNorm statistics averaged at epoch
// ends, metrics reduced, and only rank 0 writes files.
#pragma once

#include <string>

#include "mpq/config/options.h"

namespace mpq::engine {

enum class Mode {
  kFullPrecision,  // fp_model: the float network itself
  kJoint,          // pretrain: joint indicator training over target_bits
  kFinetune,       // finetune: LSQ at a policy's bit-widths
};

// Trains per the config. Throws mpq::Error: InputError for a bad config or
// input, RuntimeError for a diverged run; interrupted by SIGINT/SIGTERM, it
// saves last.pt and throws an Error with ExitCode::kInterrupted.
void train(const config::RunOptions& run, Mode mode);

// Recalibrates BatchNorm, evaluates on the validation set and prints top-1,
// top-5, loss, size, BitOPs and compression ratio as YAML on stdout.
void evaluate(const config::RunOptions& run);

// mpq export: the ONNX graph of the finetuned network the config names,
// with the BatchNorm state `mpq eval` would use.
struct ExportOptions {
  std::string output;         // the .onnx file, replaced atomically
  int opset = 21;
  std::string reference_dir;  // "": none; else inputs.npy, logits.npy and labels.npy of the validation set
  bool recalibrate = true;    // false: BatchNorm statistics as the checkpoint holds them
  int input_side = 0;         // without data (no recalibration or reference): the image side; 0: the dataset's
  std::string source;         // the config or checkpoint named on the command line, for the report
};

// Builds, writes and reads back the graph; prints the report (YAML) on
// stdout. InputError for a config or checkpoint without a finetuned policy,
// or bits the opset cannot hold: nothing is written then.
void export_onnx(const config::RunOptions& run, const ExportOptions& options);

// The learning rate of `epoch` (0-based): linear warmup from warmup_lr over
// warmup_epochs, cosine from lr to min_lr over `epochs`, then min_lr for
// cooldown_epochs (timm's CosineLRScheduler, stepped per epoch, as the original).
double learning_rate(const config::ScheduleOptions& s, int epoch);
int total_epochs(const config::ScheduleOptions& s);

}  // namespace mpq::engine

// A run's configuration translated once into what each part of the engine
// uses (leveldb's Options style): every room of the engine takes its own
// struct, never the whole Config. Torch-free: `mpq` parses and translates,
// and hands the result to the torch plugin typed (encode/decode below), so
// nothing is parsed twice.
#pragma once

#include <string>
#include <vector>

#include "mpq/config/config.h"
#include "mpq/plugin/torch_plugin.h"

namespace mpq::config {

// The batches: dataset, train/val split, loader (engine/sources).
struct DataOptions {
  std::string source;  // the config file, for messages
  std::string dataset = "fashion_mnist", path;  // path "": the dataset's default place
  int num_classes = 10, batch_size = 128, workers = 2;
  bool strict = false;
  double val_split = 0, fraction = 1;
  int seed = 0;
};

// The network and its weights (engine/model_setup).
struct ModelOptions {
  std::string source;
  std::string arch = "resnet20";
  int num_classes = 10;
  std::string pre_trained;  // "": none
  bool pre_trained_strict = true;
  std::vector<int> target_bits, weight_bits, act_bits;
  std::string policy;  // a policy file instead of weight_bits/act_bits
  bool channels_last = true;
  std::string dtype = "float32";
  bool fused_bn = true;  // CPU training: BatchNorm(+add)+ReLU as one op (models/bn_relu.h)
};

// The learning rate per epoch (engine/schedule).
struct ScheduleOptions {
  double lr = 0.01, min_lr = 1e-5, warmup_lr = 1e-5;
  int epochs = 1, warmup_epochs = 0, cooldown_epochs = 0;
};

// The loop, its optimizer and its checkpoints (engine/trainer).
struct LoopOptions {
  double momentum = 0.9, weight_decay = 2.5e-5, smoothing = 0.1;
  bool distill = false, freeze_weights = false, sync_bn = false;
  int val_cycle = 1, print_freq = 20, checkpoint_steps = 0;
  double dist_bucket_mb = 25;
  std::string resume_path;  // "", a checkpoint, or "auto"
  int seed = 0;             // the mixed-policy generator's
};

// Validation and BatchNorm recalibration (engine/evaluation).
struct EvalOptions {
  int bn_calib_images = 6000;
  double smoothing = 0.1;
};

// The process's place in a run: threads, device, c10d group (engine/context).
struct ProcessOptions {
  std::string training_device = "auto", dist_backend = "auto";
  int dist_timeout_s = 300, threads = 0, seed = 0;
  std::string cudnn = "benchmark";  // benchmark, deterministic or heuristic
  bool tf32 = true;                 // cuDNN's float32 convolutions in TF32 where the GPU has it
};

// The run folder and what its checkpoints record (engine/run_files, run_state).
struct RunFileOptions {
  std::string output_dir = "out", name = "mpq";
  int num_best_scores = 3;
  std::string resolved_yaml;  // the whole resolved config, written as config.yaml and into checkpoints
};

struct RunOptions {
  std::string source;
  bool eval = false, fp_model = false;
  DataOptions data;
  ModelOptions model;
  ScheduleOptions schedule;
  LoopOptions loop;
  EvalOptions evaluation;
  ProcessOptions process;
  RunFileOptions files;
};

// The one translation of a parsed Config into the rooms' options.
RunOptions translate(const Config& c);

// The plugin request's view of `o`: pointers into `o`, which must outlive it.
mpq_torch_run_options encode(const RunOptions& o);
// The options back from a request (copies).
RunOptions decode(const mpq_torch_run_options& w);

}  // namespace mpq::config

// A run's state on disk: the checkpoint that holds the model, the
// optimizer's momenta and the position in the run, saved atomically and
// restored exactly (every field range-checked).
#pragma once

#include <cstdint>
#include <string>

#include <torch/optim/sgd.h>

#include "engine/meters.h"
#include "engine/model_setup.h"

namespace mpq::engine {

struct Position {
  int epoch = 0;        // the epoch to run
  int64_t batch = 0;    // the next batch of it
  int64_t step = 0;     // optimizer steps so far
  double best_top1 = -1;
  int best_epoch = -1;
  int64_t global_batch = 0;  // batch_size x world size of the run that wrote it
  int world_size = 1;
  Meter meter;          // the running epoch's training metrics (this rank's)
  std::string rng;      // the mixed-policy generator
};

// "pretrain", "finetune" or "fp": the mode a checkpoint records.
const char* mode_name(Mode m);

// Writes the checkpoint `path` (Python's torch.load reads it): model state,
// momenta, the position, the resolved config (`config_yaml`), and for a
// finetune its policy.
void save(const std::string& path, const std::string& config_yaml, Model& m, torch::optim::SGD& opt,
          const Position& pos);

// Loads `path` into the model and optimizer and returns its position;
// `epochs` and `train_images` are this run's, the bounds of a position in it.
// InputError for a checkpoint of another mode or model, or out of range.
Position restore(const std::string& path, Model& m, torch::optim::SGD& opt, int epochs, int64_t train_images);

}  // namespace mpq::engine

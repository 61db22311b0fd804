// The process's place in a run: torchrun's environment, the c10d group
// (when there is one), the device; and how a model joins the group.
#pragma once

#include <memory>
#include <string>

#include <torch/types.h>

#include "dist/dist.h"
#include "engine/model_setup.h"
#include "models/zoo.h"
#include "mpq/config/options.h"

namespace mpq::engine {

struct Context {
  dist::Env env;
  std::unique_ptr<dist::Group> group;
  models::BatchNormSync bn_sync;  // after `group`: removed before the group it calls goes
  torch::Device device = torch::kCPU;
  bool rank0() const { return env.rank == 0; }
};

// Threads, device (training_device), the group under torchrun's variables
// (dist_backend, dist_timeout) and the seed.
Context make_context(const config::ProcessOptions& o);

// cuDNN's algorithm choice (config key cudnn): benchmark, deterministic or
// heuristic. Flags of LibTorch's global context; they change nothing on the CPU.
void apply_cudnn_mode(const std::string& mode);

// Whether cuDNN's float32 convolutions may use TF32 (config key tf32;
// LibTorch's torch.backends.cudnn.allow_tf32). Changes nothing on the CPU.
void apply_tf32(bool allow);

// Wires the model into the group: moved to the device, rank 0's state
// everywhere, activation scale initialisation averaged, BatchNorm
// synchronised when asked.
void attach(Context& ctx, Model& m, bool sync_bn);

// Averages every BatchNorm's running statistics over ranks (timm's distribute_bn).
void average_bn_stats(Context& ctx, torch::nn::Module& net);

}  // namespace mpq::engine

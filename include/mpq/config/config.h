// Run configuration: YAML with the original implementation's keys (METHOD.md §6),
// so a user's existing file works, parsed into typed structs and validated
// before any data or model is touched. Defaults are given where declared.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mpq::config {

struct DataloaderConfig {
  std::string dataset = "fashion_mnist";  // fashion_mnist, mnist, cifar10, imagenet
  int num_classes = 10;
  std::string path;                       // dataset folder; "" = the dataset's default location
  int batch_size = 128;                   // per process
  int workers = 2;                        // decoding threads
  bool deterministic = true;              // seeded, repeatable order and augmentation
  bool serialized = false;                // accepted for compatibility; no effect
  double val_split = 0;                   // fraction of the training set held out, [0, 1)
  double fraction = 1;                    // train on this fraction of the training set, (0, 1]
                                          // (stratified, fixed by the seed: indicator training needs little data)
  bool strict = false;                    // an undecodable image stops the run instead of being skipped
};

struct QuantizerConfig {
  std::string mode = "lsq";  // only lsq
  int bit = 2;               // the original's placeholder; the policy or target_bits decide
  bool per_channel = false;  // per-tensor only (METHOD.md §1)
  bool symmetric = false;
  bool all_positive = false;
};

// An excepted layer (quan.excepts.<layer>): its bits, when given. Only the
// network's first conv, its BatchNorm and the fc may be named, at 8 bits
// (METHOD.md §2); anything else is refused.
struct ExceptConfig {
  std::optional<int> act_bit, weight_bit;
  std::optional<bool> act_all_positive;
};

struct Config {
  std::string source;                 // the file it came from
  std::string name = "mpq";           // experiment name: the run folder is output_dir/name
  std::vector<int> target_bits;       // pretrain: the candidate bit-widths, e.g. [6, 5, 4, 3, 2]
  std::vector<int> weight_bits, act_bits;  // finetune: one per searchable layer
  std::string policy;                 // finetune: a policy file from `mpq search` instead of the lists
  std::string output_dir = "out";
  std::string gpu;  // the original's label of the GPU model (e.g. v100_32g); informational
  // auto: cuda:LOCAL_RANK where a CUDA device is visible, else the CPU; cpu:
  // the CPU even where a GPU is; gpu (the original's spelling) or cuda: a
  // GPU, an error where there is none.
  std::string training_device = "auto";
  DataloaderConfig dataloader;
  std::string resume_path;            // resume.path: a checkpoint to continue from
  bool resume_lean = false;           // only false: a resume continues exactly (true is refused)
  int num_best_scores = 3, print_freq = 20;  // log.*
  std::string arch = "resnet20";
  bool freeze_weights = false;        // true: only the quantizer scales and BatchNorm ("bn" in the name) train
  std::string pre_trained;            // path to a PyTorch or mpq checkpoint; "" = none
  QuantizerConfig quan_act{"lsq", 2, false, false, true};
  QuantizerConfig quan_weight;
  std::map<std::string, ExceptConfig> excepts;
  bool eval = false;
  bool fp_model = false;              // train the full-precision model itself
  int epochs = 1;
  double smoothing = 0.1;
  std::string opt = "sgd";
  double lr = 0.01, momentum = 0.9, weight_decay = 2.5e-5;
  std::string sched = "cosine";
  double min_lr = 1e-5, decay_rate = 0.1, warmup_lr = 1e-5;
  int warmup_epochs = 0, decay_epochs = 30, cooldown_epochs = 0;
  int val_cycle = 1;                  // validate every this many epochs
  int seed = 0;
  // mpq's own keys (not in the original):
  bool distill = false;               // pretrain: in-place distillation from the first candidate
  bool sync_bn = false;               // BatchNorm statistics over the global batch (torch's SyncBatchNorm)
  bool channels_last = true;          // NHWC activations and weights: oneDNN/cuDNN convolve without reorders
  std::string dtype = "float32";      // float64: numerical checks (LSQ then runs as composed ATen ops)
  bool fused_bn = true;               // CPU training: BatchNorm(+add)+ReLU as one op; false: torch's ops
  int checkpoint_steps = 0;           // also write last.pt every this many steps; 0: at epoch ends only
  int bn_calib_images = 6000;         // BatchNorm recalibration before validating a quantized model
  int dist_timeout = 300;             // seconds before a collective waiting on a lost rank fails
  double dist_bucket_mb = 25;         // gradient all-reduce bucket size (DDP's bucket_cap_mb)
  std::string dist_backend = "auto";  // c10d backend: auto (NCCL on CUDA where built in, else Gloo), gloo, nccl
  int threads = 0;                    // intra-op threads per process; 0: torch's default
  // How cuDNN picks convolution algorithms on a GPU: benchmark (time them
  // for each new shape, keep the fastest), deterministic (only
  // bit-reproducible ones), heuristic (LibTorch's default choice).
  std::string cudnn = "benchmark";
  // Whether cuDNN's float32 convolutions may compute in TF32 on GPUs that
  // have it (Ampere and later), on the tensor cores: PyTorch's default;
  // false computes them in full float32, as the CPU does.
  bool tf32 = true;
  bool pre_trained_strict = true;     // every pre_trained tensor must match the model
  // Keys the file sets that change nothing, each with why ("quan.act.bit: ignored
  // because ..."): the command that runs the config logs them once.
  std::vector<std::string> notices;
};

// Reads `path`, applies `overrides` ("key.path=value", value in YAML syntax)
// and validates. InputError "file:line:col: what" on unknown keys (with a
// close-match hint), wrong types and out-of-range values.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same for YAML text; `source` names it in messages (e.g. "best.pt (its config)").
Config load_config_text(const std::string& text, const std::string& source,
                        const std::vector<std::string>& overrides = {});

// The resolved configuration as YAML (saved in the run folder).
std::string to_yaml(const Config& c);

// The cudnn key's values, and the list of them for messages.
inline bool is_cudnn_mode(const std::string& m) {
  return m == "benchmark" || m == "deterministic" || m == "heuristic";
}
inline constexpr const char* kCudnnModeList = "benchmark, deterministic, heuristic";

}  // namespace mpq::config

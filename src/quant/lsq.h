// LSQ fake quantization (METHOD.md §1): the fused autograd op and the quantizer
// module that holds one scale per candidate bit-width.
//
//   y = round(clamp(x / s, n, p)) * s          (round half to even)
//   dy/dx = 1 where n <= x/s <= p, else 0
//   dy/ds = round(x/s) - x/s inside, n or p outside; times g = 1/sqrt(p * numel)
//
// Thresholds for b bits: unsigned [0, 2^b - 1]; signed [-2^(b-1), 2^(b-1) - 1];
// signed symmetric [-2^(b-1) + 1, 2^(b-1) - 1].
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace mpq::quant {

struct Thresholds {
  double neg, pos;
};
Thresholds thresholds(int bits, bool all_positive, bool symmetric);

// The fused op: one pass forward, one pass backward computing the input and
// scale gradients together, parallel over elements. `s` holds the scales of
// the quantizer's candidates and `index` picks the one used; the scale's
// gradient comes back for the whole of `s` (zero but at `index`) from the
// op itself, so no slice of `s` adds its own backward (on a GPU, two more
// kernels per quantizer and step).
// `clamp_scale`: the scale used is clamp(s, 1e-5, 1) (indicator training), so
// a scale outside that range gets no gradient. `relu` (unsigned thresholds
// only): quantizes relu(x), exactly, without a pass of its own; the clamp at
// zero already gives relu's values, and x <= 0 then gets no gradient.
// Float32 tensors on the CPU, or on a GPU in a CUDA build (lsq_cuda.h),
// take the fused kernels; other dtypes and devices the same math in ATen ops.
torch::Tensor lsq_quantize(const torch::Tensor& x, const torch::Tensor& s, Thresholds t, double grad_scale,
                           bool clamp_scale, bool relu = false, int64_t index = 0);

// Throws RuntimeError (one line: the GPU, what the kernels were compiled
// for, what to do) where `d` is a GPU this build's fused kernels have no
// code for; nothing on the CPU. The fused op checks each GPU once.
void require_fused_kernels(const torch::Device& d);

// The straight-through formulation with ordinary ATen ops, as the original
// writes it; the reference for tests and benchmarks.
torch::Tensor lsq_quantize_reference(const torch::Tensor& x, const torch::Tensor& s, Thresholds t, double grad_scale,
                                     bool clamp_scale);

struct LsqQuantizerOptions {
  std::vector<int> bits;      // candidate bit-widths; one for finetuning
  bool all_positive = false;  // unsigned (activations after ReLU)
  bool symmetric = false;
  // Indicator training: clamp the scale into [1e-5, 1] (METHOD.md §1). Default: on
  // with several candidates, off with one.
  bool clamp_scale = false;
};

// One LSQ quantizer: parameter `s` [K] and buffer `init_state` [K] over the K
// candidates, named as the original so checkpoints map one to one.
class LsqQuantizerImpl : public torch::nn::Module {
 public:
  explicit LsqQuantizerImpl(LsqQuantizerOptions options);

  // Quantizes x at `bits` (one of the candidates; >= 32 or 0 passes x through).
  // In training mode, the first use of a bit-width whose init_state is 0
  // initialises its scale as 2 * mean(|x|) / sqrt(p) (activations), averaged
  // over ranks by `all_reduce_mean` when set. `relu`: quantizes relu(x)
  // (an unsigned quantizer only; see lsq_quantize).
  torch::Tensor forward(const torch::Tensor& x, int bits, bool relu = false);

  // Weight initialisation for every candidate: max(|mean - 3 std|, |mean + 3 std|) / 2^(b-1).
  void init_from_weight(const torch::Tensor& w);

  const LsqQuantizerOptions& options() const { return options_; }
  int index_of(int bits) const;  // InputError if not a candidate

  torch::Tensor s, init_state;
  // Distributed hook: averages a scalar tensor across ranks in place.
  std::function<void(torch::Tensor&)> all_reduce_mean;
  // The gradient scale counts numel x this: data-parallel activation
  // quantizers use the world size, so the scale's gradient is that of the
  // global batch and N processes of batch B train as one of batch N x B.
  double numel_factor = 1;

 private:
  bool initialised(int idx);  // init_state[idx] != 0, without a device round trip each call

  LsqQuantizerOptions options_;
  const void* init_seen_impl_ = nullptr;  // the init_state tensor init_seen_ mirrors ...
  uint32_t init_seen_version_ = 0;        // ... at this version of it
  std::vector<char> init_seen_;
};
TORCH_MODULE(LsqQuantizer);

}  // namespace mpq::quant

// The network a run trains or evaluates: the zoo model, quantized for the
// mode (indicator training over the candidates, or a policy's bits), with
// weights from pre_trained.
#pragma once

#include <string>
#include <vector>

#include <torch/types.h>

#include "engine/trainer.h"
#include "quant/qmodules.h"
#include "torchio/checkpoint.h"

namespace mpq::engine {

struct Model {
  quant::QuantizedNet q;  // q.net is the network; q.convs empty in full precision
  Mode mode = Mode::kFullPrecision;
  std::vector<int> weight_bits, act_bits;  // finetune: the policy
  std::string arch;
  int channels = 1, num_classes = 10;
  int64_t input_size = 0;  // image side, recorded so extract writes the right geometry
  torch::Dtype dtype = torch::kFloat;
  bool loaded_quantized = false;  // the weights came from a quantized (finetune) checkpoint
  // A batch of images on the model's device, in its dtype; asynchronous from
  // pinned memory (see prefetch).
  torch::Tensor input(const torch::Tensor& images, const torch::Device& device) const {
    return images.to(device, dtype, /*non_blocking=*/true);
  }
};

// Whether a state dict holds quantizer scales (a finetune or pretrain checkpoint).
bool is_quantized_checkpoint(const torchio::StateDict& s);

// The config's network for `mode`, on the CPU, with its pre_trained weights
// when `load_pretrained`; the policy from `policy` or weight_bits/act_bits.
// InputError for a checkpoint that does not fit the mode or the model.
Model make_net(const config::ModelOptions& o, Mode mode, int channels, bool load_pretrained);

// Every LSQ quantizer and every BatchNorm of `net`, in module order.
std::vector<quant::LsqQuantizerImpl*> quantizers(torch::nn::Module& net);
std::vector<models::BatchNormImpl*> batchnorms(torch::nn::Module& net);

}  // namespace mpq::engine

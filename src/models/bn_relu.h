// relu(batch_norm(x) [+ residual]) in training mode as one op on the CPU:
// the statistics in one pass over x, normalisation, the residual add and
// the ReLU in a second; backward in two passes (the per-channel sums, then
// the input gradient), where the composed ops take six forward and eight
// backward. CPU float32 channels-last tensors only; everything else (CUDA,
// where cuDNN has its own BatchNorm, NCHW, other types) is for the caller
// to compose from torch's ops.
#pragma once

#include <torch/types.h>

namespace mpq::models {

// Whether bn_relu_train takes these tensors (`residual` may be undefined).
bool bn_relu_fusable(const torch::Tensor& x, const torch::Tensor& residual, const torch::Tensor& weight,
                     const torch::Tensor& bias);

// relu(batch_norm(x, weight, bias, training=true) + residual): the batch's
// statistics normalise x, and running_mean / running_var move by `factor`
// towards them (the variance unbiased), as torch::batch_norm does.
// Statistics and gradients are summed in fixed chunks, so they do not depend
// on the thread count.
torch::Tensor bn_relu_train(const torch::Tensor& x, const torch::Tensor& residual, const torch::Tensor& weight,
                            const torch::Tensor& bias, const torch::Tensor& running_mean,
                            const torch::Tensor& running_var, double factor, double eps);

// Turns the fused op off (process-wide) so callers compose torch's ops
// instead: for benchmarks and tests that compare the two.
void set_bn_relu_fusion(bool on);
bool bn_relu_fusion();

// Sets the fusion for a scope and restores what it was.
class BnReluFusionScope {
 public:
  explicit BnReluFusionScope(bool on) : was_(bn_relu_fusion()) { set_bn_relu_fusion(on); }
  ~BnReluFusionScope() { set_bn_relu_fusion(was_); }
  BnReluFusionScope(const BnReluFusionScope&) = delete;
  BnReluFusionScope& operator=(const BnReluFusionScope&) = delete;

 private:
  bool was_;
};

}  // namespace mpq::models

// The 2-d convolution every zoo network and quantized layer runs: LibTorch's
// convolution, except for the weight gradient of a channels-last float
// convolution on the CPU, which mpq computes as one matrix product over
// image patches (im2col, a chunk of rows at a time, then MKL's GEMM through
// at::addmm), where that is faster: 3x3 convs of 64 channels and more. On
// an AVX2 CPU, LibTorch's oneDNN weight gradient takes 1.3-2.1x as long for
// ResNet-18's layers (docs/BENCHMARKS.md, bench/conv_bench). Everything
// else (the forward, the input gradient, other devices, layouts, types and
// shapes) is LibTorch's own.
#pragma once

#include <torch/nn/modules/conv.h>
#include <torch/types.h>

namespace mpq::models {

// torch::conv2d's arguments and result; its backward as described above.
torch::Tensor conv2d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

// Whether conv2d computes the weight gradient itself for these operands.
bool own_weight_grad(const torch::Tensor& x, const torch::Tensor& weight, int64_t groups);

// The weight gradient of a convolution (groups 1) of channels-last float `x`
// whose output gradient is `grad_out`, for a weight of `weight_sizes`
// [K, C, kh, kw]; in the weight's channels-last layout. For tests and benchmarks.
torch::Tensor conv_weight_grad(const torch::Tensor& x, const torch::Tensor& grad_out, at::IntArrayRef weight_sizes,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation);

// Turns the weight gradient of mpq's own on (the default) or off, for
// benchmarks that compare it with LibTorch's in one run.
void set_own_weight_grad(bool on);

// torch::nn::Conv2d (the same options, parameters and names) whose forward is conv2d.
class Conv2dImpl : public torch::nn::Conv2dImpl {
 public:
  using torch::nn::Conv2dImpl::Conv2dImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(Conv2d);

}  // namespace mpq::models

// mpq's convolution: LibTorch's, with mpq's own weight gradient (a patch
// GEMM) for channels-last float convolutions on the CPU. Its gradients must
// be LibTorch's to float rounding, in the weight's layout, for every stride,
// padding, dilation and kernel shape, and the same from one run to the next.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "models/conv.h"
#include "models/zoo.h"

using namespace mpq;

namespace {

const auto kCL = torch::MemoryFormat::ChannelsLast;

struct Case {
  int64_t n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw;
};

// max |a - b| / max |b|: float sums over thousands of products in another order.
double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

// Restores the default (mpq's own weight gradient) when a test ends.
struct OwnWeightGrad {
  explicit OwnWeightGrad(bool on) { models::set_own_weight_grad(on); }
  ~OwnWeightGrad() { models::set_own_weight_grad(true); }
};

}  // namespace

TEST(Conv, WeightGradientIsLibTorchsForEveryGeometry) {
  const std::vector<Case> cases = {
      {2, 32, 9, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1},   // ResNet's 3x3
      {2, 32, 9, 7, 48, 3, 3, 2, 2, 1, 1, 1, 1},   // stride 2, odd and non-square image
      {3, 40, 8, 8, 32, 1, 1, 2, 2, 0, 0, 1, 1},   // the 1x1 downsample
      {2, 3, 20, 20, 32, 7, 7, 2, 2, 3, 3, 1, 1},  // the ImageNet stem
      {2, 33, 10, 11, 35, 3, 1, 1, 2, 1, 0, 1, 1}, // a non-square kernel, unequal strides and paddings
      {2, 32, 12, 12, 32, 3, 3, 1, 1, 2, 2, 2, 2}, // dilation 2
      {1, 32, 5, 5, 32, 5, 5, 1, 1, 0, 0, 1, 1},   // a kernel the size of the image: one output pixel
      {2, 32, 6, 6, 32, 3, 3, 3, 3, 4, 4, 1, 1},   // padding wider than a stride: rows of zeros
  };
  torch::manual_seed(0);
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.c << "x" << c.k << " " << c.kh << "x" << c.kw << " image " << c.h << "x"
                                      << c.w << " stride " << c.sh << "," << c.sw << " pad " << c.ph << "," << c.pw
                                      << " dilation " << c.dh << "," << c.dw);
    const torch::Tensor x = torch::randn({c.n, c.c, c.h, c.w}).contiguous(kCL);
    const torch::Tensor w = torch::randn({c.k, c.c, c.kh, c.kw}).contiguous(kCL);
    const std::vector<int64_t> st{c.sh, c.sw}, pd{c.ph, c.pw}, dl{c.dh, c.dw};
    const torch::Tensor go = torch::randn_like(torch::conv2d(x, w, {}, st, pd, dl, 1)).contiguous(kCL);
    const torch::Tensor ref = std::get<1>(
        at::convolution_backward(go, x, w, std::nullopt, st, pd, dl, false, {0, 0}, 1, {false, true, false}));
    const torch::Tensor own = models::conv_weight_grad(x, go, w.sizes(), st, pd, dl);
    ASSERT_EQ(own.sizes(), w.sizes());
    EXPECT_TRUE(own.is_contiguous(kCL));
    EXPECT_LT(rel_diff(own, ref), 2e-6);
    // An NCHW output gradient gives the same numbers.
    EXPECT_TRUE(torch::equal(models::conv_weight_grad(x, go.contiguous(), w.sizes(), st, pd, dl), own));
    // The same operands, the same bits: no dependence on timing or allocation.
    EXPECT_TRUE(torch::equal(models::conv_weight_grad(x, go, w.sizes(), st, pd, dl), own));
  }
}

TEST(Conv, Conv2dGradientsAreLibTorchs) {
  torch::manual_seed(1);
  for (bool cl_weight : {true, false}) {
    for (bool bias : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "channels-last weight " << cl_weight << ", bias " << bias);
      const torch::Tensor x0 = torch::randn({4, 64, 10, 10}).contiguous(kCL);
      torch::Tensor w0 = torch::randn({64, 64, 3, 3}) * 0.1;
      if (cl_weight) w0 = w0.contiguous(kCL);
      const torch::Tensor b0 = torch::randn({64});
      auto run = [&](bool own) {
        const torch::Tensor x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
        const torch::Tensor b = bias ? b0.clone().requires_grad_(true) : torch::Tensor();
        const torch::Tensor y = own ? models::conv2d(x, w, b, {2, 2}, {1, 1}, {1, 1}, 1)
                                    : torch::conv2d(x, w, b, {2, 2}, {1, 1}, {1, 1}, 1);
        (y * y).sum().backward();
        return std::vector<torch::Tensor>{y.detach(), x.grad(), w.grad(), bias ? b.grad() : torch::Tensor()};
      };
      ASSERT_TRUE(models::own_weight_grad(x0, w0, 1));
      const auto mine = run(true), ref = run(false);
      EXPECT_TRUE(torch::equal(mine[0], ref[0]));  // the forward is LibTorch's
      EXPECT_TRUE(torch::equal(mine[1], ref[1]));  // and so is the input gradient
      EXPECT_LT(rel_diff(mine[2], ref[2]), 2e-6);
      EXPECT_EQ(mine[2].strides(), w0.strides());  // the weight's own layout
      if (bias) EXPECT_LT(rel_diff(mine[3], ref[3]), 1e-6);
    }
  }
}

TEST(Conv, LibTorchsWeightGradientWhereMpqsIsNotUsed) {
  const torch::Tensor x = torch::randn({2, 64, 8, 8}).contiguous(kCL);
  const torch::Tensor w = torch::randn({64, 64, 3, 3}).contiguous(kCL);
  EXPECT_TRUE(models::own_weight_grad(x, w, 1));
  EXPECT_FALSE(models::own_weight_grad(x.contiguous(), w, 1));                  // NCHW
  EXPECT_FALSE(models::own_weight_grad(x, torch::randn({64, 1, 3, 3}), 64));     // grouped (depthwise)
  EXPECT_FALSE(models::own_weight_grad(x.to(torch::kDouble), w.to(torch::kDouble), 1));
  EXPECT_FALSE(models::own_weight_grad(torch::randn({2, 32, 8, 8}).contiguous(kCL), torch::randn({64, 32, 3, 3}), 1));
  EXPECT_FALSE(models::own_weight_grad(x, torch::randn({32, 64, 3, 3}), 1));  // too few output channels
  EXPECT_FALSE(models::own_weight_grad(x, torch::randn({64, 64, 1, 1}), 1));  // 1x1
  {
    OwnWeightGrad off(false);
    EXPECT_FALSE(models::own_weight_grad(x, w, 1));
  }
  EXPECT_TRUE(models::own_weight_grad(x, w, 1));
  // Where it is not used, conv2d is torch::conv2d, gradients and all, bit for bit.
  for (bool nchw : {true, false}) {
    OwnWeightGrad mode(nchw);  // NCHW input: on, but not used; channels-last: turned off
    const torch::Tensor xi = nchw ? x.contiguous() : x;
    const torch::Tensor a = xi.clone().requires_grad_(true), wa = w.clone().requires_grad_(true);
    const torch::Tensor b = xi.clone().requires_grad_(true), wb = w.clone().requires_grad_(true);
    models::conv2d(a, wa, {}, {1, 1}, {1, 1}, {1, 1}, 1).sum().backward();
    torch::conv2d(b, wb, {}, {1, 1}, {1, 1}, {1, 1}, 1).sum().backward();
    EXPECT_TRUE(torch::equal(a.grad(), b.grad()));
    EXPECT_TRUE(torch::equal(wa.grad(), wb.grad()));
  }
}

TEST(Conv, ZooNetworksTrainLikeLibTorchsConvolution) {
  // A ResNet-18 step (64..512 channels: mpq's weight gradient in every
  // block) with it and without: the same loss, gradients to float rounding.
  auto grads = [](bool own) {
    OwnWeightGrad mode(own);
    torch::manual_seed(3);
    models::Net net = models::make_model("resnet18", {10, 3});
    net->train();
    net->to_channels_last();
    const torch::Tensor x = torch::randn({2, 3, 64, 64}).contiguous(kCL);
    const torch::Tensor loss = torch::cross_entropy_loss(net->forward(x), torch::tensor({1, 7}));
    loss.backward();
    auto named = net->named_parameters();
    return std::make_pair(loss.item<double>(), named["layer3.1.conv2.weight"].grad().clone());
  };
  const auto [l_own, g_own] = grads(true);
  const auto [l_ref, g_ref] = grads(false);
  EXPECT_EQ(l_own, l_ref);
  EXPECT_LT(rel_diff(g_own, g_ref), 1e-5);
}

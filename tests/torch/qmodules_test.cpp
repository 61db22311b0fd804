// Quantizing zoo networks by layer name: names, excepted layers, switching
// bits and BatchNorm copies, the finetuning fc's SAT rescale.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "models/bn_relu.h"
#include "models/zoo.h"
#include "mpq/common/error.h"
#include "mpq/search/geometry.h"
#include "quant/lsq.h"
#include "quant/qmodules.h"

using namespace mpq;

TEST(Quantize, IndicatorTrainingLayout) {
  torch::manual_seed(0);
  auto q = quant::quantize_for_indicators(models::make_model("resnet20", {10, 1}), {4, 3, 2});
  EXPECT_EQ(q.names, search::zoo_geometry("resnet20", {28, 28, 1, 10}).searchable_names());
  const auto params = q.net->named_parameters();
  const auto buffers = q.net->named_buffers();
  EXPECT_EQ(params["layer1.0.conv1.quan_w_fn.s"].sizes(), torch::IntArrayRef({3}));
  EXPECT_EQ(params["layer2.0.downsample.0.quan_a_fn.s"].sizes(), torch::IntArrayRef({3}));
  EXPECT_TRUE(buffers.contains("layer1.0.conv1.quan_a_fn.init_state"));
  EXPECT_TRUE(buffers.contains("layer1.0.bn1.bns.2.running_mean"));
  EXPECT_TRUE(buffers.contains("layer2.0.downsample.1.bns.0.running_var"));
  // Excepted layers stay in full precision, with their plain names.
  EXPECT_TRUE(params.contains("conv1.weight"));
  EXPECT_FALSE(params.contains("conv1.quan_w_fn.s"));
  EXPECT_TRUE(buffers.contains("bn1.running_mean"));
  EXPECT_TRUE(params.contains("fc.weight"));
  EXPECT_FALSE(params.contains("fc.quan_w_fn.s"));
  // The weight scale starts from the 3-sigma rule: 4 bits < 2 bits.
  const torch::Tensor s = params["layer1.0.conv1.quan_w_fn.s"];
  EXPECT_LT(s[0].item<float>(), s[2].item<float>());
}

TEST(Quantize, SwitchingBitsSelectsScalesAndBatchNorms) {
  torch::manual_seed(1);
  auto q = quant::quantize_for_indicators(models::make_model("resnet20", {10, 1}), {4, 2});
  q.net->train();
  const torch::Tensor x = torch::randn({4, 1, 28, 28});
  q.set_uniform(4);
  const torch::Tensor y4 = q.net->forward(x);
  q.set_uniform(2);
  const torch::Tensor y2 = q.net->forward(x);
  EXPECT_FALSE(torch::allclose(y4, y2));
  const auto buffers = q.net->named_buffers();
  // Each bit-width initialised its own activation scale and used its own BN copy.
  EXPECT_EQ(buffers["layer1.0.conv1.quan_a_fn.init_state"][0].item<float>(), 1.f);
  EXPECT_EQ(buffers["layer1.0.conv1.quan_a_fn.init_state"][1].item<float>(), 1.f);
  EXPECT_EQ(buffers["layer1.0.bn1.bns.0.num_batches_tracked"].item<int64_t>(), 1);
  EXPECT_EQ(buffers["layer1.0.bn1.bns.1.num_batches_tracked"].item<int64_t>(), 1);
  q.set_mixed(std::vector<int>(q.convs.size(), 2));
  (void)q.net->forward(x);
  EXPECT_EQ(buffers["layer1.0.bn1.bns.1.num_batches_tracked"].item<int64_t>(), 2);
  EXPECT_EQ(buffers["layer1.0.bn1.bns.0.num_batches_tracked"].item<int64_t>(), 1);
  // Gradients reach the scales of the bits in use.
  q.net->forward(x).sum().backward();
  const torch::Tensor g = q.net->named_parameters()["layer1.0.conv1.quan_w_fn.s"].grad();
  ASSERT_TRUE(g.defined());
  EXPECT_NE(g[1].item<float>(), 0.f);
  EXPECT_EQ(g[0].item<float>(), 0.f);
}

TEST(Quantize, FinetunePolicyLayout) {
  torch::manual_seed(2);
  const auto names = search::zoo_geometry("resnet20", {28, 28, 1, 10}).searchable_names();
  std::vector<int> wb(names.size(), 3), ab(names.size(), 4);
  wb[0] = 2;
  auto q = quant::quantize_for_finetune(models::make_model("resnet20", {10, 1}), names, wb, ab);
  const auto params = q.net->named_parameters();
  EXPECT_EQ(params["layer1.0.conv1.quan_w_fn.s"].sizes(), torch::IntArrayRef({1}));
  EXPECT_EQ(q.convs[0]->weight_bits, 2);
  EXPECT_EQ(q.convs[0]->act_bits, 4);
  EXPECT_TRUE(params.contains("conv1.quan_w_fn.s"));    // first conv: W8
  EXPECT_FALSE(params.contains("conv1.quan_a_fn.s"));   // its input, the image, unquantized
  EXPECT_TRUE(params.contains("fc.quan_a_fn.s"));       // fc: W8A8
  // SAT: eval-mode logits are the training-mode ones scaled by a positive constant.
  const torch::Tensor x = torch::randn({3, 1, 28, 28});
  q.net->train();
  (void)q.net->forward(x);  // initialise the activation scales
  torch::NoGradGuard no_grad;
  q.net->eval();
  const torch::Tensor e = q.net->forward(x);
  EXPECT_EQ(e.sizes(), torch::IntArrayRef({3, 10}));
  EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
}

// The SAT fc's collapse: once its weight step size outgrows every weight,
// all of them quantize to zero and the rescale by 1 / std is 0 * inf.
TEST(Quantize, SatCollapseIsNamed) {
  torch::manual_seed(2);
  const auto names = search::zoo_geometry("resnet20", {28, 28, 1, 10}).searchable_names();
  const std::vector<int> bits(names.size(), 4);
  auto q = quant::quantize_for_finetune(models::make_model("resnet20", {10, 1}), names, bits, bits);
  EXPECT_EQ(quant::sat_collapse(*q.net), "");
  const torch::Tensor x = torch::randn({3, 1, 28, 28});
  q.net->train();
  EXPECT_TRUE(torch::isfinite(q.net->forward(x)).all().item<bool>());
  {
    torch::NoGradGuard no_grad;
    q.net->named_parameters()["fc.quan_w_fn.s"].fill_(10);
  }
  EXPECT_FALSE(torch::isfinite(q.net->forward(x)).all().item<bool>());
  const std::string why = quant::sat_collapse(*q.net);
  EXPECT_NE(why.find("the 8-bit weights of the fc 'fc' all quantize to one value (weight step size 10, largest |weight| "),
            std::string::npos)
      << why;
  EXPECT_NE(why.find("so its SAT rescale divides by a zero std"), std::string::npos) << why;
}

TEST(Quantize, PolicyForAnotherModelIsOneClearError) {
  auto names = search::zoo_geometry("resnet20", {28, 28, 1, 10}).searchable_names();
  names[3] = "layer1.1.conv9";
  const std::vector<int> bits(names.size(), 4);
  try {
    quant::quantize_for_finetune(models::make_model("resnet20", {10, 1}), names, bits, bits);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("searchable layer 3 is 'layer1.1.conv9' but the model's is 'layer1.1.conv2'"),
              std::string::npos)
        << e.what();
  }
  names.pop_back();
  const std::vector<int> short_bits(names.size(), 4);
  EXPECT_THROW(quant::quantize_for_finetune(models::make_model("resnet20", {10, 1}), names, short_bits, short_bits),
               InputError);
}

// Channels-last: the same network and the same numbers, in another layout.
// Gradients are compared for the ResNets only: a randomly initialised
// MobileNet-V1 on a batch of 4 is so ill-conditioned that PyTorch's own
// gradients (NCHW and channels-last alike) are 0.5-4% from float64's.
TEST(ChannelsLast, NetworkComputesWhatNchwComputes) {
  for (const char* arch : {"resnet20", "resnet18", "mobilenetv1"}) {
    SCOPED_TRACE(arch);
    const bool r20 = std::string(arch) == "resnet20", mbv1 = std::string(arch) == "mobilenetv1";
    const int ch = r20 ? 1 : 3, hw = r20 ? 28 : 64;
    torch::manual_seed(3);
    models::Net a = models::make_model(arch, {10, ch});
    torch::manual_seed(3);
    models::Net b = models::make_model(arch, {10, ch});
    b->to_channels_last();
    for (const auto& p : b->parameters())
      if (p.dim() == 4 && p.size(1) > 1 && p.size(2) * p.size(3) > 1)
        EXPECT_TRUE(p.is_contiguous(torch::MemoryFormat::ChannelsLast));
    const torch::Tensor x = torch::randn({4, ch, hw, hw});
    const torch::Tensor ya = a->forward(x), yb = b->forward(x);
    // Not sum(): through training-mode BatchNorm its gradient is zero up to rounding.
    const torch::Tensor r = torch::randn_like(ya);
    (ya * r).sum().backward();
    (yb * r).sum().backward();
    EXPECT_LT((ya - yb).abs().max().item<double>(), 1e-4);
    if (mbv1) continue;
    const auto pa = a->named_parameters(), pb = b->named_parameters();
    for (const auto& kv : pa) {
      const torch::Tensor& gb = pb[kv.key()].grad();
      EXPECT_LT((kv.value().grad() - gb).abs().max().item<double>(), 1e-3 * (1 + gb.abs().max().item<double>()))
          << kv.key();
    }
  }
}

TEST(ChannelsLast, LsqOpIsExactInEitherLayout) {
  torch::manual_seed(5);
  const torch::Tensor x0 = torch::randn({3, 8, 5, 7});
  const torch::Tensor go = torch::randn({3, 8, 5, 7});
  const quant::Thresholds t = quant::thresholds(4, false, false);
  auto run = [&](torch::MemoryFormat f) {
    torch::Tensor x = x0.clone(f).requires_grad_(true);
    torch::Tensor s = torch::full({1}, 0.3).requires_grad_(true);
    torch::Tensor y = quant::lsq_quantize(x, s, t, 0.1, false);
    EXPECT_TRUE(y.is_contiguous(f));
    y.backward(go.contiguous(torch::MemoryFormat::Contiguous));  // a gradient in the other layout
    return std::make_tuple(y.contiguous(), x.grad().contiguous(), s.grad());
  };
  const auto [ya, gxa, gsa] = run(torch::MemoryFormat::Contiguous);
  const auto [yb, gxb, gsb] = run(torch::MemoryFormat::ChannelsLast);
  EXPECT_TRUE(torch::equal(ya, yb));
  EXPECT_TRUE(torch::equal(gxa, gxb));
  EXPECT_NEAR(gsa.item<double>(), gsb.item<double>(), 1e-6 * std::abs(gsa.item<double>()));
}

// A ReLU absorbed by the next quantized conv: the same numbers as a ReLU pass.
TEST(ReluAbsorption, LsqOpQuantizesReluOfItsInput) {
  torch::manual_seed(6);
  torch::Tensor x0 = torch::randn({4, 8, 6, 6});
  x0.index_put_({torch::rand_like(x0) < 0.1}, 0.0);  // exact zeros: relu's gradient is zero there
  const torch::Tensor go = torch::randn_like(x0);
  const quant::Thresholds t = quant::thresholds(3, true, false);
  auto run = [&](bool fused) {
    torch::Tensor x = x0.clone().requires_grad_(true);
    torch::Tensor s = torch::full({1}, 0.4).requires_grad_(true);
    torch::Tensor y = fused ? quant::lsq_quantize(x, s, t, 0.1, false, /*relu=*/true)
                            : quant::lsq_quantize(torch::relu(x), s, t, 0.1, false);
    y.backward(go);
    return std::make_tuple(y.detach(), x.grad(), s.grad());
  };
  const auto [ya, gxa, gsa] = run(false);
  const auto [yb, gxb, gsb] = run(true);
  EXPECT_TRUE(torch::equal(ya, yb));
  EXPECT_TRUE(torch::equal(gxa, gxb));
  EXPECT_TRUE(torch::equal(gsa, gsb));
}

TEST(ReluAbsorption, QuantizedNetsComputeAlikeWithAndWithout) {
  // Bit for bit against torch's own BatchNorm and ReLU: the fused
  // BatchNorm+ReLU (which a separate ReLU would otherwise take wherever a
  // tensor is also channels-last, as at 1x1) rounds differently, and is
  // compared with torch's ops in bn_relu_test.
  const models::BnReluFusionScope fusion_off(false);
  for (const char* arch : {"resnet20", "resnet50", "mobilenetv1"}) {
    for (bool joint : {false, true}) {
      SCOPED_TRACE(std::string(arch) + (joint ? " joint" : " finetune"));
      const bool r20 = std::string(arch) == "resnet20";
      const int ch = r20 ? 1 : 3, hw = r20 ? 28 : 32;
      auto make = [&] {
        torch::manual_seed(7);
        models::Net net = models::make_model(arch, {10, ch});
        if (joint) return quant::quantize_for_indicators(net, {4, 2});
        const auto names = search::zoo_geometry(arch, {hw, hw, ch, 10}).searchable_names();
        return quant::quantize_for_finetune(net, names, std::vector<int>(names.size(), 3),
                                            std::vector<int>(names.size(), 4));
      };
      quant::QuantizedNet a = make(), b = make();
      int absorbed = 0;
      for (auto& c : b.convs) {
        absorbed += c->absorbs_relu();
        c->input_after_relu = false;
      }
      EXPECT_EQ(absorbed, r20 ? 9 : std::string(arch) == "resnet50" ? 32 : 26);
      torch::manual_seed(8);
      const torch::Tensor x = torch::randn({4, ch, hw, hw});
      for (int step = 0; step < 2; ++step) {  // the first initialises the activation scales
        const torch::Tensor ya = a.net->forward(x), yb = b.net->forward(x);
        ASSERT_TRUE(torch::equal(ya, yb));
        const torch::Tensor r = torch::randn_like(ya);
        (ya * r).sum().backward();
        (yb * r).sum().backward();
      }
      const auto pa = a.net->named_parameters(), pb = b.net->named_parameters();
      for (const auto& kv : pa) {
        if (!kv.value().grad().defined()) continue;
        EXPECT_TRUE(torch::equal(kv.value().grad(), pb[kv.key()].grad())) << kv.key();
      }
    }
  }
}

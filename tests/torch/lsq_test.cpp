// The fused LSQ op against the original's 72 golden cases and against the
// composed-op reference on random shapes; the quantizer module's rules.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>
#include <torch/serialize.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <iterator>
#include <tuple>

#include "mpq/common/error.h"
#include "quant/lsq.h"
#include "float_bits.h"
#include "quant/lsq_cpu.h"
#include "test_util.h"

using namespace mpq::quant;

namespace {

// Named tolerances. y and grad_x are elementwise results of the same float
// operations as PyTorch's, so they match to the last bit but for a rounding
// tie moved by one ulp of x / s; grad_s is a sum over all elements.
constexpr double kOutputAtol = 1e-6;
constexpr double kGradScaleRtol = 1e-4;
// The composed formulation's input gradient is (g * s) / s, one rounding off
// the fused op's exact g.
constexpr double kGradInputRtol = 1e-6;

c10::Dict<c10::IValue, c10::IValue> load_cases() {
  const std::string bytes = mpq::test::read_all(mpq::test::golden("lsq_cases.pt"));
  return torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end())).toGenericDict();
}

torch::Tensor get(const c10::Dict<c10::IValue, c10::IValue>& d, int i, const char* key) {
  return d.at(std::to_string(i) + "." + key).toTensor();
}

}  // namespace

TEST(Lsq, Thresholds) {
  EXPECT_EQ(thresholds(4, true, false).pos, 15);
  EXPECT_EQ(thresholds(4, false, false).neg, -8);
  EXPECT_EQ(thresholds(4, false, false).pos, 7);
  EXPECT_EQ(thresholds(4, false, true).neg, -7);
  EXPECT_THROW(thresholds(4, true, true), mpq::InputError);
}

TEST(Lsq, AllGoldenCases) {
  MPQ_NEEDS_GOLDEN();
  const auto cases = load_cases();
  const YAML::Node meta = YAML::LoadFile(mpq::test::golden("lsq_cases.json"));
  ASSERT_EQ(meta.size(), 72u);
  for (const auto& c : meta) {
    const int i = c["case"].as<int>();
    SCOPED_TRACE("case " + std::to_string(i) + " " + c["side"].as<std::string>() + " " + c["kind"].as<std::string>() +
                 " " + std::to_string(c["bits"].as<int>()) + " bits");
    const Thresholds t{c["thd_neg"].as<double>(), c["thd_pos"].as<double>()};
    const bool clamp = c["s_clamped_to_1e-5_1"].as<bool>();
    const Thresholds mine = thresholds(c["bits"].as<int>(), c["all_positive"].as<bool>(), c["symmetric"].as<bool>());
    EXPECT_EQ(mine.neg, t.neg);
    EXPECT_EQ(mine.pos, t.pos);
    for (bool fused : {true, false}) {
      torch::Tensor x = get(cases, i, "x").clone().requires_grad_(true);
      torch::Tensor s = get(cases, i, "s").clone().requires_grad_(true);
      const double g = c["grad_scale"].as<double>();
      torch::Tensor y = fused ? lsq_quantize(x, s, t, g, clamp) : lsq_quantize_reference(x, s, t, g, clamp);
      y.backward(get(cases, i, "grad_out"));
      EXPECT_LE((y - get(cases, i, "y")).abs().max().item<double>(), kOutputAtol) << (fused ? "fused" : "reference");
      // The original's zeros are all +0 (its round_pass adds v back), where rounding alone keeps v's sign.
      EXPECT_EQ(mpq::test::zeros_of_other_sign(y, get(cases, i, "y")), 0) << (fused ? "fused" : "reference");
      EXPECT_LE((x.grad() - get(cases, i, "grad_x")).abs().max().item<double>(), kOutputAtol);
      const double gs = s.grad().item<double>(), ref = get(cases, i, "grad_s").item<double>();
      EXPECT_LE(std::abs(gs - ref), kGradScaleRtol * std::max(1e-6, std::abs(ref))) << gs << " vs " << ref;
    }
  }
}

TEST(Lsq, FusedEqualsComposedOnRandomShapes) {
  torch::manual_seed(3);
  const std::vector<std::vector<int64_t>> shapes = {{1}, {7}, {64, 3, 3, 3}, {2, 16, 9, 9}, {100000}};
  for (const auto& shape : shapes)
    for (int bits : {2, 3, 4, 8})
      for (bool pos : {false, true})
        for (bool clamp : {false, true}) {
          const Thresholds t = thresholds(bits, pos, false);
          torch::Tensor x0 = torch::randn(shape) * 0.3;
          torch::Tensor s0 = torch::full({1}, clamp ? 0.05 : 0.07);
          torch::Tensor go = torch::randn(shape);
          const double g = 1.0 / std::sqrt(t.pos * x0.numel());
          auto run = [&](bool fused) {
            torch::Tensor x = x0.clone().requires_grad_(true), s = s0.clone().requires_grad_(true);
            torch::Tensor y = fused ? lsq_quantize(x, s, t, g, clamp) : lsq_quantize_reference(x, s, t, g, clamp);
            y.backward(go);
            return std::tuple{y.detach(), x.grad(), s.grad()};
          };
          const auto [y1, gx1, gs1] = run(true);
          const auto [y2, gx2, gs2] = run(false);
          EXPECT_TRUE(torch::equal(y1, y2)) << bits << " bits";
          EXPECT_TRUE(torch::allclose(gx1, gx2, kGradInputRtol, 0.0));
          EXPECT_NEAR(gs1.item<double>(), gs2.item<double>(), 1e-4 * std::max(1e-3, std::abs(gs2.item<double>())));
        }
}

// at::parallel_for is a header template, parallel only in translation units
// built with OpenMP; without it the fused kernels ran on one thread (the
// flags come from mpq_torch_lib, as they do for lsq.cpp).
TEST(Lsq, KernelsAreBuiltToRunInParallel) {
#if !defined(_OPENMP)
  FAIL() << "built without OpenMP: at::parallel_for runs serially";
#else
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  std::atomic<int> seen{0};
  at::parallel_for(0, 2, 1, [&](int64_t, int64_t) { seen |= 1 << at::get_thread_num(); });
  at::set_num_threads(before);
  EXPECT_EQ(seen.load(), 3) << "one thread ran both halves";
#endif
}

// The CPU kernels for AVX2 compute what the baseline's (SSE2) compute, bit
// for bit: outputs, input gradients, and the scale's gradient sum, over
// lengths that leave every kind of tail (8-wide, 4-wide, scalar) and several
// chunks, with values at the clamp's ends, rounding ties, signed zeros,
// infinities and NaN, on one thread and on two.
TEST(Lsq, CpuKernelsOfEveryInstructionSetGiveTheSameBits) {
  namespace cpu = mpq::quant::cpu;
  if (cpu::isa() != cpu::Isa::kAvx2) GTEST_SKIP() << "this CPU has no AVX2: the baseline kernels are the only ones";
  torch::manual_seed(11);
  const int threads = at::get_num_threads();
  for (const int64_t numel : {1, 3, 4, 5, 8, 12, 13, 15, 16384, 16384 * 2 + 13, 100003})
    for (const float sv : {0.25f, 0.0371f})
      for (const auto& [n, p, relu] : {std::tuple{0.f, 15.f, false}, std::tuple{0.f, 15.f, true},
                                       std::tuple{-8.f, 7.f, false}, std::tuple{-1.f, 0.f, false}})
        for (const bool non_finite : {false, true}) {
          SCOPED_TRACE("numel " + std::to_string(numel) + ", s " + std::to_string(sv) + ", [" + std::to_string(n) +
                       ", " + std::to_string(p) + "]" + (relu ? " relu" : "") + (non_finite ? ", inf and NaN" : ""));
          torch::Tensor x = torch::randn({numel}) * (p - n) * sv * 0.6f;
          // Gradients over 2^-40 .. 2^40: double sums of float products are exact over a narrower range, and
          // would hide a change in the order of summation.
          const torch::Tensor go =
              torch::randn({numel}) * torch::exp2(torch::randint(-40, 41, {numel}).to(torch::kFloat));
          // Exact ends, ties between two integers, zeros of both signs, strewn through; with `non_finite`,
          // infinities and NaN too (whose sums are no longer a test of their order).
          std::vector<float> special = {n * sv, p * sv, (n + 0.5f) * sv, 2.5f * sv, -2.5f * sv, 0.f, -0.f,
                                        (p + 1) * sv, 1.5f * sv};
          if (non_finite) special.insert(special.end(), {INFINITY, -INFINITY, NAN});
          float* px = x.data_ptr<float>();
          for (int64_t i = 0; i < numel; i += 3) px[i] = special[static_cast<size_t>(i / 3) % special.size()];
          for (const int t : {1, 2}) {
            at::set_num_threads(t);
            torch::Tensor y_base = torch::empty_like(x), y_avx = torch::empty_like(x);
            torch::Tensor gx_base = torch::empty_like(x), gx_avx = torch::empty_like(x);
            cpu::forward(px, y_base.data_ptr<float>(), numel, sv, n, p, cpu::Isa::kBaseline);
            cpu::forward(px, y_avx.data_ptr<float>(), numel, sv, n, p, cpu::Isa::kAvx2);
            const double sum_base = cpu::backward(px, go.data_ptr<float>(), gx_base.data_ptr<float>(), numel, sv, n,
                                                  p, relu, cpu::Isa::kBaseline);
            const double sum_avx = cpu::backward(px, go.data_ptr<float>(), gx_avx.data_ptr<float>(), numel, sv, n, p,
                                                 relu, cpu::Isa::kAvx2);
            const size_t bytes = sizeof(float) * static_cast<size_t>(numel);
            EXPECT_EQ(std::memcmp(y_base.data_ptr<float>(), y_avx.data_ptr<float>(), bytes), 0);
            EXPECT_EQ(std::memcmp(gx_base.data_ptr<float>(), gx_avx.data_ptr<float>(), bytes), 0);
            EXPECT_EQ(std::memcmp(&sum_base, &sum_avx, sizeof(double)), 0) << sum_base << " vs " << sum_avx;
            if (!non_finite) EXPECT_TRUE(std::isfinite(sum_base)) << sum_base;
          }
        }
  at::set_num_threads(threads);
}

TEST(Lsq, ScaleOutsideTheClampGetsNoGradient) {
  const Thresholds t = thresholds(4, false, false);
  torch::Tensor x = torch::randn({50}).requires_grad_(true);
  torch::Tensor s = torch::full({1}, 1.5).requires_grad_(true);
  lsq_quantize(x, s, t, 0.1, true).sum().backward();
  EXPECT_EQ(s.grad().item<float>(), 0.f);
}

// The clamp of the scale follows torch.clamp on a float tensor, as the
// composed op does: float(1e-5) and 1 are inside (they get a gradient), the
// floats just beyond them are not, and a NaN scale stays NaN in the output
// (a diverged run shows in its loss) and gets no gradient.
TEST(Lsq, ScalesAtTheClampsEndsFollowTorchClamp) {
  torch::manual_seed(5);
  const Thresholds t = thresholds(3, false, false);
  const torch::Tensor x0 = torch::randn({64}) * 3e-5, go = torch::randn({64});
  const float nan = std::nanf("");
  const std::tuple<float, bool> cases[] = {{1e-5f, true},
                                           {std::nextafter(1e-5f, 0.f), false},
                                           {std::nextafter(1e-5f, 1.f), true},
                                           {1.f, true},
                                           {std::nextafter(1.f, 2.f), false},
                                           {nan, false}};
  for (const auto& [scale, inside] : cases) {
    SCOPED_TRACE(scale);
    torch::Tensor xa = x0.clone().requires_grad_(true), sa = torch::full({1}, scale).requires_grad_(true);
    torch::Tensor ya = lsq_quantize(xa, sa, t, 0.1, /*clamp_scale=*/true);
    ya.backward(go);
    torch::Tensor xb = x0.clone().requires_grad_(true), sb = torch::full({1}, scale).requires_grad_(true);
    torch::Tensor yb = lsq_quantize_reference(xb, sb, t, 0.1, /*clamp_scale=*/true);
    yb.backward(go);
    EXPECT_TRUE(torch::allclose(ya, yb, 0, 0, /*equal_nan=*/true)) << ya << " vs " << yb;
    EXPECT_EQ(std::isnan(scale), ya.isnan().all().item<bool>());
    const float ga = sa.grad().item<float>(), gb = sb.grad().item<float>();
    EXPECT_EQ(ga != 0.f, inside) << ga;
    EXPECT_EQ(gb != 0.f, inside) << gb;
    EXPECT_NEAR(ga, gb, 1e-4 * std::abs(gb)) << ga << " vs " << gb;
    if (!std::isnan(scale)) EXPECT_TRUE(torch::allclose(xa.grad(), xb.grad(), kGradInputRtol, 0.0));
  }
}

// The op takes the whole vector of candidate scales and an index: its
// output and input gradient are the one-element op's bit for bit, and the
// scale's gradient is that op's at the index and 0 elsewhere (no slice of
// the vector in the graph); a scale outside the clamp gets none there either.
TEST(Lsq, AnIndexIntoTheCandidatesScalesGivesThatScalesGradientOnly) {
  torch::manual_seed(3);
  for (bool clamp : {false, true})
    for (int64_t index : {0, 1, 2}) {
      SCOPED_TRACE(std::to_string(index) + (clamp ? " clamped" : ""));
      const Thresholds t = thresholds(3, true, false);
      const torch::Tensor x0 = torch::randn({4, 8, 5, 5}), go = torch::randn({4, 8, 5, 5});
      const torch::Tensor s0 = torch::tensor({0.05f, 0.2f, 2.0f});  // the last outside [1e-5, 1]
      torch::Tensor xa = x0.clone().requires_grad_(true), sa = s0.clone().requires_grad_(true);
      torch::Tensor ya = lsq_quantize(xa, sa, t, 0.1, clamp, /*relu=*/true, index);
      ya.backward(go);
      torch::Tensor xb = x0.clone().requires_grad_(true), sb = s0.narrow(0, index, 1).clone().requires_grad_(true);
      torch::Tensor yb = lsq_quantize(xb, sb, t, 0.1, clamp, /*relu=*/true);
      yb.backward(go);
      EXPECT_TRUE(torch::equal(ya, yb));
      EXPECT_TRUE(torch::equal(xa.grad(), xb.grad()));
      torch::Tensor want = torch::zeros({3});
      want[index] = sb.grad()[0];
      EXPECT_TRUE(torch::equal(sa.grad(), want)) << sa.grad() << " vs " << want;
      EXPECT_EQ(clamp && index == 2, sa.grad()[index].item<float>() == 0.f);
    }
}

TEST(Lsq, QuantizerInitialisesOncePerBitWidth) {
  LsqQuantizer q(LsqQuantizerOptions{{4, 3, 2}, /*all_positive=*/true, false, /*clamp_scale=*/true});
  q->train();
  torch::Tensor x = torch::rand({4, 8});
  q->forward(x, 3);
  const float expect = (x.abs().mean() * 2 / std::sqrt(7.0)).item<float>();
  EXPECT_FLOAT_EQ(q->s[1].item<float>(), expect);
  EXPECT_EQ(q->init_state[1].item<float>(), 1.f);
  EXPECT_EQ(q->init_state[0].item<float>(), 0.f);
  q->forward(x * 10, 3);  // already initialised: unchanged
  EXPECT_FLOAT_EQ(q->s[1].item<float>(), expect);
  EXPECT_TRUE(torch::equal(q->forward(x, 32), x));
  EXPECT_THROW(q->forward(x, 5), mpq::InputError);

  LsqQuantizer w(LsqQuantizerOptions{{4, 2}, false, false, false});
  torch::Tensor wt = torch::randn({16, 8, 3, 3});
  w->init_from_weight(wt);
  const auto m = torch::max((wt.mean() - 3 * wt.std()).abs(), (wt.mean() + 3 * wt.std()).abs());
  EXPECT_FLOAT_EQ(w->s[0].item<float>(), (m / 8).item<float>());
  EXPECT_FLOAT_EQ(w->s[1].item<float>(), (m / 2).item<float>());
  // Named as the original, so state dicts map one to one.
  const auto params = w->named_parameters();
  EXPECT_TRUE(params.contains("s"));
  EXPECT_TRUE(w->named_buffers().contains("init_state"));
}

// The op's backward node keeps autograd's rules: inputs that need no
// gradient get none (and the others theirs, as when both need one); no
// node under no_grad; a saved input changed in place, or a second backward
// through freed buffers, is refused as PyTorch refuses it for its own ops.
TEST(Lsq, TheOpsBackwardNodeFollowsAutogradsRules) {
  torch::manual_seed(5);
  const Thresholds t = thresholds(4, false, false);
  const torch::Tensor x0 = torch::randn({3, 4, 5, 5}), go = torch::randn({3, 4, 5, 5});
  const torch::Tensor s0 = torch::tensor({0.1f, 0.3f});
  torch::Tensor x = x0.clone().requires_grad_(true), s = s0.clone().requires_grad_(true);
  torch::Tensor y = lsq_quantize(x, s, t, 0.05, false, false, 1);
  EXPECT_EQ(y.grad_fn()->name(), "mpq::LsqBackward");
  y.backward(go);
  const torch::Tensor gx = x.grad().clone(), gs = s.grad().clone();

  torch::Tensor x_only = x0.clone().requires_grad_(true);
  lsq_quantize(x_only, s0, t, 0.05, false, false, 1).backward(go);
  EXPECT_TRUE(torch::equal(x_only.grad(), gx));
  torch::Tensor s_only = s0.clone().requires_grad_(true);
  lsq_quantize(x0, s_only, t, 0.05, false, false, 1).backward(go);
  EXPECT_TRUE(torch::equal(s_only.grad(), gs));

  {
    torch::NoGradGuard no_grad;
    const torch::Tensor yn = lsq_quantize(x, s, t, 0.05, false, false, 1);
    EXPECT_FALSE(yn.requires_grad());
    EXPECT_TRUE(torch::equal(yn, y.detach()));
  }
  EXPECT_FALSE(lsq_quantize(x0, s0, t, 0.05, false, false, 1).requires_grad());

  torch::Tensor xm = x0.clone().requires_grad_(true);
  torch::Tensor h = xm * 1;  // a non-leaf, changed in place after the op saved it
  torch::Tensor ym = lsq_quantize(h, s, t, 0.05, false, false, 1);
  h.add_(1);
  EXPECT_THROW(ym.backward(go), c10::Error);

  torch::Tensor xr = x0.clone().requires_grad_(true);
  torch::Tensor yr = lsq_quantize(xr, s, t, 0.05, false, false, 1);
  yr.backward(go);
  EXPECT_THROW(yr.backward(go), c10::Error);  // its saved tensors are freed
  torch::Tensor xk = x0.clone().requires_grad_(true), sk = s0.clone().requires_grad_(true);
  torch::Tensor yk = lsq_quantize(xk, sk, t, 0.05, false, false, 1);
  yk.backward(go, /*retain_graph=*/true);
  yk.backward(go);
  EXPECT_TRUE(torch::equal(xk.grad(), gx * 2));
  EXPECT_TRUE(torch::equal(sk.grad(), gs * 2));
}

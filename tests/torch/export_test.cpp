// The ONNX export's graph: every zoo network's description replays its
// forward, the file reads back to the policy's size and BitOPs, containers
// follow the opset, integers pack as ONNX defines them, and networks or bits
// that cannot be exported are refused.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdlib>
#include <random>

#include <torch/torch.h>

#include "engine/export.h"
#include "export/onnx_graph.h"
#include "models/zoo.h"
#include "mpq/common/error.h"
#include "mpq/search/geometry.h"
#include "mpq/search/search.h"
#include "quant/qmodules.h"
#include "test_util.h"

using namespace mpq;
namespace ox = mpq::onnx_export;

namespace {

struct Quantized {
  quant::QuantizedNet q;
  std::vector<int> wb, ab;
};

// A zoo network at a seeded random policy, its activation scales initialised
// by one training-mode pass, in eval mode.
Quantized quantized(const std::string& arch, int channels, int side, unsigned seed, std::vector<int> choices) {
  torch::manual_seed(seed);
  std::mt19937 rng(seed);
  models::Net net = models::make_model(arch, {10, channels});
  std::vector<std::string> names;
  const auto slots = net->slots();
  for (size_t i = 1; i < slots.size(); ++i)
    if (!slots[i].is_linear) names.push_back(slots[i].name);
  Quantized out;
  for (size_t i = 0; i < names.size(); ++i) {
    out.wb.push_back(choices[rng() % choices.size()]);
    out.ab.push_back(choices[rng() % choices.size()]);
  }
  out.q = quant::quantize_for_finetune(net, names, out.wb, out.ab);
  net->train();
  {
    torch::NoGradGuard no_grad;
    net->forward(torch::randn({4, channels, side, side}));
  }
  net->eval();
  return out;
}

}  // namespace

TEST(OnnxTypes, PackingIsOnnxs) {
  // ONNX packs 4-bit values two to a byte and 2-bit values four, the first in the lowest bits.
  EXPECT_EQ(ox::pack_integers({-8, 7, 3, -1}, ox::kInt4), std::string("\x78\xf3", 2));
  EXPECT_EQ(ox::pack_integers({-2, 1, 0, -1}, ox::kInt2), std::string("\xc6", 1));
  EXPECT_EQ(ox::pack_integers({-300, 5}, ox::kInt16), std::string("\xd4\xfe\x05\x00", 4));
  std::mt19937 rng(3);
  for (int t : {ox::kInt2, ox::kInt4, ox::kInt8, ox::kInt16, ox::kUint8, ox::kUint16}) {
    const int bits = ox::type_bits(t);
    const bool is_signed = t == ox::kInt2 || t == ox::kInt4 || t == ox::kInt8 || t == ox::kInt16;
    const int lo = is_signed ? -(1 << (bits - 1)) : 0, span = 1 << bits;
    std::vector<int32_t> v(37);  // odd: a part-filled last byte
    for (auto& x : v) x = lo + static_cast<int>(rng() % static_cast<unsigned>(span));
    EXPECT_EQ(ox::unpack_integers(ox::pack_integers(v, t), t, v.size()), v) << ox::type_name(t);
  }
}

TEST(OnnxTypes, ContainersFollowTheOpset) {
  EXPECT_EQ(ox::weight_container(2, 25), ox::kInt2);
  EXPECT_EQ(ox::weight_container(2, 21), ox::kInt4);
  EXPECT_EQ(ox::weight_container(3, 21), ox::kInt4);
  EXPECT_EQ(ox::weight_container(4, 13), ox::kInt8);
  EXPECT_EQ(ox::weight_container(5, 25), ox::kInt8);
  EXPECT_EQ(ox::weight_container(12, 21), ox::kInt16);
  EXPECT_EQ(ox::weight_container(12, 20), 0);
  EXPECT_EQ(ox::act_container(3, 13), ox::kUint8);
  EXPECT_EQ(ox::act_container(16, 21), ox::kUint16);
  EXPECT_EQ(ox::act_container(9, 20), 0);
  EXPECT_EQ(ox::ir_version(13), 7);
  EXPECT_EQ(ox::ir_version(21), 10);
  EXPECT_EQ(ox::ir_version(25), 11);
}

// The graph's arithmetic (integer weights times scales, Clip + Quantize +
// Dequantize) replayed in torch gives the fake-quantized forward, and the
// file written reads back to the policy's size and BitOPs, for every zoo model.
TEST(OnnxExport, EveryZooModelReplaysItsForwardAndReadsBackToItsPolicy) {
  mpq::test::TempDir dir;
  for (const std::string& arch : models::model_names()) {
    const int side = arch == "resnet20" ? 28 : 32, channels = arch == "resnet20" ? 1 : 3;
    Quantized m = quantized(arch, channels, side, 7, {2, 3, 4, 5, 6, 8});
    const torch::Tensor probe = torch::randn({3, channels, side, side});
    const engine::OnnxBuild b = engine::build_onnx_graph(*m.q.net, arch, 25, probe);
    torch::NoGradGuard no_grad;
    const torch::Tensor ref = m.q.net->forward(probe);
    EXPECT_LE((b.replay_logits - ref).abs().max().item<double>(), 1e-4 * std::max(1.0, ref.abs().max().item<double>()))
        << arch;
    const std::string path = dir.file(arch + ".onnx");
    ox::write_model(b.graph, path);
    const ox::GraphSummary s = ox::summarize_model(path);
    EXPECT_EQ(s.opset, 25);
    EXPECT_EQ(s.ir_version, 11);
    EXPECT_EQ(s.searchable, m.q.names) << arch;
    ASSERT_EQ(s.layers.size(), m.q.names.size() + 2) << arch;
    for (size_t i = 0; i < m.q.names.size(); ++i) {
      const ox::LayerSummary& l = s.layers[i + 1];
      EXPECT_EQ(l.weight_bits, m.wb[i]) << l.name;
      EXPECT_EQ(l.act_bits, m.ab[i]) << l.name;
      EXPECT_EQ(l.weight_container, ox::weight_container(m.wb[i], 25)) << l.name;
      EXPECT_EQ(l.packed_bytes, (l.params * m.wb[i] + 7) / 8) << l.name;
    }
    EXPECT_EQ(s.layers.front().act_bits, 0) << "the first conv reads the float image";
    EXPECT_EQ(s.layers.back().op, "Gemm");
    const search::Report want =
        search::policy_report(search::zoo_geometry(arch, {side, side, channels, 10}), m.wb, m.ab);
    EXPECT_DOUBLE_EQ(s.report.gbitops, want.gbitops) << arch;
    EXPECT_DOUBLE_EQ(s.report.size_mb, want.size_mb) << arch;
    EXPECT_DOUBLE_EQ(s.report.compression_ratio, want.compression_ratio) << arch;
  }
}

TEST(OnnxExport, BitsAboveEightNeedOpset21) {
  Quantized m = quantized("resnet20", 1, 28, 11, {12});
  const torch::Tensor probe = torch::randn({2, 1, 28, 28});
  try {
    engine::build_onnx_graph(*m.q.net, "resnet20", 20, probe);
    FAIL() << "12-bit layers exported at opset 20";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("layer1.0.conv1 has 12-bit activations, which opset 20 cannot hold (use --opset 21"),
              std::string::npos)
        << e.what();
  }
  const engine::OnnxBuild b = engine::build_onnx_graph(*m.q.net, "resnet20", 21, probe);
  mpq::test::TempDir dir;
  ox::write_model(b.graph, dir.file("m.onnx"));
  const ox::GraphSummary s = ox::summarize_model(dir.file("m.onnx"));
  EXPECT_EQ(s.layers[1].weight_container, ox::kInt16);
  EXPECT_EQ(s.layers[1].act_container, ox::kUint16);
  EXPECT_EQ(s.layers[1].act_bits, 12);
}

TEST(OnnxExport, RefusesFullPrecisionAndIndicatorNetworks) {
  const torch::Tensor probe = torch::randn({1, 1, 28, 28});
  models::Net fp = models::make_model("resnet20", {10, 1});
  fp->eval();
  EXPECT_THROW(
      {
        try {
          engine::build_onnx_graph(*fp, "resnet20", 21, probe);
        } catch (const InputError& e) {
          EXPECT_NE(std::string(e.what()).find("full-precision model"), std::string::npos) << e.what();
          throw;
        }
      },
      InputError);
  auto joint = quant::quantize_for_indicators(models::make_model("resnet20", {10, 1}), {4, 3, 2});
  joint.net->eval();
  EXPECT_THROW(engine::build_onnx_graph(*joint.net, "resnet20", 21, probe), InputError);
  EXPECT_THROW(engine::build_onnx_graph(*joint.net, "resnet20", 12, probe), InputError);
}

TEST(OnnxExport, ReadingBackRefusesWhatIsNotAnMpqGraph) {
  mpq::test::TempDir dir;
  mpq::test::write_all(dir.file("junk.onnx"), "not a protobuf at all \xff\xff\xff");
  EXPECT_THROW(ox::summarize_model(dir.file("junk.onnx")), InputError);
  EXPECT_THROW(ox::summarize_model(dir.file("missing.onnx")), InputError);
}

// onnxruntime on every zoo model's graph (random weights, a random policy,
// 32x32 inputs) against the fake-quantized forward, through the same check
// the Fashion-MNIST test runs.
TEST(OnnxExport, OnnxruntimeRunsEveryZooModelAsMpqDoes) {
  const std::string py = mpq::test::torch_python();
  if (py.empty()) GTEST_SKIP() << mpq::test::kNoTorchPython;
  if (std::system((py + " -c 'import onnx, onnxruntime' >/dev/null 2>&1").c_str()) != 0)
    GTEST_SKIP() << "onnx and onnxruntime are not installed in " << py << " (pip install onnx onnxruntime)";
  mpq::test::TempDir dir;
  for (const std::string& arch : models::model_names()) {
    const int side = 32, channels = arch == "resnet20" ? 1 : 3;
    Quantized m = quantized(arch, channels, side, 13, {2, 3, 4, 5, 8});
    m.q.net->to_channels_last();  // as training runs it
    const torch::Tensor probe = torch::randn({16, channels, side, side});
    const engine::OnnxBuild b = engine::build_onnx_graph(*m.q.net, arch, 25, probe);
    const std::string ref = dir.file(arch);
    ASSERT_EQ(::mkdir(ref.c_str(), 0755), 0);
    ox::write_model(b.graph, ref + "/m.onnx");
    torch::Tensor logits;
    {
      torch::NoGradGuard no_grad;
      logits = m.q.net->forward(probe);
    }
    engine::write_npy(ref + "/inputs.npy", probe);
    engine::write_npy(ref + "/logits.npy", logits);
    engine::write_npy(ref + "/labels.npy", logits.argmax(1));
    const std::string cmd = py + " " + MPQ_SOURCE_DIR + "/tests/e2e/onnx_check.py " + ref + "/m.onnx " + ref + " > " +
                            ref + "/check.txt 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << arch << "\n" << mpq::test::read_all(ref + "/check.txt");
    EXPECT_NE(mpq::test::read_all(ref + "/check.txt").find("verdict: agree"), std::string::npos) << arch;
  }
}

// The zoo against torchvision (golden ResNet-18 logits) and the torch-free
// geometry tables; PyTorch checkpoints read and written.
#include <gtest/gtest.h>

#include <caffe2/serialize/inline_container.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <cstring>
#include <limits>
#include <random>

#include "models/zoo.h"
#include "mpq/io/indicators.h"
#include "quant/qmodules.h"
#include "mpq/common/error.h"
#include "mpq/search/geometry.h"
#include "test_util.h"
#include "torchio/checkpoint.h"

using namespace mpq;

namespace {

// Wraps a layer and records the spatial size of its output.
struct RecorderImpl : torch::nn::Module {
  explicit RecorderImpl(torch::nn::AnyModule inner) : inner(std::move(inner)) {
    register_module("inner", this->inner.ptr());
  }
  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor y = inner.forward(x);
    out_hw = y.dim() == 4 ? y.size(2) * y.size(3) : 1;
    return y;
  }
  torch::nn::AnyModule inner;
  int64_t out_hw = 0;
};
TORCH_MODULE(Recorder);

c10::Dict<c10::IValue, c10::IValue> load_plain(const std::string& name) {
  const std::string bytes = test::read_all(test::golden(name));
  return torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end())).toGenericDict();
}

// Pickle opcodes (protocol 2) for the tensor records a damaged file may hold.
std::string pk_str(const std::string& v) {
  const auto n = static_cast<uint32_t>(v.size());
  std::string out = "X";
  out.append(reinterpret_cast<const char*>(&n), 4);
  return out + v;
}
std::string pk_int(int64_t v) {  // LONG1 of 8 bytes: any int64
  std::string out = "\x8a\x08";
  out.append(reinterpret_cast<const char*>(&v), 8);
  return out;
}
std::string pk_ints(const std::vector<int64_t>& v) {
  std::string out = "(";
  for (int64_t x : v) out += pk_int(x);
  return out + "t";
}
// {'w': a tensor of `size`, `stride` and `offset` on a float storage that
// claims `numel` elements}, as torch.save lays it out.
std::string tensor_pickle(int64_t numel, int64_t offset, const std::vector<int64_t>& size,
                          const std::vector<int64_t>& stride) {
  return std::string("\x80\x02}") + pk_str("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" + pk_str("storage") +
         "ctorch\nFloatStorage\n" + pk_str("0") + pk_str("cpu") + pk_int(numel) + "tQ" + pk_int(offset) +
         pk_ints(size) + pk_ints(stride) + "tRs.";
}
// A zip archive with `pickle` as data.pkl and 4 floats as storage '0'.
void write_archive(const std::string& path, const std::string& pickle) {
  const float data[4] = {1, 2, 3, 4};
  caffe2::serialize::PyTorchStreamWriter w(path);
  w.writeRecord("data.pkl", pickle.data(), pickle.size());
  w.writeRecord("data/0", data, sizeof data);
  w.writeEndOfFile();
}

}  // namespace

TEST(Zoo, ResNet18ReproducesTorchvisionLogits) {
  MPQ_NEEDS_GOLDEN();
  auto net = models::make_model("resnet18");
  const auto ck = torchio::read_checkpoint(test::golden("resnet18_torchvision.pth"));
  EXPECT_EQ(ck.state_key, "");
  const auto report = torchio::load_state_dict(*net, ck.state, /*strict=*/true, "resnet18_torchvision.pth");
  EXPECT_TRUE(report.clean()) << report.summary();
  net->eval();
  const auto io = load_plain("resnet18_io.pt");
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = net->forward(io.at("input").toTensor());
  EXPECT_LE((logits - io.at("logits").toTensor()).abs().max().item<double>(), 1e-4);
}

TEST(Zoo, LayersMatchTheSearchGeometry) {
  struct Case {
    const char* model;
    int hw, channels, classes;
  } cases[] = {{"resnet18", 224, 3, 1000}, {"resnet50", 224, 3, 1000}, {"mobilenetv1", 224, 3, 1000},
               {"resnet20", 28, 1, 10},    {"resnet20", 32, 3, 10}};
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.model) + " at " + std::to_string(c.hw));
    auto net = models::make_model(c.model, {c.classes, c.channels});
    const auto geo = search::zoo_geometry(c.model, {c.hw, c.hw, c.channels, c.classes});
    auto slots = net->slots();
    ASSERT_EQ(slots.size(), geo.layers.size());
    std::vector<Recorder> recs;
    for (auto& s : slots) {
      Recorder r(*s.layer);
      net->replace(s, torch::nn::AnyModule(r));
      recs.push_back(r);
    }
    torch::NoGradGuard no_grad;
    net->eval();
    net->forward(torch::zeros({1, c.channels, c.hw, c.hw}));
    const auto params = net->named_parameters();
    for (size_t i = 0; i < slots.size(); ++i) {
      const auto& g = geo.layers[i];
      EXPECT_EQ(slots[i].name, g.name);
      const torch::Tensor w = params[slots[i].name + ".inner.weight"];
      EXPECT_EQ(w.numel(), g.params) << g.name;
      EXPECT_EQ(w.numel() * recs[i]->out_hw, g.macs) << g.name;
    }
  }
}

TEST(Zoo, UnknownModelListsTheKnownOnes) {
  try {
    models::make_model("vgg16");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("known: resnet18, resnet50, mobilenetv1, resnet20"), std::string::npos);
  }
}

TEST(Checkpoint, ReadsTheOriginalsPretrainCheckpoint) {
  MPQ_NEEDS_GOLDEN();
  const auto ck = torchio::read_checkpoint(test::golden("limpq_pretrain_checkpoint.pth.tar"));
  EXPECT_EQ(ck.state_key, "state_dict");
  ASSERT_NE(ck.root.find("epoch"), nullptr);
  const auto ref = load_plain("joint_step_state_after_3.pt");
  size_t matched = 0;
  for (const auto& [name, t] : ck.state) {
    const std::string key = "module." + name;
    ASSERT_TRUE(ref.contains(key)) << key;
    const torch::Tensor r = ref.at(key).toTensor();
    EXPECT_EQ(t.sizes(), r.sizes()) << key;
    EXPECT_EQ(t.scalar_type(), r.scalar_type()) << key;
    EXPECT_TRUE(torch::equal(t, r)) << key;
    ++matched;
  }
  EXPECT_EQ(matched, ref.size());
  bool has_scale = false;
  for (const auto& [name, t] : ck.state) has_scale |= name == "conv2.quan_w_fn.s";
  EXPECT_TRUE(has_scale);
}

TEST(Checkpoint, SavedCheckpointsReadBack) {
  test::TempDir dir;
  torch::Tensor a = torch::randn({3, 4}), b = torch::arange(10);
  torchio::save_checkpoint(dir.file("c.pt"), {{"w", a}, {"n", b}}, {{"epoch", c10::IValue(int64_t{7})}});
  const auto ck = torchio::read_checkpoint(dir.file("c.pt"));
  ASSERT_EQ(ck.state.size(), 2u);
  std::map<std::string, torch::Tensor> m(ck.state.begin(), ck.state.end());
  EXPECT_TRUE(torch::equal(m["w"], a));
  EXPECT_TRUE(torch::equal(m["n"], b));
  EXPECT_EQ(ck.root.find("epoch")->as_int(), 7);
}

TEST(Checkpoint, CorruptFilesAreOneClearError) {
  MPQ_NEEDS_GOLDEN();
  test::TempDir dir;
  const std::string good = test::read_all(test::golden("limpq_pretrain_checkpoint.pth.tar"));
  test::write_all(dir.file("trunc.pth"), good.substr(0, good.size() / 2));
  test::write_all(dir.file("text.pth"), "hello\n");
  test::write_all(dir.file("legacy.pth"), std::string("\x80\x02\x8a\x0a", 4));
  std::string flipped = good;
  for (size_t i = 200; i < flipped.size(); i += 997) flipped[i] = static_cast<char>(~flipped[i]);
  test::write_all(dir.file("flipped.pth"), flipped);
  for (const char* f : {"trunc.pth", "text.pth", "legacy.pth", "flipped.pth", "missing.pth"}) {
    try {
      torchio::read_checkpoint(dir.file(f));
      ADD_FAILURE() << f << " was accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(dir.file(f) + ":"), std::string::npos) << e.what();
    }
  }
}

TEST(Checkpoint, TensorRecordsThatDoNotFitTheirStorageAreRefused) {
  test::TempDir dir;
  write_archive(dir.file("ok.pt"), tensor_pickle(4, 1, {3}, {1}));
  const auto ck = torchio::read_checkpoint(dir.file("ok.pt"));
  ASSERT_EQ(ck.state.size(), 1u);
  EXPECT_TRUE(torch::equal(ck.state[0].second, torch::tensor({2.f, 3.f, 4.f})));

  constexpr int64_t kBig = int64_t{1} << 62, kMax = std::numeric_limits<int64_t>::max();
  const struct {
    const char* name;
    std::string pickle;
    const char* expect;
  } bad[] = {
      {"past_end", tensor_pickle(4, 2, {3}, {1}), "does not fit its storage"},
      {"size_wraps", tensor_pickle(4, 0, {kBig, 4}, {4, 1}), "does not fit its storage"},
      {"stride_wraps", tensor_pickle(4, 0, {5}, {kBig}), "does not fit its storage"},
      {"offset_wraps", tensor_pickle(4, kMax - 1, {3}, {1}), "does not fit its storage"},
      {"count_wraps", tensor_pickle(4, 0, {kBig, kBig}, {0, 0}), "does not fit its storage"},
      {"negative_offset", tensor_pickle(4, -1, {1}, {1}), "does not fit its storage"},
      {"storage_past_record", tensor_pickle(5, 0, {1}, {1}), "too few for its storage"},
      {"storage_bytes_wrap", tensor_pickle(kBig + 1, 0, {1}, {1}), "too few for its storage"},
  };
  for (const auto& b : bad) {
    const std::string path = dir.file(std::string(b.name) + ".pt");
    write_archive(path, b.pickle);
    try {
      torchio::read_checkpoint(path);
      ADD_FAILURE() << b.name << " was accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(path + ": "), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(b.expect), std::string::npos) << b.name << ": " << e.what();
    }
  }
}

TEST(Checkpoint, DamagedPicklesAreInputErrorsNeverCrashes) {
  // Seeded byte mutations of a valid tensor record, in a zip whose checksums
  // are intact, so the damage reaches the unpickler and the tensor hooks.
  test::TempDir dir;
  const std::string good = tensor_pickle(4, 0, {2, 2}, {2, 1});
  std::mt19937 rng(18);
  int accepted = 0, refused = 0;
  for (int i = 0; i < 1500; ++i) {
    std::string p = good;
    for (int m = 1 + static_cast<int>(rng() % 3); m > 0; --m) p[rng() % p.size()] = static_cast<char>(rng() % 256);
    const std::string path = dir.file("m.pt");
    write_archive(path, p);
    try {
      const auto ck = torchio::read_checkpoint(path);
      for (const auto& [name, t] : ck.state)  // every element in bounds (ASan); broadcast giants not summed
        if (t.numel() <= 4096) (void)t.sum().item<double>();
      ++accepted;
    } catch (const InputError&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  RecordProperty("accepted", accepted);
}

TEST(Checkpoint, StrictLoadNamesWhatDoesNotMatch) {
  MPQ_NEEDS_GOLDEN();
  auto net = models::make_model("resnet18", {10, 3});
  const auto ck = torchio::read_checkpoint(test::golden("resnet18_torchvision.pth"));
  try {
    torchio::load_state_dict(*net, ck.state, true, "r18.pth");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("2 shape-mismatched (fc.weight: file [1000, 512] vs model [10, 512]"),
              std::string::npos)
        << e.what();
  }
  const auto report = torchio::load_state_dict(*net, ck.state, false, "r18.pth");
  EXPECT_EQ(report.mismatched.size(), 2u);
  EXPECT_TRUE(report.missing.empty());
}

TEST(Checkpoint, PythonTorchLoadReadsWhatWeWrite) {
  // torch.load's default (weights_only=True since torch 2.6) takes the file.
  const std::string py = test::torch_python();
  if (py.empty()) GTEST_SKIP() << test::kNoTorchPython;
  test::TempDir dir;
  torch::manual_seed(0);
  const torch::Tensor w = torch::randn({4, 3, 3, 3});
  torchio::save_checkpoint(dir.file("c.pt"), {{"layer1.0.conv1.weight", w}},
                           {{"epoch", c10::IValue(int64_t{3})}, {"arch", c10::IValue(std::string("resnet18"))}});
  const std::string cmd = py + " -c \"import torch; d = torch.load('" + dir.file("c.pt") +
                          "'); assert type(d) is dict and d['epoch'] == 3 and d['arch'] == 'resnet18', d; "
                          "w = d['layer1.0.conv1.weight']; assert w.shape == (4, 3, 3, 3); "
                          "assert abs(float(w.sum()) - " + std::to_string(w.sum().item<double>()) + ") < 1e-4\"";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
}

TEST(Checkpoint, SharedStoragesStayShared) {
  // A view and its base saved together share one storage in the file.
  const std::string py = test::torch_python();
  if (py.empty()) GTEST_SKIP() << test::kNoTorchPython;
  test::TempDir dir;
  const std::string cmd = py + " -c \"import torch, collections; b = torch.arange(12.).reshape(3, 4); "
                          "d = collections.OrderedDict(base=b, row=b[1], col=b[:, 2], half=b.half()); "
                          "torch.save({'state_dict': d}, '" + dir.file("s.pth") + "')\"";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const auto ck = torchio::read_checkpoint(dir.file("s.pth"));
  std::map<std::string, torch::Tensor> m(ck.state.begin(), ck.state.end());
  EXPECT_TRUE(torch::equal(m["row"], torch::arange(4., 8.)));
  EXPECT_TRUE(torch::equal(m["col"], torch::tensor({2., 6., 10.})));
  EXPECT_EQ(m["half"].scalar_type(), torch::kHalf);
  EXPECT_EQ(m["row"].data_ptr<float>(), m["base"].data_ptr<float>() + 4) << "the view must share its base's storage";
}

TEST(Checkpoint, ExtractFromAnMpqCheckpointWritesTheGeometry) {
  // An indicator-training checkpoint as mpq writes it: the quantized
  // ResNet-20's state plus arch and candidate_bits.
  test::TempDir dir;
  auto q = quant::quantize_for_indicators(models::make_model("resnet20", {10, 1}), {4, 3, 2});
  torchio::StateDict sd;
  for (const auto& p : q.net->named_parameters()) sd.emplace_back(p.key(), p.value());
  for (const auto& b : q.net->named_buffers()) sd.emplace_back(b.key(), b.value());
  torchio::save_checkpoint(dir.file("ck.pt"), sd,
                           {{"arch", c10::IValue(std::string("resnet20"))},
                            {"candidate_bits", c10::IValue(c10::List<int64_t>({4, 3, 2}))}});
  const std::string cmd = std::string(MPQ_BINARY) + " extract " + dir.file("ck.pt") + " -o " + dir.file("r20.pkl") +
                          " --input-size 28 > " + dir.file("table.md") + " 2>" + dir.file("log");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << test::read_all(dir.file("log"));
  const auto ind = io::load_indicators(dir.file("r20.pkl"));
  const auto geo = search::load_geometry(dir.file("r20.geometry.yaml"));
  EXPECT_EQ(ind.layer_names, geo.searchable_names());
  EXPECT_EQ(geo.layers.front().in_h, 28);
  EXPECT_EQ(geo.layers.front().in, 1);
  EXPECT_EQ(geo.layers.back().out, 10);
  // The weight scales are the 3-sigma initialisation, decreasing with bits.
  EXPECT_LT(ind.weight[0].at(4), ind.weight[0].at(2));
  EXPECT_NE(test::read_all(dir.file("table.md")).find("| layer1.0.conv1 |"), std::string::npos);
}

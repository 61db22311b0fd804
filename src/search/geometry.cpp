// The zoo's layer tables, computed from the architectures (METHOD.md §2, §6).
#include <algorithm>
#include <cmath>
#include <limits>

#include "mpq/common/error.h"
#include "mpq/search/geometry.h"

namespace mpq::search {

std::vector<const LayerGeometry*> ModelGeometry::searchable() const {
  std::vector<const LayerGeometry*> out;
  for (const auto& l : layers)
    if (l.searchable) out.push_back(&l);
  return out;
}

std::vector<std::string> ModelGeometry::searchable_names() const {
  std::vector<std::string> out;
  for (const auto* l : searchable()) out.push_back(l->name);
  return out;
}

int64_t ModelGeometry::excepted_params() const {
  int64_t s = 0;
  for (const auto& l : layers)
    if (!l.searchable) s += l.params;
  return s;
}

int64_t ModelGeometry::excepted_macs(bool original_count) const {
  int64_t s = 0;
  for (const auto& l : layers)
    if (!l.searchable) s += original_count ? l.original_macs : l.macs;
  return s;
}

int64_t original_conv_macs(const LayerGeometry& l) {
  if (l.type != "conv" || l.in <= 0 || l.out <= 0 || l.kernel <= 0 || l.stride <= 0 || l.in_h <= 0 || l.groups <= 0) return l.macs;
  const double oh = static_cast<double>(l.in_h + 2 * l.padding - (l.kernel - 1) - 1) / l.stride + 1;
  const double ow = static_cast<double>(l.in_w + 2 * l.padding - (l.kernel - 1) - 1) / l.stride + 1;
  // In double, saturated: a geometry file's shape may be far too large, and
  // its reader refuses what lands beyond int64's range here.
  const double macs = std::floor(oh * ow) * static_cast<double>(l.in) * static_cast<double>(l.out) * l.kernel *
                      l.kernel / l.groups;
  if (!(macs < 9e18)) return std::numeric_limits<int64_t>::max();
  const auto hw = static_cast<int64_t>(oh * ow);
  if (l.in % l.groups == 0) return l.in / l.groups * l.out * hw * l.kernel * l.kernel;  // no larger intermediate
  return l.in * l.out * hw * l.kernel * l.kernel / l.groups;
}

int64_t ModelGeometry::total_params() const {
  int64_t s = 0;
  for (const auto& l : layers) s += l.params;
  return s;
}

namespace {

// Builds a forward-order table while tracking the activation's spatial size.
class Builder {
 public:
  Builder(std::string model, const InputShape& in) : in_(in) {
    g_.model = std::move(model);
    g_.input_h = in.height;
    g_.input_w = in.width;
    h_ = in.height;
    w_ = in.width;
  }

  static int out_size(int x, int k, int s, int p) { return (x + 2 * p - k) / s + 1; }

  // Adds a conv reading the current activation; `advance` moves the activation
  // to its output (a shortcut conv reads the block input and does not).
  void conv(const std::string& name, int64_t cin, int64_t cout, int k, int s, int p, int groups = 1,
            bool advance = true) {
    const int oh = out_size(h_, k, s, p), ow = out_size(w_, k, s, p);
    MPQ_CHECK(oh >= 1 && ow >= 1, g_.model, ": input ", in_.height, "x", in_.width,
              " is too small (layer ", name, " would have an empty output); use a larger --input-size");
    LayerGeometry l;
    l.name = name;
    l.type = "conv";
    l.in = cin;
    l.out = cout;
    l.kernel = k;
    l.stride = s;
    l.padding = p;
    l.groups = groups;
    l.in_h = h_;
    l.in_w = w_;
    l.out_h = oh;
    l.out_w = ow;
    l.params = cout * (cin / groups) * k * k;
    l.macs = l.params * oh * ow;
    l.original_macs = original_conv_macs(l);
    l.searchable = first_conv_seen_;  // METHOD.md §2: the first conv is excepted
    first_conv_seen_ = true;
    g_.layers.push_back(l);
    if (advance) {
      h_ = oh;
      w_ = ow;
    }
  }
  void pool(int k, int s, int p) {
    h_ = out_size(h_, k, s, p);
    w_ = out_size(w_, k, s, p);
    MPQ_CHECK(h_ >= 1 && w_ >= 1, g_.model, ": input ", in_.height, "x", in_.width, " is too small; use a larger --input-size");
  }
  void linear(const std::string& name, int64_t fin, int64_t fout) {
    LayerGeometry l;
    l.name = name;
    l.type = "linear";
    l.in = fin;
    l.out = fout;
    l.params = fin * fout;
    l.macs = l.params;
    l.original_macs = l.macs;
    g_.layers.push_back(l);
  }
  ModelGeometry done() { return std::move(g_); }
  const InputShape& input() const { return in_; }
  int h() const { return h_; }
  int w() const { return w_; }
  void set_hw(int h, int w) {
    h_ = h;
    w_ = w;
  }

 private:
  ModelGeometry g_;
  InputShape in_;
  int h_ = 0, w_ = 0;
  bool first_conv_seen_ = false;
};

// torchvision ResNet: BasicBlock (expansion 1) or Bottleneck (expansion 4,
// stride on the 3x3 conv, "v1.5").
ModelGeometry resnet(const std::string& model, const InputShape& in, bool bottleneck, const std::vector<int>& blocks) {
  Builder b(model, in);
  b.conv("conv1", in.channels, 64, 7, 2, 3);
  b.pool(3, 2, 1);
  const int expansion = bottleneck ? 4 : 1;
  int64_t inplanes = 64;
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t planes = 64 << stage;
    for (int blk = 0; blk < blocks[stage]; ++blk) {
      const int stride = (stage > 0 && blk == 0) ? 2 : 1;
      const std::string p = "layer" + std::to_string(stage + 1) + "." + std::to_string(blk) + ".";
      const int h0 = b.h(), w0 = b.w();
      if (bottleneck) {
        b.conv(p + "conv1", inplanes, planes, 1, 1, 0);
        b.conv(p + "conv2", planes, planes, 3, stride, 1);
        b.conv(p + "conv3", planes, planes * expansion, 1, 1, 0);
      } else {
        b.conv(p + "conv1", inplanes, planes, 3, stride, 1);
        b.conv(p + "conv2", planes, planes, 3, 1, 1);
      }
      if (stride != 1 || inplanes != planes * expansion) {
        const int h1 = b.h(), w1 = b.w();
        b.set_hw(h0, w0);
        b.conv(p + "downsample.0", inplanes, planes * expansion, 1, stride, 0);
        b.set_hw(h1, w1);
      }
      inplanes = planes * expansion;
    }
  }
  b.linear("fc", 512 * expansion, in.num_classes);
  return b.done();
}

// CIFAR ResNet-20 (He et al. 2016, option B shortcuts as torchvision's downsample).
ModelGeometry resnet20(const InputShape& in) {
  Builder b("resnet20", in);
  b.conv("conv1", in.channels, 16, 3, 1, 1);
  int64_t inplanes = 16;
  for (int stage = 0; stage < 3; ++stage) {
    const int64_t planes = 16 << stage;
    for (int blk = 0; blk < 3; ++blk) {
      const int stride = (stage > 0 && blk == 0) ? 2 : 1;
      const std::string p = "layer" + std::to_string(stage + 1) + "." + std::to_string(blk) + ".";
      const int h0 = b.h(), w0 = b.w();
      b.conv(p + "conv1", inplanes, planes, 3, stride, 1);
      b.conv(p + "conv2", planes, planes, 3, 1, 1);
      if (stride != 1 || inplanes != planes) {
        const int h1 = b.h(), w1 = b.w();
        b.set_hw(h0, w0);
        b.conv(p + "downsample.0", inplanes, planes, 1, stride, 0);
        b.set_hw(h1, w1);
      }
      inplanes = planes;
    }
  }
  b.linear("fc", 64, in.num_classes);
  return b.done();
}

// MobileNet-V1 (Howard et al. 2017), METHOD.md §6 names.
ModelGeometry mobilenetv1(const InputShape& in) {
  Builder b("mobilenetv1", in);
  b.conv("first_conv.0", in.channels, 32, 3, 2, 1);
  // (output channels, units) per stage; stride 2 at the first unit of stages 2-5.
  const std::vector<std::pair<int64_t, int>> stages = {{64, 1}, {128, 2}, {256, 2}, {512, 6}, {1024, 2}};
  int64_t c = 32;
  for (size_t s = 0; s < stages.size(); ++s) {
    for (int u = 0; u < stages[s].second; ++u) {
      const int stride = (s > 0 && u == 0) ? 2 : 1;
      const std::string p = "features.stage" + std::to_string(s + 1) + ".unit" + std::to_string(u + 1) + ".";
      b.conv(p + "dw_conv.conv", c, c, 3, stride, 1, static_cast<int>(c));
      b.conv(p + "pw_conv.conv", c, stages[s].first, 1, 1, 0);
      c = stages[s].first;
    }
  }
  b.linear("fc", 1024, in.num_classes);
  return b.done();
}

}  // namespace

const std::vector<std::string>& zoo_models() {
  static const std::vector<std::string> names = {"resnet18", "resnet50", "mobilenetv1", "resnet20"};
  return names;
}

ModelGeometry zoo_geometry(const std::string& model, const InputShape& input) {
  MPQ_CHECK(input.height > 0 && input.width > 0 && input.channels > 0 && input.num_classes > 0,
            model, ": input size, channels and classes must be positive");
  if (model == "resnet18") return resnet(model, input, false, {2, 2, 2, 2});
  if (model == "resnet50") return resnet(model, input, true, {3, 4, 6, 3});
  if (model == "mobilenetv1") return mobilenetv1(input);
  if (model == "resnet20") return resnet20(input);
  std::string known;
  for (const auto& n : zoo_models()) known += (known.empty() ? "" : ", ") + n;
  throw InputError("--model: unknown model '" + model + "' (known: " + known +
                   "; for another network pass --geometry FILE)");
}

}  // namespace mpq::search

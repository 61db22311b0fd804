#include "mpq/config/config.h"

#include <algorithm>
#include <sstream>

#include "common/yaml_util.h"
#include "mpq/common/error.h"
#include "mpq/io/file_util.h"
#include "mpq/search/geometry.h"

namespace mpq::config {

using yaml::as_bool;
using yaml::as_double;
using yaml::as_int;
using yaml::as_string;
using yaml::check_keys;
using yaml::close_match;
using yaml::load_yaml_string;
using yaml::where;

namespace {

// Reads one mapping level, checking every key is known.
class Reader {
 public:
  Reader(const std::string& file, const YAML::Node& node, std::string path) : file_(file), node_(node), path_(std::move(path)) {}

  void known(const std::vector<std::string>& keys) const {
    if (node_.IsNull()) return;
    check_keys(file_, node_, path_, keys);
  }
  YAML::Node at(const char* key) const { return node_.IsMap() ? node_[key] : YAML::Node(); }
  std::string key(const char* k) const { return path_.empty() ? k : path_ + "." + k; }
  static bool empty(const YAML::Node& n) { return !n || n.IsNull() || (n.IsScalar() && n.Scalar().empty()); }

  void get(const char* k, std::string& out) const {
    const YAML::Node n = at(k);
    if (!empty(n)) out = as_string(file_, n, key(k));
  }
  void get(const char* k, bool& out) const {
    const YAML::Node n = at(k);
    if (!empty(n)) out = as_bool(file_, n, key(k));
  }
  void get(const char* k, int& out, int64_t lo, int64_t hi) const {
    const YAML::Node n = at(k);
    if (empty(n)) return;
    const int64_t v = as_int(file_, n, key(k));
    MPQ_CHECK(v >= lo && v <= hi, where(file_, n), ": ", key(k), " must be between ", lo, " and ", hi, " (got ", v, ")");
    out = static_cast<int>(v);
  }
  void get(const char* k, double& out, double lo, double hi, bool hi_open = false) const {
    const YAML::Node n = at(k);
    if (empty(n)) return;
    const double v = as_double(file_, n, key(k));
    MPQ_CHECK(v >= lo && (hi_open ? v < hi : v <= hi), where(file_, n), ": ", key(k), " must be in [", lo, ", ", hi,
              hi_open ? ")" : "]", " (got ", v, ")");
    out = v;
  }
  void get_bits(const char* k, std::vector<int>& out) const {
    const YAML::Node n = at(k);
    if (empty(n)) return;
    MPQ_CHECK(n.IsSequence(), where(file_, n), ": ", key(k), " must be a list of bit-widths (got '",
              n.IsScalar() ? n.Scalar() : "a mapping", "')");
    out.clear();
    for (const auto& x : n) {
      const int64_t b = as_int(file_, x, key(k));
      MPQ_CHECK(b >= 2 && b <= 16, where(file_, x), ": ", key(k), " holds ", b, " (bit-widths must be 2 to 16)");
      out.push_back(static_cast<int>(b));
    }
  }
  Reader child(const char* k) const {
    const YAML::Node n = at(k);
    MPQ_CHECK(empty(n) || n.IsMap(), where(file_, n), ": ", key(k), " must be a mapping");
    return Reader(file_, empty(n) ? YAML::Node() : n, key(k));
  }
  const YAML::Node& node() const { return node_; }

 private:
  const std::string& file_;
  YAML::Node node_;
  std::string path_;
};

// quan.act / quan.weight: mpq's quantizers are LSQ, one scale per tensor,
// activations unsigned (after a ReLU) and weights signed asymmetric, as the
// original's defaults; other modes are refused, and `bit`, the original's
// placeholder, changes nothing (the candidates or the policy set the bits).
void read_quantizer(const Reader& r, QuantizerConfig& q, bool act, std::vector<std::string>& notices) {
  r.known({"mode", "bit", "per_channel", "symmetric", "all_positive"});
  r.get("mode", q.mode);
  MPQ_CHECK(q.mode == "lsq", r.key("mode"), ": only 'lsq' is supported (got '", q.mode, "')");
  const int placeholder = q.bit;
  r.get("bit", q.bit, 2, 32);
  if (q.bit != placeholder)
    notices.push_back(r.key("bit") + ": ignored because the bits come from target_bits (pretrain) or the policy, "
                      "weight_bits and act_bits (finetune), as in the original");
  r.get("per_channel", q.per_channel);
  MPQ_CHECK(!q.per_channel, r.key("per_channel"), ": per-channel scales are not supported (mpq learns one scale per tensor); set it to false");
  r.get("symmetric", q.symmetric);
  MPQ_CHECK(!q.symmetric, r.key("symmetric"), ": true is not supported: ",
            act ? "activations are quantized unsigned, [0, 2^b - 1]"
                : "weights are quantized signed asymmetric, [-2^(b-1), 2^(b-1) - 1], the original's default",
            "; set it to false");
  r.get("all_positive", q.all_positive);
  MPQ_CHECK(q.all_positive == act, r.key("all_positive"), ": ", act ? "false" : "true", " is not supported: ",
            act ? "every quantized activation follows a ReLU and is quantized unsigned; set it to true"
                : "weights are signed; set it to false");
}

// The BatchNorm that follows a zoo model's first conv: conv1 -> bn1, X.0 -> X.1.
std::string bn_of(const std::string& conv) {
  if (conv.size() > 2 && conv.compare(conv.size() - 2, 2, ".0") == 0) return conv.substr(0, conv.size() - 1) + "1";
  if (conv.rfind("conv", 0) == 0) return "bn" + conv.substr(4);
  return "";
}

// Applies "a.b.c=value" to the document; value in YAML syntax.
void apply_override(YAML::Node root, const std::string& file, const std::string& kv) {
  const size_t eq = kv.find('=');
  MPQ_CHECK(eq != std::string::npos && eq > 0, "--set ", kv, ": expected key=value, e.g. --set lr=0.01");
  const std::string path = kv.substr(0, eq);
  const YAML::Node value = load_yaml_string(kv.substr(eq + 1), "--set " + path);
  std::vector<std::string> parts;
  std::stringstream ss(path);
  for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = chain.back()[parts[i]];
    if (!next.IsMap()) next = YAML::Node(YAML::NodeType::Map);
    chain.push_back(next);
  }
  chain.back()[parts.back()] = value;
  for (size_t i = chain.size() - 1; i > 0; --i) chain[i - 1][parts[i - 1]] = chain[i];
  (void)file;
}

}  // namespace

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return load_config_text(io::read_file(path), path, overrides);
}

Config load_config_text(const std::string& text, const std::string& path, const std::vector<std::string>& overrides) {
  YAML::Node root = load_yaml_string(text, path);
  MPQ_CHECK(root.IsMap(), path, ": a config must be a mapping of keys (see configs/)");
  for (const auto& o : overrides) apply_override(root, path, o);
  Config c;
  c.source = path;
  const Reader r(path, root, "");
  r.known({"name", "target_bits", "weight_bits", "act_bits", "policy", "gpu", "output_dir", "training_device",
           "dataloader", "resume", "log", "arch", "freeze_weights", "pre_trained", "quan", "eval", "fp_model", "epochs",
           "smoothing", "opt", "lr", "momentum", "weight_decay", "sched", "min_lr", "decay_rate", "warmup_epochs",
           "warmup_lr", "decay_epochs", "cooldown_epochs", "val_cycle", "seed", "distill", "sync_bn",
           "checkpoint_steps", "bn_calib_images", "dist_timeout", "threads", "pre_trained_strict", "channels_last",
           "dist_bucket_mb", "dist_backend", "dtype", "cudnn", "tf32", "fused_bn"});
  r.get("name", c.name);
  r.get_bits("target_bits", c.target_bits);
  r.get_bits("weight_bits", c.weight_bits);
  r.get_bits("act_bits", c.act_bits);
  r.get("policy", c.policy);
  r.get("gpu", c.gpu);
  r.get("output_dir", c.output_dir);
  r.get("training_device", c.training_device);
  if (c.training_device != "auto" && c.training_device != "cpu" && c.training_device != "gpu" &&
      c.training_device != "cuda")
    throw InputError(where(path, r.at("training_device")) + ": training_device '" + c.training_device +
                     "' is not one of auto, cpu, gpu (or cuda)");
  {
    const Reader d = r.child("dataloader");
    d.known({"dataset", "num_classes", "path", "batch_size", "workers", "deterministic", "serialized", "val_split", "fraction", "strict"});
    auto& dl = c.dataloader;
    d.get("dataset", dl.dataset);
    static const std::vector<std::string> kSets = {"fashion_mnist", "mnist", "cifar10", "imagenet"};
    if (std::find(kSets.begin(), kSets.end(), dl.dataset) == kSets.end()) {
      const std::string hint = close_match(dl.dataset, kSets);
      throw InputError(where(path, d.at("dataset")) + ": dataloader.dataset '" + dl.dataset +
                       "' is not one of fashion_mnist, mnist, cifar10, imagenet" +
                       (hint.empty() ? "" : " (did you mean '" + hint + "'?)"));
    }
    d.get("num_classes", dl.num_classes, 1, 1000000);
    d.get("path", dl.path);
    d.get("batch_size", dl.batch_size, 1, 1 << 20);
    d.get("workers", dl.workers, 0, 256);
    d.get("deterministic", dl.deterministic);
    if (!dl.deterministic)
      c.notices.push_back(d.key("deterministic") + ": false is ignored because mpq's data order, split and "
                          "augmentation are always seeded by `seed` and repeatable");
    d.get("serialized", dl.serialized);
    if (dl.serialized)
      c.notices.push_back(d.key("serialized") + ": ignored because mpq's loaders decode in `workers` threads of "
                          "one process (there is nothing to serialize)");
    d.get("val_split", dl.val_split, 0.0, 1.0, /*hi_open=*/true);
    d.get("fraction", dl.fraction, 0.0, 1.0);
    MPQ_CHECK(dl.fraction > 0, where(path, d.at("fraction")), ": dataloader.fraction must be in (0, 1] (got ",
              dl.fraction, ")");
    d.get("strict", dl.strict);
  }
  {
    const Reader rs = r.child("resume");
    rs.known({"path", "lean"});
    rs.get("path", c.resume_path);
    rs.get("lean", c.resume_lean);
    MPQ_CHECK(!c.resume_lean, where(path, rs.at("lean")), ": resume.lean: true (start over at epoch 0 from a "
              "checkpoint's weights) is not supported; give the checkpoint as pre_trained instead");
  }
  {
    const Reader lg = r.child("log");
    lg.known({"num_best_scores", "print_freq"});
    lg.get("num_best_scores", c.num_best_scores, 1, 100);
    lg.get("print_freq", c.print_freq, 1, 1 << 30);
  }
  r.get("arch", c.arch);
  r.get("freeze_weights", c.freeze_weights);
  {
    // pre_trained: a path; the original's `True` meant "download torchvision's weights", which needs a path here.
    const YAML::Node n = r.at("pre_trained");
    if (!Reader::empty(n)) {
      const std::string v = as_string(path, n, "pre_trained");
      MPQ_CHECK(v != "True" && v != "true", where(path, n),
                ": pre_trained must be the path of a PyTorch or mpq checkpoint (mpq downloads nothing; save "
                "torchvision's weights with torch.save(model.state_dict(), 'r50.pth') and give that path)");
      if (v != "False" && v != "false") c.pre_trained = v;
    }
  }
  {
    const Reader q = r.child("quan");
    q.known({"act", "weight", "excepts"});
    read_quantizer(q.child("act"), c.quan_act, true, c.notices);
    read_quantizer(q.child("weight"), c.quan_weight, false, c.notices);
    // Excepted layers: the first conv (its input, the image, is not
    // quantized; W8), its BatchNorm and the fc (W8A8). The original's
    // configs list them with empty bits.
    std::string first, fc;
    const auto& zoo = search::zoo_models();
    if (std::find(zoo.begin(), zoo.end(), c.arch) != zoo.end()) {
      const auto g = search::zoo_geometry(c.arch);
      for (const auto& l : g.layers)
        if (!l.searchable) (l.type == "linear" ? fc : first) = l.name;
    }
    const Reader ex = q.child("excepts");
    if (ex.node().IsMap())
      for (const auto& kv : ex.node()) {
        std::string layer = kv.first.Scalar();
        MPQ_CHECK(kv.second.IsNull() || kv.second.IsMap(), where(path, kv.second), ": quan.excepts.", layer,
                  " must be a mapping");
        const Reader e(path, kv.second.IsNull() ? YAML::Node() : kv.second, ex.key(layer.c_str()));
        e.known({"act", "weight"});
        const std::string name = layer.rfind("module.", 0) == 0 ? layer.substr(7) : layer;
        const bool is_first = name == first, is_bn = !first.empty() && name == bn_of(first), is_fc = name == fc;
        MPQ_CHECK(first.empty() || is_first || is_bn || is_fc, where(path, kv.first), ": quan.excepts.", layer,
                  ": mpq keeps exactly the first conv (", first, "), its BatchNorm (", bn_of(first), ") and the fc (",
                  fc, ") out of the search, at 8 bits; other layers are searched (pin one with `mpq search --pin`)");
        ExceptConfig x;
        const Reader a = e.child("act"), w = e.child("weight");
        a.known({"bit", "all_positive"});
        w.known({"bit"});
        int bit = 0;
        bool pos = false;
        if (!Reader::empty(a.at("bit"))) {
          a.get("bit", bit, 2, 32);
          x.act_bit = bit;
        }
        if (!Reader::empty(a.at("all_positive"))) {
          a.get("all_positive", pos);
          x.act_all_positive = pos;
        }
        if (!Reader::empty(w.at("bit"))) {
          w.get("bit", bit, 2, 32);
          x.weight_bit = bit;
        }
        const std::string at = where(path, kv.first) + ": quan.excepts." + layer;
        if (is_bn) {
          if (x.act_bit || x.weight_bit || x.act_all_positive)
            c.notices.push_back(at + ": ignored because a BatchNorm has no quantizer");
        } else if (is_first || is_fc) {
          MPQ_CHECK(!x.weight_bit || *x.weight_bit == 8, at, ".weight.bit: ", x.weight_bit.value_or(0),
                    " is not supported: mpq keeps the excepted layers' weights at 8 bits; leave it empty or 8");
          if (is_fc) {
            MPQ_CHECK(!x.act_bit || *x.act_bit == 8, at, ".act.bit: ", x.act_bit.value_or(0),
                      " is not supported: the fc's input is quantized at 8 bits; leave it empty or 8");
            MPQ_CHECK(!x.act_all_positive || *x.act_all_positive, at,
                      ".act.all_positive: false is not supported: the fc's input follows a ReLU and is unsigned");
          } else if (x.act_bit || (x.act_all_positive && *x.act_all_positive)) {
            c.notices.push_back(at + ".act: ignored because the first conv's input, the image, is not quantized");
          }
        }
        c.excepts[layer] = x;
      }
  }
  r.get("eval", c.eval);
  r.get("fp_model", c.fp_model);
  r.get("epochs", c.epochs, 0, 100000);
  r.get("smoothing", c.smoothing, 0.0, 1.0, true);
  r.get("opt", c.opt);
  MPQ_CHECK(c.opt == "sgd", "opt: only 'sgd' is supported (got '", c.opt, "')");
  r.get("lr", c.lr, 0.0, 1e3);
  MPQ_CHECK(c.lr > 0, where(path, r.at("lr")), ": lr must be a positive number (got ", c.lr, ")");
  r.get("momentum", c.momentum, 0.0, 1.0, true);
  r.get("weight_decay", c.weight_decay, 0.0, 1.0);
  r.get("sched", c.sched);
  MPQ_CHECK(c.sched == "cosine", "sched: only 'cosine' is supported (got '", c.sched, "')");
  r.get("min_lr", c.min_lr, 0.0, 1e3);
  {
    const double d0 = c.decay_rate;
    r.get("decay_rate", c.decay_rate, 0.0, 1.0);
    if (c.decay_rate != d0)
      c.notices.push_back("decay_rate: ignored because sched is cosine (the only schedule), which it does not "
                          "shape; in the original's scheduler it changes nothing under cosine either");
  }
  r.get("warmup_epochs", c.warmup_epochs, 0, 100000);
  r.get("warmup_lr", c.warmup_lr, 0.0, 1e3);
  {
    const int d0 = c.decay_epochs;
    r.get("decay_epochs", c.decay_epochs, 0, 100000);
    if (c.decay_epochs != d0)
      c.notices.push_back("decay_epochs: ignored because sched is cosine (the only schedule), which it does not "
                          "shape; in the original's scheduler it changes nothing under cosine either");
  }
  r.get("cooldown_epochs", c.cooldown_epochs, 0, 100000);
  r.get("val_cycle", c.val_cycle, 1, 100000);
  r.get("seed", c.seed, 0, 1 << 30);
  r.get("distill", c.distill);
  r.get("sync_bn", c.sync_bn);
  r.get("channels_last", c.channels_last);
  r.get("fused_bn", c.fused_bn);
  r.get("dtype", c.dtype);
  if (c.dtype != "float32" && c.dtype != "float64")
    throw InputError(where(path, r.at("dtype")) + ": dtype '" + c.dtype + "' is not one of float32, float64");
  r.get("checkpoint_steps", c.checkpoint_steps, 0, 1 << 30);
  r.get("bn_calib_images", c.bn_calib_images, 0, 1 << 30);
  r.get("dist_timeout", c.dist_timeout, 1, 1 << 20);
  r.get("dist_bucket_mb", c.dist_bucket_mb, 0.001, 4096.0);
  r.get("dist_backend", c.dist_backend);
  if (c.dist_backend != "auto" && c.dist_backend != "gloo" && c.dist_backend != "nccl")
    throw InputError(where(path, r.at("dist_backend")) + ": dist_backend '" + c.dist_backend +
                     "' is not one of auto, gloo, nccl");
  r.get("threads", c.threads, 0, 4096);
  r.get("cudnn", c.cudnn);
  if (!is_cudnn_mode(c.cudnn))
    throw InputError(where(path, r.at("cudnn")) + ": cudnn '" + c.cudnn + "' is not one of " + kCudnnModeList);
  r.get("tf32", c.tf32);
  r.get("pre_trained_strict", c.pre_trained_strict);
  MPQ_CHECK(c.weight_bits.size() == c.act_bits.size(), path, ": weight_bits has ", c.weight_bits.size(),
            " entries but act_bits has ", c.act_bits.size());
  MPQ_CHECK(c.policy.empty() || c.weight_bits.empty(), path,
            ": give the bit-widths either as weight_bits/act_bits or as policy, not both");
  return c;
}

std::string to_yaml(const Config& c) {
  YAML::Emitter e;
  auto bits = [&](const char* k, const std::vector<int>& v) {
    e << YAML::Key << k << YAML::Value << YAML::Flow << v;
  };
  e << YAML::BeginMap;
  e << YAML::Key << "name" << YAML::Value << c.name;
  bits("target_bits", c.target_bits);
  bits("weight_bits", c.weight_bits);
  bits("act_bits", c.act_bits);
  e << YAML::Key << "policy" << YAML::Value << c.policy;
  e << YAML::Key << "output_dir" << YAML::Value << c.output_dir;
  e << YAML::Key << "training_device" << YAML::Value << c.training_device;
  e << YAML::Key << "gpu" << YAML::Value << c.gpu;
  e << YAML::Key << "dataloader" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "dataset" << YAML::Value << c.dataloader.dataset;
  e << YAML::Key << "num_classes" << YAML::Value << c.dataloader.num_classes;
  e << YAML::Key << "path" << YAML::Value << c.dataloader.path;
  e << YAML::Key << "batch_size" << YAML::Value << c.dataloader.batch_size;
  e << YAML::Key << "workers" << YAML::Value << c.dataloader.workers;
  e << YAML::Key << "deterministic" << YAML::Value << c.dataloader.deterministic;
  e << YAML::Key << "val_split" << YAML::Value << c.dataloader.val_split;
  e << YAML::Key << "fraction" << YAML::Value << c.dataloader.fraction;
  e << YAML::Key << "strict" << YAML::Value << c.dataloader.strict;
  e << YAML::Key << "serialized" << YAML::Value << c.dataloader.serialized;
  e << YAML::EndMap;
  e << YAML::Key << "resume" << YAML::Value << YAML::BeginMap << YAML::Key << "path" << YAML::Value << c.resume_path
    << YAML::Key << "lean" << YAML::Value << c.resume_lean << YAML::EndMap;
  e << YAML::Key << "log" << YAML::Value << YAML::BeginMap << YAML::Key << "num_best_scores" << YAML::Value
    << c.num_best_scores << YAML::Key << "print_freq" << YAML::Value << c.print_freq << YAML::EndMap;
  e << YAML::Key << "arch" << YAML::Value << c.arch;
  e << YAML::Key << "freeze_weights" << YAML::Value << c.freeze_weights;
  // The quantizers as resolved; `bit` (a placeholder the bits do not come from) is left out.
  auto quantizer = [&](const char* k, const QuantizerConfig& q) {
    e << YAML::Key << k << YAML::Value << YAML::BeginMap << YAML::Key << "mode" << YAML::Value << q.mode
      << YAML::Key << "per_channel" << YAML::Value << q.per_channel << YAML::Key << "symmetric" << YAML::Value
      << q.symmetric << YAML::Key << "all_positive" << YAML::Value << q.all_positive << YAML::EndMap;
  };
  e << YAML::Key << "quan" << YAML::Value << YAML::BeginMap;
  quantizer("act", c.quan_act);
  quantizer("weight", c.quan_weight);
  e << YAML::Key << "excepts" << YAML::Value << YAML::BeginMap;
  for (const auto& [layer, x] : c.excepts) {
    e << YAML::Key << layer << YAML::Value << YAML::BeginMap;
    e << YAML::Key << "act" << YAML::Value << YAML::BeginMap;
    if (x.act_bit) e << YAML::Key << "bit" << YAML::Value << *x.act_bit;
    if (x.act_all_positive) e << YAML::Key << "all_positive" << YAML::Value << *x.act_all_positive;
    e << YAML::EndMap << YAML::Key << "weight" << YAML::Value << YAML::BeginMap;
    if (x.weight_bit) e << YAML::Key << "bit" << YAML::Value << *x.weight_bit;
    e << YAML::EndMap << YAML::EndMap;
  }
  e << YAML::EndMap << YAML::EndMap;
  e << YAML::Key << "pre_trained" << YAML::Value << c.pre_trained;
  e << YAML::Key << "eval" << YAML::Value << c.eval;
  e << YAML::Key << "fp_model" << YAML::Value << c.fp_model;
  e << YAML::Key << "epochs" << YAML::Value << c.epochs;
  e << YAML::Key << "smoothing" << YAML::Value << c.smoothing;
  e << YAML::Key << "opt" << YAML::Value << c.opt;
  e << YAML::Key << "lr" << YAML::Value << c.lr;
  e << YAML::Key << "momentum" << YAML::Value << c.momentum;
  e << YAML::Key << "weight_decay" << YAML::Value << c.weight_decay;
  e << YAML::Key << "sched" << YAML::Value << c.sched;
  e << YAML::Key << "min_lr" << YAML::Value << c.min_lr;
  e << YAML::Key << "decay_rate" << YAML::Value << c.decay_rate;
  e << YAML::Key << "decay_epochs" << YAML::Value << c.decay_epochs;
  e << YAML::Key << "warmup_epochs" << YAML::Value << c.warmup_epochs;
  e << YAML::Key << "warmup_lr" << YAML::Value << c.warmup_lr;
  e << YAML::Key << "cooldown_epochs" << YAML::Value << c.cooldown_epochs;
  e << YAML::Key << "val_cycle" << YAML::Value << c.val_cycle;
  e << YAML::Key << "seed" << YAML::Value << c.seed;
  e << YAML::Key << "distill" << YAML::Value << c.distill;
  e << YAML::Key << "sync_bn" << YAML::Value << c.sync_bn;
  e << YAML::Key << "channels_last" << YAML::Value << c.channels_last;
  e << YAML::Key << "fused_bn" << YAML::Value << c.fused_bn;
  e << YAML::Key << "dtype" << YAML::Value << c.dtype;
  e << YAML::Key << "checkpoint_steps" << YAML::Value << c.checkpoint_steps;
  e << YAML::Key << "bn_calib_images" << YAML::Value << c.bn_calib_images;
  e << YAML::Key << "dist_timeout" << YAML::Value << c.dist_timeout;
  e << YAML::Key << "dist_bucket_mb" << YAML::Value << c.dist_bucket_mb;
  e << YAML::Key << "dist_backend" << YAML::Value << c.dist_backend;
  e << YAML::Key << "threads" << YAML::Value << c.threads;
  e << YAML::Key << "cudnn" << YAML::Value << c.cudnn;
  e << YAML::Key << "tf32" << YAML::Value << c.tf32;
  e << YAML::Key << "pre_trained_strict" << YAML::Value << c.pre_trained_strict;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace mpq::config

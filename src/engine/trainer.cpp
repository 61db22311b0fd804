#include "engine/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <tuple>

#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/cuda.h>
#include <torch/optim/sgd.h>
#include <torch/torch.h>

#include "data/image_folder.h"
#include "data/memory_loader.h"
#include "data/prefetcher.h"
#include "dist/dist.h"
#include "engine/export.h"
#include "engine/joint.h"
#include "models/zoo.h"
#include "mpq/common/log.h"
#include "mpq/common/error.h"
#include "mpq/io/file_util.h"
#include "mpq/io/indicators.h"
#include "mpq/io/tb_events.h"
#include "mpq/search/geometry.h"
#include "mpq/search/policy.h"
#include "mpq/search/search.h"
#include "quant/qmodules.h"
#include "torchio/checkpoint.h"

namespace mpq::engine {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double learning_rate(const config::Config& c, int epoch) {
  if (epoch < c.warmup_epochs) return c.warmup_lr + epoch * (c.lr - c.warmup_lr) / c.warmup_epochs;
  if (epoch >= c.epochs) return c.min_lr;
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + std::cos(M_PI * epoch / c.epochs));
}

int total_epochs(const config::Config& c) { return c.epochs + c.cooldown_epochs; }

namespace {

// ------------------------------------------------------------------ signals

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

// Installs SIGINT/SIGTERM handlers for the life of a run.
class SignalScope {
 public:
  SignalScope() {
    g_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// ------------------------------------------------------------------ data

// A source of batches: an epoch's order from (seed, epoch), one shard per rank.
class Loader {
 public:
  virtual ~Loader() = default;
  virtual void set_epoch(int64_t epoch) = 0;
  virtual int64_t num_batches() const = 0;
  virtual data::Batch batch(int64_t i) const = 0;
  // Undecodable images left out since the last call (each is logged when met).
  virtual int64_t take_skipped() { return 0; }
};

class MemorySource : public Loader {
 public:
  MemorySource(std::shared_ptr<const data::RawImages> d, data::LoaderOptions o) : l_(std::move(d), std::move(o)) {}
  void set_epoch(int64_t e) override { l_.set_epoch(e); }
  int64_t num_batches() const override { return l_.num_batches(); }
  data::Batch batch(int64_t i) const override { return l_.batch(i); }

 private:
  data::MemoryLoader l_;
};

class FolderSource : public Loader {
 public:
  FolderSource(std::shared_ptr<data::ImageFolder> f, std::vector<int64_t> ids, data::LoaderOptions o, bool strict)
      : f_(std::move(f)), ids_(std::move(ids)), o_(std::move(o)), strict_(strict) {
    set_epoch(0);
  }
  void set_epoch(int64_t e) override {
    epoch_ = e;
    order_ = data::distributed_order(static_cast<int64_t>(ids_.size()), o_.train, o_.seed, e, o_.rank, o_.world_size);
    for (auto& i : order_) i = ids_[static_cast<size_t>(i)];
  }
  int64_t num_batches() const override {
    return (static_cast<int64_t>(order_.size()) + o_.batch_size - 1) / o_.batch_size;
  }
  data::Batch batch(int64_t i) const override {
    const int64_t begin = i * o_.batch_size;
    const int64_t end = std::min<int64_t>(static_cast<int64_t>(order_.size()), begin + o_.batch_size);
    std::vector<int64_t> idx(order_.begin() + begin, order_.begin() + end);
    data::FolderBatch fb = data::load_batch(*f_, idx, o_.seed + static_cast<uint64_t>(o_.rank) * 1000003, epoch_, begin,
                                            strict_);
    skipped_ += static_cast<int64_t>(fb.skipped.size());
    return {fb.images, fb.labels};
  }
  int64_t take_skipped() override { return skipped_.exchange(0); }

 private:
  std::shared_ptr<data::ImageFolder> f_;
  std::vector<int64_t> ids_, order_;
  data::LoaderOptions o_;
  bool strict_;
  int64_t epoch_ = 0;
  mutable std::atomic<int64_t> skipped_{0};  // batches are made on worker threads
};

void report_skipped(Loader& l, const std::string& what) {
  if (const int64_t n = l.take_skipped())
    mpq::log::warn("data: {} undecodable image(s) skipped in {} (each named above)", n, what);
}

// Stratified split of `labels` fixed by the seed: per class, a shuffled
// `fraction` of its samples goes to `first`, the rest to `second`.
void stratified_split(const std::vector<int64_t>& labels, double fraction, uint64_t seed, std::vector<int64_t>& first,
                      std::vector<int64_t>& second) {
  std::map<int64_t, std::vector<int64_t>> by_class;
  for (size_t i = 0; i < labels.size(); ++i) by_class[labels[i]].push_back(static_cast<int64_t>(i));
  std::mt19937_64 rng(seed);
  for (auto& [label, ids] : by_class) {
    std::shuffle(ids.begin(), ids.end(), rng);
    const auto k = static_cast<size_t>(std::llround(fraction * static_cast<double>(ids.size())));
    first.insert(first.end(), ids.begin(), ids.begin() + static_cast<int64_t>(k));
    second.insert(second.end(), ids.begin() + static_cast<int64_t>(k), ids.end());
  }
  std::sort(first.begin(), first.end());
  std::sort(second.begin(), second.end());
}

data::RawImages select(const data::RawImages& d, const std::vector<int64_t>& ids) {
  data::RawImages out;
  out.count = static_cast<int64_t>(ids.size());
  out.channels = d.channels;
  out.height = d.height;
  out.width = d.width;
  const size_t sz = static_cast<size_t>(d.channels) * d.height * d.width;
  out.pixels.resize(ids.size() * sz);
  for (size_t k = 0; k < ids.size(); ++k) {
    std::copy_n(d.pixels.begin() + static_cast<int64_t>(ids[k] * sz), sz, out.pixels.begin() + static_cast<int64_t>(k * sz));
    out.labels.push_back(d.labels[static_cast<size_t>(ids[k])]);
  }
  return out;
}

// The training samples (a stratified `fraction` of what `val_split` leaves)
// and the held-out ones, fixed by the seed.
void split_training_set(const std::vector<int64_t>& labels, const config::DataloaderConfig& dl, uint64_t seed,
                        std::vector<int64_t>& ids, std::vector<int64_t>& held) {
  stratified_split(labels, 1.0 - dl.val_split, seed, ids, held);
  if (dl.fraction >= 1) return;
  std::vector<int64_t> sub_labels, keep, rest;
  for (int64_t i : ids) sub_labels.push_back(labels[static_cast<size_t>(i)]);
  stratified_split(sub_labels, dl.fraction, seed + 1, keep, rest);
  for (auto& k : keep) k = ids[static_cast<size_t>(k)];
  ids = std::move(keep);
}

// Labels past num_classes would end as an index error deep in the loss.
void check_labels(const config::Config& c, const std::vector<int64_t>& labels, const std::string& what) {
  const auto it = std::max_element(labels.begin(), labels.end());
  if (it == labels.end()) return;
  MPQ_CHECK(*it < c.dataloader.num_classes, what, ": holds label ", *it, " (image ", it - labels.begin(),
            "), but dataloader.num_classes is ", c.dataloader.num_classes, " in ", c.source,
            "; raise num_classes or fix the labels");
}

// A split, fraction or shard that leaves some rank nothing to train or
// validate on is refused before training, with the counts.
void check_split(const config::Config& c, int world, int64_t total, int64_t train_n, int64_t val_n) {
  const auto& dl = c.dataloader;
  MPQ_CHECK(train_n >= world, c.source, ": dataloader.fraction ", dl.fraction, " and val_split ", dl.val_split,
            " leave ", train_n, " training image(s) of ", total, " for ", world,
            " rank(s); raise fraction or lower val_split");
  MPQ_CHECK(val_n > 0, c.source, ": ",
            dl.val_split > 0 ? detail::concat("dataloader.val_split ", dl.val_split, " holds out no image of ", total)
                             : std::string("the validation split has no images"),
            "; raise val_split, or set it to 0 to validate on the dataset's test split");
}

int input_channels(const config::Config& c) {
  const std::string& d = c.dataloader.dataset;
  return d == "fashion_mnist" || d == "mnist" ? 1 : 3;
}

struct Data {
  std::unique_ptr<Loader> train, val, calib;  // calib: training images without augmentation order, for BN
  int channels = 1, height = 28, width = 28;
  int64_t train_size = 0, val_size = 0;
};

// The datasets of the config: train (its `fraction`), val (the held-out
// `val_split` of the training set, or the test split), calibration.
Data make_data(const config::Config& c, int rank, int world) {
  const auto& dl = c.dataloader;
  Data d;
  data::LoaderOptions o;
  o.dataset = dl.dataset;
  o.batch_size = dl.batch_size;
  o.seed = static_cast<uint64_t>(c.seed);
  o.rank = rank;
  o.world_size = world;
  const uint64_t split_seed = static_cast<uint64_t>(c.seed) + 7919;
  if (dl.dataset == "imagenet") {
    MPQ_CHECK(!dl.path.empty(), c.source, ": dataloader.path must name the ImageNet folder (with train/ and val/)");
    auto train = std::make_shared<data::ImageFolder>(dl.path + "/train", data::ImageFolderOptions{true, 224, 256});
    auto val_train = std::make_shared<data::ImageFolder>(dl.path + "/train", data::ImageFolderOptions{false, 224, 256});
    std::vector<int64_t> labels;
    for (int64_t i = 0; i < train->size(); ++i) labels.push_back(train->label(i));
    check_labels(c, labels, dl.path + "/train");
    std::vector<int64_t> ids, held;
    split_training_set(labels, dl, split_seed, ids, held);
    d.train_size = static_cast<int64_t>(ids.size());
    if (dl.val_split > 0) check_split(c, world, train->size(), d.train_size, static_cast<int64_t>(held.size()));
    d.train = std::make_unique<FolderSource>(train, ids, o, dl.strict);
    d.calib = std::make_unique<FolderSource>(train, ids, o, dl.strict);
    data::LoaderOptions vo = o;
    vo.train = false;
    if (dl.val_split > 0) {
      d.val_size = static_cast<int64_t>(held.size());
      d.val = std::make_unique<FolderSource>(val_train, held, vo, dl.strict);
    } else {
      auto val = std::make_shared<data::ImageFolder>(dl.path + "/val", data::ImageFolderOptions{false, 224, 256});
      std::vector<int64_t> all(static_cast<size_t>(val->size())), val_labels;
      std::iota(all.begin(), all.end(), 0);
      for (int64_t i : all) val_labels.push_back(val->label(i));
      check_labels(c, val_labels, dl.path + "/val");
      d.val_size = val->size();
      check_split(c, world, train->size(), d.train_size, d.val_size);
      d.val = std::make_unique<FolderSource>(val, all, vo, dl.strict);
    }
    d.channels = 3;
    d.height = d.width = 224;
    return d;
  }
  std::string path = dl.path;
  if (path.empty()) {
    MPQ_CHECK(dl.dataset == "fashion_mnist", c.source, ": dataloader.path must name the ", dl.dataset, " folder");
    path = "/usr/share/datasets/fashion-mnist";
  }
  const bool cifar = dl.dataset == "cifar10";
  data::RawImages train = cifar ? data::load_cifar10(path, true) : data::load_idx_split(path, true);
  check_labels(c, train.labels, path + (cifar ? " (training batches)" : " (training labels)"));
  std::vector<int64_t> ids, held;
  split_training_set(train.labels, dl, split_seed, ids, held);
  data::RawImages val = dl.val_split > 0 ? select(train, held) : (cifar ? data::load_cifar10(path, false)
                                                                          : data::load_idx_split(path, false));
  if (dl.val_split <= 0) check_labels(c, val.labels, path + (cifar ? " (test batch)" : " (test labels)"));
  check_split(c, world, train.count, static_cast<int64_t>(ids.size()), val.count);
  if (ids.size() != static_cast<size_t>(train.count)) train = select(train, ids);
  d.channels = train.channels;
  d.height = train.height;
  d.width = train.width;
  d.train_size = train.count;
  d.val_size = val.count;
  data::LoaderOptions fixed = o;
  fixed.train = false;  // calibration and validation: no augmentation, a fixed order
  const auto shared = std::make_shared<const data::RawImages>(std::move(train));
  d.calib = std::make_unique<MemorySource>(shared, fixed);
  d.train = std::make_unique<MemorySource>(shared, o);
  d.val = std::make_unique<MemorySource>(std::make_shared<const data::RawImages>(std::move(val)), fixed);
  return d;
}

// ------------------------------------------------------------------ model

struct Model {
  quant::QuantizedNet q;  // q.net is the network; q.convs empty in full precision
  Mode mode = Mode::kFullPrecision;
  std::vector<int> weight_bits, act_bits;  // finetune: the policy
  std::string arch;
  int channels = 1, num_classes = 10;
  int64_t input_size = 0;  // image side, recorded so extract writes the right geometry
  torch::Dtype dtype = torch::kFloat;
  bool loaded_quantized = false;  // the weights came from a quantized (finetune) checkpoint
  // A batch of images on the model's device, in its dtype.
  torch::Tensor input(const torch::Tensor& images, const torch::Device& device) const {
    return images.to(device, dtype);
  }
};

bool is_quantized_checkpoint(const torchio::StateDict& s) {
  return std::any_of(s.begin(), s.end(), [](const auto& kv) { return kv.first.find(".quan_") != std::string::npos; });
}

void load_into(torch::nn::Module& m, const torchio::Checkpoint& ck, bool strict, const std::string& path) {
  const torchio::LoadReport r = torchio::load_state_dict(m, ck.state, strict, path);
  if (!r.clean()) mpq::log::warn("{}: loaded with differences: {}", path, r.summary());
}

// The finetune policy: `policy` file or the weight_bits/act_bits lists.
void policy_bits(const config::Config& c, const std::vector<std::string>& model_layers, std::vector<std::string>& names,
                 std::vector<int>& wb, std::vector<int>& ab) {
  if (!c.policy.empty()) {
    const search::PolicyBits p = search::load_policy(c.policy);
    MPQ_CHECK(p.model.empty() || p.model == c.arch || p.model == "custom", c.policy, ": a policy for model '", p.model,
              "' but arch is '", c.arch, "'");
    names = p.layers;
    wb = p.weight_bits;
    ab = p.act_bits;
    return;
  }
  MPQ_CHECK(!c.weight_bits.empty(), c.source, ": finetuning needs bit-widths: policy (the file `mpq search -o` wrote) or "
            "weight_bits/act_bits lists with one entry per searchable layer (", model_layers.size(), " for ", c.arch, ")");
  names = model_layers;
  wb = c.weight_bits;
  ab = c.act_bits;
}

Model make_net(const config::Config& c, Mode mode, int channels, bool load_pretrained) {
  Model m;
  m.mode = mode;
  m.arch = c.arch;
  m.channels = channels;
  m.num_classes = c.dataloader.num_classes;
  models::Net net = models::make_model(c.arch, {c.dataloader.num_classes, channels});
  std::optional<torchio::Checkpoint> ck;
  bool quantized_ck = false;
  if (load_pretrained && !c.pre_trained.empty()) {
    ck = torchio::read_checkpoint(c.pre_trained);
    quantized_ck = is_quantized_checkpoint(ck->state);
    MPQ_CHECK(!quantized_ck || mode == Mode::kFinetune, c.pre_trained,
              ": holds quantizer scales; start ", mode == Mode::kJoint ? "indicator training" : "full-precision training",
              " from a full-precision checkpoint");
    if (!quantized_ck) load_into(*net, *ck, c.pre_trained_strict, c.pre_trained);
  }
  std::vector<std::string> searchable;
  const auto slots = net->slots();
  for (size_t i = 1; i < slots.size(); ++i)
    if (!slots[i].is_linear) searchable.push_back(slots[i].name);
  if (mode == Mode::kJoint) {
    MPQ_CHECK(!c.target_bits.empty(), c.source, ": target_bits must list the candidate bit-widths, e.g. [6, 5, 4, 3, 2]");
    m.q = quant::quantize_for_indicators(net, c.target_bits);
  } else if (mode == Mode::kFinetune) {
    std::vector<std::string> names;
    policy_bits(c, searchable, names, m.weight_bits, m.act_bits);
    m.q = quant::quantize_for_finetune(net, names, m.weight_bits, m.act_bits);
    if (quantized_ck) load_into(*net, *ck, c.pre_trained_strict, c.pre_trained);
    m.loaded_quantized = quantized_ck;
  } else {
    m.q.net = net;
  }
  if (c.dtype == "float64") {
    m.dtype = torch::kDouble;
    m.q.net->to(torch::kDouble);
  }
  if (c.channels_last) m.q.net->to_channels_last();  // before any optimizer state exists
  return m;
}

std::vector<quant::LsqQuantizerImpl*> quantizers(torch::nn::Module& net) {
  std::vector<quant::LsqQuantizerImpl*> out;
  for (const auto& mod : net.modules(/*include_self=*/false))
    if (auto* q = dynamic_cast<quant::LsqQuantizerImpl*>(mod.get())) out.push_back(q);
  return out;
}

std::vector<models::BatchNormImpl*> batchnorms(torch::nn::Module& net) {
  std::vector<models::BatchNormImpl*> out;
  for (const auto& mod : net.modules(false))
    if (auto* b = dynamic_cast<models::BatchNormImpl*>(mod.get())) out.push_back(b);
  return out;
}

// ------------------------------------------------------------------ run context

struct Context {
  dist::Env env;
  std::unique_ptr<dist::Group> group;
  torch::Device device = torch::kCPU;
  bool rank0() const { return env.rank == 0; }
};

// The device this process trains on (training_device): cuda:LOCAL_RANK
// where CUDA is, made the current device so that nothing lands on GPU 0 by
// default; the CPU where asked or where no GPU is.
torch::Device pick_device(const dist::Env& env, const std::string& training_device) {
  if (training_device == "cpu") return torch::kCPU;
  const bool want_gpu = training_device == "gpu" || training_device == "cuda";
  if (!torch::cuda::is_available()) {
    MPQ_CHECK(!want_gpu, "training_device: ", training_device, ", but ",
              at::detail::getCUDAHooks().isBuilt() ? "no CUDA device is visible to this process (check the driver with nvidia-smi, and "
                                 "CUDA_VISIBLE_DEVICES)"
                               : "this mpq's LibTorch is a CPU build (rebuild against the CUDA one scripts/install_torch.sh installs)",
              "; or set training_device: auto or cpu");
    return torch::kCPU;
  }
  const auto n = static_cast<int>(torch::cuda::device_count());
  MPQ_CHECK(env.local_rank < n, "environment: LOCAL_RANK=", env.local_rank, " but this node has ", n,
            " CUDA device(s); start at most ", n, " processes per node (torchrun --nproc_per_node)");
  const torch::Device d(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  c10::impl::getDeviceGuardImpl(d.type())->setDevice(d);
  return d;
}

// dist_backend: auto takes NCCL for CUDA tensors where this build has it.
dist::Backend pick_backend(const config::Config& c, const torch::Device& device, bool rank0) {
  if (c.dist_backend == "gloo") return dist::Backend::Gloo;
  if (c.dist_backend == "nccl") {
    MPQ_CHECK(dist::nccl_built(), "dist_backend: nccl, but this mpq was built without c10d's NCCL backend (a CPU "
              "LibTorch, or no nccl.h at build time: see the cmake output); use dist_backend: gloo");
    MPQ_CHECK(device.is_cuda(), "dist_backend: nccl needs CUDA tensors, and this process sees no CUDA device; use "
              "dist_backend: gloo");
    return dist::Backend::Nccl;
  }
  if (device.is_cuda() && dist::nccl_built()) return dist::Backend::Nccl;
  if (device.is_cuda() && rank0)
    mpq::log::warn("this mpq was built without c10d's NCCL backend: Gloo carries the CUDA tensors through host memory "
                 "(slower); rebuild against a LibTorch and nccl.h with NCCL for multi-GPU speed");
  return dist::Backend::Gloo;
}

Context make_context(const config::Config& c) {
  Context ctx;
  ctx.env = dist::env_from_environment();
  // Threads: the config's, else the machine's cores shared by the processes of this node.
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(c.threads > 0 ? c.threads : std::max(1, hw / ctx.env.local_world_size));
  ctx.device = pick_device(ctx.env, c.training_device);
  if (!ctx.rank0()) mpq::log::set_level(mpq::log::Level::warn);  // rank 0 logs for everyone
  // A group of one too where a backend is named under torchrun's variables:
  // a check of that backend on one device (auto makes none).
  if (ctx.env.distributed() || (ctx.env.launched && c.dist_backend != "auto")) {
    const dist::Backend backend = pick_backend(c, ctx.device, ctx.rank0());
    ctx.group = std::make_unique<dist::Group>(ctx.env, std::chrono::seconds(c.dist_timeout), backend, ctx.device);
    mpq::log::info("rank {}/{}: joined the group at {}:{} ({} on {})", ctx.env.rank, ctx.env.world_size,
                 ctx.env.master_addr, ctx.env.master_port, backend == dist::Backend::Nccl ? "NCCL" : "Gloo",
                 ctx.device.str());
  }
  torch::manual_seed(static_cast<uint64_t>(c.seed));
  return ctx;
}

// Wires the model into the group: rank 0's state everywhere, activation
// scale initialisation averaged, BatchNorm synchronised when asked.
void attach(Context& ctx, Model& m, bool sync_bn) {
  m.q.net->to(ctx.device);
  dist::Group* g = ctx.group.get();
  if (g) {
    torch::NoGradGuard no_grad;
    for (auto& p : m.q.net->parameters()) g->broadcast(p);
    for (auto& b : m.q.net->buffers()) g->broadcast(b);
    for (auto* q : quantizers(*m.q.net)) {
      q->all_reduce_mean = [g](torch::Tensor& t) { g->all_reduce_mean(t); };
      if (q->options().all_positive) q->numel_factor = g->env().world_size;  // activations: the batch is sharded
    }
  }
  if (sync_bn) {
    if (g) models::set_batchnorm_sync([g](torch::Tensor& t) { g->all_reduce_sum(t); });
    else models::set_batchnorm_sync([](torch::Tensor&) {});
  } else {
    models::set_batchnorm_sync({});
  }
}

// Averages every BatchNorm's running statistics over ranks (timm's distribute_bn).
void average_bn_stats(Context& ctx, torch::nn::Module& net) {
  if (!ctx.group) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> ts;
  for (auto* b : batchnorms(net)) {
    ts.push_back(b->running_mean);
    ts.push_back(b->running_var);
  }
  if (!ts.empty()) ctx.group->all_reduce_mean_flat(ts);
}

// ------------------------------------------------------------------ metrics

struct Meter {
  double loss_sum = 0, correct1 = 0, correct5 = 0, count = 0;
  void add(const torch::Tensor& logits, const torch::Tensor& labels, double loss) {
    torch::NoGradGuard no_grad;
    const int64_t k = std::min<int64_t>(5, logits.size(1));
    const torch::Tensor top = std::get<1>(logits.topk(k, 1));
    const torch::Tensor hit = top.eq(labels.unsqueeze(1));
    const auto n = static_cast<double>(labels.size(0));
    correct1 += hit.select(1, 0).sum().item<double>();
    correct5 += hit.any(1).sum().item<double>();
    loss_sum += loss * n;
    count += n;
  }
  void reduce(Context& ctx) {
    if (!ctx.group) return;
    torch::Tensor t = torch::tensor({loss_sum, correct1, correct5, count}, torch::kDouble);
    ctx.group->all_reduce_sum(t);
    loss_sum = t[0].item<double>();
    correct1 = t[1].item<double>();
    correct5 = t[2].item<double>();
    count = t[3].item<double>();
  }
  double loss() const { return count > 0 ? loss_sum / count : 0; }
  double top1() const { return count > 0 ? 100 * correct1 / count : 0; }
  double top5() const { return count > 0 ? 100 * correct5 / count : 0; }
};

std::string fmt_duration(double s) {
  const auto t = static_cast<int64_t>(std::max(0.0, s));
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", static_cast<long>(t / 3600),
                               static_cast<long>(t / 60 % 60), static_cast<long>(t % 60));
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", static_cast<long>(t / 60), static_cast<long>(t % 60));
  return buf;
}

// Progress on stderr: a live line on a terminal, a log line every
// `print_freq` steps otherwise.
class Progress {
 public:
  // `top1`: the steps have a top-1 to show (the joint step scores only its loss).
  Progress(bool enabled, int print_freq, int64_t total_steps, bool top1)
      : on_(enabled), tty_(enabled && ::isatty(2)), top1_(top1), freq_(print_freq), total_(total_steps),
        start_(Clock::now()) {}
  void step(int epoch, int epochs, int64_t batch, int64_t batches, const Meter& m, double lr, double images) {
    ++done_;
    images_ += images;
    if (!on_) return;
    const bool last = batch + 1 == batches;
    if (!tty_ && (batch + 1) % freq_ != 0 && !last) return;
    const double el = std::chrono::duration<double>(Clock::now() - start_).count();
    const double ips = el > 0 ? images_ / el : 0;
    const double eta = done_ > 0 ? el / static_cast<double>(done_) * static_cast<double>(total_ - done_) : 0;
    char line[256];
    char top1[32] = "";
    if (top1_) std::snprintf(top1, sizeof top1, " top1 %.2f", m.top1());
    std::snprintf(line, sizeof line, "epoch %d/%d step %ld/%ld loss %.4f%s lr %.3g %.0f img/s ETA %s", epoch + 1, epochs,
                  static_cast<long>(batch + 1), static_cast<long>(batches), m.loss(), top1, lr, ips,
                  fmt_duration(eta).c_str());
    if (tty_) {
      std::fprintf(stderr, "\r%s\x1b[K%s", line, last ? "\n" : "");
      std::fflush(stderr);
    } else {
      mpq::log::info("{}", line);
    }
  }
  void clear() {
    if (tty_) std::fprintf(stderr, "\r\x1b[K");
  }

 private:
  bool on_, tty_, top1_;
  int freq_;
  int64_t total_, done_ = 0;
  double images_ = 0;
  Clock::time_point start_;
};

// ------------------------------------------------------------------ evaluation

Meter validate(Context& ctx, Model& m, Loader& val, double smoothing) {
  torch::NoGradGuard no_grad;
  m.q.net->eval();
  Meter meter;
  val.set_epoch(0);
  for (int64_t i = 0; i < val.num_batches(); ++i) {
    data::Batch b = val.batch(i);
    const torch::Tensor x = m.input(b.images, ctx.device), y = b.labels.to(ctx.device);
    const torch::Tensor out = m.q.net->forward(x);
    meter.add(out, y, label_smoothing_ce(out, y, smoothing).item<double>());
  }
  report_skipped(val, "validation");
  meter.reduce(ctx);
  m.q.net->train();
  return meter;
}

// METHOD.md §5: reset running statistics, cumulative average, training-mode
// forwards without gradients over about `images` training images (each rank
// its share). With synchronised BatchNorm the statistics are the global
// batch's already; otherwise they are averaged over ranks afterwards.
void recalibrate_bn(Context& ctx, Model& m, Loader& calib, int images) {
  if (images <= 0) return;
  torch::NoGradGuard no_grad;
  auto bns = batchnorms(*m.q.net);
  std::vector<std::optional<double>> momenta;
  for (auto* b : bns) {
    momenta.push_back(b->options.momentum());
    b->reset_running_stats();
    b->options.momentum(std::nullopt);
  }
  m.q.net->train();
  calib.set_epoch(0);
  int64_t seen = 0;
  const int64_t share = (images + ctx.env.world_size - 1) / ctx.env.world_size;
  for (int64_t i = 0; i < calib.num_batches() && seen < share; ++i) {
    data::Batch b = calib.batch(i);
    m.q.net->forward(m.input(b.images, ctx.device));
    seen += b.images.size(0);
  }
  for (size_t k = 0; k < bns.size(); ++k) bns[k]->options.momentum(momenta[k]);
  if (!models::batchnorm_sync_enabled()) average_bn_stats(ctx, *m.q.net);
}

// Size and BitOPs of the model as the search reports them (METHOD.md §4).
search::Report size_report(const Model& m, int height, int width) {
  search::InputShape in{height, width, m.channels, m.num_classes};
  const search::ModelGeometry g = search::zoo_geometry(m.arch, in);
  search::SearchProblem p;
  for (const auto* l : g.searchable()) {
    p.names.push_back(l->name);
    p.params.push_back(l->params);
    p.macs.push_back(l->original_macs);
  }
  p.excepted_params = g.excepted_params();
  p.excepted_macs = g.excepted_macs(true);
  if (m.mode == Mode::kFinetune) return search::make_report(p, m.weight_bits, m.act_bits);
  // Full precision: every layer at 32 bits.
  search::Report r;
  double macs = static_cast<double>(p.excepted_macs);
  for (auto x : p.macs) macs += static_cast<double>(x);
  r.avg_weight_bits = r.avg_act_bits = 32;
  r.compression_ratio = 1;
  r.fp_size_mb = r.size_mb = 32.0 * static_cast<double>(g.total_params()) / (1024.0 * 1024.0 * 8.0);
  r.gbitops = macs * 32 * 32 / 1e9;
  return r;
}

// ------------------------------------------------------------------ checkpoints

struct Position {
  int epoch = 0;        // the epoch to run
  int64_t batch = 0;    // the next batch of it
  int64_t step = 0;     // optimizer steps so far
  double best_top1 = -1;
  int best_epoch = -1;
  int64_t global_batch = 0;  // batch_size x world size of the run that wrote it
  int world_size = 1;
  Meter meter;          // the running epoch's training metrics (this rank's)
  std::string rng;      // the mixed-policy generator
};

// The optimizer state is keyed by the parameter's TensorImpl.
void* param_key(const torch::Tensor& p) { return p.unsafeGetTensorImpl(); }

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kJoint: return "pretrain";
    case Mode::kFinetune: return "finetune";
    default: return "fp";
  }
}

void save(const std::string& path, const config::Config& c, Model& m, torch::optim::SGD& opt, const Position& pos) {
  c10::Dict<std::string, torch::Tensor> state, momentum;
  for (const auto& kv : m.q.net->named_parameters()) state.insert(kv.key(), kv.value().detach().cpu().contiguous());
  for (const auto& kv : m.q.net->named_buffers()) state.insert(kv.key(), kv.value().detach().cpu().contiguous());
  auto& st = opt.state();
  for (const auto& kv : m.q.net->named_parameters()) {
    auto it = st.find(param_key(kv.value()));
    if (it == st.end()) continue;
    const auto& s = static_cast<const torch::optim::SGDParamState&>(*it->second);
    if (s.momentum_buffer().defined()) momentum.insert(kv.key(), s.momentum_buffer().detach().cpu().contiguous());
  }
  c10::List<int64_t> bits;
  for (int b : m.q.candidates) bits.push_back(b);
  c10::List<double> meter({pos.meter.loss_sum, pos.meter.correct1, pos.meter.correct5, pos.meter.count});
  std::vector<std::pair<std::string, c10::IValue>> meta = {
      {"format", std::string("mpq-checkpoint-1")},
      {"arch", m.arch},
      {"mode", std::string(mode_name(m.mode))},
      {"epoch", static_cast<int64_t>(pos.epoch)},
      {"batch", pos.batch},
      {"global_batch", pos.global_batch},
      {"world_size", static_cast<int64_t>(pos.world_size)},
      {"step", pos.step},
      {"best_top1", pos.best_top1},
      {"best_epoch", static_cast<int64_t>(pos.best_epoch)},
      {"meter", meter},
      {"rng", pos.rng},
      {"config", config::to_yaml(c)},
      {"input_size", m.input_size},
      {"state_dict", state},
      {"optimizer", momentum}};
  if (m.mode == Mode::kJoint) meta.emplace_back("candidate_bits", bits);
  if (m.mode == Mode::kFinetune) {
    // The policy itself, so that the checkpoint alone says what it is (mpq export).
    c10::impl::GenericDict policy(c10::StringType::get(), c10::AnyType::get());
    c10::List<std::string> names(m.q.names);
    c10::List<int64_t> wb, ab;
    for (size_t i = 0; i < m.weight_bits.size(); ++i) {
      wb.push_back(m.weight_bits[i]);
      ab.push_back(m.act_bits[i]);
    }
    policy.insert("layers", names);
    policy.insert("weight_bits", wb);
    policy.insert("act_bits", ab);
    meta.emplace_back("policy", policy);
  }
  torchio::save_checkpoint(path, {}, meta);
}

// `epochs` and `train_images` are this run's: the bounds of a position in it.
Position restore(const std::string& path, Model& m, torch::optim::SGD& opt, int epochs, int64_t train_images) {
  const torchio::Checkpoint ck = torchio::read_checkpoint(path);
  const pickle::Value* fmt = ck.root.find("format");
  MPQ_CHECK(fmt && fmt->kind() == pickle::Value::Kind::kStr && fmt->as_str() == "mpq-checkpoint-1", path,
            ": not an mpq training checkpoint (resume.path takes last.pt or best.pt of an mpq run; for weights, use "
            "pre_trained)");
  const pickle::Value* mode = ck.root.find("mode");
  const bool named = mode && mode->kind() == pickle::Value::Kind::kStr;
  MPQ_CHECK(named && mode->as_str() == mode_name(m.mode), path, ": a checkpoint of an mpq ",
            named ? mode->as_str() : "?", " run, but this run is ", mode_name(m.mode));
  torchio::load_state_dict(*m.q.net, ck.state, /*strict=*/true, path);
  // Every position field is checked here: a value out of range would trip
  // an internal check in the loader or train on from a wrong place.
  const auto bad = [&](const char* k, const std::string& what) {
    return InputError(detail::concat(path, ": '", k, "' ", what,
                                     " (a damaged or hand-edited checkpoint; resume from another one, or start anew "
                                     "with resume.path unset)"));
  };
  const auto get_int = [&](const char* k, int64_t lo, int64_t hi) {
    const pickle::Value* v = ck.root.find(k);
    if (!v || v->kind() != pickle::Value::Kind::kInt) throw bad(k, "is missing or not an integer");
    const int64_t x = v->as_int();
    if (x < lo || x > hi) throw bad(k, detail::concat("is ", x, ", outside [", lo, ", ", hi, "]"));
    return x;
  };
  const auto get_real = [&](const pickle::Value* v, const char* k, double lo, double hi) {
    if (v->kind() != pickle::Value::Kind::kFloat && v->kind() != pickle::Value::Kind::kInt)
      throw bad(k, "is not a number");
    const double x = v->as_double();
    if (!(x >= lo && x <= hi)) throw bad(k, detail::concat("is ", x, ", outside [", lo, ", ", hi, "]"));
    return x;
  };
  constexpr int64_t kMaxInt = std::numeric_limits<int>::max(), kMax64 = std::numeric_limits<int64_t>::max();
  Position pos;
  pos.epoch = static_cast<int>(get_int("epoch", 0, kMaxInt));
  MPQ_CHECK(pos.epoch <= epochs, path, ": written at epoch ", pos.epoch, " of its run, but this run has ", epochs,
            " epochs in all (epochs + cooldown_epochs); raise epochs to continue it");
  pos.global_batch = get_int("global_batch", 1, kMaxInt);
  pos.world_size = static_cast<int>(get_int("world_size", 1, kMaxInt));
  // The batch counts global batches of the run that wrote it; at most an epoch of them.
  pos.batch = get_int("batch", 0, (train_images + pos.global_batch - 1) / pos.global_batch);
  pos.step = get_int("step", 0, kMax64);
  pos.best_epoch = static_cast<int>(get_int("best_epoch", -1, pos.epoch - 1));
  if (const pickle::Value* v = ck.root.find("best_top1")) pos.best_top1 = get_real(v, "best_top1", -1, 100);
  if (const pickle::Value* v = ck.root.find("rng")) {
    if (v->kind() != pickle::Value::Kind::kStr) throw bad("rng", "is not a string");
    pos.rng = v->as_str();
  }
  if (const pickle::Value* v = ck.root.find("meter")) {
    if ((v->kind() != pickle::Value::Kind::kList && v->kind() != pickle::Value::Kind::kTuple) || v->items().size() != 4)
      throw bad("meter", "is not a list of 4 numbers");
    const double inf = std::numeric_limits<double>::max();
    pos.meter.count = get_real(&v->items()[3], "meter", 0, inf);
    pos.meter.loss_sum = get_real(&v->items()[0], "meter", 0, inf);
    pos.meter.correct1 = get_real(&v->items()[1], "meter", 0, pos.meter.count);
    pos.meter.correct5 = get_real(&v->items()[2], "meter", pos.meter.correct1, pos.meter.count);
  }
  std::map<std::string, torch::Tensor> momentum;
  if (const pickle::Value* o = ck.root.find("optimizer"); o && o->kind() == pickle::Value::Kind::kDict)
    for (const auto& [k, v] : o->dict_items()) momentum[k.as_str()] = torchio::as_tensor(v, path + ": optimizer." + k.as_str());
  auto& st = opt.state();
  st.clear();
  for (const auto& kv : m.q.net->named_parameters()) {
    auto it = momentum.find(kv.key());
    if (it == momentum.end()) continue;
    MPQ_CHECK(it->second.sizes() == kv.value().sizes() && it->second.scalar_type() == kv.value().scalar_type(), path,
              ": optimizer state of ", kv.key(), " has the wrong shape or type");
    auto s = std::make_unique<torch::optim::SGDParamState>();
    s->momentum_buffer(torch::empty_like(kv.value()).copy_(it->second));  // the parameter's device, dtype, layout
    st[param_key(kv.value())] = std::move(s);
  }
  return pos;
}

// ------------------------------------------------------------------ run folder files

class RunFiles {
 public:
  RunFiles(const config::Config& c, bool rank0)
      : dir_(c.output_dir + "/" + c.name), on_(rank0), best_n_(static_cast<size_t>(c.num_best_scores)) {}
  // Called once everything the run needs has been checked: a run that fails
  // on its inputs leaves an existing run folder as it was. Rows of epochs at
  // or past `next_epoch` (the checkpoint's position) are dropped, so the
  // metrics never run ahead of the checkpoint they belong to.
  void open(const config::Config& c, int next_epoch) {
    if (!on_) return;
    std::error_code ec;
    fs::create_directories(dir_, ec);
    MPQ_CHECK_T(RuntimeError, !ec, dir_, ": cannot create the run folder (", ec.message(), ")");
    io::write_file_atomic(dir_ + "/config.yaml", config::to_yaml(c));
    const std::string csv = dir_ + "/metrics.csv", header =
        "epoch,lr,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,images_per_s,seconds\n";
    std::string kept = header;
    bool dropped = !fs::exists(csv);
    if (!dropped) {
      std::ifstream in(csv);
      std::string line;
      std::getline(in, line);  // the header
      while (std::getline(in, line)) {
        char* end = nullptr;
        const long e = std::strtol(line.c_str(), &end, 10);
        if (end != line.c_str() && *end == ',' && e >= 0 && e < next_epoch) {
          kept += line + "\n";
          remember(line);
        } else {
          dropped = true;
        }
      }
    }
    if (dropped) io::write_file_atomic(csv, kept);
    csv_.open(csv, std::ios::app);
    MPQ_CHECK_T(RuntimeError, csv_.good(), csv, ": cannot write the metrics file");
    tb_ = std::make_unique<io::TensorBoardWriter>(dir_);
  }
  const std::string& dir() const { return dir_; }
  void epoch(int e, double lr, const Meter& t, const std::optional<Meter>& v, double ips, double secs) {
    if (!on_) return;
    char line[512];
    char val[128] = ",,";
    if (v) std::snprintf(val, sizeof val, "%.6f,%.4f,%.4f", v->loss(), v->top1(), v->top5());
    std::snprintf(line, sizeof line, "%d,%.8g,%.6f,%.4f,%.4f,%s,%.1f,%.2f\n", e, lr, t.loss(), t.top1(), t.top5(), val,
                  ips, secs);
    csv_ << line;
    csv_.flush();
    tb_->scalar("train/loss", t.loss(), e);
    tb_->scalar("train/top1", t.top1(), e);
    tb_->scalar("train/top5", t.top5(), e);
    tb_->scalar("lr", lr, e);
    tb_->scalar("train/images_per_s", ips, e);
    if (v) {
      tb_->scalar("val/loss", v->loss(), e);
      tb_->scalar("val/top1", v->top1(), e);
      tb_->scalar("val/top5", v->top5(), e);
      // The scoreboard (log.num_best_scores): the best validations so far, as the original logs them.
      board_.push_back({v->top1(), v->top5(), e});
      rank_board();
      for (size_t k = 0; k < board_.size(); ++k)
        log::info("scoreboard {}: epoch {}, val top1 {:.3f}, top5 {:.3f}", k + 1, board_[k].epoch + 1, board_[k].top1,
                  board_[k].top5);
    }
    tb_->flush();
  }

 private:
  struct Score {
    double top1, top5;
    int epoch;
  };
  // A kept metrics row with a validation: onto the scoreboard.
  void remember(const std::string& line) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    if (f.size() < 8 || f[6].empty() || f[7].empty()) return;
    board_.push_back({std::atof(f[6].c_str()), std::atof(f[7].c_str()), std::atoi(f[0].c_str())});
    rank_board();
  }
  // Best first by top-1, then top-5, then the later epoch, as the original's PerformanceScoreboard.
  void rank_board() {
    std::sort(board_.begin(), board_.end(), [](const Score& a, const Score& b) {
      return std::tie(a.top1, a.top5, a.epoch) > std::tie(b.top1, b.top5, b.epoch);
    });
    if (board_.size() > best_n_) board_.resize(best_n_);
  }

  std::string dir_;
  bool on_;
  size_t best_n_;
  std::vector<Score> board_;
  std::ofstream csv_;
  std::unique_ptr<io::TensorBoardWriter> tb_;
};

void set_lr(torch::optim::SGD& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
}

}  // namespace

// ------------------------------------------------------------------ train

void train(const config::Config& c, Mode mode) {
  Context ctx = make_context(c);
  const int world = ctx.env.world_size;
  RunFiles files(c, ctx.rank0());  // written to once the inputs are checked
  const std::string last = files.dir() + "/last.pt", best = files.dir() + "/best.pt";
  std::string resume = c.resume_path;
  if (resume == "auto") resume = fs::exists(last) ? last : "";
  // The model first (cheap, and where most config mistakes show), then the data.
  Model m = make_net(c, mode, input_channels(c), /*load_pretrained=*/resume.empty());
  Data data = make_data(c, ctx.env.rank, world);
  m.input_size = data.height;
  // freeze_weights, as the original: only the quantizer scales and the
  // parameters whose names say BatchNorm ("bn") train.
  std::vector<torch::Tensor> trained;
  for (auto& kv : m.q.net->named_parameters()) {
    const bool trains = !c.freeze_weights || kv.key().find("quan_") != std::string::npos ||
                        kv.key().find("bn") != std::string::npos;
    kv.value().set_requires_grad(trains);
    if (trains) trained.push_back(kv.value());
  }
  MPQ_CHECK(!trained.empty(), c.source, ": freeze_weights: true leaves this ", mode_name(mode),
            " run nothing to train (no quantizer scales or BatchNorm)");
  auto opt = make_sgd(*m.q.net, c.lr, c.momentum, c.weight_decay);
  Position pos;
  pos.global_batch = static_cast<int64_t>(c.dataloader.batch_size) * world;
  pos.world_size = world;
  if (!resume.empty()) {
    m.q.net->to(ctx.device);
    pos = restore(resume, m, *opt, total_epochs(c), data.train_size);
    // Another world size or batch: continue at the same sample of the epoch
    // (the epoch's order does not depend on the world size).
    const int64_t global = static_cast<int64_t>(c.dataloader.batch_size) * world;
    if (pos.global_batch != global && pos.batch > 0) {
      const int64_t samples = pos.batch * pos.global_batch;
      if (samples % global != 0)
        mpq::log::warn("{}: written with a global batch of {}, now {}: the epoch continues at sample {} instead of {}",
                     resume, pos.global_batch, global, samples / global * global, samples);
      pos.batch = samples / global;
      pos.meter = Meter{};  // this epoch's running metrics restart with the new shards
    }
    MPQ_CHECK(pos.batch <= data.train->num_batches(), resume, ": continues at batch ", pos.batch + 1,
              " of an epoch, but this run's epochs have ", data.train->num_batches(), " (another dataset or fraction?)");
    // Several ranks: the saved running metrics are rank 0's share only; restart them.
    if (world > 1 || pos.world_size > 1) pos.meter = Meter{};
    pos.global_batch = global;
    pos.world_size = world;
    mpq::log::info("resumed from {}: epoch {}, batch {}, step {}", resume, pos.epoch + 1, pos.batch, pos.step);
  }
  attach(ctx, m, c.sync_bn);
  std::mt19937_64 policy_rng(static_cast<uint64_t>(c.seed) * 2654435761u + 1);
  if (!pos.rng.empty()) {
    std::istringstream in(pos.rng);
    in >> policy_rng;
    MPQ_CHECK(!in.fail(), resume, ": malformed generator state");
  }
  const int epochs = total_epochs(c);
  const int64_t nb = data.train->num_batches();
  MPQ_CHECK(nb > 0, c.source, ": no training batches");
  files.open(c, pos.epoch);
  mpq::log::info("{} {}: {} training images ({} per rank), {} validation images, batch {} x {} rank(s), {} epochs, "
               "device {}, {} threads",
               mode_name(mode), c.arch, data.train_size, data.train_size / world, data.val_size,
               c.dataloader.batch_size, world, epochs, ctx.device.str(), torch::get_num_threads());
  if (mode == Mode::kFinetune) {
    std::string bits;
    for (size_t i = 0; i < m.weight_bits.size(); ++i)
      bits += (i ? " " : "") + std::to_string(m.weight_bits[i]) + "/" + std::to_string(m.act_bits[i]);
    mpq::log::info("policy (W/A per searchable layer): {}", bits);
  }
  SignalScope signals;
  const int64_t total_steps = static_cast<int64_t>(epochs - pos.epoch) * nb - pos.batch;
  Progress progress(ctx.rank0(), c.print_freq, std::max<int64_t>(total_steps, 1), mode != Mode::kJoint);
  // Gradients averaged over ranks while the step's last backward runs (DDP's buckets).
  std::unique_ptr<dist::GradSync> grad_sync;
  if (ctx.group)
    grad_sync = std::make_unique<dist::GradSync>(*ctx.group, trained,
                                                 static_cast<int64_t>(c.dist_bucket_mb * (1 << 20)));
  JointOptions jo;
  jo.smoothing = c.smoothing;
  jo.distill = c.distill;
  if (grad_sync) {
    jo.before_last_backward = [&] { grad_sync->arm(/*accumulated=*/true); };
    jo.after_backward = [&] { grad_sync->finish(); };
  }
  auto checkpoint = [&](const std::string& path) {
    if (!ctx.rank0()) return;
    std::ostringstream rng;
    rng << policy_rng;
    pos.rng = rng.str();
    save(path, c, m, *opt, pos);
  };
  while (pos.epoch < epochs) {
    const int epoch = pos.epoch;
    const double lr = learning_rate(c, epoch);
    set_lr(*opt, lr);
    data.train->set_epoch(epoch);
    m.q.net->train();
    const auto t0 = Clock::now();
    double images = 0;
    data::Prefetcher<data::Batch> pf([&](int64_t i) { return data.train->batch(i); }, pos.batch, nb,
                                     c.dataloader.workers, 2 * c.dataloader.workers + 2);
    while (pos.batch < nb) {
      data::Batch b = pf.next();
      const torch::Tensor x = m.input(b.images, ctx.device), y = b.labels.to(ctx.device);
      bool finite = true;
      if (mode == Mode::kJoint) {
        const std::vector<int> mixed = sample_policy(policy_rng, m.q.candidates, m.q.convs.size());
        const std::vector<double> losses = joint_step(m.q, *opt, x, y, mixed, jo);
        for (double l : losses) finite = finite && std::isfinite(l);
        // The joint step keeps no logits: its metric is the top candidate's loss.
        pos.meter.loss_sum += losses.front() * static_cast<double>(y.size(0));
        pos.meter.count += static_cast<double>(y.size(0));
      } else {
        opt->zero_grad();
        const torch::Tensor out = m.q.net->forward(x);
        const torch::Tensor l = label_smoothing_ce(out, y, c.smoothing);
        if (grad_sync) grad_sync->arm(/*accumulated=*/false);  // zero_grad left zeros
        l.backward();
        if (grad_sync) grad_sync->finish();
        const double loss = l.item<double>();
        finite = std::isfinite(loss);
        if (finite) opt->step();
        pos.meter.add(out.detach(), y, loss);
      }
      // Agree across ranks on stopping: a signal or a non-finite loss anywhere stops everyone.
      int flags = (g_signal.load() ? 1 : 0) | (finite ? 0 : 2);
      if (ctx.group) {
        torch::Tensor f = torch::tensor({static_cast<double>(flags & 1), static_cast<double>(flags >> 1)}, torch::kDouble);
        ctx.group->all_reduce_sum(f);
        flags = (f[0].item<double>() > 0 ? 1 : 0) | (f[1].item<double>() > 0 ? 2 : 0);
      }
      if (flags & 2) {
        progress.clear();
        const bool have = fs::exists(last);
        throw RuntimeError(detail::concat(
            "training diverged: non-finite loss at epoch ", epoch + 1, ", step ", pos.batch + 1, " (global step ",
            pos.step + 1, "); ", have ? "the last good checkpoint is " + last : std::string("no checkpoint was written yet"),
            " (lower lr", have ? ", and resume from it with resume.path" : "", ")"));
      }
      ++pos.step;
      images += static_cast<double>(y.size(0)) * world;
      progress.step(epoch, epochs, pos.batch, nb, pos.meter, lr, static_cast<double>(y.size(0)) * world);
      ++pos.batch;  // the position a checkpoint records: the next batch
      if (flags & 1) {
        progress.clear();
        checkpoint(last);
        throw Error(detail::concat("interrupted by ", g_signal.load() == SIGTERM ? "SIGTERM" : "a signal",
                                   "; saved ", last, " (epoch ", epoch + 1, ", step ", pos.batch,
                                   "); continue with --set resume.path=auto"),
                    ExitCode::kInterrupted);
      }
      if (c.checkpoint_steps > 0 && pos.step % c.checkpoint_steps == 0 && pos.batch < nb) checkpoint(last);
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    report_skipped(*data.train, "training epoch " + std::to_string(epoch + 1));
    average_bn_stats(ctx, *m.q.net);
    pos.meter.reduce(ctx);
    const Meter train_meter = pos.meter;
    std::optional<Meter> val;
    if ((epoch + 1) % c.val_cycle == 0 || epoch + 1 == epochs) {
      if (mode == Mode::kFinetune) recalibrate_bn(ctx, m, *data.calib, c.bn_calib_images);
      if (mode == Mode::kJoint) m.q.set_uniform(m.q.candidates.front());
      val = validate(ctx, m, *data.val, c.smoothing);
      const std::string train_top1 = mode == Mode::kJoint ? "" : mpq::log::format(" top1 {:.2f}", train_meter.top1());
      mpq::log::info("epoch {}/{}: train loss {:.4f}{} | val loss {:.4f} top1 {:.2f} top5 {:.2f} | {:.0f} img/s, {}{}",
                   epoch + 1, epochs, train_meter.loss(), train_top1, val->loss(), val->top1(), val->top5(),
                   images / secs, fmt_duration(secs), mode == Mode::kJoint ? " (all at the top candidate)" : "");
    }
    const bool is_best = val && val->top1() > pos.best_top1;
    if (is_best) {
      pos.best_top1 = val->top1();
      pos.best_epoch = epoch;
    }
    // The checkpoint of a finished epoch points at the next one.
    ++pos.epoch;
    pos.batch = 0;
    pos.meter = Meter{};
    checkpoint(last);
    if (is_best && ctx.rank0()) {
      std::error_code ec;
      fs::copy_file(last, best + ".tmp", fs::copy_options::overwrite_existing, ec);
      if (!ec) fs::rename(best + ".tmp", best, ec);
      MPQ_CHECK_T(RuntimeError, !ec, best, ": cannot write (", ec.message(), ")");
    }
    // After the checkpoint that records the epoch, never before it.
    files.epoch(epoch, lr, train_meter, val, images / secs, secs);
  }
  models::set_batchnorm_sync({});
  if (pos.best_epoch >= 0)
    mpq::log::info("done: best val top1 {:.2f} at epoch {}; checkpoints in {}", pos.best_top1, pos.best_epoch + 1,
                 files.dir());
}

// ------------------------------------------------------------------ eval

void evaluate(const config::Config& c) {
  Context ctx = make_context(c);
  const Mode mode = c.fp_model ? Mode::kFullPrecision : Mode::kFinetune;
  std::string weights = c.resume_path.empty() ? c.pre_trained : c.resume_path;
  MPQ_CHECK(!weights.empty(), c.source, ": eval needs weights: pre_trained (a checkpoint, e.g. best.pt of a finetune run)");
  config::Config cw = c;
  cw.pre_trained = weights;
  Model m = make_net(cw, mode, input_channels(c), /*load_pretrained=*/true);
  Data data = make_data(c, ctx.env.rank, ctx.env.world_size);
  attach(ctx, m, false);
  const auto t0 = Clock::now();
  const bool quantized = mode == Mode::kFinetune;
  if (quantized) recalibrate_bn(ctx, m, *data.calib, c.bn_calib_images);
  const Meter v = validate(ctx, m, *data.val, c.smoothing);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const search::Report r = size_report(m, data.height, data.width);
  if (!ctx.rank0()) return;
  std::printf("model: %s\nweights: %s\nimages: %ld\nbn_recalibrated: %s\ntop1: %.4f\ntop5: %.4f\nloss: %.6f\n"
              "avg_weight_bits: %.4f\navg_act_bits: %.4f\nsize_mb: %.6f\nfp_size_mb: %.6f\ncompression_ratio: %.4f\n"
              "gbitops: %.6f\nseconds: %.2f\n",
              c.arch.c_str(), weights.c_str(), static_cast<long>(v.count), quantized ? "true" : "false", v.top1(),
              v.top5(), v.loss(), r.avg_weight_bits, r.avg_act_bits, r.size_mb, r.fp_size_mb, r.compression_ratio,
              r.gbitops, secs);
  std::fflush(stdout);
}

// ------------------------------------------------------------------ export

namespace {

// The image side of a dataset at its usual size, for an export without data.
int default_side(const std::string& dataset) {
  if (dataset == "cifar10") return 32;
  if (dataset == "imagenet") return 224;
  return 28;
}

// A float32 tensor as a NumPy .npy file (format 1.0, C order), or int64.
void write_npy(const std::string& path, const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous().cpu();
  const bool f32 = c.scalar_type() == torch::kFloat;
  MPQ_ASSERT(f32 || c.scalar_type() == torch::kLong);
  std::string shape;
  for (int64_t d : c.sizes()) shape += std::to_string(d) + ",";
  if (c.dim() > 1) shape.pop_back();
  std::string header = std::string("{'descr': '") + (f32 ? "<f4" : "<i8") + "', 'fortran_order': False, 'shape': (" +
                       shape + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // the data starts at a multiple of 64
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * c.element_size());
  io::write_file_atomic(path, out);
}

}  // namespace

void export_onnx(const config::Config& c, const ExportOptions& o) {
  namespace ox = onnx_export;
  MPQ_CHECK(!c.fp_model, c.source, ": fp_model: true is a full-precision model; export takes a finetuned "
            "mixed-precision one (its config, or best.pt of `mpq finetune`)");
  const std::string weights = c.resume_path.empty() ? c.pre_trained : c.resume_path;
  MPQ_CHECK(!weights.empty(), c.source, ": export needs the finetuned weights: pre_trained (best.pt or last.pt of "
            "`mpq finetune`)");
  config::Config cw = c;
  cw.pre_trained = weights;
  cw.dtype = "float32";  // the graph's type; the layout stays the config's, as mpq eval runs it
  Context ctx = make_context(cw);
  MPQ_CHECK(!ctx.env.distributed(), "export runs in one process; start it without torchrun");
  Model m = make_net(cw, Mode::kFinetune, input_channels(c), /*load_pretrained=*/true);
  MPQ_CHECK(m.loaded_quantized, weights, ": holds no quantizer scales (a full-precision checkpoint?); export takes a "
            "finetuned one (best.pt or last.pt of `mpq finetune`)");
  const bool recalibrate = o.recalibrate && c.bn_calib_images > 0;
  const bool need_data = recalibrate || !o.reference_dir.empty();
  std::optional<Data> data;
  int height = o.input_side > 0 ? o.input_side : default_side(c.dataloader.dataset), width = height;
  if (need_data) {
    data = make_data(cw, 0, 1);
    height = data->height;
    width = data->width;
  }
  attach(ctx, m, false);
  if (recalibrate) recalibrate_bn(ctx, m, *data->calib, c.bn_calib_images);
  m.q.net->eval();
  m.q.net->to(torch::kCPU);
  torch::NoGradGuard no_grad;
  // A probe batch: validation images where they are loaded, else seeded noise.
  torch::Tensor probe;
  if (data) {
    data->val->set_epoch(0);
    probe = m.input(data->val->batch(0).images, torch::kCPU);
  } else {
    probe = torch::randn({4, m.channels, height, width}, torch::TensorOptions().dtype(torch::kFloat));
  }
  const OnnxBuild b = build_onnx_graph(*m.q.net, c.arch, o.opset, probe);
  // The replay uses the graph's integers and scales; it must give the
  // fake-quantized network's logits (up to rounding ties).
  const torch::Tensor ref = m.q.net->forward(probe);
  const double diff = (b.replay_logits - ref).abs().max().item<double>();
  const double tol = 1e-3 * std::max(1.0, ref.abs().max().item<double>());
  MPQ_CHECK_T(RuntimeError, diff <= tol, "export: the graph's arithmetic replayed in torch differs from the model by ",
              diff, " (more than ", tol, "); please report this");
  ox::Graph g = b.graph;
  g.metadata.emplace_back("mpq.source", o.source);
  g.metadata.emplace_back("mpq.batchnorm", recalibrate ? "recalibrated on " + std::to_string(c.bn_calib_images) +
                                                             " training images, as mpq eval does"
                                                       : "as the checkpoint holds it");
  ox::write_model(g, o.output);
  const ox::GraphSummary s = ox::summarize_model(o.output);
  const search::Report want = size_report(m, height, width);
  const auto same = [](double a, double b) { return std::fabs(a - b) <= 1e-9 * std::max(1.0, std::fabs(b)); };
  if (!same(s.report.gbitops, want.gbitops) || !same(s.report.size_mb, want.size_mb) ||
      s.searchable != m.q.names) {
    std::error_code ec;
    fs::remove(o.output, ec);
    throw RuntimeError(detail::concat("export: the written graph counts ", s.report.gbitops, " GBitOPs and ",
                                      s.report.size_mb, " MB, the policy ", want.gbitops, " and ", want.size_mb,
                                      "; removed ", o.output, "; please report this"));
  }
  if (!o.reference_dir.empty()) {
    std::error_code ec;
    fs::create_directories(o.reference_dir, ec);
    MPQ_CHECK_T(RuntimeError, !ec, o.reference_dir, ": cannot create (", ec.message(), ")");
    std::vector<torch::Tensor> xs, ys, ls;
    data->val->set_epoch(0);
    for (int64_t i = 0; i < data->val->num_batches(); ++i) {
      data::Batch batch = data->val->batch(i);
      const torch::Tensor x = m.input(batch.images, torch::kCPU);
      xs.push_back(x);
      ys.push_back(m.q.net->forward(x));
      ls.push_back(batch.labels.to(torch::kLong));
    }
    write_npy(o.reference_dir + "/inputs.npy", torch::cat(xs));
    write_npy(o.reference_dir + "/logits.npy", torch::cat(ys));
    write_npy(o.reference_dir + "/labels.npy", torch::cat(ls));
  }
  int64_t packed = 0, stored = 0;
  for (const auto& l : s.layers) {
    packed += l.packed_bytes;
    stored += l.stored_bytes;
  }
  std::string out = mpq::log::format(
      "onnx: {}\nsource: {}\narch: {}\nopset: {}\nir_version: {}\ninput: [batch, {}, {}, {}]\nbatchnorm: {}\n"
      "file_bytes: {}\nweight_bytes_stored: {}\nweight_bytes_packed: {}\n",
      o.output, o.source, c.arch, s.opset, s.ir_version, m.channels, height, width,
      recalibrate ? "recalibrated" : "as stored", s.file_bytes, stored, packed);
  out += "layers:\n";
  for (const auto& l : s.layers)
    out += mpq::log::format("  - {{name: {}, op: {}, weight_bits: {}, weight_container: {}, act_bits: {}, act_container: {}, "
                       "params: {}}}\n",
                       l.name, l.op, l.weight_bits, ox::type_name(l.weight_container), l.act_bits,
                       l.act_container ? ox::type_name(l.act_container) : "float", l.params);
  out += mpq::log::format(
      "from_graph: {{gbitops: {:.6f}, size_mb: {:.6f}, compression_ratio: {:.4f}, avg_weight_bits: {:.4f}, "
      "avg_act_bits: {:.4f}}}\npolicy: {{gbitops: {:.6f}, size_mb: {:.6f}}}\nmatches_policy: true\n"
      "replay_max_abs_diff: {:.3g}\n",
      s.report.gbitops, s.report.size_mb, s.report.compression_ratio, s.report.avg_weight_bits, s.report.avg_act_bits,
      want.gbitops, want.size_mb, diff);
  if (!o.reference_dir.empty()) out += mpq::log::format("reference: {}\n", o.reference_dir);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

}  // namespace mpq::engine

#include "engine/sources.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <numeric>
#include <random>

#include "data/image_folder.h"
#include "mpq/common/error.h"
#include "mpq/common/log.h"

namespace mpq::engine {

namespace {

class MemorySource : public Loader {
 public:
  MemorySource(std::shared_ptr<const data::RawImages> d, data::LoaderOptions o) : l_(std::move(d), std::move(o)) {}
  void set_epoch(int64_t e) override { l_.set_epoch(e); }
  int64_t num_batches() const override { return l_.num_batches(); }
  data::Batch batch(int64_t i) const override { return l_.batch(i); }
  int64_t batch_size() const override { return l_.batch_size(); }

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
  int64_t batch_size() const override { return o_.batch_size; }
  int64_t take_skipped() override { return skipped_.exchange(0); }

 private:
  std::shared_ptr<data::ImageFolder> f_;
  std::vector<int64_t> ids_, order_;
  data::LoaderOptions o_;
  bool strict_;
  int64_t epoch_ = 0;
  mutable std::atomic<int64_t> skipped_{0};  // batches are made on worker threads
};

}  // namespace

std::unique_ptr<data::Prefetcher<data::Batch>> prefetch(Loader& l, int64_t begin, int64_t end, bool pin) {
  auto make = [&l, pin](int64_t i) {
    data::Batch b = l.batch(i);
    if (pin) {  // PyTorch's DataLoader(pin_memory=True), on the worker thread
      b.images = b.images.pin_memory();
      b.labels = b.labels.pin_memory();
    }
    return b;
  };
  return std::make_unique<data::Prefetcher<data::Batch>>(make, begin, end, l.workers, 2 * l.workers + 2);
}

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

void split_training_set(const std::vector<int64_t>& labels, const config::DataOptions& dl, uint64_t seed,
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
void check_labels(const config::DataOptions& dl, const std::vector<int64_t>& labels, const std::string& what) {
  const auto it = std::max_element(labels.begin(), labels.end());
  if (it == labels.end()) return;
  MPQ_CHECK(*it < dl.num_classes, what, ": holds label ", *it, " (image ", it - labels.begin(),
            "), but dataloader.num_classes is ", dl.num_classes, " in ", dl.source,
            "; raise num_classes or fix the labels");
}

// A split, fraction or shard that leaves some rank nothing to train or
// validate on is refused before training, with the counts.
void check_split(const config::DataOptions& dl, int world, int64_t total, int64_t train_n, int64_t val_n) {
  MPQ_CHECK(train_n >= world, dl.source, ": dataloader.fraction ", dl.fraction, " and val_split ", dl.val_split,
            " leave ", train_n, " training image(s) of ", total, " for ", world,
            " rank(s); raise fraction or lower val_split");
  MPQ_CHECK(val_n > 0, dl.source, ": ",
            dl.val_split > 0 ? detail::concat("dataloader.val_split ", dl.val_split, " holds out no image of ", total)
                             : std::string("the validation split has no images"),
            "; raise val_split, or set it to 0 to validate on the dataset's test split");
}

int input_channels(const config::DataOptions& o) {
  const std::string& d = o.dataset;
  return d == "fashion_mnist" || d == "mnist" ? 1 : 3;
}

namespace {

Data make_sources(const config::DataOptions& dl, int rank, int world) {
  Data d;
  data::LoaderOptions o;
  o.dataset = dl.dataset;
  o.batch_size = dl.batch_size;
  o.seed = static_cast<uint64_t>(dl.seed);
  o.rank = rank;
  o.world_size = world;
  const uint64_t split_seed = static_cast<uint64_t>(dl.seed) + 7919;
  if (dl.dataset == "imagenet") {
    MPQ_CHECK(!dl.path.empty(), dl.source, ": dataloader.path must name the ImageNet folder (with train/ and val/)");
    auto train = std::make_shared<data::ImageFolder>(dl.path + "/train", data::ImageFolderOptions{true, 224, 256});
    auto val_train = std::make_shared<data::ImageFolder>(dl.path + "/train", data::ImageFolderOptions{false, 224, 256});
    std::vector<int64_t> labels;
    for (int64_t i = 0; i < train->size(); ++i) labels.push_back(train->label(i));
    check_labels(dl, labels, dl.path + "/train");
    std::vector<int64_t> ids, held;
    split_training_set(labels, dl, split_seed, ids, held);
    d.train_size = static_cast<int64_t>(ids.size());
    if (dl.val_split > 0) check_split(dl, world, train->size(), d.train_size, static_cast<int64_t>(held.size()));
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
      check_labels(dl, val_labels, dl.path + "/val");
      d.val_size = val->size();
      check_split(dl, world, train->size(), d.train_size, d.val_size);
      d.val = std::make_unique<FolderSource>(val, all, vo, dl.strict);
    }
    d.channels = 3;
    d.height = d.width = 224;
    return d;
  }
  std::string path = dl.path;
  if (path.empty()) {
    MPQ_CHECK(dl.dataset == "fashion_mnist", dl.source, ": dataloader.path must name the ", dl.dataset, " folder");
    path = "/usr/share/datasets/fashion-mnist";
  }
  const bool cifar = dl.dataset == "cifar10";
  data::RawImages train = cifar ? data::load_cifar10(path, true) : data::load_idx_split(path, true);
  check_labels(dl, train.labels, path + (cifar ? " (training batches)" : " (training labels)"));
  std::vector<int64_t> ids, held;
  split_training_set(train.labels, dl, split_seed, ids, held);
  data::RawImages val = dl.val_split > 0 ? select(train, held) : (cifar ? data::load_cifar10(path, false)
                                                                          : data::load_idx_split(path, false));
  if (dl.val_split <= 0) check_labels(dl, val.labels, path + (cifar ? " (test batch)" : " (test labels)"));
  check_split(dl, world, train.count, static_cast<int64_t>(ids.size()), val.count);
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

}  // namespace

Data make_data(const config::DataOptions& dl, int rank, int world) {
  Data d = make_sources(dl, rank, world);
  for (Loader* l : {d.train.get(), d.val.get(), d.calib.get()}) l->workers = dl.workers;
  return d;
}

}  // namespace mpq::engine

#include "data/memory_loader.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <random>

#include "mpq/common/error.h"

namespace mpq::data {

MemoryLoader::MemoryLoader(RawImages data, LoaderOptions options)
    : MemoryLoader(std::make_shared<const RawImages>(std::move(data)), std::move(options)) {}

MemoryLoader::MemoryLoader(std::shared_ptr<const RawImages> data, LoaderOptions options)
    : data_(std::move(data)), o_(std::move(options)) {
  MPQ_CHECK(data_->count > 0, o_.dataset, ": the dataset is empty");
  MPQ_CHECK(o_.batch_size > 0, "dataloader.batch_size must be positive");
  MPQ_CHECK(o_.world_size >= 1 && o_.rank >= 0 && o_.rank < o_.world_size, "rank ", o_.rank, " out of world size ",
            o_.world_size);
  if (o_.dataset == "cifar10") {
    mean_ = {0.4914f, 0.4822f, 0.4465f};
    std_ = {0.2470f, 0.2435f, 0.2616f};
  } else if (o_.dataset == "mnist") {
    mean_ = {0.1307f};
    std_ = {0.3081f};
  } else {
    mean_ = {0.2860f};  // Fashion-MNIST
    std_ = {0.3530f};
  }
  MPQ_CHECK(static_cast<int>(mean_.size()) == data_->channels, o_.dataset, ": expected ", mean_.size(),
            " channels, the files hold ", data_->channels);
  set_epoch(0);
}

std::vector<int64_t> distributed_order(int64_t n, bool shuffle, uint64_t seed, int64_t epoch, int rank, int world) {
  std::vector<int64_t> all(static_cast<size_t>(n));
  if (shuffle) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + static_cast<uint64_t>(epoch));
    const torch::Tensor perm = torch::randperm(n, gen, torch::kLong);
    std::copy(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + n, all.begin());
  } else {
    for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  }
  const int64_t per_rank = (n + world - 1) / world;
  for (int64_t i = n; i < per_rank * world; ++i) all.push_back(all[static_cast<size_t>((i - n) % n)]);
  std::vector<int64_t> out;
  for (int64_t i = rank; i < per_rank * world; i += world) out.push_back(all[static_cast<size_t>(i)]);
  return out;
}

void MemoryLoader::set_epoch(int64_t epoch) {
  epoch_ = epoch;
  order_ = distributed_order(data_->count, o_.train, o_.seed, epoch, o_.rank, o_.world_size);
}

int64_t MemoryLoader::num_batches() const {
  const int64_t n = num_samples(), b = o_.batch_size;
  return (n + b - 1) / b;  // the last batch may be short
}

Batch MemoryLoader::batch(int64_t i) const {
  MPQ_ASSERT(i >= 0 && i < num_batches(), "batch ", i, " of ", num_batches());
  const int64_t begin = i * o_.batch_size, end = std::min(num_samples(), begin + o_.batch_size);
  const int64_t bsz = end - begin, c = data_->channels, h = data_->height, w = data_->width;
  Batch b;
  b.images = torch::empty({bsz, c, h, w});
  b.labels = torch::empty({bsz}, torch::kLong);
  float* out = b.images.data_ptr<float>();
  int64_t* lab = b.labels.data_ptr<int64_t>();
  const bool augment = o_.train && o_.dataset == "cifar10";
  for (int64_t k = 0; k < bsz; ++k) {
    const int64_t idx = order_[static_cast<size_t>(begin + k)];
    lab[k] = data_->labels[static_cast<size_t>(idx)];
    const uint8_t* src = data_->pixels.data() + idx * c * h * w;
    int dy = 0, dx = 0;
    bool flip = false;
    if (augment) {  // per-sample generator: (seed, epoch, position in the epoch)
      std::seed_seq seq{static_cast<uint64_t>(o_.seed), static_cast<uint64_t>(epoch_), static_cast<uint64_t>(begin + k),
                        static_cast<uint64_t>(o_.rank)};
      std::mt19937 rng(seq);
      dy = static_cast<int>(rng() % 9) - 4;
      dx = static_cast<int>(rng() % 9) - 4;
      flip = rng() % 2;
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      const float m = mean_[static_cast<size_t>(ch)], s = std_[static_cast<size_t>(ch)];
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const int64_t sy = y + dy, sx0 = x + dx, sx = flip ? (w - 1 - sx0) : sx0;
          const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;  // outside: the zero padding
          const float v = inside ? src[(ch * h + sy) * w + sx] / 255.0f : 0.0f;
          out[((k * c + ch) * h + y) * w + x] = (v - m) / s;
        }
    }
  }
  return b;
}

}  // namespace mpq::data

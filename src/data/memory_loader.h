// Batches from an in-memory image set (MNIST, Fashion-MNIST, CIFAR-10).
//
// Order: a permutation drawn from (seed + epoch), split across ranks with
// torch's DistributedSampler semantics (padded by wrapping to a multiple of
// the world size, rank r takes every world-th index from r), so every rank
// sees the same number of samples. Augmentation (CIFAR-10 training: 4-pixel
// zero pad, random 32x32 crop, horizontal flip) draws from a generator seeded
// by (seed, epoch, sample index): batch i of an epoch is the same whatever
// came before, which makes a resumed run continue exactly.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "mpq/data/raw_datasets.h"

namespace mpq::data {

struct Batch {
  torch::Tensor images;  // [B, C, H, W] float32, normalised
  torch::Tensor labels;  // [B] int64
};

struct LoaderOptions {
  std::string dataset = "fashion_mnist";  // picks the normalisation and the augmentation
  int batch_size = 128;
  bool train = true;       // shuffle and augment; false: dataset order, no augmentation
  uint64_t seed = 0;
  int rank = 0, world_size = 1;
};

// One epoch's sample order for `rank`, as torch's DistributedSampler
// (drop_last false): a permutation of [0, n) drawn from seed + epoch when
// `shuffle` (else 0..n-1), padded by wrapping to a multiple of `world`, then
// every world-th index from `rank`.
std::vector<int64_t> distributed_order(int64_t n, bool shuffle, uint64_t seed, int64_t epoch, int rank, int world);

class MemoryLoader {
 public:
  MemoryLoader(RawImages data, LoaderOptions options);
  // Several loaders (training, BN calibration) can share one image set.
  MemoryLoader(std::shared_ptr<const RawImages> data, LoaderOptions options);
  void set_epoch(int64_t epoch);
  int64_t num_batches() const;
  int64_t num_samples() const { return static_cast<int64_t>(order_.size()); }  // this rank, this epoch
  Batch batch(int64_t i) const;
  int64_t batch_size() const { return o_.batch_size; }
  const std::vector<int64_t>& order() const { return order_; }

 private:
  std::shared_ptr<const RawImages> data_;
  LoaderOptions o_;
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;
  std::vector<float> mean_, std_;
};

}  // namespace mpq::data

// The batches a run reads: training, validation and BatchNorm-calibration
// sources of the config's dataset (memory-held IDX/CIFAR images or an
// ImageFolder), the train/val split, and the checks on labels and splits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/memory_loader.h"
#include "data/prefetcher.h"
#include "mpq/config/options.h"

namespace mpq::engine {

// A source of batches: an epoch's order from (seed, epoch), one shard per rank.
class Loader {
 public:
  virtual ~Loader() = default;
  virtual void set_epoch(int64_t epoch) = 0;
  virtual int64_t num_batches() const = 0;
  virtual data::Batch batch(int64_t i) const = 0;
  virtual int64_t batch_size() const = 0;  // every batch's but the last
  // Undecodable images left out since the last call (each is logged when met).
  virtual int64_t take_skipped() { return 0; }
  int workers = 0;  // dataloader.workers: threads that make batches ahead of the consumer
};

// Batches [begin, end) of `l` in order, made on its worker threads ahead of
// the consumer. With `pin` (training or evaluating on a GPU) they are made in
// pinned host memory, so that their copies to the GPU run asynchronously.
std::unique_ptr<data::Prefetcher<data::Batch>> prefetch(Loader& l, int64_t begin, int64_t end, bool pin);

// Logs how many undecodable images `l` left out since the last call.
void report_skipped(Loader& l, const std::string& what);

// The training samples (a stratified `fraction` of what `val_split` leaves)
// and the held-out ones, fixed by the seed; both sorted.
void split_training_set(const std::vector<int64_t>& labels, const config::DataOptions& dl, uint64_t seed,
                        std::vector<int64_t>& ids, std::vector<int64_t>& held);

// Channels of the config's dataset's images: 1 for (Fashion-)MNIST, else 3.
int input_channels(const config::DataOptions& d);

struct Data {
  std::unique_ptr<Loader> train, val, calib;  // calib: training images without augmentation order, for BN
  int channels = 1, height = 28, width = 28;
  int64_t train_size = 0, val_size = 0;
};

// The datasets of the config: train (its `fraction`), val (the held-out
// `val_split` of the training set, or the test split), calibration; this
// rank's shards of `world`. InputError for labels past num_classes and for
// a split or shard left empty.
Data make_data(const config::DataOptions& dl, int rank, int world);

}  // namespace mpq::engine

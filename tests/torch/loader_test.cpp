// The in-memory loader: labels, shapes, normalisation, a deterministic order
// from (seed, epoch), disjoint and complete shards, repeatable augmentation.
#include <gtest/gtest.h>

#include <set>

#include <torch/torch.h>

#include "data/memory_loader.h"
#include "test_util.h"

using namespace mpq::data;

namespace {

RawImages fixture(int64_t n, int channels = 1, int hw = 4) {
  RawImages r;
  r.count = n;
  r.channels = channels;
  r.height = r.width = hw;
  for (int64_t i = 0; i < n; ++i) {
    r.labels.push_back(i % 10);
    for (int k = 0; k < channels * hw * hw; ++k) r.pixels.push_back(static_cast<uint8_t>(i));  // image i is all i
  }
  return r;
}

}  // namespace

TEST(Loader, LabelsShapesAndNormalisation) {
  LoaderOptions o;
  o.batch_size = 4;
  o.train = false;
  MemoryLoader l(fixture(10), o);
  EXPECT_EQ(l.num_batches(), 3);
  const Batch b = l.batch(2);
  EXPECT_EQ(b.images.sizes(), torch::IntArrayRef({2, 1, 4, 4}));
  EXPECT_EQ(b.labels[1].item<int64_t>(), 9);
  EXPECT_NEAR(b.images[0][0][1][2].item<float>(), (8 / 255.0f - 0.2860f) / 0.3530f, 1e-6);
}

TEST(Loader, OrderIsAFunctionOfSeedAndEpoch) {
  LoaderOptions o;
  o.seed = 7;
  MemoryLoader a(fixture(100), o), b(fixture(100), o);
  a.set_epoch(3);
  b.set_epoch(3);
  EXPECT_EQ(a.order(), b.order());
  b.set_epoch(4);
  EXPECT_NE(a.order(), b.order());
  std::set<int64_t> all(a.order().begin(), a.order().end());
  EXPECT_EQ(all.size(), 100u);  // a permutation
}

TEST(Loader, ShardsAreDisjointAndComplete) {
  for (int world : {2, 3}) {
    std::vector<int64_t> seen;
    size_t per_rank = 0;
    for (int r = 0; r < world; ++r) {
      LoaderOptions o;
      o.seed = 1;
      o.rank = r;
      o.world_size = world;
      MemoryLoader l(fixture(100), o);
      l.set_epoch(2);
      if (r == 0) per_rank = l.order().size();
      EXPECT_EQ(l.order().size(), per_rank) << "every rank the same number of samples";
      seen.insert(seen.end(), l.order().begin(), l.order().end());
    }
    std::set<int64_t> distinct(seen.begin(), seen.end());
    EXPECT_EQ(distinct.size(), 100u) << world;                      // complete
    EXPECT_EQ(seen.size(), static_cast<size_t>((100 + world - 1) / world * world));  // padded, DistributedSampler-like
  }
}

TEST(Loader, CifarAugmentationIsRepeatable) {
  LoaderOptions o;
  o.dataset = "cifar10";
  o.batch_size = 8;
  o.seed = 3;
  MemoryLoader a(fixture(16, 3, 32), o), b(fixture(16, 3, 32), o);
  a.set_epoch(1);
  b.set_epoch(1);
  (void)b.batch(0);  // what came before does not matter
  EXPECT_TRUE(torch::equal(a.batch(1).images, b.batch(1).images));
  // Some pixels of some images are the zero padding, normalised.
  const Batch x = a.batch(0);
  const float pad0 = (0.0f - 0.4914f) / 0.2470f;
  EXPECT_TRUE((x.images.narrow(0, 1, 7).select(1, 0) == pad0).any().item<bool>());  // image 0 is itself all zero
}

#include "engine/sources.h"

// The train/val split: stratified per class, disjoint, sorted, fixed by the
// seed, and `fraction` taken from what val_split leaves.
TEST(Split, StratifiedDisjointAndSeeded) {
  std::vector<int64_t> labels;
  for (int i = 0; i < 1000; ++i) labels.push_back(i % 10 < 7 ? 0 : (i % 10 < 9 ? 1 : 2));  // classes 70/20/10 %
  mpq::config::DataOptions dl;
  dl.val_split = 0.2;
  dl.fraction = 0.5;
  std::vector<int64_t> ids, held, ids2, held2;
  mpq::engine::split_training_set(labels, dl, 5, ids, held);
  mpq::engine::split_training_set(labels, dl, 5, ids2, held2);
  EXPECT_EQ(ids, ids2);
  EXPECT_EQ(held, held2);
  EXPECT_EQ(held.size(), 200u);
  EXPECT_EQ(ids.size(), 400u);  // half of the 800 left
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()) && std::is_sorted(held.begin(), held.end()));
  std::set<int64_t> all(ids.begin(), ids.end());
  for (int64_t h : held) EXPECT_EQ(all.count(h), 0u) << h;
  std::vector<int> per_class(3, 0), held_class(3, 0);
  for (int64_t i : ids) ++per_class[static_cast<size_t>(labels[static_cast<size_t>(i)])];
  for (int64_t i : held) ++held_class[static_cast<size_t>(labels[static_cast<size_t>(i)])];
  EXPECT_EQ(per_class, (std::vector<int>{280, 80, 40}));
  EXPECT_EQ(held_class, (std::vector<int>{140, 40, 20}));
  std::vector<int64_t> other, other_held;
  mpq::engine::split_training_set(labels, dl, 6, other, other_held);
  EXPECT_NE(other, ids) << "another seed, another split";
}

#include <atomic>

#include "engine/context.h"
#include "engine/evaluation.h"

namespace {

// `batches` batches of `bs` one-pixel images whose value is the batch's
// index; counts the batches made.
class CountingLoader : public mpq::engine::Loader {
 public:
  CountingLoader(int64_t batches, int64_t bs) : batches_(batches), bs_(bs) {}
  void set_epoch(int64_t) override {}
  int64_t num_batches() const override { return batches_; }
  int64_t batch_size() const override { return bs_; }
  Batch batch(int64_t i) const override {
    ++made;
    return {torch::full({bs_, 3, 1, 1}, static_cast<float>(i)), torch::full({bs_}, i, torch::kLong)};
  }
  mutable std::atomic<int> made{0};

 private:
  int64_t batches_, bs_;
};

}  // namespace

// Validation and calibration read ahead on the loader's workers: the batches
// come in order whatever the workers, and calibration makes only the whole
// batches its share of images needs (a read-ahead of 2 workers + 2 would
// otherwise decode batches nobody uses).
TEST(Prefetch, BatchesComeInOrderAndCalibrationMakesOnlyWhatItUses) {
  for (int workers : {0, 3}) {
    SCOPED_TRACE(workers);
    CountingLoader l(9, 4);
    l.workers = workers;
    const auto pf = mpq::engine::prefetch(l, 2, 7, /*pin=*/false);
    for (int64_t i = 2; i < 7; ++i) {
      ASSERT_FALSE(pf->done());
      const Batch b = pf->next();
      EXPECT_EQ(b.labels[0].item<int64_t>(), i);
    }
    EXPECT_TRUE(pf->done());

    mpq::engine::Context ctx;
    mpq::engine::Model m;
    m.q.net = mpq::models::make_model("resnet20", {10, 3});
    CountingLoader calib(9, 4);
    calib.workers = workers;
    mpq::engine::recalibrate_bn(ctx, m, calib, 10);  // 10 images: 3 batches of 4
    EXPECT_EQ(calib.made.load(), 3);
    const auto* bn = mpq::engine::batchnorms(*m.q.net).front();
    EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 3);
  }
}

// The prefetcher: order independent of the worker count, bounded look-ahead,
// errors delivered in order, clean stop mid-epoch.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>

#include "data/prefetcher.h"

using mpq::data::Prefetcher;

TEST(Prefetcher, SameSequenceWhateverTheWorkers) {
  auto make = [](int64_t i) {
    std::this_thread::sleep_for(std::chrono::microseconds((i * 7919) % 300));  // finish out of order
    return std::to_string(i * i);
  };
  for (int workers : {0, 1, 2, 4}) {
    Prefetcher<std::string> p(make, 3, 40, workers, 3);
    for (int64_t i = 3; i < 40; ++i) EXPECT_EQ(p.next(), std::to_string(i * i)) << workers << " workers";
    EXPECT_TRUE(p.done());
  }
}

TEST(Prefetcher, LooksAheadAtMostDepth) {
  std::atomic<int64_t> made{0};
  Prefetcher<int64_t> p([&](int64_t i) { ++made; return i; }, 0, 100, 2, 4);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_LE(made.load(), 4);
  EXPECT_EQ(p.next(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_LE(made.load(), 5);
}

TEST(Prefetcher, ErrorsArriveWithTheirBatch) {
  Prefetcher<int> p([](int64_t i) -> int {
    if (i == 2) throw std::runtime_error("corrupt image 2");
    return static_cast<int>(i);
  }, 0, 5, 2, 2);
  EXPECT_EQ(p.next(), 0);
  EXPECT_EQ(p.next(), 1);
  try {
    p.next();
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "corrupt image 2");
  }
  EXPECT_EQ(p.next(), 3);
}

TEST(Prefetcher, StopsMidEpoch) {
  Prefetcher<int> p([](int64_t i) { return static_cast<int>(i); }, 0, 1000000, 2, 8);
  EXPECT_EQ(p.next(), 0);
  // Destruction joins the workers without producing the rest.
}

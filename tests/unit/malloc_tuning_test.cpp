#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "mpq/common/error.h"
#include "mpq/common/malloc_tuning.h"

namespace {

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
// Whether a fresh 48 MB block (above glibc's largest mmap threshold) is mmapped.
bool large_block_is_mmapped() {
  const size_t before = mallinfo2().hblks;
  auto* p = static_cast<volatile char*>(std::malloc(48u << 20));
  p[0] = 1;
  const bool mmapped = mallinfo2().hblks > before;
  std::free(const_cast<char*>(p));
  return mmapped;
}
#endif

}  // namespace

// One test, in order: settings are process-wide and cannot be undone.
TEST(MallocTuning, OptOutsAreRespectedThenLargeBlocksStayInTheHeap) {
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
  if (mpq::malloc_set_by_environment()) GTEST_SKIP() << "the environment sets malloc";
  ASSERT_TRUE(large_block_is_mmapped()) << "glibc's default: blocks above 32 MB are mmapped";

  setenv("MPQ_MALLOC", "system", 1);
  EXPECT_NE(mpq::tune_malloc_for_training().find("MPQ_MALLOC=system"), std::string::npos);
  unsetenv("MPQ_MALLOC");
  setenv("MALLOC_TRIM_THRESHOLD_", "1000", 1);
  EXPECT_NE(mpq::tune_malloc_for_training().find("environment"), std::string::npos);
  unsetenv("MALLOC_TRIM_THRESHOLD_");
  setenv("MPQ_MALLOC", "jemalloc", 1);  // a typo or a wish: one line, nothing applied
  try {
    mpq::tune_malloc_for_training();
    ADD_FAILURE() << "MPQ_MALLOC=jemalloc was accepted";
  } catch (const mpq::InputError& e) {
    EXPECT_STREQ(e.what(), "environment: MPQ_MALLOC=jemalloc is not one of mpq (the default), system (glibc's own settings)");
  }
  unsetenv("MPQ_MALLOC");
  EXPECT_TRUE(large_block_is_mmapped()) << "an opt-out changed the settings";

  EXPECT_NE(mpq::tune_malloc_for_training().find("heap only"), std::string::npos);
  EXPECT_FALSE(large_block_is_mmapped());
#else
  GTEST_SKIP() << "glibc's malloc only";
#endif
}

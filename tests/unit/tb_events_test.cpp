// TensorBoard event files: CRC-32C and the records read back.
#include <gtest/gtest.h>

#include <filesystem>

#include "mpq/common/error.h"
#include "mpq/io/tb_events.h"
#include "test_util.h"

TEST(TbEvents, Crc32cKnownValues) {
  EXPECT_EQ(mpq::io::crc32c("123456789", 9), 0xE3069283u);  // the standard check value
  EXPECT_EQ(mpq::io::crc32c("", 0), 0u);
}

TEST(TbEvents, ScalarsReadBackAndCorruptionIsCaught) {
  mpq::test::TempDir dir;
  std::string path;
  {
    mpq::io::TensorBoardWriter w(dir.path());
    w.scalar("val/top1", 91.25, 0);
    w.scalar("val/top1", 92.5, 1);
    w.scalar("lr", 0.01, 1);
    path = w.path();
  }
  EXPECT_EQ(std::filesystem::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u);
  const auto s = mpq::io::read_tb_scalars(path);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[1].tag, "val/top1");
  EXPECT_FLOAT_EQ(static_cast<float>(s[1].value), 92.5f);
  EXPECT_EQ(s[1].step, 1);
  EXPECT_EQ(s[2].tag, "lr");
  std::string bytes = mpq::test::read_all(path);
  bytes[bytes.size() - 6] ^= 1;
  mpq::test::write_all(path, bytes);
  EXPECT_THROW(mpq::io::read_tb_scalars(path), mpq::InputError);
}

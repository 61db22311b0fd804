// IDX and CIFAR-10 readers on fixtures written byte by byte (plain and
// gzip), their error texts, and the real Fashion-MNIST files when installed.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <zlib.h>

#include "mpq/common/error.h"
#include "mpq/data/raw_datasets.h"
#include "test_util.h"

using mpq::InputError;
using namespace mpq::data;

namespace {

std::string be32(uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

std::string idx_images(uint32_t n, uint32_t h, uint32_t w) {
  std::string d = be32(0x803) + be32(n) + be32(h) + be32(w);
  for (uint32_t i = 0; i < n * h * w; ++i) d += char(i % 251);
  return d;
}

std::string idx_labels(uint32_t n) {
  std::string d = be32(0x801) + be32(n);
  for (uint32_t i = 0; i < n; ++i) d += char(i % 10);
  return d;
}

void write_gz(const std::string& path, const std::string& data) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, data.data(), static_cast<unsigned>(data.size()));
  gzclose(f);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(Idx, PlainAndGzipSplits) {
  mpq::test::TempDir dir;
  mpq::test::write_all(dir.file("train-images-idx3-ubyte"), idx_images(5, 4, 3));
  mpq::test::write_all(dir.file("train-labels-idx1-ubyte"), idx_labels(5));
  write_gz(dir.file("t10k-images-idx3-ubyte.gz"), idx_images(2, 4, 3));
  write_gz(dir.file("t10k-labels-idx1-ubyte.gz"), idx_labels(2));
  const RawImages tr = load_idx_split(dir.path(), true);
  EXPECT_EQ(tr.count, 5);
  EXPECT_EQ(tr.height, 4);
  EXPECT_EQ(tr.width, 3);
  EXPECT_EQ(tr.pixels.size(), 60u);
  EXPECT_EQ(tr.pixels[59], 59);
  EXPECT_EQ(tr.labels[4], 4);
  const RawImages te = load_idx_split(dir.path(), false);
  EXPECT_EQ(te.count, 2);
  EXPECT_EQ(te.pixels[13], 13);
  EXPECT_EQ(te.labels[1], 1);
}

TEST(Idx, ErrorsNameThePathAndTheProblem) {
  mpq::test::TempDir dir;
  const std::string img = dir.file("train-images-idx3-ubyte"), lab = dir.file("train-labels-idx1-ubyte");
  mpq::test::write_all(img, idx_images(5, 4, 3).substr(0, 50));
  mpq::test::write_all(lab, idx_labels(5));
  EXPECT_EQ(error_of([&] { load_idx_split(dir.path(), true); }),
            img + ": IDX file of the wrong size (50 bytes; 5 images of 4x3 need 76)");
  mpq::test::write_all(img, idx_labels(20));
  EXPECT_EQ(error_of([&] { read_idx_images(img); }), img + ": not an IDX image file (magic 2049, expected 2051)");
  mpq::test::write_all(img, idx_images(6, 4, 3));
  EXPECT_EQ(error_of([&] { load_idx_split(dir.path(), true); }), lab + ": 5 labels for 6 images in " + img);
  write_gz(dir.file("x.gz"), idx_images(5, 4, 3));
  const std::string gz = mpq::test::read_all(dir.file("x.gz"));
  mpq::test::write_all(dir.file("x.gz"), gz.substr(0, gz.size() / 2));
  EXPECT_NE(error_of([&] { read_idx_images(dir.file("x.gz")); }).find("x.gz: corrupt gzip data"), std::string::npos);
  EXPECT_NE(error_of([&] { load_idx_split(dir.file("nowhere"), false); }).find("no t10k-images-idx3-ubyte[.gz]"),
            std::string::npos);
}

TEST(Cifar10, RecordsLabelsAndErrors) {
  mpq::test::TempDir dir;
  std::string batch;
  for (int i = 0; i < 3; ++i) {
    batch += char(i * 3);
    for (int k = 0; k < 3072; ++k) batch += char((i + k) % 256);
  }
  mpq::test::write_all(dir.file("test_batch.bin"), batch);
  const RawImages r = load_cifar10(dir.path(), false);
  EXPECT_EQ(r.count, 3);
  EXPECT_EQ(r.channels, 3);
  EXPECT_EQ(r.labels[2], 6);
  EXPECT_EQ(r.pixels[3072 + 5], 6);
  mpq::test::write_all(dir.file("test_batch.bin"), batch.substr(0, 3073 + 100));
  EXPECT_EQ(error_of([&] { load_cifar10(dir.path(), false); }),
            dir.file("test_batch.bin") + ": CIFAR-10 file of the wrong size (3173 bytes, not a multiple of the 3073-byte record)");
  batch[3073] = char(12);
  mpq::test::write_all(dir.file("test_batch.bin"), batch);
  EXPECT_EQ(error_of([&] { load_cifar10(dir.path(), false); }),
            dir.file("test_batch.bin") + ": record 1 has label 12 (expected 0 to 9)");
  EXPECT_NE(error_of([&] { load_cifar10(dir.path(), true); }).find("data_batch_1.bin: missing"), std::string::npos);
}

TEST(FashionMnist, TheRealFilesWhenInstalled) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  struct stat st;
  if (::stat((dir + "/train-images-idx3-ubyte.gz").c_str(), &st) != 0)
    GTEST_SKIP() << "dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)";
  const RawImages tr = load_idx_split(dir, true);
  const RawImages te = load_idx_split(dir, false);
  EXPECT_EQ(tr.count, 60000);
  EXPECT_EQ(te.count, 10000);
  EXPECT_EQ(tr.height, 28);
  std::vector<int> per_class(10, 0);
  for (int64_t l : te.labels) ++per_class.at(static_cast<size_t>(l));
  for (int c : per_class) EXPECT_EQ(c, 1000);  // the test split is balanced
}

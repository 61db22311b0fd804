#include "mpq/data/raw_datasets.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "mpq/common/error.h"

namespace mpq::data {

namespace {

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

uint32_t be32(const std::string& d, size_t off) {
  return uint32_t(uint8_t(d[off])) << 24 | uint32_t(uint8_t(d[off + 1])) << 16 | uint32_t(uint8_t(d[off + 2])) << 8 |
         uint32_t(uint8_t(d[off + 3]));
}

std::string first_existing(const std::string& dir, const std::string& stem) {
  for (const std::string& p : {dir + "/" + stem + ".gz", dir + "/" + stem})
    if (exists(p)) return p;
  throw InputError(dir + ": no " + stem + "[.gz]; point dataloader.path at the folder that holds the IDX files "
                   "(Fashion-MNIST: apt-get install dataset-fashion-mnist, /usr/share/datasets/fashion-mnist)");
}

}  // namespace

std::string read_maybe_gzip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MPQ_CHECK(in.good(), path, ": cannot open (", std::strerror(errno), ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string raw = ss.str();
  if (raw.size() < 2 || uint8_t(raw[0]) != 0x1f || uint8_t(raw[1]) != 0x8b) return raw;
  z_stream z{};
  MPQ_CHECK(inflateInit2(&z, 16 + MAX_WBITS) == Z_OK, path, ": zlib could not start");
  z.next_in = reinterpret_cast<Bytef*>(raw.data());
  z.avail_in = static_cast<uInt>(raw.size());
  std::string out;
  char buf[1 << 16];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      const std::string why = z.msg ? z.msg : (rc == Z_BUF_ERROR ? "truncated" : "corrupt");
      inflateEnd(&z);
      throw InputError(path + ": corrupt gzip data (" + why + ")");
    }
    out.append(buf, sizeof buf - z.avail_out);
    if (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0) {
      inflateEnd(&z);
      throw InputError(path + ": corrupt gzip data (truncated)");
    }
  }
  inflateEnd(&z);
  return out;
}

RawImages read_idx_images(const std::string& path) {
  const std::string d = read_maybe_gzip(path);
  MPQ_CHECK(d.size() >= 16, path, ": not an IDX image file (", d.size(), " bytes, expected a 16-byte header)");
  MPQ_CHECK(be32(d, 0) == 0x803, path, ": not an IDX image file (magic ", be32(d, 0), ", expected 2051)");
  RawImages r;
  r.count = be32(d, 4);
  r.height = static_cast<int>(be32(d, 8));
  r.width = static_cast<int>(be32(d, 12));
  MPQ_CHECK(r.height > 0 && r.width > 0 && r.height <= 4096 && r.width <= 4096, path, ": implausible image size ",
            r.height, "x", r.width);
  const uint64_t need = 16 + uint64_t(r.count) * uint64_t(r.height) * uint64_t(r.width);
  MPQ_CHECK(d.size() == need, path, ": IDX file of the wrong size (", d.size(), " bytes; ", r.count, " images of ",
            r.height, "x", r.width, " need ", need, ")");
  r.pixels.assign(d.begin() + 16, d.end());
  return r;
}

std::vector<int64_t> read_idx_labels(const std::string& path) {
  const std::string d = read_maybe_gzip(path);
  MPQ_CHECK(d.size() >= 8, path, ": not an IDX label file (", d.size(), " bytes, expected an 8-byte header)");
  MPQ_CHECK(be32(d, 0) == 0x801, path, ": not an IDX label file (magic ", be32(d, 0), ", expected 2049)");
  const uint64_t count = be32(d, 4);
  MPQ_CHECK(d.size() == 8 + count, path, ": IDX file of the wrong size (", d.size(), " bytes; ", count,
            " labels need ", 8 + count, ")");
  std::vector<int64_t> labels(count);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = uint8_t(d[8 + i]);
  return labels;
}

RawImages load_idx_split(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  const std::string ipath = first_existing(dir, prefix + "-images-idx3-ubyte");
  const std::string lpath = first_existing(dir, prefix + "-labels-idx1-ubyte");
  RawImages r = read_idx_images(ipath);
  r.labels = read_idx_labels(lpath);
  MPQ_CHECK(static_cast<int64_t>(r.labels.size()) == r.count, lpath, ": ", r.labels.size(), " labels for ", r.count,
            " images in ", ipath);
  return r;
}

RawImages load_cifar10(const std::string& dir, bool train) {
  std::vector<std::string> files;
  if (train)
    for (int i = 1; i <= 5; ++i) files.push_back(dir + "/data_batch_" + std::to_string(i) + ".bin");
  else
    files.push_back(dir + "/test_batch.bin");
  RawImages r;
  r.channels = 3;
  r.height = r.width = 32;
  constexpr size_t kRecord = 1 + 3 * 32 * 32;
  for (const auto& f : files) {
    MPQ_CHECK(exists(f), f, ": missing; point dataloader.path at the folder with CIFAR-10's binary batches "
              "(data_batch_1.bin ... test_batch.bin)");
    const std::string d = read_maybe_gzip(f);
    MPQ_CHECK(!d.empty() && d.size() % kRecord == 0, f, ": CIFAR-10 file of the wrong size (", d.size(),
              " bytes, not a multiple of the 3073-byte record)");
    const size_t n = d.size() / kRecord;
    for (size_t i = 0; i < n; ++i) {
      const uint8_t label = uint8_t(d[i * kRecord]);
      MPQ_CHECK(label < 10, f, ": record ", i, " has label ", int(label), " (expected 0 to 9)");
      r.labels.push_back(label);
      r.pixels.insert(r.pixels.end(), d.begin() + i * kRecord + 1, d.begin() + (i + 1) * kRecord);
    }
    r.count += static_cast<int64_t>(n);
  }
  return r;
}

}  // namespace mpq::data

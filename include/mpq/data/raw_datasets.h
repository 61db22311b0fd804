// Torch-free readers for the small image datasets' file formats (METHOD.md §6).
//
// IDX (MNIST, Fashion-MNIST), big-endian, optionally gzip-compressed:
//   images: magic 0x00000803, count, rows, cols, then count*rows*cols bytes
//   labels: magic 0x00000801, count, then count bytes
// Fashion-MNIST as Debian's dataset-fashion-mnist installs it:
//   /usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
// CIFAR-10 binary: data_batch_1.bin .. data_batch_5.bin, test_batch.bin, each
//   10000 records of 1 label byte (0..9) + 3072 pixel bytes (R, G, B planes of 32x32).
// Every malformed file is an InputError naming the path and what is wrong.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mpq::data {

struct RawImages {
  int64_t count = 0;
  int channels = 1, height = 0, width = 0;
  std::vector<uint8_t> pixels;  // count x channels x height x width, row-major
  std::vector<int64_t> labels;  // count
};

// Reads a whole file, gunzipping it when it starts with the gzip magic.
std::string read_maybe_gzip(const std::string& path);

RawImages read_idx_images(const std::string& path);
std::vector<int64_t> read_idx_labels(const std::string& path);

// An IDX image/label pair from `dir` ("train" or "t10k" split), .gz or not.
RawImages load_idx_split(const std::string& dir, bool train);

// The CIFAR-10 training batches (1-5) or the test batch from `dir`.
RawImages load_cifar10(const std::string& dir, bool train);

}  // namespace mpq::data

// TensorBoard event files without TensorFlow or protobuf.
//
// On-disk layout (what TensorBoard's EventFileLoader reads): a sequence of
// TFRecords
//   uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
// (little-endian), each `data` a serialized tensorflow.Event protobuf:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
// The first record carries file_version "brain.Event:2".
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace mpq::io {

uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
uint32_t masked_crc32c(const void* data, size_t n);

class TensorBoardWriter {
 public:
  // Creates dir/events.out.tfevents.<unix time>.<host> (dir must exist).
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void scalar(const std::string& tag, double value, int64_t step);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void record(const std::string& event);
  std::string path_;
  std::FILE* f_ = nullptr;
};

// A scalar event as TensorBoard stores it, read back by read_tb_scalars.
struct TbScalar {
  std::string tag;
  double value;
  int64_t step;
};
// Reads an event file, checking every CRC; InputError on a corrupt record.
std::vector<TbScalar> read_tb_scalars(const std::string& path);

}  // namespace mpq::io

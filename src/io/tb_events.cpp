#include "mpq/io/tb_events.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>

#include "mpq/common/error.h"

namespace mpq::io {

namespace {

std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // Castagnoli, reflected
    t[i] = c;
  }
  return t;
}

void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void key(std::string& out, int field, int wire) { varint(out, static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire)); }

template <typename T>
void fixed(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
  out.append(b, sizeof(T));
}

void bytes_field(std::string& out, int field, const std::string& s) {
  key(out, field, 2);
  varint(out, s.size());
  out += s;
}

std::string event(double wall_time, int64_t step) {
  std::string e;
  key(e, 1, 1);
  fixed(e, wall_time);
  key(e, 2, 0);
  varint(e, static_cast<uint64_t>(step));
  return e;
}

double now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Protobuf reading, just enough for read_tb_scalars.
struct Cursor {
  const std::string& s;
  size_t pos;
  size_t end;
  bool more() const { return pos < end; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      MPQ_CHECK(pos < end, "event file: truncated varint");
      const auto b = static_cast<uint8_t>(s[pos++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    throw InputError("event file: varint too long");
  }
  std::string take(size_t n) {
    MPQ_CHECK(n <= end - pos, "event file: field runs past its message");
    std::string r = s.substr(pos, n);
    pos += n;
    return r;
  }
  void skip(int wire) {
    if (wire == 0) (void)varint();
    else if (wire == 1) (void)take(8);
    else if (wire == 5) (void)take(4);
    else if (wire == 2) (void)take(varint());
    else throw InputError("event file: unsupported wire type");
  }
};

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_table();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  path_ = dir + "/events.out.tfevents." + std::to_string(static_cast<int64_t>(now())) + "." + host;
  f_ = std::fopen(path_.c_str(), "ab");
  MPQ_CHECK_T(RuntimeError, f_ != nullptr, path_, ": cannot create the TensorBoard event file (", std::strerror(errno),
              ")");
  std::string e = event(now(), 0);
  bytes_field(e, 3, "brain.Event:2");
  record(e);
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (f_) std::fclose(f_);
}

void TensorBoardWriter::record(const std::string& data) {
  std::string r;
  const uint64_t n = data.size();
  fixed(r, n);
  fixed(r, masked_crc32c(&n, sizeof n));
  r += data;
  fixed(r, masked_crc32c(data.data(), data.size()));
  MPQ_CHECK_T(RuntimeError, std::fwrite(r.data(), 1, r.size(), f_) == r.size(), path_, ": write failed (",
              std::strerror(errno), ")");
}

void TensorBoardWriter::scalar(const std::string& tag, double value, int64_t step) {
  std::string v;
  bytes_field(v, 1, tag);
  key(v, 2, 5);
  fixed(v, static_cast<float>(value));
  std::string summary;
  bytes_field(summary, 1, v);
  std::string e = event(now(), step);
  bytes_field(e, 5, summary);
  record(e);
}

void TensorBoardWriter::flush() { std::fflush(f_); }

std::vector<TbScalar> read_tb_scalars(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MPQ_CHECK(in.good(), path, ": cannot open the event file");
  const std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<TbScalar> out;
  size_t pos = 0;
  while (pos < s.size()) {
    MPQ_CHECK(s.size() - pos >= 12, path, ": truncated record header at byte ", pos);
    uint64_t n;
    uint32_t c;
    std::memcpy(&n, s.data() + pos, 8);
    std::memcpy(&c, s.data() + pos + 8, 4);
    MPQ_CHECK(c == masked_crc32c(&n, 8), path, ": bad length CRC at byte ", pos);
    MPQ_CHECK(n <= s.size() - pos - 16, path, ": truncated record at byte ", pos);
    const std::string data = s.substr(pos + 12, n);
    std::memcpy(&c, s.data() + pos + 12 + n, 4);
    MPQ_CHECK(c == masked_crc32c(data.data(), data.size()), path, ": bad data CRC at byte ", pos);
    pos += 16 + n;
    Cursor ev{data, 0, data.size()};
    int64_t step = 0;
    std::vector<std::pair<std::string, double>> values;
    while (ev.more()) {
      const uint64_t k = ev.varint();
      const int field = static_cast<int>(k >> 3), wire = static_cast<int>(k & 7);
      if (field == 2 && wire == 0) {
        step = static_cast<int64_t>(ev.varint());
      } else if (field == 5 && wire == 2) {
        const std::string summary = ev.take(ev.varint());
        Cursor sm{summary, 0, summary.size()};
        while (sm.more()) {
          const uint64_t sk = sm.varint();
          if ((sk >> 3) != 1 || (sk & 7) != 2) {
            sm.skip(static_cast<int>(sk & 7));
            continue;
          }
          const std::string value = sm.take(sm.varint());
          Cursor vc{value, 0, value.size()};
          std::string tag;
          double x = 0;
          while (vc.more()) {
            const uint64_t vk = vc.varint();
            if (vk == (1 << 3 | 2)) {
              tag = vc.take(vc.varint());
            } else if (vk == (2 << 3 | 5)) {
              float f;
              const std::string b = vc.take(4);
              std::memcpy(&f, b.data(), 4);
              x = f;
            } else {
              vc.skip(static_cast<int>(vk & 7));
            }
          }
          values.emplace_back(tag, x);
        }
      } else {
        ev.skip(wire);
      }
    }
    for (auto& [tag, x] : values) out.push_back({tag, x, step});
  }
  return out;
}

}  // namespace mpq::io

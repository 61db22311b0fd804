// Atomic file writes and SHA-256 (FIPS 180-4), torch-free.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "mpq/common/error.h"
#include "mpq/io/file_util.h"

namespace mpq::io {

namespace fs = std::filesystem;

namespace {

// A temporary file's name: the target's, this infix and the writer's pid.
constexpr const char* kTempInfix = ".tmp.";

[[noreturn]] void write_failed(const std::string& path, const char* what, int err) {
  throw RuntimeError(path + ": " + what + " (" + std::strerror(err) + ")");
}

// Writes all of `data` to `fd`; false (errno set) on failure.
bool write_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& data) {
  if (path == "-") {
    std::fflush(stdout);
    if (!write_all(STDOUT_FILENO, data)) write_failed("stdout", "write failed", errno);
    return;
  }
  // A symlink is followed to the file it names (chains and relative targets
  // included); that file is what gets replaced.
  std::error_code ec;
  std::string target = path;
  if (fs::is_symlink(fs::symlink_status(path, ec))) {
    const fs::path resolved = fs::weakly_canonical(fs::absolute(path), ec);
    if (ec) write_failed(path, "cannot follow the symlink", ec.value());
    target = resolved.string();
  }
  struct stat st {};
  const bool exists = ::stat(target.c_str(), &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) write_failed(path, "is a directory, not a file", EISDIR);
  if (exists && !S_ISREG(st.st_mode)) {
    // A FIFO, a terminal, /dev/null: written in place, never replaced.
    const int fd = ::open(target.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) write_failed(path, "cannot write", errno);
    const bool ok = write_all(fd, data);
    const int err = errno;
    ::close(fd);
    if (!ok) write_failed(path, "write failed", err);
    return;
  }
  const std::string tmp = target + kTempInfix + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, exists ? (st.st_mode & 07777) : 0644);
  if (fd < 0) write_failed(path, "cannot write", errno);
  if (exists) (void)::fchmod(fd, st.st_mode & 07777);  // not narrowed by the umask
  const bool ok = write_all(fd, data) && ::fsync(fd) == 0;
  const int err = errno;
  if (::close(fd) != 0 || !ok) {
    ::unlink(tmp.c_str());
    write_failed(path, "write failed", ok ? errno : err);
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    write_failed(path, "cannot rename into place", e);
  }
}

std::vector<std::string> remove_stale_temp_files(const std::string& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const size_t at = name.rfind(kTempInfix);
    if (at == std::string::npos || at == 0) continue;
    const std::string pid = name.substr(at + std::strlen(kTempInfix));
    if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    // A writer that still runs (this process or another) keeps its file.
    if (::kill(static_cast<pid_t>(std::stol(pid)), 0) == 0 || errno != ESRCH) continue;
    std::error_code rm;
    if (it->is_regular_file(rm) && fs::remove(it->path(), rm)) removed.push_back(it->path().string());
  }
  return removed;
}

void check_output_is_not_an_input(const std::string& output_flag, const std::string& output,
                                  const std::vector<std::pair<std::string, std::string>>& inputs) {
  if (output == "-") return;
  for (const auto& [flag, input] : inputs) {
    std::error_code ec;
    if (input.empty() || !fs::exists(output, ec) || !fs::exists(input, ec)) continue;
    MPQ_CHECK(!fs::equivalent(output, input, ec), output_flag, " ", output, " is the same file as ", flag, " ", input,
              ": writing it would destroy the input; choose another output path");
  }
}

namespace {

constexpr std::array<uint32_t, 64> kK = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void compress(std::array<uint32_t, 8>& h, const unsigned char* p) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i) w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; ++i) {
    const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (int i = 0; i < 64; ++i) {
    const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
    const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    hh = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

}  // namespace

std::string sha256_hex(const std::string& data) {
  std::array<uint32_t, 8> h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  size_t i = 0;
  for (; i + 64 <= data.size(); i += 64) compress(h, reinterpret_cast<const unsigned char*>(data.data() + i));
  unsigned char tail[128] = {0};
  const size_t rest = data.size() - i;
  std::memcpy(tail, data.data() + i, rest);
  tail[rest] = 0x80;
  const size_t len = rest + 9 <= 64 ? 64 : 128;
  const uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  for (int k = 0; k < 8; ++k) tail[len - 1 - k] = static_cast<unsigned char>(bits >> (8 * k));
  compress(h, tail);
  if (len == 128) compress(h, tail + 64);
  char out[65];
  for (int k = 0; k < 8; ++k) std::snprintf(out + 8 * k, 9, "%08x", h[k]);
  return std::string(out, 64);
}

std::string read_file(const std::string& path) {
  struct stat st {};
  MPQ_CHECK(::stat(path.c_str(), &st) == 0, path, ": cannot open (", std::strerror(errno), ")");
  MPQ_CHECK(!S_ISDIR(st.st_mode), path, ": is a directory; pass a file");
  std::ifstream in(path, std::ios::binary);
  MPQ_CHECK(in.good(), path, ": cannot open (", std::strerror(errno), ")");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  MPQ_CHECK(!in.bad(), path, ": cannot read (", std::strerror(errno), ")");
  return data;
}

std::string read_head(const std::string& path, size_t n) {
  struct stat st {};
  MPQ_CHECK(::stat(path.c_str(), &st) == 0, path, ": cannot open (", std::strerror(errno), ")");
  MPQ_CHECK(!S_ISDIR(st.st_mode), path, ": is a directory; pass a file");
  std::ifstream in(path, std::ios::binary);
  MPQ_CHECK(in.good(), path, ": cannot open (", std::strerror(errno), ")");
  std::string data(n, '\0');
  in.read(data.data(), static_cast<std::streamsize>(n));
  MPQ_CHECK(!in.bad(), path, ": cannot read (", std::strerror(errno), ")");
  data.resize(static_cast<size_t>(in.gcount()));
  return data;
}

bool looks_like_checkpoint(const std::string& path) {
  const std::string head = read_head(path, 4);
  return head == std::string("PK\x03\x04", 4) || (!head.empty() && static_cast<unsigned char>(head[0]) == 0x80);
}

void check_output_writable(const std::string& output_flag, const std::string& output) {
  if (output.empty() || output == "-") return;
  const std::filesystem::path path(output);
  const std::string dir = path.has_parent_path() ? path.parent_path().string() : ".";
  struct stat st {};
  MPQ_CHECK(::stat(dir.c_str(), &st) == 0, output_flag, " ", output, ": the directory '", dir,
            "' does not exist; create it first");
  MPQ_CHECK(S_ISDIR(st.st_mode), output_flag, " ", output, ": '", dir, "' is not a directory");
  struct stat target {};
  if (::stat(output.c_str(), &target) == 0) {
    MPQ_CHECK(!S_ISDIR(target.st_mode), output_flag, " ", output, ": is a directory; name a file");
    if (!S_ISREG(target.st_mode)) return;  // a device or FIFO is written in place
  }
  MPQ_CHECK(::access(dir.c_str(), W_OK) == 0, output_flag, " ", output, ": the directory '", dir,
            "' is not writable (", std::strerror(errno), ")");
}

std::string sha256_file(const std::string& path) { return sha256_hex(read_file(path)); }

}  // namespace mpq::io

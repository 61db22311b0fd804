// Helpers shared by the test suites.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace mpq::test {

// The reference data of the original implementation: ../shared/golden, or
// $MPQ_GOLDEN_DIR (a copy of it, e.g. on a GPU machine).
inline std::string golden_dir() {
  const char* dir = std::getenv("MPQ_GOLDEN_DIR");
  return dir && *dir ? dir : MPQ_GOLDEN_DIR;
}
inline std::string golden(const std::string& name) { return golden_dir() + "/" + name; }
inline bool have_golden() { return ::access(golden("README.md").c_str(), R_OK) == 0; }

// First line of a test that reads the reference data: where a clone has none
// beside it, the test skips and says so instead of failing.
#define MPQ_NEEDS_GOLDEN()                                                                             \
  do {                                                                                                 \
    if (!::mpq::test::have_golden())                                                                   \
      GTEST_SKIP() << "no reference data at " << ::mpq::test::golden_dir()                             \
                   << " (the shared golden/ folder beside the clone; or set MPQ_GOLDEN_DIR to a copy)"; \
  } while (0)

inline std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_all(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

inline std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// A fresh temporary directory, removed at destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/mpq_test_XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The Python whose torch is the LibTorch mpq was built against (CMake's
// MPQ_TORCH_PYTHON: the venv scripts/install_torch.sh makes), and the
// torchrun beside it; empty when the build found none. A check of mpq's
// files from Python skips, with the reason, where torch_python() is empty.
inline std::string torch_python() {
#ifdef MPQ_TORCH_PYTHON
  return MPQ_TORCH_PYTHON;
#else
  return "";
#endif
}
inline std::string torchrun() {
  const std::string py = torch_python();
  if (py.empty()) return "";
  const std::string run = py.substr(0, py.rfind('/') + 1) + "torchrun";
  return ::access(run.c_str(), X_OK) == 0 ? run : "";
}
// A loopback port no listener holds now, below Linux's ephemeral range
// (32768 up), so that no outgoing connection of another test running
// beside this one (Gloo's pairs, a store's clients) is handed it meanwhile;
// each process starts at its own place. A fresh one per call.
inline int free_port() {
  static int next = 20000 + static_cast<int>(::getpid() % 1500) * 8;
  for (int tries = 0; tries < 2000; ++tries) {
    next = next + 7 >= 32700 ? 20000 + (next + 7) % 32700 : next + 7;
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) break;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(next));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (bound) return next;
  }
  return next;
}

inline const char* kNoTorchPython =
    "no Python with torch beside the LibTorch of this build (scripts/install_torch.sh makes one)";

}  // namespace mpq::test

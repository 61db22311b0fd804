// Helpers shared by the test suites.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <unistd.h>

namespace mpq::test {

// ../shared/golden, or $MPQ_GOLDEN_DIR (a copy of it, e.g. on a GPU machine).
inline std::string golden(const std::string& name) {
  const char* dir = std::getenv("MPQ_GOLDEN_DIR");
  return std::string(dir && *dir ? dir : MPQ_GOLDEN_DIR) + "/" + name;
}

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
inline const char* kNoTorchPython =
    "no Python with torch beside the LibTorch of this build (scripts/install_torch.sh makes one)";

}  // namespace mpq::test

// libFuzzer target for the YAML (and JSON) readers a user's files reach: the
// run configuration, a geometry file and a policy file. Any input must either
// load or throw mpq::InputError; crashes, hangs, leaks and sanitizer reports
// are bugs. Build and run: scripts/fuzz.sh yaml [seconds]; seeds: configs/,
// the golden geometry and policies written by mpq search.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "mpq/common/error.h"
#include "mpq/config/config.h"
#include "mpq/search/geometry.h"
#include "mpq/search/policy.h"

namespace {

// The file readers take a path; one scratch file per process, removed at exit.
struct Scratch {
  std::string path = "/tmp/mpq_yaml_fuzz." + std::to_string(getpid()) + ".yaml";
  ~Scratch() { std::remove(path.c_str()); }
};
const std::string& scratch() {
  static const Scratch s;
  return s.path;
}

template <typename F>
void refused_or_loaded(F&& f) {
  try {
    f();
  } catch (const mpq::InputError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  refused_or_loaded([&] { (void)mpq::config::load_config_text(text, "fuzz"); });
  if (FILE* f = std::fopen(scratch().c_str(), "wb")) {
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    refused_or_loaded([] { (void)mpq::search::load_geometry(scratch()); });
    refused_or_loaded([] { (void)mpq::search::load_policy(scratch()); });
  }
  return 0;
}

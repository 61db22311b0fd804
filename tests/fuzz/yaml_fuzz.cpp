// libFuzzer target for the YAML (and JSON) readers a user's files reach: the
// run configuration, a geometry file and a policy file. Any input must either
// load or throw mpq::InputError; crashes, hangs, leaks and sanitizer reports
// are bugs. Build and run: scripts/fuzz.sh yaml [seconds]; seeds: configs/,
// the golden geometry and policies written by mpq search.
#include <cstddef>
#include <cstdint>
#include <string>

#include "mpq/common/error.h"
#include "mpq/config/config.h"
#include "mpq/search/geometry.h"
#include "mpq/search/policy.h"

namespace {

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
  refused_or_loaded([&] { (void)mpq::search::load_geometry_text(text, "fuzz"); });
  refused_or_loaded([&] { (void)mpq::search::load_policy_text(text, "fuzz"); });
  return 0;
}

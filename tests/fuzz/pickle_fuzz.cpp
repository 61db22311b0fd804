// libFuzzer target for the pickle reader: any input must either parse or
// throw mpq::InputError; crashes, leaks, hangs and sanitizer reports are bugs.
// Build: scripts/fuzz.sh (clang, -DMPQ_FUZZ=ON). Seeds: ../shared/golden/*.pkl.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "mpq/common/error.h"
#include "mpq/io/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const mpq::pickle::Value v = mpq::pickle::read(std::string_view(reinterpret_cast<const char*>(data), size));
    (void)v.repr(1000);
  } catch (const mpq::InputError&) {
  }
  return 0;
}

#include "mpq/common/malloc_tuning.h"

#include <cstdlib>
#include <cstring>

#include "mpq/common/error.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace mpq {

bool malloc_set_by_environment() {
  if (const char* t = std::getenv("GLIBC_TUNABLES"); t && std::strstr(t, "glibc.malloc.")) return true;
  for (const char* v : {"MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"})
    if (std::getenv(v)) return true;
  return false;
}

std::string tune_malloc_for_training() {
  const char* m = std::getenv("MPQ_MALLOC");
  const std::string choice = m ? m : "";
  MPQ_CHECK(choice.empty() || choice == "mpq" || choice == "system", "environment: MPQ_MALLOC=", choice,
            " is not one of mpq (the default), system (glibc's own settings)");
#if defined(__GLIBC__)
  if (choice == "system") return "malloc: glibc defaults (MPQ_MALLOC=system)";
  if (malloc_set_by_environment()) return "malloc: the environment's settings (GLIBC_TUNABLES or MALLOC_*_)";
  // Every block from the heap, and the heap never trimmed: freed tensors are
  // reused without a page fault. (A raised M_MMAP_THRESHOLD alone caps at
  // 32 MB, below a ResNet-18 activation at batch 16.)
  const bool ok = mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
  // 1 GiB: mallopt takes an int; a freed top block that large is still returned.
  return ok ? "malloc: heap only, untrimmed below 1 GiB (MPQ_MALLOC=system for glibc's defaults)"
            : "malloc: mallopt refused the settings; glibc defaults";
#else
  return "malloc: not glibc, left alone";
#endif
}

}  // namespace mpq

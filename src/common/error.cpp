#include "mpq/common/error.h"

#include <cstdio>
#include <cstdlib>

namespace mpq::detail {

void assert_fail(const char* cond, const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "mpq: internal error: %s failed at %s:%d%s%s; please report this at the project's issue tracker\n",
               cond, file, line, msg.empty() ? "" : ": ", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace mpq::detail

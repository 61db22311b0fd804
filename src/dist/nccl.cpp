// c10d's ProcessGroupNCCL, compiled in where LibTorch is a CUDA build (CMake
// adds this file with the toolkit's nccl.h; MPQ_HAVE_NCCL then tells
// dist.cpp). The only file that includes ProcessGroupNCCL.hpp.
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <cstdlib>
#include <string>
#include <vector>

#include "dist/dist.h"

namespace mpq::dist {

namespace {

bool any_set(const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (std::getenv(n.c_str()) != nullptr) return true;
  return false;
}

}  // namespace

c10::intrusive_ptr<c10d::Backend> make_nccl_group(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                  std::chrono::milliseconds timeout) {
  // Without blocking wait, a collective whose peer is gone is left to NCCL's
  // watchdog, which aborts the process after the timeout (SIGABRT, no word of
  // which rank). Blocking wait makes wait() throw after `timeout` instead,
  // which Group turns into the message naming the lost rank. A user who sets
  // either variable (TORCH_NCCL_* or the older NCCL_* spelling) gets what
  // they set.
  if (!any_set(c10d::TORCH_NCCL_BLOCKING_WAIT) && !any_set(c10d::TORCH_NCCL_ASYNC_ERROR_HANDLING))
    ::setenv(c10d::TORCH_NCCL_BLOCKING_WAIT.front().c_str(), "1", 0);
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
}

}  // namespace mpq::dist

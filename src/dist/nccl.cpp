// c10d's ProcessGroupNCCL, for builds against a CUDA LibTorch that has it
// (CMake compiles this file in when it compiles against the LibTorch and
// the nccl.h found; MPQ_HAVE_NCCL then tells dist.cpp). A CPU build still
// compiles it, against tests/cuda_stubs, so that its use of the 1.13 API is
// checked on every build.
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <cstdlib>

#include "dist/dist.h"

namespace mpq::dist {

c10::intrusive_ptr<c10d::ProcessGroup> make_nccl_group(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                       int size, std::chrono::milliseconds timeout) {
  // Without either variable NCCL's wait() only orders streams, and a lost
  // rank leaves the others hanging in the collective. Blocking wait makes
  // wait() throw after `timeout` (1.13's spelling; TORCH_NCCL_* came later),
  // which Group turns into the message naming the lost rank. A user who
  // sets either variable gets what they set.
  if (std::getenv(c10d::NCCL_BLOCKING_WAIT) == nullptr && std::getenv(c10d::NCCL_ASYNC_ERROR_HANDLING) == nullptr)
    ::setenv(c10d::NCCL_BLOCKING_WAIT, "1", 0);
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
}

}  // namespace mpq::dist

// One line for an error LibTorch threw: what failed and what to do.
#pragma once

#include <string>

namespace c10 {
class Error;
}

namespace mpq::engine {

// Out of memory (host or GPU) names the allocation and says to lower the
// per-process batch; a CUDA failure (an illegal address, a kernel that did
// not launch) says how to find the operation, which CUDA reports late, but
// a GPU held by another process or one no kernel has code for says that
// (all keep only the first line of torch's message, leaving out its further
// advice); any other is torch's message with its lines joined. Never the
// backtrace.
std::string describe_torch_error(const c10::Error& e);

}  // namespace mpq::engine

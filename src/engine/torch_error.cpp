#include "engine/torch_error.h"

#include <algorithm>

#include <c10/util/Exception.h>

namespace mpq::engine {

namespace {

std::string first_line(const std::string& m) {
  const size_t begin = m.find_first_not_of(" \n");
  if (begin == std::string::npos) return "no message";
  return m.substr(begin, m.find('\n', begin) - begin);
}

// The message's lines joined by spaces.
std::string joined(const std::string& m) {
  std::string out;
  size_t at = 0;
  while (at < m.size()) {
    const size_t end = std::min(m.find('\n', at), m.size());
    const size_t b = m.find_first_not_of(' ', at);
    if (b < end) out += (out.empty() ? "" : " ") + m.substr(b, end - b);
    at = end + 1;
  }
  return out.empty() ? "no message" : out;
}

}  // namespace

std::string describe_torch_error(const c10::Error& e) {
  std::string m = first_line(e.what_without_backtrace());
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) {
    // CUDA's message goes on to the caching allocator's accounting and its
    // tuning; what was asked for and what was free come first.
    if (const size_t cut = m.find(" Including non-PyTorch memory"); cut != std::string::npos) m.resize(cut);
    return "out of memory: " + m + " Lower dataloader.batch_size (it is per process), or free the memory.";
  }
  if (const auto* a = dynamic_cast<const c10::AcceleratorError*>(&e)) {
    // CUDA's error codes (driver_types.h) for what is no kernel's failure.
    switch (a->get_error_code()) {
      case 46:  // cudaErrorDevicesUnavailable, when the process takes the GPU
        return "GPU unavailable: " + m + " Another process holds it in exclusive mode, or its compute mode "
               "forbids use (nvidia-smi's column Compute M.): give this process another with CUDA_VISIBLE_DEVICES.";
      case 98:   // cudaErrorInvalidDeviceFunction
      case 209:  // cudaErrorNoKernelImageForDevice
      case 222:  // cudaErrorUnsupportedPtxVersion
        return "GPU not supported: " + m + " A kernel has no code this GPU runs: LibTorch's wheel, and mpq by "
               "default, have code for compute capability 7.5 and later, with a driver for their CUDA.";
      default:
        break;
    }
    return "GPU failure: " + m + " CUDA reports a kernel's failure at a later call: rerun with "
           "CUDA_LAUNCH_BLOCKING=1 to name the operation that failed, and report it if it is one of mpq's.";
  }
  return "torch: " + joined(e.what_without_backtrace());
}

}  // namespace mpq::engine

// What the LibTorch benches (qat_bench, lsq_bench) share: the device they
// run on, waiting for it, and medians.
#pragma once

#include <torch/cuda.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace mpq::bench {

// MPQ_DEVICE (cuda, cuda:N), else the CPU. A GPU that is not there ends the
// program with one line and exit 2 (`program` names it).
inline torch::Device bench_device(const char* program) {
  const char* d = std::getenv("MPQ_DEVICE");
  const torch::Device dev = d ? torch::Device(d) : torch::Device(torch::kCPU);
  const auto visible = static_cast<int>(torch::cuda::device_count());
  if (dev.is_cuda() && std::max<int>(dev.index(), 0) >= visible) {
    std::fprintf(stderr, "%s: MPQ_DEVICE=%s, but %d CUDA device(s) are visible here\n", program, d, visible);
    std::exit(2);
  }
  return dev;
}

// Waits for the work queued on `d`, so that a timing ends with it.
inline void finish(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize(d.index());
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace mpq::bench

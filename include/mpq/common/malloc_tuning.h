// glibc malloc settings for training loops.
//
// A training step frees and reallocates the same multi-megabyte tensors every
// step. With glibc's defaults such blocks are mmapped (or the heap top is
// trimmed) and handed back to the kernel on free, so every step pays fresh
// page faults and the kernel zeroing the pages again: measured on ResNet-18
// at batch 16, 3.3M minor faults in one qat_bench run, and steps 7% (FP) to
// 15% (W4A4) slower than without (docs/BENCHMARKS.md). Keeping freed memory
// in the heap (no mmap, no trim) removes them; the process keeps its peak
// footprint, as PyTorch's CUDA caching allocator does on the GPU.
#pragma once

#include <string>

namespace mpq {

// Applies the settings unless the user chose their own (GLIBC_TUNABLES with a
// glibc.malloc entry, or a MALLOC_*_ variable) or set MPQ_MALLOC=system.
// Returns what was done, one line for the debug log; InputError for an
// MPQ_MALLOC other than mpq or system. A no-op off glibc and
// under sanitizers' allocators (mallopt is then ignored).
std::string tune_malloc_for_training();

// Whether the environment sets glibc's malloc itself (GLIBC_TUNABLES with a
// glibc.malloc entry, or a MALLOC_*_ variable); then the above leaves it be.
bool malloc_set_by_environment();

}  // namespace mpq

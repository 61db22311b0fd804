// CUDA's grid on the CPU, for tests only: enough of the language to run a
// kernel's own source (one-dimensional grids, __shared__ arrays,
// __syncthreads) on the host, so that its indexing, grid-stride loops and
// in-block reductions are checked in every build, GPU or not. The blocks run
// one after another, so a block's __shared__ memory (a static) is its own
// while it runs; within a block each thread is a fiber (ucontext) with a
// stack of its own, switched at every __syncthreads in thread order. A
// barrier that some threads of a block reach and others do not (undefined
// on a GPU) is reported. Arithmetic is the host's: this checks a kernel's
// logic, not the GPU's floating point.
//
// Include this before the kernels' header, in a translation unit that nvcc
// does not compile, and run a kernel with launch(grid, block, [&] { k(...); }).
#pragma once

#if defined(__CUDACC__)
#error "cuda_emulation.h is for host compilers only"
#endif

#include <ucontext.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#define __global__
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace mpq::test::cuda_emulation {

struct Fiber {
  ucontext_t context;
  bool done = false;
};

struct Block {
  ucontext_t scheduler;
  Fiber* running = nullptr;
  void (*body)(const void*) = nullptr;
  const void* kernel = nullptr;
};

inline Block*& current_block() {
  static Block* block = nullptr;
  return block;
}

inline void fiber_main() {
  Block* b = current_block();
  b->body(b->kernel);
  b->running->done = true;  // returning resumes the scheduler (uc_link)
}

// Runs `kernel` (a call of one __global__ function) as grid x block threads.
template <class Kernel>
void launch(int64_t grid, int block, const Kernel& kernel) {
  constexpr size_t kStack = size_t{256} << 10;  // room for sanitizer builds' frames
  gridDim = dim3{static_cast<unsigned>(grid), 1, 1};
  blockDim = dim3{static_cast<unsigned>(block), 1, 1};
  Block b;
  b.body = [](const void* k) { (*static_cast<const Kernel*>(k))(); };
  b.kernel = &kernel;
  current_block() = &b;
  std::vector<Fiber> fibers(static_cast<size_t>(block));
  const std::unique_ptr<char[]> stacks(new char[kStack * fibers.size()]);
  for (int64_t g = 0; g < grid; ++g) {
    blockIdx = dim3{static_cast<unsigned>(g), 1, 1};
    for (size_t t = 0; t < fibers.size(); ++t) {
      Fiber& f = fibers[t];
      f.done = false;
      getcontext(&f.context);
      f.context.uc_stack.ss_sp = stacks.get() + t * kStack;
      f.context.uc_stack.ss_size = kStack;
      f.context.uc_link = &b.scheduler;
      makecontext(&f.context, fiber_main, 0);
    }
    // Rounds: every thread runs to its next barrier or to its end; all of a
    // block's threads must do the same in each round.
    for (int round = 0;; ++round) {
      size_t waiting = 0, ended = 0;
      for (size_t t = 0; t < fibers.size(); ++t) {
        Fiber& f = fibers[t];
        threadIdx = dim3{static_cast<unsigned>(t), 1, 1};
        b.running = &f;
        swapcontext(&b.scheduler, &f.context);
        ++(f.done ? ended : waiting);
      }
      if (waiting == 0) break;
      if (ended != 0) {
        current_block() = nullptr;
        throw std::logic_error("cuda_emulation: in block " + std::to_string(g) + ", " + std::to_string(ended) +
                               " threads ended where " + std::to_string(waiting) + " wait at __syncthreads " +
                               std::to_string(round + 1));
      }
    }
  }
  current_block() = nullptr;
}

}  // namespace mpq::test::cuda_emulation

inline void __syncthreads() {
  mpq::test::cuda_emulation::Block* b = mpq::test::cuda_emulation::current_block();
  swapcontext(&b->running->context, &b->scheduler);
}

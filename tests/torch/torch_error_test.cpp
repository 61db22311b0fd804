// The one line mpq prints for an error LibTorch threw.
#include <gtest/gtest.h>

#include <c10/util/Exception.h>

#include "engine/torch_error.h"

namespace {

const c10::SourceLocation kHere{"test", "torch_error_test.cpp", 1};

bool one_line(const std::string& s) { return s.find('\n') == std::string::npos; }

}  // namespace

TEST(TorchError, OutOfMemoryNamesTheAllocationAndWhatToDo) {
  // CUDA's caching allocator's message (torch 2.11), with its accounting and advice.
  const c10::OutOfMemoryError gpu(
      kHere, "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.72 GiB of which "
             "1.05 GiB is free. Including non-PyTorch memory, this process has 138.65 GiB memory in use. Of the "
             "allocated memory 137.9 GiB is allocated by PyTorch. If reserved but unallocated memory is large try "
             "setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.");
  const std::string g = mpq::engine::describe_torch_error(gpu);
  EXPECT_EQ(g, "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.72 "
               "GiB of which 1.05 GiB is free. Lower dataloader.batch_size (it is per process), or free the memory.");
  const c10::OutOfMemoryError cpu(kHere, "DefaultCPUAllocator: not enough memory: you tried to allocate 40 bytes.");
  EXPECT_EQ(mpq::engine::describe_torch_error(cpu),
            "out of memory: DefaultCPUAllocator: not enough memory: you tried to allocate 40 bytes. Lower "
            "dataloader.batch_size (it is per process), or free the memory.");
}

TEST(TorchError, AGpuFailureSaysHowToFindTheOperation) {
  // What c10's CUDA check throws for a failed launch: the error, then lines of advice.
  const c10::AcceleratorError e(kHere, 700,
                                "CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be "
                                "asynchronously reported at some other API call, so the stacktrace below might be "
                                "incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1\nCompile with "
                                "`TORCH_USE_CUDA_DSA` to enable device-side assertions.\n");
  const std::string s = mpq::engine::describe_torch_error(e);
  EXPECT_TRUE(one_line(s)) << s;
  EXPECT_EQ(s.rfind("GPU failure: CUDA error: an illegal memory access was encountered CUDA reports", 0), 0u) << s;
  EXPECT_NE(s.find("CUDA_LAUNCH_BLOCKING=1"), std::string::npos) << s;
  EXPECT_EQ(s.find("TORCH_USE_CUDA_DSA"), std::string::npos) << s;
}

// No kernel's failure, and no advice to look for one: a GPU another process
// holds (exclusive compute mode, as clusters set it), one without code.
TEST(TorchError, AGpuHeldElsewhereOrWithoutCodeSaysSo) {
  const c10::AcceleratorError busy(kHere, 46,
                                   "CUDA error: CUDA-capable device(s) is/are busy or unavailable\nCUDA kernel errors "
                                   "might be asynchronously reported at some other API call\n");
  const std::string b = mpq::engine::describe_torch_error(busy);
  EXPECT_TRUE(one_line(b)) << b;
  EXPECT_EQ(b.rfind("GPU unavailable: CUDA error: CUDA-capable device(s) is/are busy or unavailable Another "
                    "process",
                    0),
            0u)
      << b;
  EXPECT_NE(b.find("CUDA_VISIBLE_DEVICES"), std::string::npos) << b;
  EXPECT_EQ(b.find("CUDA_LAUNCH_BLOCKING"), std::string::npos) << b;
  const c10::AcceleratorError image(kHere, 209,
                                    "CUDA error: no kernel image is available for execution on the device\n");
  const std::string i = mpq::engine::describe_torch_error(image);
  EXPECT_EQ(i.rfind("GPU not supported: CUDA error: no kernel image is available for execution on the device A kernel",
                    0),
            0u)
      << i;
  EXPECT_NE(i.find("compute capability 7.5 and later"), std::string::npos) << i;
  EXPECT_EQ(i.find("CUDA_LAUNCH_BLOCKING"), std::string::npos) << i;
}

TEST(TorchError, OtherErrorsKeepTheirWholeMessageOnOneLine) {
  const c10::Error e(kHere, "Given groups=1, weight of size [16, 3, 3, 3], expected input[2, 1, 8, 8] to have 3 "
                            "channels, but got 1 channels instead\n  while running conv1\n");
  EXPECT_EQ(mpq::engine::describe_torch_error(e),
            "torch: Given groups=1, weight of size [16, 3, 3, 3], expected input[2, 1, 8, 8] to have 3 channels, but "
            "got 1 channels instead while running conv1");
  EXPECT_EQ(mpq::engine::describe_torch_error(c10::Error(kHere, "\n")), "torch: no message");
}

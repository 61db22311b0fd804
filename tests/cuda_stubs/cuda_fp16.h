// Stand-in for the real header, declarations only: lets a CPU build compile
// src/dist/nccl.cpp against LibTorch 1.13's ProcessGroupNCCL.hpp (see README.md).
#pragma once

// Stand-in for the real header, declarations only: lets a CPU build compile
// src/dist/nccl.cpp against LibTorch 1.13's ProcessGroupNCCL.hpp (see README.md).
#pragma once
typedef struct cusparseContext* cusparseHandle_t;
typedef enum { CUSPARSE_STATUS_SUCCESS = 0 } cusparseStatus_t;
const char* cusparseGetErrorString(cusparseStatus_t);

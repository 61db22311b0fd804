// A stand-in for the NVIDIA driver's libcuda.so.1, found first on
// LD_LIBRARY_PATH by the CUDA runtime, for the tests of what mpq says where
// GPUs are there but CUDA cannot use them (no GPU here runs anything):
// FAKE_DRIVER_CUDA, the CUDA version the driver says it supports (12020: a
// driver too old for CUDA 13), and FAKE_INIT_ERROR, what cuInit returns
// (802: the fabric manager of an NVSwitch machine not running). The runtime
// asks for these two before anything else, and stops at either.
extern "C" {

__attribute__((visibility("default"))) int cuDriverGetVersion(int* version) {
  *version = FAKE_DRIVER_CUDA;
  return 0;
}

__attribute__((visibility("default"))) int cuInit(unsigned int /*flags*/) { return FAKE_INIT_ERROR; }

}  // extern "C"

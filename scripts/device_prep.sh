#!/usr/bin/env bash
# Prepares, on this (GPU-less) machine, what scripts/device_check.sh needs on
# a lent GPU machine, in the git-ignored folder .device/ (name it in the
# device tool's `carry`):
#   bin/     mpq, libmpq_torch.so, the CUDA and LSQ test binaries,
#            qat_bench and lsq_bench (and in bin/sm80 a plugin whose kernels
#            are for sm_80 alone, to be refused there), built here against
#            the torch 2.11.0+cu130 wheel's LibTorch (the GPU machine's own
#            torch is the same build) and
#            without OpenCV (-DMPQ_WITH_OPENCV=OFF: Debian's OpenCV pulls in
#            over a hundred libraries; ImageFolder is refused there)
#   lib/     the Debian libraries those need that are neither LibTorch's, CUDA's
#            nor the C runtime's (yaml-cpp, spdlog, fmt, CBC and its solvers)
#   lib-cxx/ Debian 12's libstdc++ and libgcc_s, used there only where the
#            machine's own are older than the binaries need
#   golden/  the golden LSQ cases (../shared/golden does not travel)
#   data/    Fashion-MNIST (Debian's dataset-fashion-mnist), 20000 training images
#   limpq/   a checkout of the original (1hunters/LIMPQ), which this script
#            cannot fetch: put one there first (git archive of the search
#            tool's fetch), and limpq_train_bench.py beside it
# Checks that it all fits the device tool's 64 MiB and prints the size.
set -euo pipefail
cd "$(dirname "$0")/.."
d=.device
[ -f "$d/limpq/indicators_pretraining/process.py" ] || {
  echo "device_prep: $d/limpq holds no LIMPQ checkout; put one there (git archive of 1hunters/LIMPQ)" >&2
  exit 1
}
MPQ_BUILD_DIR=build-device bash scripts/build.sh -DMPQ_WITH_OPENCV=OFF -DMPQ_WITH_ONNX=OFF
# The same plugin with CUDA kernels for sm_80 alone, which the check's GPU
# (Hopper or later) cannot run: mpq must refuse it in one line before any
# training (ccache makes this build mostly the one above).
cmake -S . -B build-device-sm80 -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$(bash scripts/install_torch.sh)" \
  -DMPQ_WITH_OPENCV=OFF -DMPQ_WITH_ONNX=OFF -DTORCH_CUDA_ARCH_LIST=8.0 >/dev/null
cmake --build build-device-sm80 -j "$(nproc)" --target mpq_torch
rm -rf "$d/bin" "$d/lib" "$d/lib-cxx" "$d/golden" "$d/data"
mkdir -p "$d/bin/sm80" "$d/lib" "$d/golden" "$d/data"
bins=(mpq libmpq_torch.so cuda_test lsq_test joint_step_test qat_bench lsq_bench)
for b in "${bins[@]}"; do cp "build-device/$b" "$d/bin/"; done
cp build-device-sm80/libmpq_torch.so "$d/bin/sm80/"
# Debian 12's C++ runtime, for a GPU machine whose own is older (the check
# puts it first only then).
mkdir -p "$d/lib-cxx"
cp -L "$(g++ -print-file-name=libstdc++.so.6)" "$(g++ -print-file-name=libgcc_s.so.1)" "$d/lib-cxx/"
# What the GPU machine has of its own: LibTorch and CUDA (in its torch), the
# C and C++ runtimes.
own='libtorch|libc10|libcuda|libcudnn|libcublas|libnccl|libnvrtc|libnvshmem|libcufft|libcurand|libcusparse|libcufile|libcupti|libnvJitLink|libnvToolsExt|libcaffe2|libgomp|libc\.so|libm\.so|libstdc\+\+|libgcc_s|ld-linux|libdl\.so|librt\.so|libutil\.so|libresolv\.so|libpthread|linux-vdso'
for b in "${bins[@]}"; do
  ldd "$d/bin/$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | { grep -v -E "^($own)" || true; } | while read -r name path; do
    cp -L "$path" "$d/lib/$name"
  done
done
# README.md too: the tests take a folder holding it for the reference data
# (without it the golden cases skip).
cp ../shared/golden/README.md ../shared/golden/lsq_cases.json ../shared/golden/lsq_cases.pt "$d/golden/"
cp ../shared/bench/limpq_train_bench.py "$d/"
# Fashion-MNIST: the test set whole, the first 20000 of the 60000 training
# images (the check's finetune takes a quarter of them; all 60000 would be
# 26 of the 64 MiB that may travel), as idx files with their counts rewritten.
cp /usr/share/datasets/fashion-mnist/t10k-*.gz "$d/data/"
python3 - "$d/data" <<'PY'
import gzip, struct, sys
src, n = "/usr/share/datasets/fashion-mnist/", 20000
for name, head in (("train-images-idx3-ubyte.gz", 16), ("train-labels-idx1-ubyte.gz", 8)):
    raw = gzip.open(src + name).read()
    count = struct.unpack(">I", raw[4:8])[0]
    item = (len(raw) - head) // count
    out = raw[:4] + struct.pack(">I", n) + raw[8:head] + raw[head:head + n * item]
    with gzip.open(sys.argv[1] + "/" + name, "wb", compresslevel=9) as f:
        f.write(out)
PY
size=$(du -sm "$d" | cut -f1)
echo "device_prep: $d holds $size MiB: $(ls "$d/lib" | tr '\n' ' ')" >&2
[ "$size" -lt 62 ] || { echo "device_prep: $d is over the device tool's 64 MiB" >&2; exit 1; }

#!/usr/bin/env bash
# Configures and builds mpq into build/ (or $MPQ_BUILD_DIR), with ccache and -j2,
# against the LibTorch scripts/install_torch.sh installed (or $MPQ_LIBTORCH, a
# LibTorch folder: the torch/ package of a Python install, or an unpacked archive).
# Extra arguments go to cmake, e.g. scripts/build.sh -DMPQ_SANITIZE=ON
set -euo pipefail
cd "$(dirname "$0")/.."
build=${MPQ_BUILD_DIR:-build}
jobs=${MPQ_JOBS:-$(nproc 2>/dev/null || echo 2)}
libtorch=${MPQ_LIBTORCH:-$(bash scripts/install_torch.sh)}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=${MPQ_BUILD_TYPE:-Release} -DCMAKE_PREFIX_PATH="$libtorch" "$@" >/dev/null
cmake --build "$build" -j "$jobs"

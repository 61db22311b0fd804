#!/usr/bin/env bash
# Configures and builds mpq into build/ (or $MPQ_BUILD_DIR), with ccache and -j2.
# Extra arguments go to cmake, e.g. scripts/build.sh -DMPQ_SANITIZE=ON
set -euo pipefail
cd "$(dirname "$0")/.."
build=${MPQ_BUILD_DIR:-build}
jobs=${MPQ_JOBS:-$(nproc 2>/dev/null || echo 2)}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=${MPQ_BUILD_TYPE:-Release} "$@" >/dev/null
cmake --build "$build" -j "$jobs"

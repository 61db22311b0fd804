#!/usr/bin/env bash
# Builds the libFuzzer target with clang (ASan + UBSan) into build-fuzz/ and
# runs it on the golden pickles as seeds. Usage: scripts/fuzz.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DMPQ_FUZZ=ON -DMPQ_BUILD_TESTS=OFF -DMPQ_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target pickle_fuzz
corpus=build-fuzz/corpus
mkdir -p "$corpus"
cp ../shared/golden/*.pkl ../shared/golden/synthetic/*.pkl "$corpus/" 2>/dev/null || true
# Crash, leak and timeout inputs go under the (git-ignored) build folder, not the repo root.
mkdir -p build-fuzz/artifacts
./build-fuzz/pickle_fuzz "$corpus" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix=build-fuzz/artifacts/ -print_final_stats=1

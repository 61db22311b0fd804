#!/usr/bin/env bash
# Builds a libFuzzer target with clang (ASan + UBSan) into build-fuzz/ and runs
# it from its seeds (the torch-free readers: no LibTorch in this build).
# Usage: scripts/fuzz.sh [pickle|yaml] [seconds]
#   pickle: the pickle reader (indicator files, checkpoints' data.pkl); seeds: the golden pickles
#   yaml:   the config, geometry and policy readers; seeds: configs/, the golden geometry and
#           the policy `mpq search` writes for the paper's indicators
set -euo pipefail
cd "$(dirname "$0")/.."
target=pickle
if [[ ${1:-} == pickle || ${1:-} == yaml ]]; then target=$1; shift; fi
seconds=${1:-600}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DMPQ_FUZZ=ON -DMPQ_BUILD_TESTS=OFF -DMPQ_BUILD_BENCH=OFF -DMPQ_WITH_TORCH=OFF -DMPQ_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${target}_fuzz"
corpus=build-fuzz/corpus-$target
mkdir -p "$corpus"
golden=../shared/golden
if [[ $target == pickle ]]; then
  cp "$golden"/*.pkl "$golden"/synthetic/*.pkl "$corpus/" 2>/dev/null || true
else
  cp configs/*.yaml "$golden"/geometry_224.json "$corpus/" 2>/dev/null || true
  # A policy as mpq search writes it, from the paper's indicators (needs the build in build/).
  if [[ -x build/mpq && -f $golden/importance_indicators_resnet50.pkl ]]; then
    build/mpq search --model resnet50 --i "$golden/importance_indicators_resnet50.pkl" --b 6 5 4 3 2 --wb 3 --ab 4 \
      --cr 12.2 --bops -o "$corpus/policy.yaml" >/dev/null 2>&1 || true
  fi
fi
# Crash, leak and timeout inputs go under the (git-ignored) build folder, not the repo root.
mkdir -p build-fuzz/artifacts
dict=()
[[ $target == yaml ]] && dict=(-dict=tests/fuzz/yaml.dict)
./build-fuzz/"${target}_fuzz" "${dict[@]}" "$corpus" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
  -rss_limit_mb=2048 -artifact_prefix=build-fuzz/artifacts/ -print_final_stats=1

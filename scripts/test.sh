#!/usr/bin/env bash
# The README's test command: installs dependencies, builds, runs every test.
# Pass a CTest label to run a subset: scripts/test.sh unit
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
build=${MPQ_BUILD_DIR:-build}
label=${1:-}
cd "$build"
# Two at a time (the suite is about 17 min in one line, 9 in two on 2 cores);
# MPQ_TEST_JOBS=1 for one.
jobs=${MPQ_TEST_JOBS:-2}
if [ -n "$label" ]; then
  ctest --output-on-failure -j "$jobs" -L "$label"
else
  ctest --output-on-failure -j "$jobs"
fi

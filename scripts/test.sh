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
if [ -n "$label" ]; then
  ctest --output-on-failure -L "$label"
else
  ctest --output-on-failure
fi

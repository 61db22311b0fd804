#!/usr/bin/env bash
# Installs mpq's build and test dependencies: Debian 12's packages, then
# LibTorch 2.11.0 (CUDA 13.0 build) from PyPI's torch wheel (install_torch.sh).
# Idempotent: installs only what is missing, and runs apt-get update only then.
set -euo pipefail

packages=(
  build-essential cmake pkg-config ccache
  coinor-libcbc-dev       # CBC/CLP: the search ILP
  libyaml-cpp-dev libcli11-dev libspdlog-dev
  libopencv-dev           # image decoding for ImageNet-style data
  libjpeg62-turbo-dev     # libjpeg-turbo's API: decode only a crop's region (OpenCV cannot)
  libgtest-dev zlib1g-dev
  libonnx-dev libprotobuf-dev  # ONNX's protobuf classes: mpq export writes and reads its graphs with them
  libgloo-dev             # headers c10d's ProcessGroupGloo.hpp includes (the wheel ships none)
  dataset-fashion-mnist   # real data for the demo and the end-to-end tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages present" >&2
else
  echo "install_deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
libtorch=$(bash "$(dirname "$0")/install_torch.sh")
# onnx and onnxruntime beside that torch, for the export test that runs
# mpq's ONNX graphs (mpq itself never needs Python).
py="${libtorch%/lib/python*}/bin/python"
if ! "$py" -c 'import onnx, onnxruntime' 2>/dev/null; then
  echo "install_deps: installing onnx and onnxruntime into $py's venv" >&2
  "$py" -m pip install -q --disable-pip-version-check --no-cache-dir onnx==1.23.2 onnxruntime==1.32.0
fi

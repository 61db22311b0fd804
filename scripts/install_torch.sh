#!/usr/bin/env bash
# Installs the LibTorch mpq builds against: the one inside PyPI's
# torch==2.11.0 wheel (Linux x86_64: the CUDA 13.0 build, 2.11.0+cu130),
# in a Python venv so that the same torch also serves the tests that use
# Python (torch.load of mpq's checkpoints, torchrun).
#
# Where: $MPQ_TORCH_DIR, default ${XDG_CACHE_HOME:-~/.cache}/mpq/torch-2.11.0-cu130.
# Prints that folder's LibTorch (its torch/ package, which holds lib/,
# include/ and share/cmake/) on stdout, for -DCMAKE_PREFIX_PATH.
# Idempotent: a finished install is marked by a stamp file naming what it
# holds and is reused; an unfinished one is removed and done again.
#
# CUDA pieces: the wheel's libraries link against CUDA 13.0's runtime,
# cuBLAS, cuFFT, cuRAND, cuSPARSE, cuSOLVER, CUPTI, cuDNN 9.19 and NCCL
# 2.28.9. The CUDA 13.0 toolkit of this machine kind has exactly those
# (on the loader's path through /etc/ld.so.conf.d), so they are not
# installed twice; the three it lacks come from PyPI at the versions the
# wheel pins: cuSPARSELt 0.8.0, NVSHMEM 3.4.5 and cuFile 1.15.1.6, into the
# nvidia/ folders the wheel's RPATH ($ORIGIN/../../nvidia/...) names.
# Where the toolkit is absent, MPQ_TORCH_FULL=1 installs every CUDA piece
# the wheel asks for from PyPI instead (about 3 GB more).
# Nothing here needs a GPU: the CUDA build runs on CPU where none is present.
set -euo pipefail

version=2.11.0
tag=cu130
dir=${MPQ_TORCH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mpq/torch-$version-$tag}
python=${MPQ_PYTHON:-python3}
stamp="$dir/.mpq-installed"
want="torch==$version ($tag) nvidia-cusparselt-cu13==0.8.0 nvidia-nvshmem-cu13==3.4.5 nvidia-cufile==1.15.1.6 full=${MPQ_TORCH_FULL:-0}"

libtorch() {  # the LibTorch folder inside the venv
  "$dir/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))'
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "install_torch: torch $version+$tag present in $dir" >&2
  libtorch
  exit 0
fi

command -v "$python" >/dev/null || {
  echo "install_torch: $python not found; install Python 3.10-3.13 (or set MPQ_PYTHON) and run this again" >&2
  exit 1
}
echo "install_torch: installing torch $version+$tag into $dir (about 800 MB from PyPI)" >&2
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
"$python" -m venv "$dir"
pip=("$dir/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir)
if [ "${MPQ_TORCH_FULL:-0}" = 1 ]; then
  "${pip[@]}" "torch==$version"
else
  # The wheel's pure-Python requirements, then the wheel itself and the three
  # CUDA libraries the toolkit lacks, without the CUDA pieces it already has.
  "${pip[@]}" filelock 'typing-extensions>=4.10.0' 'setuptools<82' 'sympy>=1.13.3' 'networkx>=2.5.1' \
    jinja2 'fsspec>=0.8.5' numpy pyyaml
  "${pip[@]}" --no-deps "torch==$version" nvidia-cusparselt-cu13==0.8.0 nvidia-nvshmem-cu13==3.4.5 \
    nvidia-cufile==1.15.1.6
fi

# Check what was installed before marking it done: the version and CUDA
# build, and that every library libtorch_cuda.so needs is found.
"$dir/bin/python" - "$version" "${tag#cu}" <<'EOF'
import sys, torch
v, cuda = sys.argv[1], sys.argv[2]
got_cuda = (torch.version.cuda or "").replace(".", "")
if not torch.__version__.startswith(v) or got_cuda != cuda:
    sys.exit(f"install_torch: got torch {torch.__version__} (CUDA {torch.version.cuda}), expected {v} with CUDA {cuda}")
EOF
lib="$(libtorch)/lib"
missing=$(ldd "$lib/libtorch_cuda.so" | awk '/not found/ {print $1}' | tr '\n' ' ')
if [ -n "$missing" ]; then
  echo "install_torch: $lib/libtorch_cuda.so cannot find: $missing; install the CUDA 13.0 toolkit" \
       "(with cuDNN 9.19 and NCCL 2.28) or run again with MPQ_TORCH_FULL=1" >&2
  exit 1
fi
echo "$want" >"$stamp"
echo "install_torch: torch $("$dir/bin/python" -c 'import torch; print(torch.__version__)') ready in $dir" >&2
libtorch

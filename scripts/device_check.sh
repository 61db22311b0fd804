#!/usr/bin/env bash
# mpq on a GPU machine, in one call of the device tool (its run verb):
#   bash scripts/device_check.sh      with carry [".device"] (scripts/device_prep.sh made it)
# against that machine's own torch (python3's, 2.11.0+cu130). In order, each
# step bounded in time, all output to $OUT/device_check.log:
#   1. the CUDA tests (golden LSQ cases on the GPU, CUDA = CPU kernels,
#      deterministic step-size gradient, training steps GPU vs CPU, cudnn:
#      deterministic repeating GPU training bitwise) and the LSQ tests
#   2. a short full-precision and a W4A4 finetune of Fashion-MNIST ResNet-20 on cuda:0
#   3. an NCCL group of one under torchrun (--set dist_backend=nccl), with
#      synchronised BatchNorm (its all-reduces on NCCL)
#   4. bad input there: a LOCAL_RANK past the device count, CUDA_VISIBLE_DEVICES
#      empty where training_device asks for a GPU (each one line, exit 2), a
#      plugin whose kernels have no code for this GPU (one line, exit 1)
#   5. FP, W4A4 and joint steps of ResNet-20 (28x28, batch 128) and ResNet-18
#      (224x224, batch 256) in mpq, with the host synchronisations of one
#      step of each, the host's part of a step, the kernels of one step of
#      each under LibTorch's profiler (their traces to $OUT/step_traces.tgz),
#      ResNet-20's FP and W4A4 steps also replayed as CUDA graphs (what
#      launching kernels one by one costs), ResNet-18 also with cudnn:
#      heuristic against mpq's default benchmark; the LSQ op on the GPU
#      (lsq_bench: fused against composed on large tensors, and one call's
#      cost on a tiny one against torch's ReLU, the host's part);
#      then the same steps of the original LIMPQ in PyTorch eager
# Runs here too, on the CPU, as a check of everything but the GPU parts
# (MPQ_DEVICE_DRY=1: CPU, tiny step counts).
#
# The steps share one budget, MPQ_DEVICE_BUDGET_S seconds (default 540, under
# the device tool's 600 per command): each runs under its own cap or what is
# left of the budget, whichever is less, so one that hangs cannot take the
# others' time; a step with no time left says so and is skipped. A rerun can
# take only some steps: MPQ_DEVICE_STEPS="tests finetune nccl badinput bench original"
# (the default: all) names them.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/mpq_device_out}
mkdir -p "$out"
exec > >(tee "$out/device_check.log") 2>&1
d=$PWD/.device
dry=${MPQ_DEVICE_DRY:-0}
py=${MPQ_DEVICE_PYTHON:-python3}
step() { echo; echo "== $* ($(date +%T), $(left) s of the budget left)"; }
deadline=$(( $(date +%s) + ${MPQ_DEVICE_BUDGET_S:-540} ))
left() { echo $(( deadline - $(date +%s) )); }
steps=" ${MPQ_DEVICE_STEPS:-tests finetune nccl badinput bench original} "
want() { [[ "$steps" == *" $1 "* ]]; }
# cap N: N seconds, or what is left of the budget where that is less.
cap() { local t; t=$(left); (( t > $1 )) && t=$1; echo "$t"; }
# bounded N COMMAND...: COMMAND under `timeout` of cap N.
bounded() {
  local t; t=$(cap "$1"); shift
  if (( t < 10 )); then echo "device_check: NOT RUN (no time left in the budget): $*"; return 124; fi
  timeout "$t" "$@"
}

site=$("$py" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
libs="$d/lib:$site/torch/lib"
for l in "$site"/nvidia/*/lib; do [ -d "$l" ] && libs="$libs:$l"; done
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MPQ_TORCH_PLUGIN="$d/bin/libmpq_torch.so" MPQ_GOLDEN_DIR="$d/golden"
mpq="$d/bin/mpq"

step machine
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
# The binaries were built on Debian 12 (GCC 12's C++ runtime, GLIBCXX_3.4.30;
# glibc 2.34 at most). Where this machine's libstdc++ is older, the one
# carried in lib-cxx goes first (not otherwise: a newer one serves both, an
# older one in front would break this machine's own libraries).
if ldd "$d"/bin/* 2>&1 | grep -q -E "version .(GLIBCXX|CXXABI)_[0-9.]+. not found"; then
  export LD_LIBRARY_PATH="$d/lib-cxx:$LD_LIBRARY_PATH"
  echo "device_check: this machine's libstdc++ is older than Debian 12's: the carried one goes first"
fi
ldd "$d"/bin/* 2>&1 | grep "not found" | sort -u && echo "device_check: libraries missing (above)"

if want tests; then
step "CUDA and LSQ tests"
bounded 240 "$d/bin/cuda_test" >"$out/cuda_test.log" 2>&1; echo "cuda_test: exit $?"
tail -25 "$out/cuda_test.log"
# (Not its emulated-grid tests: they run the CUDA kernels' source on the CPU, as in every build.)
bounded 90 "$d/bin/lsq_test" --gtest_filter='-LsqCudaEmulated.*' >"$out/lsq_test.log" 2>&1; echo "lsq_test: exit $?"
tail -5 "$out/lsq_test.log"
# A skipped test is a check not made: say so where it cannot be missed.
grep -h -E "^\[  SKIPPED \] [A-Za-z0-9_]+\." "$out/cuda_test.log" "$out/lsq_test.log" | sed -E 's/ \([0-9]+ ms\)$//' |
  sort -u | sed 's/^\[  SKIPPED \] /device_check: NOT RUN: /'
fi

run_dir=/tmp/mpq_device_runs
rm -rf "$run_dir"
common=(--set "dataloader.path=$d/data" --set "output_dir=$run_dir" --set epochs=1 --set warmup_epochs=0
        --set dataloader.fraction=0.25 --set log.print_freq=20)
[ "$dry" = 1 ] && common+=(--set dataloader.fraction=0.01 --set bn_calib_images=64)
dev=gpu
[ "$dry" = 1 ] && dev=cpu

if want finetune; then
step "finetune Fashion-MNIST ResNet-20 on the GPU: FP, then W4A4 from it"
# /usr/bin/time (GNU time, for the peak memory) may be missing from the
# GPU machine's image: then the finetune runs without it.
timev=(/usr/bin/time -v)
[ -x /usr/bin/time ] || { timev=(); echo "device_check: no /usr/bin/time here, the FP finetune's peak memory is not measured"; }
t=$(cap 150)
if (( t < 10 )); then echo "device_check: NOT RUN (no time left in the budget): the FP finetune"; else
"${timev[@]}" timeout "$t" "$mpq" finetune configs/fashion_mnist_resnet20_fp.yaml "${common[@]}" \
  --set training_device=$dev --set name=fp 2>&1 | grep -v -E "^\s+(Page|Minor|Vol|Invol|Swaps|File|Socket|Signals|Average|Exit|Percent|System|User)"
fi
w4="[4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]"
bounded 150 "$mpq" finetune configs/fashion_mnist_resnet20_finetune.yaml "${common[@]}" --set training_device=$dev \
  --set name=w4a4 --set policy= --set "weight_bits=$w4" --set "act_bits=$w4" --set "pre_trained=$run_dir/fp/last.pt" 2>&1
fi

if want nccl; then
step "NCCL group of one under torchrun"
torchrun=$(dirname "$(command -v "$py")")/torchrun
[ -x "$torchrun" ] || torchrun=torchrun
backend=nccl; [ "$dry" = 1 ] && backend=gloo  # the dry run has no GPU: the same launch, on Gloo
bounded 150 "$torchrun" --no-python --nproc_per_node=1 --master_port=29611 "$mpq" finetune \
  configs/fashion_mnist_resnet20_fp.yaml "${common[@]}" --set training_device=$dev --set name=nccl \
  --set dist_backend=$backend --set sync_bn=true 2>&1 | tail -15
fi

if want badinput; then
step "bad input on a GPU machine: a LOCAL_RANK past the devices, no visible GPU, kernels for another GPU"
# Each is one line before any work, exit 2 for the first two (README: Exit codes).
LOCAL_RANK=1 bounded 60 "$mpq" finetune configs/fashion_mnist_resnet20_fp.yaml "${common[@]}" --set training_device=gpu \
  --set name=bad_rank 2>&1 | tail -2; echo "LOCAL_RANK=1 with one GPU: exit ${PIPESTATUS[0]} (2 expected)"
CUDA_VISIBLE_DEVICES= bounded 60 "$mpq" finetune configs/fashion_mnist_resnet20_fp.yaml "${common[@]}" \
  --set training_device=gpu --set name=bad_hidden 2>&1 | tail -2
echo "CUDA_VISIBLE_DEVICES empty, training_device: gpu: exit ${PIPESTATUS[0]} (2 expected)"
# A plugin whose kernels were built for sm_80 alone, on this GPU: one line
# naming the GPU and what to rebuild with, exit 1, before any training.
MPQ_TORCH_PLUGIN="$d/bin/sm80/libmpq_torch.so" bounded 60 "$mpq" finetune configs/fashion_mnist_resnet20_fp.yaml \
  "${common[@]}" --set training_device=gpu --set name=bad_arch 2>&1 | tail -2
echo "kernels for sm_80 alone on this GPU: exit ${PIPESTATUS[0]} (1 expected)"
fi

if want bench; then
step "training steps: mpq (qat_bench), host synchronisations per step"
n=21; [ "$dry" = 1 ] && n=3
bdev=cuda; [ "$dry" = 1 ] && bdev=cpu
# One more step of each under LibTorch's profiler: the kernels per step and
# their summed time, and the steps' traces, packed into one file of $OUT.
traces=/tmp/mpq_device_traces
rm -rf "$traces"; mkdir -p "$traces"
MPQ_CUDA_GRAPH=1 MPQ_DEVICE_WORK=$traces MPQ_SGD_AB=1 MPQ_DEVICE=$bdev MPQ_CASE=resnet20 MPQ_BATCH=128 \
  bounded 150 "$d/bin/qat_bench" $n 2>&1
[ "$dry" = 1 ] && n=2
b18=$([ "$dry" = 1 ] && echo 4 || echo 256)
MPQ_DEVICE_WORK=$traces MPQ_DEVICE=$bdev MPQ_CASE=resnet18 MPQ_BATCH=$b18 bounded 200 "$d/bin/qat_bench" $n 2>&1
tar czf "$out/step_traces.tgz" -C "$traces" . &&
  echo "device_check: step traces in step_traces.tgz ($(du -k "$out/step_traces.tgz" | cut -f1) KiB)"
step "the LSQ op on its own: fused against composed, and one call's cost against torch's ReLU"
MPQ_DEVICE=$bdev bounded 60 "$d/bin/lsq_bench" $([ "$dry" = 1 ] && echo 1 || echo 11) 2 2>&1
step "the same ResNet-18 steps with cudnn: heuristic (what benchmark, the default, buys)"
MPQ_CUDNN=heuristic MPQ_DEVICE=$bdev MPQ_CASE=resnet18 MPQ_BATCH=$b18 bounded 120 "$d/bin/qat_bench" $(( n > 9 ? 9 : n )) 2>&1
fi

if want original; then
step "training steps: the original LIMPQ in PyTorch eager, the same shapes"
s=15; j=5; [ "$dry" = 1 ] && s=2 && j=1
for m in resnet20:128 resnet18:256; do
  b=${m#*:}; [ "$dry" = 1 ] && b=4
  LIMPQ_DIR="$d/limpq" bounded 150 "$py" "$d/limpq_train_bench.py" --model "${m%:*}" --device $bdev --batch "$b" \
    --steps $s --joint-steps $j 2>&1 | grep -E "RESULT|Error|error" 
done
fi
step done

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
#   4. FP, W4A4 and joint steps of ResNet-20 (28x28, batch 128) and ResNet-18
#      (224x224, batch 256) in mpq, with the host synchronisations of one
#      step of each (ResNet-18 also with cudnn: heuristic against mpq's
#      default benchmark), then the same steps of the original LIMPQ in
#      PyTorch eager
# Runs here too, on the CPU, as a check of everything but the GPU parts
# (MPQ_DEVICE_DRY=1: CPU, tiny step counts).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/mpq_device_out}
mkdir -p "$out"
exec > >(tee "$out/device_check.log") 2>&1
d=$PWD/.device
dry=${MPQ_DEVICE_DRY:-0}
py=${MPQ_DEVICE_PYTHON:-python3}
step() { echo; echo "== $* ($(date +%T))"; }

site=$("$py" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
libs="$d/lib:$site/torch/lib"
for l in "$site"/nvidia/*/lib; do [ -d "$l" ] && libs="$libs:$l"; done
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MPQ_TORCH_PLUGIN="$d/bin/libmpq_torch.so" MPQ_GOLDEN_DIR="$d/golden"
mpq="$d/bin/mpq"

step machine
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
ldd "$d/bin/libmpq_torch.so" | grep "not found" && echo "device_check: libraries missing (above)"

step "CUDA and LSQ tests"
timeout 300 "$d/bin/cuda_test" >"$out/cuda_test.log" 2>&1; echo "cuda_test: exit $?"
tail -25 "$out/cuda_test.log"
timeout 120 "$d/bin/lsq_test" >"$out/lsq_test.log" 2>&1; echo "lsq_test: exit $?"
tail -5 "$out/lsq_test.log"
# A skipped test is a check not made: say so where it cannot be missed.
grep -h -E "^\[  SKIPPED \] [A-Za-z0-9_]+\." "$out/cuda_test.log" "$out/lsq_test.log" | sed -E 's/ \([0-9]+ ms\)$//' |
  sort -u | sed 's/^\[  SKIPPED \] /device_check: NOT RUN: /'

run_dir=/tmp/mpq_device_runs
rm -rf "$run_dir"
common=(--set "dataloader.path=$d/data" --set "output_dir=$run_dir" --set epochs=1 --set warmup_epochs=0
        --set dataloader.fraction=0.25 --set log.print_freq=20)
[ "$dry" = 1 ] && common+=(--set dataloader.fraction=0.01 --set bn_calib_images=64)
dev=gpu
[ "$dry" = 1 ] && dev=cpu

step "finetune Fashion-MNIST ResNet-20 on the GPU: FP, then W4A4 from it"
/usr/bin/time -v timeout 300 "$mpq" finetune configs/fashion_mnist_resnet20_fp.yaml "${common[@]}" \
  --set training_device=$dev --set name=fp 2>&1 | grep -v -E "^\s+(Page|Minor|Vol|Invol|Swaps|File|Socket|Signals|Average|Exit|Percent|System|User)"
w4="[4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]"
timeout 300 "$mpq" finetune configs/fashion_mnist_resnet20_finetune.yaml "${common[@]}" --set training_device=$dev \
  --set name=w4a4 --set policy= --set "weight_bits=$w4" --set "act_bits=$w4" --set "pre_trained=$run_dir/fp/last.pt" 2>&1

step "NCCL group of one under torchrun"
torchrun=$(dirname "$(command -v "$py")")/torchrun
[ -x "$torchrun" ] || torchrun=torchrun
backend=nccl; [ "$dry" = 1 ] && backend=gloo  # the dry run has no GPU: the same launch, on Gloo
timeout 300 "$torchrun" --no-python --nproc_per_node=1 --master_port=29611 "$mpq" finetune \
  configs/fashion_mnist_resnet20_fp.yaml "${common[@]}" --set training_device=$dev --set name=nccl \
  --set dist_backend=$backend --set sync_bn=true 2>&1 | tail -15

step "training steps: mpq (qat_bench), host synchronisations per step"
n=21; [ "$dry" = 1 ] && n=3
bdev=cuda; [ "$dry" = 1 ] && bdev=cpu
MPQ_DEVICE=$bdev MPQ_CASE=resnet20 MPQ_BATCH=128 timeout 200 "$d/bin/qat_bench" $n 2>&1
[ "$dry" = 1 ] && n=2
b18=$([ "$dry" = 1 ] && echo 4 || echo 256)
MPQ_DEVICE=$bdev MPQ_CASE=resnet18 MPQ_BATCH=$b18 timeout 300 "$d/bin/qat_bench" $n 2>&1
step "the same ResNet-18 steps with cudnn: heuristic (what benchmark, the default, buys)"
MPQ_CUDNN=heuristic MPQ_DEVICE=$bdev MPQ_CASE=resnet18 MPQ_BATCH=$b18 timeout 200 "$d/bin/qat_bench" $(( n > 9 ? 9 : n )) 2>&1

step "training steps: the original LIMPQ in PyTorch eager, the same shapes"
s=15; j=5; [ "$dry" = 1 ] && s=2 && j=1
for m in resnet20:128 resnet18:256; do
  b=${m#*:}; [ "$dry" = 1 ] && b=4
  LIMPQ_DIR="$d/limpq" timeout 300 "$py" "$d/limpq_train_bench.py" --model "${m%:*}" --device $bdev --batch "$b" \
    --steps $s --joint-steps $j 2>&1 | grep -E "RESULT|Error|error" 
done
step done

#!/usr/bin/env bash
# Scaling of the ResNet-20 Fashion-MNIST finetuning step (issue 6): one
# process with 1 and 2 threads against two processes (c10d/Gloo over
# loopback) with 1 thread each, same global batch (128), same policy, with
# the gradient all-reduce in DDP's bucket size and in small buckets.
# Prints each run's training images/s (the epoch's figure, data included).
# Usage: bench/dist_scaling.sh [fraction] [repeats]; needs the demo's out/
# (out/fmnist_r20_fp/best.pt and out/fmnist_r20_policy.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
fraction=${1:-0.1}
repeats=${2:-3}
mpq=./build/mpq
cfg=configs/fashion_mnist_resnet20_finetune.yaml
common=(--set epochs=1 --set "dataloader.fraction=$fraction" --set bn_calib_images=0 --set output_dir=/tmp/mpq_scaling)
ips() { grep -o '[0-9]* img/s, ' "$1" | tail -1 | cut -d' ' -f1; }
for r in $(seq "$repeats"); do
  for t in 1 2; do
    $mpq finetune $cfg "${common[@]}" --set name=one_t$t --set threads=$t --set dataloader.batch_size=128 2>/tmp/mpq_scaling_one.log
    echo "run $r: 1 process x $t thread(s): $(ips /tmp/mpq_scaling_one.log) img/s"
  done
  # DDP's default buckets (25 MB, the first 1 MB: two for ResNet-20's 1.1 MB
  # of gradients) and 50 kB ones (about 25, most started during backward).
  for mb in 25 0.05; do
    port=$((29500 + RANDOM % 1000))
    for rank in 0 1; do
      RANK=$rank WORLD_SIZE=2 LOCAL_RANK=$rank LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
        $mpq finetune $cfg "${common[@]}" --set name=two --set threads=1 --set dataloader.batch_size=64 \
        --set dist_bucket_mb=$mb 2>/tmp/mpq_scaling_two$rank.log &
    done
    wait
    echo "run $r: 2 processes x 1 thread, buckets of $mb MB: $(ips /tmp/mpq_scaling_two0.log) img/s"
  done
done

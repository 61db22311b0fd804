#!/usr/bin/env bash
# The README's main job: installs what it needs, builds, and runs the whole
# LIMPQ pipeline on Fashion-MNIST with ResNet-20 (one process, CPU):
#   1. full-precision training              configs/fashion_mnist_resnet20_fp.yaml
#   2. joint training of the indicators     configs/fashion_mnist_resnet20_pretrain.yaml
#   3. extraction of the indicators         mpq extract
#   4. search under the BitOPs of uniform W3A3
#   5. finetuning of the searched policy and of uniform W3A3, same epochs
#   6. evaluation of both, and one table of the results
#   7. export of the searched policy's network as ONNX (integer weights)
# Outputs land in out/; the table also in out/demo_results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
mpq=./build/mpq
out=out
mkdir -p "$out"
: >"$out/demo_times.txt"

stage() {  # stage NAME COMMAND...: runs it, records its wall time
  local name=$1 t0 t1
  shift
  echo "== demo: $name" >&2
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  awk -v n="$name" -v a="$t0" -v b="$t1" 'BEGIN {printf "%s %.0f\n", n, b - a}' >>"$out/demo_times.txt"
}
seconds() { awk -v s="$1" '$1 == s {print $2}' "$out/demo_times.txt"; }
field() { awk -v k="$2:" '$1 == k {print $2}' "$1"; }

ft=configs/fashion_mnist_resnet20_finetune.yaml
uniform="[3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]"

stage fp $mpq finetune configs/fashion_mnist_resnet20_fp.yaml
stage pretrain $mpq pretrain configs/fashion_mnist_resnet20_pretrain.yaml
stage extract $mpq extract "$out/fmnist_r20_indicators/last.pt" -o "$out/fmnist_r20_indicators.pkl" >"$out/fmnist_r20_indicators.md"
stage search $mpq search --geometry "$out/fmnist_r20_indicators.geometry.yaml" --i "$out/fmnist_r20_indicators.pkl" \
  --b 6 5 4 3 2 --wb 3 --ab 3 --bops -o "$out/fmnist_r20_policy.yaml"
stage finetune_mixed $mpq finetune "$ft"
stage finetune_uniform $mpq finetune "$ft" --set name=fmnist_r20_w3a3_uniform --set policy= \
  --set "weight_bits=$uniform" --set "act_bits=$uniform"
stage eval_fp $mpq eval configs/fashion_mnist_resnet20_fp.yaml --set pre_trained=$out/fmnist_r20_fp/best.pt >"$out/eval_fp.yaml"
stage eval_mixed $mpq eval "$ft" --set pre_trained=$out/fmnist_r20_w3a3_mixed/best.pt >"$out/eval_mixed.yaml"
stage eval_uniform $mpq eval "$ft" --set policy= --set "weight_bits=$uniform" --set "act_bits=$uniform" \
  --set pre_trained=$out/fmnist_r20_w3a3_uniform/best.pt >"$out/eval_uniform.yaml"
stage export $mpq export "$ft" --set pre_trained=$out/fmnist_r20_w3a3_mixed/best.pt -o "$out/fmnist_r20_w3a3_mixed.onnx" \
  >"$out/export_mixed.yaml"

{
  echo "| model | policy (avg W/A bits) | top-1 % | size MB | GBitOPs | train time s |"
  echo "|---|---|---|---|---|---|"
  row() {  # row LABEL EVAL_FILE TRAIN_SECONDS
    printf '| %s | W%.2f/A%.2f | %.2f | %.4f | %.4f | %s |\n' "$1" "$(field "$2" avg_weight_bits)" \
      "$(field "$2" avg_act_bits)" "$(field "$2" top1)" "$(field "$2" size_mb)" "$(field "$2" gbitops)" "$3"
  }
  row "ResNet-20 full precision" "$out/eval_fp.yaml" "$(seconds fp)"
  row "LIMPQ mixed, BitOPs of W3A3" "$out/eval_mixed.yaml" "$(seconds finetune_mixed)"
  row "uniform W3A3" "$out/eval_uniform.yaml" "$(seconds finetune_uniform)"
  echo
  echo "ONNX export of the LIMPQ policy: $out/fmnist_r20_w3a3_mixed.onnx, $(field "$out/export_mixed.yaml" file_bytes) bytes" \
    "($(field "$out/export_mixed.yaml" weight_bytes_stored) of weights as stored," \
    "$(field "$out/export_mixed.yaml" weight_bytes_packed) packed at their bit-widths)"
  echo "Stages (s): $(tr '\n' ' ' <"$out/demo_times.txt")"
} | tee "$out/demo_results.md"

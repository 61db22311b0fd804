#!/usr/bin/env bash
# The README's main job: installs what it needs, builds, and runs the whole
# LIMPQ pipeline on Fashion-MNIST with ResNet-20 (one process, CPU):
#   1. full-precision training              configs/fashion_mnist_resnet20_fp.yaml
#   2. joint training of the indicators     configs/fashion_mnist_resnet20_pretrain.yaml
#   3. extraction of the indicators         mpq extract
#   4. search under the BitOPs of uniform W2A3, the budget where docs/STUDY.md
#      found the policies furthest apart: with the paper's alpha = 2 and with
#      the alpha the study chose on its validation split
#   5. finetuning of those policies and of uniform W2A3, with the study's
#      recipe (1 epoch on 10% of the training set), seed 0
#   6. evaluation, and one table of the results that says whether the
#      differences are outside the run-to-run noise the study measured
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
uniform_w="[2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]"
uniform_a="[3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]"
recipe=(--set epochs=1 --set dataloader.fraction=0.1 --set dataloader.val_split=0.05 --set seed=0)
budget=(--b 6 5 4 3 2 --wb 2 --ab 3 --bops)
summary=docs/study/summary.json
# The study's choice of alpha at this budget (on its validation split), and its noise.
study() { python3 -c "import json,sys; d=json.load(open('$summary'))['w2a3']; print($1)" 2>/dev/null || true; }
alpha=$(study "d.get('chosen_alpha', '')")

stage fp $mpq finetune configs/fashion_mnist_resnet20_fp.yaml
stage pretrain $mpq pretrain configs/fashion_mnist_resnet20_pretrain.yaml
stage extract $mpq extract "$out/fmnist_r20_indicators/last.pt" -o "$out/fmnist_r20_indicators.pkl" >"$out/fmnist_r20_indicators.md"
stage search $mpq search --geometry "$out/fmnist_r20_indicators.geometry.yaml" --i "$out/fmnist_r20_indicators.pkl" \
  "${budget[@]}" -o "$out/fmnist_r20_policy.yaml"
stage finetune_mixed $mpq finetune "$ft" --set name=fmnist_r20_w2a3_mixed "${recipe[@]}"
stage finetune_uniform $mpq finetune "$ft" --set name=fmnist_r20_w2a3_uniform --set policy= \
  --set "weight_bits=$uniform_w" --set "act_bits=$uniform_a" "${recipe[@]}"
if [ -n "$alpha" ] && [ "$alpha" != 2 ]; then
  stage search_alpha $mpq search --geometry "$out/fmnist_r20_indicators.geometry.yaml" \
    --i "$out/fmnist_r20_indicators.pkl" "${budget[@]}" --alpha "$alpha" -o "$out/fmnist_r20_policy_alpha.yaml"
  stage finetune_alpha $mpq finetune "$ft" --set name=fmnist_r20_w2a3_alpha --set policy="$out/fmnist_r20_policy_alpha.yaml" \
    "${recipe[@]}"
  stage eval_alpha $mpq eval "$ft" --set policy="$out/fmnist_r20_policy_alpha.yaml" \
    --set pre_trained=$out/fmnist_r20_w2a3_alpha/best.pt >"$out/eval_alpha.yaml"
fi
stage eval_fp $mpq eval configs/fashion_mnist_resnet20_fp.yaml --set pre_trained=$out/fmnist_r20_fp/best.pt >"$out/eval_fp.yaml"
stage eval_mixed $mpq eval "$ft" --set pre_trained=$out/fmnist_r20_w2a3_mixed/best.pt >"$out/eval_mixed.yaml"
stage eval_uniform $mpq eval "$ft" --set policy= --set "weight_bits=$uniform_w" --set "act_bits=$uniform_a" \
  --set pre_trained=$out/fmnist_r20_w2a3_uniform/best.pt >"$out/eval_uniform.yaml"
stage export $mpq export "$ft" --set pre_trained=$out/fmnist_r20_w2a3_mixed/best.pt -o "$out/fmnist_r20_w2a3_mixed.onnx" \
  >"$out/export_mixed.yaml"

# One line on a difference against the study's noise at this budget: a single run's paired difference is
# outside it beyond the t prediction interval of the study's paired differences, t(n-1) sd sqrt(1 + 1/n).
verdict() {  # verdict LABEL EVAL_A EVAL_B KEY
  local d stats
  d=$(awk -v a="$(field "$2" top1)" -v b="$(field "$3" top1)" 'BEGIN {printf "%+.2f", a - b}')
  stats=$(study "'%.4f %.4f %d' % (d['$4']['mean'], d['$4']['sd'], d['$4']['n'])")
  if [ -z "$stats" ]; then
    echo "$1: $d points (run scripts/study.sh for the noise this difference is to be read against)"
    return
  fi
  awk -v d="$d" -v s="$stats" -v l="$1" 'BEGIN {
    split(s, x, " "); m = x[1]; sd = x[2]; n = x[3]
    split("12.706 4.303 3.182 2.776 2.571 2.447 2.365 2.306 2.262", t, " ")
    tq = n - 1 <= 9 ? t[n - 1] : 1.96
    half = tq * sd * sqrt(1 + 1 / n)
    o = (d < 0 ? -d : d) > half ? "outside" : "inside"
    printf "%s: %s points, %s the noise: a single run beyond +-%.2f would be outside it (the study at this budget: %+.2f on average, sd %.2f over %d seeds; docs/STUDY.md)\n", l, d, o, half, m, sd, n }'
}

{
  echo "| model | policy (avg W/A bits) | top-1 % | size MB | GBitOPs | train time s |"
  echo "|---|---|---|---|---|---|"
  row() {  # row LABEL EVAL_FILE TRAIN_SECONDS
    printf '| %s | W%.2f/A%.2f | %.2f | %.4f | %.4f | %s |\n' "$1" "$(field "$2" avg_weight_bits)" \
      "$(field "$2" avg_act_bits)" "$(field "$2" top1)" "$(field "$2" size_mb)" "$(field "$2" gbitops)" "$3"
  }
  row "ResNet-20 full precision" "$out/eval_fp.yaml" "$(seconds fp)"
  row "LIMPQ mixed, BitOPs of W2A3 (alpha 2)" "$out/eval_mixed.yaml" "$(seconds finetune_mixed)"
  [ -f "$out/eval_alpha.yaml" ] && [ -n "$(seconds finetune_alpha)" ] &&
    row "LIMPQ mixed, BitOPs of W2A3 (alpha $alpha, the study's choice)" "$out/eval_alpha.yaml" "$(seconds finetune_alpha)"
  row "uniform W2A3" "$out/eval_uniform.yaml" "$(seconds finetune_uniform)"
  echo
  verdict "LIMPQ (alpha 2) - uniform" "$out/eval_mixed.yaml" "$out/eval_uniform.yaml" limpq_minus_uniform
  [ -n "$(seconds finetune_alpha)" ] &&
    verdict "LIMPQ (alpha $alpha) - uniform" "$out/eval_alpha.yaml" "$out/eval_uniform.yaml" alpha_minus_uniform
  echo
  echo "ONNX export of the LIMPQ policy: $out/fmnist_r20_w2a3_mixed.onnx, $(field "$out/export_mixed.yaml" file_bytes) bytes" \
    "($(field "$out/export_mixed.yaml" weight_bytes_stored) of weights as stored," \
    "$(field "$out/export_mixed.yaml" weight_bytes_packed) packed at their bit-widths)"
  echo "Stages (s): $(tr '\n' ' ' <"$out/demo_times.txt")"
} | tee "$out/demo_results.md"

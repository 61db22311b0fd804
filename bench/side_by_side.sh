#!/usr/bin/env bash
# mpq's training steps against the original LIMPQ's, side by side on this
# machine: for each round and model, bench/qat_bench (FP, W4A4, joint 6..2)
# and ../shared/bench/limpq_train_bench.py (the original's own train()), in
# alternating order, on the same threads. Prints every round and the medians
# of the per-round ratios (mpq img/s over the original's) as Markdown.
#
# Usage: LIMPQ_DIR=.device/limpq bench/side_by_side.sh [rounds] [threads]
# Environment: MPQ_BUILD_DIR (default build), MPQ_PYTHON (default the venv
# python beside mpq's LibTorch), MODELS (default "resnet20 resnet18"),
# STEPS_resnet20 / STEPS_resnet18 (timed FP and W4A4 steps; 15 / 7).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
threads=${2:-2}
build=${MPQ_BUILD_DIR:-build}
py=${MPQ_PYTHON:-${MPQ_TORCH_DIR:-$HOME/.cache/mpq/torch-2.11.0-cu130}/bin/python}
bench=${LIMPQ_BENCH:-../shared/bench/limpq_train_bench.py}
: "${LIMPQ_DIR:?set LIMPQ_DIR to a checkout of 1hunters/LIMPQ (e.g. .device/limpq from scripts/device_prep.sh)}"
export LIMPQ_DIR
[ -x "$build/qat_bench" ] || { echo "side_by_side: $build/qat_bench not built (run scripts/build.sh)" >&2; exit 2; }
[ -x "$py" ] || { echo "side_by_side: no python at $py (run scripts/install_torch.sh, or set MPQ_PYTHON)" >&2; exit 2; }
# The original's models are built from torchvision's blocks.
"$py" -c 'import torchvision' 2>/dev/null || {
  echo "side_by_side: the original's bench needs torchvision beside $py's torch; install it with" \
    "$py -m pip install --no-deps torchvision==0.26.0 pillow (0.26 is torch 2.11's)" >&2
  exit 2
}
models=${MODELS:-resnet20 resnet18}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run_mpq() {  # model steps -> "fp qat joint" img/s
  MPQ_CASE=$1 "$build/qat_bench" "$2" "$threads" 2>"$tmp/mpq.err" |
    awk -F'|' -v m="$1" '$2 ~ " "m" " {gsub(/ /,""); print $7, $8, $9}' || true
}
run_limpq() {  # model steps -> "fp qat joint" img/s
  "$py" "$bench" --model "$1" --modes fp,qat,joint --steps "$2" --joint-steps "$(( $2 / 3 > 3 ? $2 / 3 : 3 ))" \
    --threads "$threads" 2>"$tmp/limpq.err" |
    awk '$1 == "RESULT" {v[$3] = $5} END {print v["fp"], v["qat"], v["joint"]}' || true
}

echo "torch $("$py" -c 'import torch; print(torch.__version__)') for the original; mpq: $(grep -m1 'Torch_DIR' "$build/CMakeCache.txt" | cut -d= -f2)"
echo "$(nproc) cores, $threads threads, $rounds rounds, $(date -u +%F)"
echo
echo "| round | model | mpq FP | LIMPQ FP | ratio | mpq W4A4 | LIMPQ W4A4 | ratio | mpq joint | LIMPQ joint | ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  for m in $models; do
    v=STEPS_$m
    steps=${!v:-$([ "$m" = resnet20 ] && echo 15 || echo 7)}
    if (( r % 2 )); then a=$(run_mpq "$m" "$steps"); b=$(run_limpq "$m" "$steps")
    else b=$(run_limpq "$m" "$steps"); a=$(run_mpq "$m" "$steps"); fi
    [ -n "$a" ] || { echo "side_by_side: qat_bench gave no result for $m:" >&2; cat "$tmp/mpq.err" >&2; exit 1; }
    [ "$(wc -w <<<"$b")" = 3 ] || { echo "side_by_side: the original's bench gave no result for $m:" >&2; cat "$tmp/limpq.err" >&2; exit 1; }
    read -r mf mq mj <<<"$a"
    read -r lf lq lj <<<"$b"
    awk -v r="$r" -v m="$m" -v mf="$mf" -v mq="$mq" -v mj="$mj" -v lf="$lf" -v lq="$lq" -v lj="$lj" 'BEGIN {
      printf "| %d | %s | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx |\n",
        r, m, mf, lf, mf / lf, mq, lq, mq / lq, mj, lj, mj / lj }' | tee -a "$tmp/rows"
  done
done
echo
echo "Medians of the per-round ratios (img/s, mpq over the original):"
echo
echo "| model | FP | W4A4 | joint |"
echo "|---|---|---|---|"
for m in $models; do
  awk -F'|' -v m="$m" '$3 ~ " "m" " {gsub(/[ x]/,""); i = n++; f[i] = $6; q[i] = $9; j[i] = $12}
    function med(a, n,   i, k, t) { for (i = 0; i < n; i++) for (k = i + 1; k < n; k++) if (a[k] < a[i]) { t = a[i]; a[i] = a[k]; a[k] = t }
      return n % 2 ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2 }
    END { printf "| %s | %.2fx | %.2fx | %.2fx |\n", m, med(f, n), med(q, n), med(j, n) }' "$tmp/rows"
done

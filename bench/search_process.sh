#!/usr/bin/env bash
# Times the whole `mpq search` process on the paper's case (start-up, reading
# the indicators, solving, writing the policy): median of N runs, in ms.
# Usage: bench/search_process.sh [N] [build dir]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-51}
mpq=${2:-build}/mpq
args=(search --model resnet50 --i ../shared/golden/importance_indicators_resnet50.pkl --b 6 5 4 3 2 --wb 3 --ab 4
      --cr 12.2 --bops --log-level warn)
times=()
for _ in $(seq "$n"); do
  t0=$(date +%s%N)
  "$mpq" "${args[@]}" >/dev/null
  t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000 )))
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "mpq search (whole process, %d runs): median %.2f ms, min %.2f ms\n", NR, a[int((NR+1)/2)]/1000, a[1]/1000}'

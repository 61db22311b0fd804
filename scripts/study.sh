#!/usr/bin/env bash
# The study (a benchmark, not a test): do the learned indicators buy accuracy
# on real data? ResNet-20 on Fashion-MNIST, on this CPU:
#   1. the full-precision network (the demo's config)
#   2. indicator training with 3 seeds, the initial scales (no training
#      steps), and seed 0 at 4 other lengths
#   3. at each budget: the searched policy of every indicator seed, uniform
#      bits (where the budget is a uniform point), 5 random policies, the
#      policy of the reversed indicators, that of the initial scales and that
#      of a baseline importance without joint training (`mpq importance`)
#   4. every distinct policy finetuned with one recipe from the same
#      full-precision weights, 3 seeds each, and evaluated once on the test split
#   5. levers: one change at a time (more seeds, no BatchNorm recalibration,
#      a longer finetune, the candidates 4..2, longer indicator training at a
#      higher learning rate), each against uniform and reversed indicators
#   6. docs/STUDY.md and its plots, written by scripts/study_report.py from
#      the results
# Every finished run leaves a `done` file and is never redone: a rerun (after
# an interrupt, a full disk, a crash) continues with the runs left; a run cut
# short is started again from scratch.
#
#   bash scripts/study.sh            # the study's runs left (about 90 min from scratch), then the report
#   bash scripts/study.sh --levers   # the same, then the levers (stage 5, about 60 min more)
#   bash scripts/study.sh --report   # the report from what is finished
#
# MPQ_STUDY_DIR (default out/study) holds the runs; MPQ_STUDY_SEEDS (default
# "0 1 2") the finetuning seeds. Exit: 0 done, 1 a run failed (its log is
# named; or the disk is full, said so), 2 missing dataset or bad arguments,
# 130 interrupted.
set -Eeuo pipefail
# The study's own messages go to fd 3, the caller's stderr: a failure inside a
# run whose stderr is its log.txt is still said where the user looks.
exec 3>&2
cd "$(dirname "$0")/.."
S=${MPQ_STUDY_DIR:-out/study}
SEEDS=${MPQ_STUDY_SEEDS:-0 1 2}
report_only=0 levers=0
case "${1:-}" in
  --report) report_only=1 ;;
  --levers) levers=1 ;;
  "") ;;
  *) echo "study: unknown argument '$1' (use no argument, --levers or --report)" >&2; exit 2 ;;
esac
data=/usr/share/datasets/fashion-mnist
if [ "$report_only" = 0 ]; then
  if ! ls "$data"/train-images-idx3-ubyte* >/dev/null 2>&1; then
    echo "study: Fashion-MNIST not found in $data; install Debian's dataset-fashion-mnist (bash scripts/install_deps.sh)" >&2
    exit 2
  fi
  bash scripts/install_deps.sh
  bash scripts/build.sh
fi
mpq=$S/bin/mpq
t_start=$(date +%s)

fp_cfg=configs/fashion_mnist_resnet20_fp.yaml
ind_cfg=configs/fashion_mnist_resnet20_pretrain.yaml
ft_cfg=configs/fashion_mnist_resnet20_finetune.yaml
# The finetuning recipe of every policy: 1 epoch on 10% of the training set,
# 5% of it held out for validation (the choice of budgets reads that split;
# the test split is evaluated once per run).
ft_recipe=(--set epochs=1 --set dataloader.fraction=0.1 --set dataloader.val_split=0.05)
cands=(--b 6 5 4 3 2)
# Budgets: name and search flags. Chosen from the calibration sweep of
# uniform policies on the validation split (docs/STUDY.md says how).
budgets=(w2a3 w3a3 cr14)
declare -A budget_flags=(
  [w2a3]="--wb 2 --ab 3 --bops"
  [w3a3]="--wb 3 --ab 3 --bops"
  [cr14]="--cr 14"
)
declare -A budget_uniform=([w2a3]="2/3" [w3a3]="3/3")
lengths=(0.01 0.02 0.04 0.16)  # indicator-training data fractions beside the main 0.08 (2 epochs each)
alphas=(0.5 8 32)              # the objective's weight on the weight indicators, beside the default 2
# Levers: one change each against the main protocol, at the W2A3 budget (where uniform leads) and, for the
# changes that only touch the search, at W3A3 too. A lever's runs live under BUDGET@LEVER.
#   seeds    7 more finetuning seeds (3..9) of LIMPQ, uniform and reversed at W2A3 and W3A3: is the gap noise?
#   nobn     no BatchNorm recalibration, in the finetune's validation nor in the test evaluation
#   ftlong   a finetune of 2 epochs on 25% of the training set (5x the steps)
#   cands432 the candidates 4, 3, 2 bits instead of 6..2
#   indlong  indicators trained 4x longer (2 epochs on 32%) at 10x the learning rate (0.1)
more_seeds=(3 4 5 6 7 8 9)
declare -A lever_ft=([nobn]="--set bn_calib_images=0" [ftlong]="--set epochs=2 --set dataloader.fraction=0.25")
declare -A lever_ev=([nobn]="--set bn_calib_images=0")

# ---- bookkeeping --------------------------------------------------------
current=""
fail() {
  local rc=$?
  if [ "$rc" = 5 ] || [ "$rc" = 130 ]; then  # mpq stopped by SIGINT/SIGTERM (exit 5), or the shell itself
    echo "study: interrupted during '${current:-the study}'; rerun to continue (finished runs are kept, this one starts again)" >&3
    exit 130
  fi
  # A full disk fails a run whose log may be empty: say so instead of pointing at the log.
  local free
  free=$(df -Pk "$S" 2>/dev/null | awk 'NR == 2 {print $4}')
  if [ -n "$free" ] && [ "$free" -lt "$min_free_kb" ]; then
    echo "study: the disk holding $S is full ($((free / 1024)) MiB free) during '${current:-the study}';" \
      "free at least $((min_free_kb / 1024)) MiB and rerun (finished runs are kept${current:+, this one starts again})" >&3
    exit 1
  fi
  [ -n "$current" ] && echo "study: run '$current' failed (exit $rc); its log: $current/log.txt; fix the cause and rerun" \
    "(finished runs are kept)" >&3
  exit 1
}
min_free_kb=$((64 * 1024))  # below this a failed run is put down to the disk (a run writes about 5 MiB)
trap fail ERR
trap 'echo "study: interrupted; rerun to continue (finished runs are kept)" >&3; exit 130' INT TERM
if [ "$report_only" = 0 ]; then
  mkdir -p "$S/bin"
  # The study's own copy of the binaries: a rebuild while it runs changes nothing under it.
  # (One command per line: a failed copy, a full disk, must stop the study, not pass inside an && list.)
  for f in mpq libmpq_torch.so; do
    cp "build/$f" "$S/bin/$f.tmp"
    mv "$S/bin/$f.tmp" "$S/bin/$f"
  done
fi

runs_done=0 runs_seconds=0
# run DIR CMD...: runs CMD once, logging into DIR/log.txt; DIR/done holds its seconds.
run() {
  local dir=$1 t0 t1
  shift
  [ -f "$dir/done" ] && return 0
  rm -rf "$dir"
  mkdir -p "$dir"
  current=$dir
  echo "study: $dir" >&2
  t0=$(date +%s.%N)
  "$@" >"$dir/stdout.txt" 2>"$dir/log.txt"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f\n", b - a}' >"$dir/seconds.txt"
  mv "$dir/seconds.txt" "$dir/done"
  current=""
  runs_done=$((runs_done + 1))
  runs_seconds=$(awk -v s="$runs_seconds" -v d="$(cat "$dir/done")" 'BEGIN {print s + d}')
}

# ---- 1. full precision ----------------------------------------------------
stage_fp() {
  run "$S/fp" $mpq finetune "$fp_cfg" --set output_dir="$S" --set name=fp_train
  [ -f "$S/fp_train/best.pt" ] || { echo "study: $S/fp_train/best.pt missing; remove $S/fp and rerun" >&2; exit 1; }
}

# ---- 2. indicators ----------------------------------------------------------
# indicators NAME OVERRIDES...: trains and extracts $S/ind/NAME.pkl.
do_indicators() {
  local name=$1
  shift
  $mpq pretrain "$ind_cfg" --set output_dir="$S/ind/train" --set name="$name" --set pre_trained="$S/fp_train/best.pt" "$@"
  $mpq extract "$S/ind/train/$name/last.pt" -o "$S/ind/$name.pkl" >"$S/ind/$name.md"
}
indicators() { run "$S/ind/$1" do_indicators "$@"; }
# The baseline importance without joint training: quantization errors of the full-precision network.
do_qerror() {
  $mpq importance "$ind_cfg" --set pre_trained="$S/fp_train/best.pt" --set seed=0 -o "$S/ind/qerror.pkl" >"$S/ind/qerror.md"
}
stage_indicators() {
  local s f
  for s in 0 1 2; do indicators "s$s" --set seed=$s; done
  # The initial scales: one step at a learning rate of 1e-12 moves no float32 scale.
  indicators init --set seed=0 --set lr=1e-12 --set min_lr=0 --set epochs=1 --set dataloader.fraction=0.003
  run "$S/ind/qerror" do_qerror
}
stage_lengths() {
  local f
  for f in "${lengths[@]}"; do indicators "len$f" --set seed=0 --set dataloader.fraction="$f"; done
}

# ---- 3. policies --------------------------------------------------------------
# policy BUDGET NAME INDICATORS EXTRA...: $S/policies/BUDGET/NAME.yaml
policy() {
  local b=$1 name=$2 ind=$3
  shift 3
  local out="$S/policies/$b/$name.yaml"
  [ -f "$out" ] && return 0
  mkdir -p "$S/policies/$b"
  current="$S/policies/$b/$name"
  # shellcheck disable=SC2086
  $mpq search --geometry "$S/ind/s0.geometry.yaml" --i "$ind" "${cands[@]}" ${budget_flags[${b%@*}]} "$@" \
    -o "$out.tmp" 2>"$S/policies/$b/$name.log.txt"
  mv "$out.tmp" "$out"
  current=""
}
stage_policies() {
  local b k
  for b in "${budgets[@]}"; do
    for k in 0 1 2; do policy "$b" "limpq_s$k" "$S/ind/s$k.pkl"; done
    policy "$b" init "$S/ind/init.pkl"
    policy "$b" qerror "$S/ind/qerror.pkl"
    policy "$b" reversed "$S/ind/s0.pkl" --reverse-indicators
    for k in 0 1 2 3 4; do policy "$b" "random$k" "$S/ind/s0.pkl" --random-policy "$k"; done
    if [ -n "${budget_uniform[$b]:-}" ]; then policy "$b" uniform "$S/ind/s0.pkl" --pin "*=${budget_uniform[$b]}"; fi
    # Why the search picks what it picks: the objective's weighting of the weight indicators.
    for k in "${alphas[@]}"; do policy "$b" "alpha$k" "$S/ind/s0.pkl" --alpha "$k"; done
  done
  # The calibration sweep: uniform points around the budgets (BitOPs of the point itself).
  for k in 2/2 2/3 3/3 4/4; do
    local w=${k%/*} a=${k#*/}
    budget_flags[calib]="--wb $w --ab $a --bops"
    policy calib "w${w}a$a" "$S/ind/s0.pkl" --pin "*=$k"
  done
}
stage_length_policies() {
  local f b
  for f in "${lengths[@]}"; do for b in "${budgets[@]}"; do policy "$b" "len$f" "$S/ind/len$f.pkl"; done; done
}
# The bits of a policy file, one line: what makes two policies the same.
bits_key() { grep -E '^(weight_bits|act_bits):' "$1" | tr -d ' \n' | sha256sum | cut -c1-12; }

# ---- 4. finetuning -------------------------------------------------------------
# finetune BUDGET POLICY_FILE SEED: $S/ft/BUDGET/KEY/seedN (the policy's bits name the folder). A budget
# BUDGET@LEVER adds the lever's overrides to the finetune (lever_ft) and the evaluation (lever_ev).
do_finetune() {
  local pol=$1 dir=$2 seed=$3 lever=$4
  # shellcheck disable=SC2206
  local ft_extra=(${lever_ft[$lever]:-}) ev_extra=(${lever_ev[$lever]:-})
  $mpq finetune "$ft_cfg" --set policy="$pol" --set pre_trained="$S/fp_train/best.pt" --set output_dir="$dir" \
    --set name=run --set seed="$seed" "${ft_recipe[@]}" "${ft_extra[@]}"
  $mpq eval "$ft_cfg" --set policy="$pol" --set pre_trained="$dir/run/best.pt" "${ev_extra[@]}" >"$dir/eval.yaml"
}
finetune() {
  local b=$1 pol=$2 seed=$3 key lever=none
  [[ $b == *@* ]] && lever=${b#*@}
  key=$(bits_key "$pol")
  mkdir -p "$S/ft/$b/$key"
  [ -f "$S/ft/$b/$key/policy.yaml" ] || cp "$pol" "$S/ft/$b/$key/policy.yaml"
  run "$S/ft/$b/$key/seed$seed" do_finetune "$S/ft/$b/$key/policy.yaml" "$S/ft/$b/$key/seed$seed" "$seed" "$lever"
}
planned=()
plan() { planned+=("$1|$2|$3"); }
stage_finetune() {
  local seed b name f
  # Calibration first, then seed by seed so that a partial study has whole seeds.
  for name in w2a2 w2a3 w3a3 w4a4; do plan calib "$S/policies/calib/$name.yaml" 0; done
  for seed in $SEEDS; do
    for b in "${budgets[@]}"; do
      for f in "$S/policies/$b"/limpq_s0.yaml "$S/policies/$b"/uniform.yaml "$S/policies/$b"/random*.yaml \
        "$S/policies/$b"/reversed.yaml "$S/policies/$b"/init.yaml "$S/policies/$b"/qerror.yaml \
        "$S/policies/$b"/limpq_s1.yaml \
        "$S/policies/$b"/limpq_s2.yaml "$S/policies/$b"/alpha*.yaml; do
        [ -f "$f" ] && plan "$b" "$f" "$seed"
      done
    done
  done
  run_planned
}
# Runs what `plan` queued, with an ETA from the finished runs of this invocation.
run_planned() {
  local n=0 total b f seed eta
  total=${#planned[@]}
  local left=0 p
  for p in "${planned[@]}"; do
    IFS='|' read -r b f seed <<<"$p"
    [ -f "$S/ft/$b/$(bits_key "$f")/seed$seed/done" ] || left=$((left + 1))
  done
  echo "study: $total finetuning runs planned, $left left" >&2
  runs_done=0 runs_seconds=0  # the ETA counts finetuning runs only
  for p in "${planned[@]}"; do
    IFS='|' read -r b f seed <<<"$p"
    n=$((n + 1))
    if [ "$runs_done" -gt 0 ]; then
      eta=$(awk -v s="$runs_seconds" -v d="$runs_done" -v l="$left" 'BEGIN {t = s / d * l; printf "%d:%02d", t / 60, t % 60}')
      echo "study: [$n/$total] ETA $eta" >&2
    fi
    if [ ! -f "$S/ft/$b/$(bits_key "$f")/seed$seed/done" ]; then
      finetune "$b" "$f" "$seed"
      left=$((left - 1))
    fi
  done
}

# ---- 5. levers -----------------------------------------------------------------
stage_levers() {
  local b f seed l main_key
  planned=()
  indicators long --set seed=0 --set lr=0.1 --set dataloader.fraction=0.32
  local saved=("${cands[@]}")
  for b in w2a3 w3a3; do
    cands=(--b 4 3 2)
    policy "$b@cands432" limpq_s0 "$S/ind/s0.pkl"
    policy "$b@cands432" reversed "$S/ind/s0.pkl" --reverse-indicators
    cands=("${saved[@]}")
    policy "$b@indlong" limpq_s0 "$S/ind/long.pkl"
    policy "$b@indlong" reversed "$S/ind/long.pkl" --reverse-indicators
    main_key=$(bits_key "$S/policies/$b/limpq_s0.yaml")
    for l in cands432 indlong; do
      for f in limpq_s0 reversed; do
        # A lever that lands on the main policy has its runs already.
        [ "$(bits_key "$S/policies/$b@$l/$f.yaml")" = "$main_key" ] && continue
        for seed in $SEEDS; do plan "$b@$l" "$S/policies/$b@$l/$f.yaml" "$seed"; done
      done
    done
  done
  # Cheap levers first, the 5x finetunes last.
  for l in nobn seeds ftlong; do
    for seed in $([ $l = seeds ] && echo "${more_seeds[@]}" || echo "$SEEDS"); do
      for f in limpq_s0 uniform reversed; do
        plan "$([ $l = seeds ] && echo w2a3 || echo "w2a3@$l")" "$S/policies/w2a3/$f.yaml" "$seed"
      done
    done
  done
  # The seeds lever at W3A3 too, where 3 seeds left LIMPQ against uniform at +0.36 +- 2.53.
  for seed in "${more_seeds[@]}"; do
    for f in limpq_s0 uniform reversed; do plan w3a3 "$S/policies/w3a3/$f.yaml" "$seed"; done
  done
  run_planned
}

if [ "$report_only" = 0 ]; then
  stage_fp
  stage_indicators
  stage_policies
  stage_finetune
  stage_lengths
  stage_length_policies
  if [ "$levers" = 1 ]; then stage_levers; fi
fi
trap - ERR
echo "study: this invocation took $(($(date +%s) - t_start)) s" >&2
python3 scripts/study_report.py "$S" docs --command "bash scripts/study.sh" --commit "$(git rev-parse --short HEAD)" \
  --budget-flags "$(for b in "${budgets[@]}"; do printf '%s=%s;' "$b" "${budget_flags[$b]}"; done)" \
  --recipe "${ft_recipe[*]}"

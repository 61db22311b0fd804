#!/usr/bin/env bash
# The README's main job. Installs what it needs, builds, and runs the pipeline
# that exists today: the paper's ResNet-50 search (W3A4 BitOPs, CR 12.2) from
# the authors' learned indicators. The Fashion-MNIST end-to-end pipeline
# (pretrain, extract, search, finetune, eval) joins it with the torch plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
indicators=../shared/golden/importance_indicators_resnet50.pkl
if [ ! -f "$indicators" ]; then
  echo "demo: $indicators not found; run from a checkout beside shared/" >&2
  exit 2
fi
mkdir -p out
./build/mpq search --model resnet50 --i "$indicators" --b 6 5 4 3 2 --wb 3 --ab 4 --cr 12.2 --bops \
  -o out/resnet50_w3a4_cr12.2.yaml
echo "policy: out/resnet50_w3a4_cr12.2.yaml"
grep -E '^(weight_bits|act_bits):' out/resnet50_w3a4_cr12.2.yaml
sed -n '/^report:/,$p' out/resnet50_w3a4_cr12.2.yaml

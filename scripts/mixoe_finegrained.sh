#!/usr/bin/env bash
# MixOE's fine-grained table (experiments/mixoe_finegrained): for each environment and class
# split, the 90-epoch baseline, then MixOE (mixup and CutMix) fine-tuned from it, each evaluated
# in MixOE's metric. Runs land in runs/experiments/mixoe_fg/<dataset>/split<k>/<method>.
#   scripts/mixoe_finegrained.sh                      # all 4 datasets x splits 0, 1, 2
#   DATASETS="bird car" SPLITS="0" scripts/mixoe_finegrained.sh --backend cuda
# Extra arguments go to every `train` call. A finished run is skipped; an interrupted one resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p oodforge-cli --bins
train=target/release/train
exp=experiments/mixoe_finegrained
for ds in ${DATASETS:-bird butterfly car aircraft}; do
  for split in ${SPLITS:-0 1 2}; do
    out=runs/experiments/mixoe_fg/$ds/split$split
    env_args=(--set "data.source.dataset=\"$ds\"" --set "data.source.split=$split")
    for method in baseline mixoe_mixup mixoe_cutmix; do
      run=$out/$method
      if [ -f "$run/results.json" ]; then
        echo "done: $run"; continue
      fi
      extra=()
      [ "$method" != baseline ] && extra=(--set "model.weights.path=\"$out/baseline\"")
      if [ -d "$run/checkpoints" ]; then
        "$train" --resume "$run" "$@"
      else
        "$train" --config "$exp/$method.toml" "${env_args[@]}" "${extra[@]}" --out "$run" "$@"
      fi
    done
  done
done

#!/usr/bin/env bash
# The three CE seeds of experiments/openood_v15_cifar (scripts/sweeps/openood_ce_seeds.toml), then
# the leaderboard comparison. Extra arguments go to `sweep` (e.g. --gpus 0,1,2 or --slurm --submit).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p oodforge-cli --bins
cargo run --release -p oodforge-cli --bin sweep -- scripts/sweeps/openood_ce_seeds.toml "$@"
cargo run --release -p oodforge-cli --bin report -- experiments/openood_v15_cifar/table_cifar10.toml

#!/usr/bin/env bash
# PALM's momentum x prototypes grid (scripts/sweeps/palm_grid.toml): locally on the visible GPUs,
# or with --slurm as an array job. Extra arguments go to `sweep` (e.g. --gpus 0,1,2,3).
#   scripts/palm_grid.sh --gpus 0,1
#   scripts/palm_grid.sh --slurm --submit && scripts/palm_grid.sh --aggregate-only
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p oodforge-cli --bins
exec cargo run --release -p oodforge-cli --bin sweep -- scripts/sweeps/palm_grid.toml "$@"

#!/usr/bin/env bash
# Longer runs of the randomised tests than CI does (CI: 2000 power-loss seeds, 60 model seeds,
# 20 SIGKILL rounds). Usage: bash tests/soak.sh [FACTOR]   (default 25: about 10 minutes here)
set -euo pipefail
cd "$(dirname "$0")/.."
f=${1:-25}
export IIFS_POWERLOSS_SEEDS=$((2000 * f)) IIFS_MODEL_SEEDS=$((60 * f)) IIFS_CRASH_ROUNDS=$((20 * f))
cargo test --release --test power_loss --test engine_model --test mount_crash -- --test-threads=1

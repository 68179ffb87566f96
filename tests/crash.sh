#!/usr/bin/env bash
# The crash harness (tests/crash_ops.rs) with more rounds than CI runs (CI: 150, 15 of each
# operation): the daemon SIGKILLed at a random moment during each kind of operation in turn,
# every invariant checked after every kill.
# Usage: bash tests/crash.sh [ROUNDS]   (default 2000: about 10 minutes here)
# Each run prints its seed: IIFS_SEED=N replays its choices; IIFS_CRASH_OPS_ONLY=Disable,Enable
# runs only those operations.
set -euo pipefail
cd "$(dirname "$0")/.."
export IIFS_CRASH_OPS_ROUNDS=${1:-2000}
cargo test --release --test crash_ops -- --test-threads=1 --nocapture

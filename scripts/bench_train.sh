#!/usr/bin/env bash
# Training-engine speed, side by side: rws fast ops (fused conv+BN+ReLU, and conv + BN ops), the
# same with mimalloc, candle's built-in ops, and PyTorch, on the issue's reference CNN, batch 128.
# usage: scripts/bench_train.sh [THREADS] [BATCHES] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}; N=${2:-30}; R=${3:-2}
cargo bench -p rws-nn --bench train_speed --bench train_speed_mimalloc --no-run
for r in $(seq "$R"); do
  echo "== round $r: $(uptime)"
  RAYON_NUM_THREADS=$T cargo bench -q -p rws-nn --bench train_speed -- fused-pool "$N" 128 | tail -1
  RAYON_NUM_THREADS=$T cargo bench -q -p rws-nn --bench train_speed_mimalloc -- fused-pool "$N" 128 | tail -1 | sed "s/^fused-pool /fused-pool+mi /"
  RAYON_NUM_THREADS=$T cargo bench -q -p rws-nn --bench train_speed -- fast "$N" 128 | tail -1
  python3 scripts/bench_train_pytorch.py "$N" 128 "$T" | tail -1
done
RAYON_NUM_THREADS=$T cargo bench -q -p rws-nn --bench train_speed -- fast-nobn "$N" 128 | tail -1
RAYON_NUM_THREADS=$T cargo bench -q -p rws-nn --bench train_speed -- candle 5 128 | tail -1
echo "== end: $(uptime)"

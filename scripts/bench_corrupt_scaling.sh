#!/usr/bin/env bash
# Corruption throughput of a whole dataset with 1 and 2 worker threads (`rws corrupt --threads`),
# and whether the two runs wrote the same bytes (they must: the seed fixes every image's stream).
# usage: scripts/bench_corrupt_scaling.sh [N_IMAGES] [CORRUPTIONS] [PARAMS]
# SCALING_TMP=DIR puts the outputs under DIR (default /tmp); /dev/shm takes the disk out of the figure.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}; C=${2:-all}; P=${3:-cifar10}
cargo build --release -q -p rws-cli
out=$(mktemp -d -p "${SCALING_TMP:-/tmp}")
trap 'rm -rf "$out"' EXIT
echo "== $(uptime)"
for t in 1 2; do
  s=$(date +%s.%N)
  target/release/rws corrupt --input fashion-mnist:test --limit "$N" --corruption "$C" --severity all --params "$P" --threads "$t" -o "$out/t$t" >/dev/null
  e=$(date +%s.%N)
  echo "threads $t: $(python3 -c "print(f'{$e-$s:.2f} s')")"
done
if diff -r -q "$out/t1" "$out/t2" >/dev/null; then echo "outputs identical"; else echo "OUTPUTS DIFFER"; exit 1; fi
echo "== $(uptime)"

#!/usr/bin/env bash
# Runs arbor's channel benchmarks RUNS times on both CPUs and RUNS times with
# everything pinned to CPU 0 (round trips only), then prints the table that
# bench/README.md carries. Usage: bench/run.sh   (RUNS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
out=target/arbor-bench
rm -rf "$out"
mkdir -p "$out"
cargo bench -p arbor-bench --bench channel --no-run
for i in $(seq 1 "$runs"); do
  rm -rf target/criterion
  cargo bench -q -p arbor-bench --bench channel -- --noplot
  ARBOR_BENCH_LABEL=pinned taskset -c 0 cargo bench -q -p arbor-bench --bench channel -- --noplot round_trip
  cp -r target/criterion "$out/run-$i"
done
python3 bench/report.py "$out"

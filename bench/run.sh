#!/usr/bin/env bash
# Runs arbor's benchmarks RUNS times (default 3) and prints the tables that
# bench/README.md carries: the channel against the raw limit (free, and
# round trips again pinned to CPU 0), workers through the libraries against
# raw fork+exec and node's child_process.fork (round trips again pinned),
# worker trees, large transfers against a raw socket copy, memory per worker
# and the daemon probe. bench/report.py fails when any of these is missing.
# Usage: bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
out=target/arbor-bench
rm -rf "$out"
mkdir -p "$out"
cargo build --release -p arbor-bench --bins
cargo bench -p arbor-bench --no-run
no_node=""
if ! command -v node > /dev/null; then
  echo "node is not installed: the node rows are skipped (report.py --no-node)"
  no_node=--no-node
fi
for i in $(seq 1 "$runs"); do
  rm -rf target/criterion
  cargo bench -q -p arbor-bench --bench channel -- --noplot
  ARBOR_BENCH_LABEL=pinned taskset -c 0 cargo bench -q -p arbor-bench --bench channel -- --noplot round_trip
  cargo bench -q -p arbor-bench --bench workers -- --noplot
  ARBOR_BENCH_LABEL=pinned taskset -c 0 cargo bench -q -p arbor-bench --bench workers -- --noplot 'worker_round_trip|daemon_request'
  cargo bench -q -p arbor-bench --bench tree -- --noplot
  cargo bench -q -p arbor-bench --bench transfer -- --noplot
  cp -r target/criterion "$out/run-$i"
  ./target/release/worker-memory > "$out/run-$i/memory.json"
  ./target/release/daemon-probe > "$out/run-$i/daemon.json"
  if [ -z "$no_node" ]; then
    node bench/node/fork_ipc.js > "$out/run-$i/node.json"
  fi
done
python3 bench/report.py ${no_node:+"$no_node"} "$out"

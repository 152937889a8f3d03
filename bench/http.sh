#!/usr/bin/env bash
# HTTP pools: http-hello with 2 replicas in each socket mode against one
# standalone http-hello process and node's cluster module (2 workers), under
# wrk; requests per replica (fairness); failed requests during rolling
# reloads under wrk. Installs wrk from Debian's packages when missing.
# Usage: bench/http.sh   (RUNS=3, DURATION=10 seconds per wrk run, CONNECTIONS=64)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk > /dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q
  $sudo apt-get install -y -q wrk
fi
cargo build --release -p arbor-http-hello -p arbor-supervisor --bins
exec python3 bench/http.py

#!/usr/bin/env bash
# The channel benchmarks of an earlier commit (BEFORE) and of the working
# tree, alternated RUNS times (default 3) on the same machine, so that both
# see the same noise; prints each row's arbor/raw ratio per side (median of
# the runs, and their range) and the change in arbor's own time.
# Usage: bench/ab.sh BEFORE      e.g. bench/ab.sh 0887af0
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: bench/ab.sh BEFORE-COMMIT}
runs=${RUNS:-3}
out=target/bench-ab
tree=target/bench-ab-before
rm -rf "$out"
mkdir -p "$out"
if [ ! -d "$tree" ]; then
  git worktree add -q --detach "$tree" "$before"
else
  git -C "$tree" checkout -q --detach "$before"
fi
here=$PWD
for dir in "$tree" "$here"; do
  (cd "$dir" && cargo bench -q -p arbor-bench --bench channel --no-run)
done
for i in $(seq 1 "$runs"); do
  for side in before after; do
    dir=$here
    [ "$side" = before ] && dir=$tree
    (cd "$dir" && rm -rf target/criterion \
      && cargo bench -q -p arbor-bench --bench channel -- --noplot > /dev/null 2>&1 \
      && ARBOR_BENCH_LABEL=pinned taskset -c 0 cargo bench -q -p arbor-bench --bench channel -- --noplot round_trip > /dev/null 2>&1 \
      && cp -r target/criterion "$here/$out/$side-$i")
  done
done
python3 - "$out" "$runs" <<'PY'
import glob
import json
import os
import statistics
import sys

out, runs = sys.argv[1], int(sys.argv[2])


def median_of(path):
    return json.load(open(path))["median"]["point_estimate"]


rows = {}
for side in ("before", "after"):
    for i in range(1, runs + 1):
        base = f"{out}/{side}-{i}"
        for est in glob.glob(f"{base}/**/arbor/**/new/estimates.json", recursive=True) + glob.glob(
            f"{base}/*/arbor/new/estimates.json"
        ):
            raw = est.replace("/arbor/", "/raw/")
            if not os.path.exists(raw):
                continue
            key = os.path.relpath(os.path.dirname(os.path.dirname(est)), base)
            rows.setdefault(key, {}).setdefault(side, []).append((median_of(est), median_of(raw)))
print(f"| row | before: arbor/raw (median of {runs}, range) | after: arbor/raw (median, range) | after arbor time / before |")
print("|---|---:|---:|---:|")
for key in sorted(rows):
    b, a = rows[key].get("before", []), rows[key].get("after", [])
    if not b or not a:
        continue
    rb = sorted(x / y for x, y in b)
    ra = sorted(x / y for x, y in a)
    tb = statistics.median(x for x, _ in b)
    ta = statistics.median(x for x, _ in a)
    print(
        f"| {key} | {statistics.median(rb):.2f}x ({rb[0]:.2f}–{rb[-1]:.2f}) "
        f"| {statistics.median(ra):.2f}x ({ra[0]:.2f}–{ra[-1]:.2f}) | {ta / tb:.2f}x |"
    )
PY

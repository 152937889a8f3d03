#!/usr/bin/env python3
"""Turns criterion's results from several runs into bench/README.md's table.

For every benchmark it takes criterion's median of each run, then the median
of those over the runs, and sets arbor's figure beside the raw baseline's.
Usage: bench/report.py target/arbor-bench
"""
import json
import statistics
import sys
from pathlib import Path


def load(root):
    results = {}  # (group, param) -> {function: [median ns per iteration]}
    throughput = {}
    for bench in Path(root).glob("run-*/**/new/benchmark.json"):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        key = (meta["group_id"], meta.get("value_str") or "")
        results.setdefault(key, {}).setdefault(meta["function_id"], []).append(est["median"]["point_estimate"])
        throughput[key] = meta.get("throughput")
    return results, throughput


def describe(group, param, ns, tp):
    if "round_trip" in group:
        return f"{ns / 1000:.2f} µs"
    if tp and "Bytes" in tp:
        return f"{tp['Bytes'] / ns:.2f} GB/s"
    if tp and "Elements" in tp:
        return f"{tp['Elements'] / ns * 1e9 / 1e6:.2f} M/s"
    return f"{ns:.0f} ns"


def main():
    results, throughput = load(sys.argv[1])
    runs = max(len(v) for fns in results.values() for v in fns.values())
    print(f"| benchmark | arbor | raw | arbor/raw time | runs |")
    print(f"|---|---:|---:|---:|---:|")
    for (group, param) in sorted(results):
        fns = results[(group, param)]
        if "arbor" not in fns or "raw" not in fns:
            continue
        arbor, raw = statistics.median(fns["arbor"]), statistics.median(fns["raw"])
        tp = throughput[(group, param)]
        name = f"{group}/{param}" if param else group
        print(f"| {name} | {describe(group, param, arbor, tp)} | {describe(group, param, raw, tp)} "
              f"| {arbor / raw:.2f}x | {min(len(fns['arbor']), len(fns['raw']))} |")
    print(f"\n(median of criterion's per-run medians over up to {runs} runs; ratio < 1 means arbor is faster)")


if __name__ == "__main__":
    main()

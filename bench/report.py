#!/usr/bin/env python3
"""Turns several runs of bench/run.sh into bench/README.md's tables.

For every benchmark it takes criterion's median of each run, then the median
of those over the runs. Usage: bench/report.py target/arbor-bench
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
    extras = {}
    for name in ("memory", "node", "daemon"):
        for f in Path(root).glob(f"run-*/{name}.json"):
            for k, v in json.loads(f.read_text()).items():
                extras.setdefault(name, {}).setdefault(k, []).append(v)
    return results, throughput, extras


def describe(group, ns, tp):
    if "round_trip" in group or "spawn" in group or "request" in group:
        return f"{ns / 1000:.2f} µs" if ns < 1e6 else f"{ns / 1e6:.2f} ms"
    if tp and "Bytes" in tp:
        return f"{tp['Bytes'] / ns:.2f} GB/s"
    if tp and "Elements" in tp:
        return f"{tp['Elements'] / ns * 1e9 / 1e6:.2f} M/s"
    return f"{ns:.0f} ns"


def med(values):
    return statistics.median(values)


def main():
    results, throughput, extras = load(sys.argv[1])
    node = {k: med(v) for k, v in extras.get("node", {}).items()}
    node_rows = {
        ("spawn_to_ready", ""): "spawn_to_ready_ns",
        ("spawn_100", ""): "spawn_100_ns",
        ("worker_round_trip", "64"): "round_trip_64_ns",
        ("worker_round_trip", "4096"): "round_trip_4096_ns",
    }
    print("| benchmark | arbor | raw | arbor/raw (time) | node | arbor/node (time) | runs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (group, param) in sorted(results):
        fns = results[(group, param)]
        if "arbor" not in fns or "raw" not in fns:
            continue
        arbor, raw = med(fns["arbor"]), med(fns["raw"])
        tp = throughput[(group, param)]
        name = f"{group}/{param}" if param else group
        node_ns = node.get(node_rows.get((group, param), ""), None)
        node_cells = (f"{describe(group, node_ns, tp)} | {arbor / node_ns:.3f}x" if node_ns else " | ")
        print(f"| {name} | {describe(group, arbor, tp)} | {describe(group, raw, tp)} | {arbor / raw:.2f}x "
              f"| {node_cells} | {min(len(fns['arbor']), len(fns['raw']))} |")
    for k, v in list(extras.get("memory", {}).items()) + list(extras.get("daemon", {}).items()):
        print(f"\n{k}: {med(v)} (median of {len(v)} runs)")
    print("\n(criterion's per-run medians, then the median over runs; a ratio below 1 means arbor takes less time)")


if __name__ == "__main__":
    main()

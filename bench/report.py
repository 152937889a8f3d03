#!/usr/bin/env python3
"""Turns several runs of bench/run.sh into bench/README.md's tables.

Input (bench/run.sh writes it): ROOT/run-N/ for N = 1, 2, ..., each holding
criterion's output (<group>/<function>/[<param>/]new/benchmark.json and
estimates.json), memory.json (target/release/worker-memory), daemon.json
(target/release/daemon-probe) and node.json (bench/node/fork_ipc.js).

Every row below is a comparison of two criterion functions of one group: the
measured side and its baseline. For each, criterion's median of every run,
then the median of those over the runs; the ratio of the two medians; the
spread (the lowest and highest per-run ratio, each run's measured median
over that run's baseline median); the number of runs; and a verdict against
TARGETS, "met" only when the ratio of the medians meets the bound.

Nothing is dropped silently: a row whose data is missing from any run, a
missing or unreadable file, or a malformed value is an error (exit 1);
criterion results that no row uses are listed in a table of their own.

Usage: bench/report.py [--no-node] [ROOT]    (ROOT: target/arbor-bench)
"""
import argparse
import json
import math
import statistics
import sys
from pathlib import Path

MIB = 1 << 20
TRANSFER_SIZES = [1 * MIB, 4 * MIB, 16 * MIB, 64 * MIB]


class ReportError(Exception):
    """An input that is missing, unreadable or not what bench/run.sh writes."""


class Row:
    """One comparison: `measured` against `baseline`, two criterion function
    ids of `group` with the same parameter (`param`, None when the
    benchmark has none). `rate` shows criterion's throughput beside the time."""

    def __init__(self, key, group, param, measured, baseline, label, rate=False):
        self.key, self.group, self.param = key, group, param
        self.measured, self.baseline = measured, baseline
        self.label, self.rate = label, rate


def size_name(n):
    return f"{n // MIB} MiB" if n >= MIB and n % MIB == 0 else f"{n} B"


def channel_rows():
    """bench/benches/channel.rs; the round trips again with
    ARBOR_BENCH_LABEL=pinned under `taskset -c 0` (bench/run.sh)."""
    rows = []
    for prefix, how in [("", ""), ("pinned_", ", both pinned to CPU 0")]:
        for size in [64, 4096, MIB]:
            key = f"{prefix}round_trip/{size}"
            rows.append(Row(key, f"{prefix}round_trip", str(size), "arbor", "raw",
                            f"{key} (one {size_name(size)} message there and back{how})"))
    rows += [
        Row("throughput_64B", "throughput_64B", None, "arbor", "raw",
            "throughput_64B (10,000 messages of 64 B one way, then an ack)", rate=True),
        Row("throughput_64B_owned", "throughput_64B", None, "arbor_owned", "raw",
            "throughput_64B, owned receive (recv: a Frame and a Vec a message)", rate=True),
        Row("throughput_1MiB", "throughput_1MiB", None, "arbor", "raw",
            "throughput_1MiB (64 messages of 1 MiB one way, then an ack)", rate=True),
        Row("throughput_1MiB_owned", "throughput_1MiB", None, "arbor_owned", "raw",
            "throughput_1MiB, owned receive", rate=True),
        Row("fd_passing", "fd_passing", None, "arbor", "raw",
            "fd_passing (1,000 messages of one fd each, then an ack)", rate=True),
    ]
    return rows


def workers_rows():
    """bench/benches/workers.rs; worker_round_trip again pinned."""
    rows = [
        Row("spawn_to_ready", "spawn_to_ready", None, "arbor", "raw",
            "spawn_to_ready (one worker until Ready; raw: Command and one byte)"),
        Row("spawn_100", "spawn_100", None, "arbor", "raw",
            "spawn_100 (100 workers at once, until all are Ready)"),
        Row("spawn_1000", "spawn_1000", None, "arbor", "raw",
            "spawn_1000 (1000 workers at once, until all are Ready)"),
    ]
    for prefix, how in [("", ""), ("pinned_", ", both pinned to CPU 0")]:
        for size in [64, 4096]:
            key = f"{prefix}worker_round_trip/{size}"
            rows.append(Row(key, f"{prefix}worker_round_trip", str(size), "arbor", "raw",
                            f"{key} (post_message and the echo event{how})"))
    for prefix, how in [("", ""), ("pinned_", ", all pinned to CPU 0")]:
        key = f"{prefix}daemon_request"
        rows += [
            Row(key, key, None, "arbor", "raw",
                f"{key} (64 B through arbord; raw = the library's Worker::request{how})"),
            Row(f"{key}_over_relay", key, None, "arbor", "relay",
                f"{key} against a raw relay process (the floor of any hop through a third "
                f"process{how})"),
            Row(f"{key}_relay_floor", key, None, "relay", "raw",
                f"{key}: the raw relay itself against the library's request{how}"),
        ]
    return rows


def tree_rows():
    """bench/benches/tree.rs: both sides are arbor, with a tree and without."""
    return [
        Row("tree_spawn", "tree_spawn", None, "sub-worker", "top-level",
            "tree_spawn (spawn, Ready, terminate: by a worker, plus one request round trip, "
            "vs by this process)"),
        Row("tree_round_trip/64", "tree_round_trip", "64", "direct", "supervisor",
            "tree_round_trip/64 (worker ⇄ sub-worker direct vs this process ⇄ worker)"),
    ]


def transfer_rows():
    """bench/benches/transfer.rs: arbor's copy and both memfd paths, each
    against the raw socket copy (`raw_copy`) of the same size."""
    rows = []
    for size in TRANSFER_SIZES:
        for fn, what in [("copy", "arbor's channel copy"),
                         ("memfd_from_bytes", "Transfer::from_bytes"),
                         ("memfd", "TransferBuffer, filled in place")]:
            rows.append(Row(f"transfer/{fn}/{size}", "transfer", str(size), fn, "raw_copy",
                            f"transfer/{fn}/{size_name(size)} ({what})", rate=True))
    return rows


SECTIONS = [
    ("channel: arbor's channel against raw length-prefix framing (bench/benches/channel.rs)", channel_rows()),
    ("workers: through the libraries against raw spawning and framing (bench/benches/workers.rs)", workers_rows()),
    ("worker trees (bench/benches/tree.rs)", tree_rows()),
    ("transfer of a large buffer, against a raw socket copy (bench/benches/transfer.rs)", transfer_rows()),
]

# Row key -> (comparison, bound): the targets of the issues that set them
# (the latest where one tightened another's). For a criterion row the value compared is
# the time ratio (measured median over baseline median); for a memory row,
# the median over runs of the figure itself.
TARGETS = {
    "round_trip/64": ("<=", 1.1),
    "round_trip/4096": ("<=", 1.2),
    "pinned_round_trip/64": ("<=", 1.1),
    "pinned_round_trip/4096": ("<=", 1.15),
    "throughput_64B": ("<=", 1.0 / 0.6),
    "fd_passing": ("<=", 1.3),
    "spawn_to_ready": ("<=", 1.2),
    "spawn_100": ("<=", 1.3),
    "worker_round_trip/64": ("<=", 1.3),
    "worker_round_trip/4096": ("<=", 1.3),
    "pinned_worker_round_trip/64": ("<=", 1.2),
    "pinned_worker_round_trip/4096": ("<=", 1.2),
    "daemon_request": ("<=", 1.5),
    "pinned_daemon_request": ("<=", 1.5),
    f"transfer/memfd/{64 * MIB}": ("<=", 1.0),
    "supervisor_kib_per_idle_worker": ("<", 32.0),
}

# How a target reads when the time ratio is not how it was set.
TARGET_WORDING = {
    "throughput_64B": "arbor's throughput ≥ 0.6x raw, i.e. time ≤ 1.67x",
    f"transfer/memfd/{64 * MIB}": "not slower than raw_copy, i.e. time ≤ 1.0x",
}

COMPARE = {
    "<=": (lambda x, b: x <= b, "≤"),
    "<": (lambda x, b: x < b, "<"),
    ">=": (lambda x, b: x >= b, "≥"),
    ">": (lambda x, b: x > b, ">"),
}

# (row key of an arbor row, node.json key, what node's figure measures).
NODE_ROWS = [
    ("spawn_to_ready", "spawn_to_ready_ns",
     "spawn_to_ready vs node `fork()` until the child's first IPC message: V8 start-up and "
     "node's runtime, not only supervision"),
    ("spawn_100", "spawn_100_ns",
     "spawn_100 vs node `fork()` of 100 children at once: V8 start-up and node's runtime, "
     "not only supervision"),
    ("worker_round_trip/64", "round_trip_64_ns",
     "worker_round_trip/64 vs node `child_process.fork` IPC round trip: the fair IPC comparison"),
    ("worker_round_trip/4096", "round_trip_4096_ns",
     "worker_round_trip/4096 vs node `child_process.fork` IPC round trip: the fair IPC comparison"),
]

# (file, key, label, unit, decimals shown).
FIGURES = [
    ("memory.json", "supervisor_kib_per_idle_worker",
     "supervisor RSS growth per idle worker (100 idle echo workers, all Ready)", "KiB", 1),
    ("memory.json", "echo_worker_rss_kib", "echo worker RSS", "KiB", 0),
    ("daemon.json", "arborctl_ps_100_workers_ms",
     "`arborctl ps` with 100 workers (a whole arborctl process, median of 20)", "ms", 2),
    ("daemon.json", "arbord_rss_100_idle_workers_kib", "arbord RSS with 100 idle workers", "KiB", 0),
]


def read_json(path):
    try:
        text = path.read_text()
    except OSError as e:
        raise ReportError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not JSON: {e}") from e


def number(value, where):
    """A finite number (not a bool, not a string), else an error naming where."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReportError(f"{where}: expected a finite number, found {value!r}")
    return float(value)


def find_runs(root):
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory (bench/run.sh writes target/arbor-bench)")
    runs = []
    for d in root.glob("run-*"):
        suffix = d.name[len("run-"):]
        if d.is_dir() and suffix.isdigit():
            runs.append((int(suffix), d))
    if not runs:
        raise ReportError(f"no run-N directories in {root} (bench/run.sh writes them)")
    return [d for _, d in sorted(runs)]


def load_criterion(run):
    """{(group, function, param or None): (median ns, throughput)} of one run."""
    found = {}
    for bench in sorted(run.glob("**/new/benchmark.json")):
        meta = read_json(bench)
        try:
            key = (meta["group_id"], meta["function_id"], meta.get("value_str"))
        except (KeyError, TypeError) as e:
            raise ReportError(f"{bench}: no group_id or function_id ({e})") from e
        estimates_path = bench.parent / "estimates.json"
        estimates = read_json(estimates_path)
        try:
            median = estimates["median"]["point_estimate"]
        except (KeyError, TypeError) as e:
            raise ReportError(f"{estimates_path}: no median.point_estimate ({e})") from e
        median = number(median, f"{estimates_path}: median.point_estimate")
        if median <= 0:
            raise ReportError(f"{estimates_path}: median.point_estimate is {median}, not a time")
        if key in found:
            raise ReportError(f"{run}: {'/'.join(k for k in key if k)} appears twice (second: {bench})")
        found[key] = (median, meta.get("throughput"))
    return found


def load_figures(run, name, required_keys):
    path = run / name
    if not path.exists():
        raise ReportError(f"{path} is missing (bench/run.sh writes it in every run)")
    values = read_json(path)
    if not isinstance(values, dict):
        raise ReportError(f"{path}: expected a JSON object, found {type(values).__name__}")
    missing = [k for k in required_keys if k not in values]
    if missing:
        raise ReportError(f"{path}: no {', '.join(missing)}")
    return {k: number(v, f"{path}: {k}") for k, v in values.items()}


def fmt_time(ns):
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_rate(ns, throughput):
    if not isinstance(throughput, dict):
        return ""
    amount = throughput.get("Bytes", throughput.get("BytesDecimal"))
    if amount is not None:
        return f" ({amount / ns:.2f} GB/s)"
    if "Elements" in throughput:
        return f" ({throughput['Elements'] / ns * 1e3:.2f} M/s)"
    return ""


def fmt_num(x, bound=None, digits=2):
    """`x` with `digits` decimals, more (up to 4) when it would otherwise
    print as the bound it does not equal (a missed 1.2004 is not "1.20")."""
    text = f"{x:.{digits}f}"
    while bound is not None and x != bound and float(text) == bound and digits < 4:
        digits += 1
        text = f"{x:.{digits}f}"
    return text


def verdict(key, value, low, high, unit, digits=2):
    """'≤ 1.2x: met (median 1.14x, runs 1.10–1.55x)', or '' without a target."""
    if key not in TARGETS:
        return ""
    comparison, bound = TARGETS[key]
    test, symbol = COMPARE[comparison]
    wording = TARGET_WORDING.get(key, f"{symbol} {bound:g}{unit}")
    word = "met" if test(value, bound) else "missed"
    return (f"{wording}: {word} (median {fmt_num(value, bound, digits)}{unit}, "
            f"runs {fmt_num(low, bound, digits)}–{fmt_num(high, bound, digits)}{unit})")


def compare(per_run_measured, per_run_baseline):
    """The medians over the runs, their ratio, and the per-run ratios' range."""
    measured = statistics.median(per_run_measured)
    baseline = statistics.median(per_run_baseline)
    ratios = [m / b for m, b in zip(per_run_measured, per_run_baseline)]
    return measured, baseline, measured / baseline, min(ratios), max(ratios)


def build(root, use_node):
    """Reads everything and checks it; returns what main prints. Raises
    ReportError on the first unreadable file, or on every missing row."""
    runs = find_runs(root)
    criterion = [load_criterion(run) for run in runs]
    used = {}  # insertion-ordered: the rows' order
    for section, rows in SECTIONS:
        for row in rows:
            for fn in (row.measured, row.baseline):
                used[(row.group, fn, row.param)] = None
    missing = []
    for run, results in zip(runs, criterion):
        absent = ["/".join(k for k in key if k) for key in used if key not in results]
        if absent:
            missing.append(f"{run}: {', '.join(absent)}")
    if missing:
        raise ReportError("criterion results missing (was every bench of bench/run.sh run?):\n  "
                          + "\n  ".join(missing))

    sections = []
    by_key = {}
    for section, rows in SECTIONS:
        lines = []
        for row in rows:
            m_key, b_key = (row.group, row.measured, row.param), (row.group, row.baseline, row.param)
            m_runs = [results[m_key][0] for results in criterion]
            b_runs = [results[b_key][0] for results in criterion]
            m, b, ratio, low, high = compare(m_runs, b_runs)
            by_key[row.key] = m_runs
            m_rate = fmt_rate(m, criterion[0][m_key][1]) if row.rate else ""
            b_rate = fmt_rate(b, criterion[0][b_key][1]) if row.rate else ""
            lines.append(f"| {row.label} | {row.measured} / {row.baseline} | {fmt_time(m)}{m_rate} "
                         f"| {fmt_time(b)}{b_rate} | {fmt_num(ratio)}x | {fmt_num(low)}–{fmt_num(high)}x "
                         f"| {len(runs)} | {verdict(row.key, ratio, low, high, 'x')} |")
        sections.append((section, lines))

    unlisted = []
    for key in sorted({k for results in criterion for k in results} - set(used), key=str):
        values = [results[key][0] for results in criterion if key in results]
        unlisted.append(f"| {'/'.join(k for k in key if k)} | {fmt_time(statistics.median(values))} "
                        f"| {fmt_time(min(values))}–{fmt_time(max(values))} | {len(values)} of {len(runs)} |")

    node_lines = []
    if use_node:
        node_keys = [k for _, k, _ in NODE_ROWS]
        node = [load_figures(run, "node.json", node_keys) for run in runs]
        for row_key, node_key, label in NODE_ROWS:
            arbor_runs = by_key[row_key]
            node_runs = [n[node_key] for n in node]
            a, n, ratio, low, high = compare(arbor_runs, node_runs)
            node_lines.append(f"| {label} | {fmt_time(a)} | {fmt_time(n)} | {fmt_num(ratio, digits=3)}x "
                              f"| {fmt_num(low, digits=3)}–{fmt_num(high, digits=3)}x | {len(runs)} |")

    figure_lines = []
    files = {}
    for name in dict.fromkeys(f for f, _, _, _, _ in FIGURES):
        required = [k for f, k, _, _, _ in FIGURES if f == name]
        files[name] = [load_figures(run, name, required) for run in runs]
    listed = {(f, k) for f, k, _, _, _ in FIGURES}
    # Figures no row names are still shown, under their JSON key.
    extra = [(f, k, k, "", 2) for f in files for k in sorted({k for v in files[f] for k in v})
             if (f, k) not in listed]
    for name, key, label, unit, digits in FIGURES + extra:
        values = [v[key] for v in files[name] if key in v]
        med, low, high = statistics.median(values), min(values), max(values)
        bound = TARGETS[key][1] if key in TARGETS else None
        suffix = f" {unit}" if unit else ""
        figure_lines.append(
            f"| {label} (`{name}` {key}) | {fmt_num(med, bound, digits)}{suffix} "
            f"| {fmt_num(low, bound, digits)}–{fmt_num(high, bound, digits)}{suffix} "
            f"| {len(values)} of {len(runs)} | {verdict(key, med, low, high, suffix, digits)} |")
    return len(runs), sections, unlisted, node_lines, figure_lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default="target/arbor-bench",
                        help="the directory holding run-1, run-2, ... (default: target/arbor-bench)")
    parser.add_argument("--no-node", action="store_true",
                        help="node was not installed: no node.json is expected and the node table is left out")
    args = parser.parse_args()
    try:
        runs, sections, unlisted, node_lines, figure_lines = build(Path(args.root), not args.no_node)
    except ReportError as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 1

    print(f"Criterion medians of {runs} run(s) of bench/run.sh, then the median over the runs.")
    for section, lines in sections:
        print(f"\n### {section}\n")
        print("| benchmark | compared (measured / baseline) | measured | baseline | ratio (time) "
              "| per-run ratios, min–max | runs | target |")
        print("|---|---|---:|---:|---:|---:|---:|---|")
        print("\n".join(lines))
    print("\nratio: the measured side's median time over the baseline's (each the median over the runs "
          "of criterion's per-run median); below 1, the measured side takes less time. per-run ratios: "
          "each run's measured median over that run's baseline median. A target is met only when the "
          "ratio of the medians meets it; the range shows how far single runs strayed.")

    print("\n### arbor against node's child_process.fork (bench/node/fork_ipc.js)\n")
    if node_lines:
        print("| arbor row vs node's figure, and what node's figure measures | arbor | node "
              "| arbor/node (time) | per-run ratios, min–max | runs |")
        print("|---|---:|---:|---:|---:|---:|")
        print("\n".join(node_lines))
        print("\nnode's spawn figures include starting V8 and node's runtime in the child, which "
              "arbor's echo worker (a Rust binary) does not have: they say how much faster an arbor "
              "worker is up than a node one, not how much cheaper arbor's supervision is than node's. "
              "The round trips (JSON over node's IPC pipe against arbor's channel, one child each) are "
              "the fair IPC comparison.")
    else:
        print("Not measured: --no-node (node was not installed when bench/run.sh ran).")

    print("\n### memory and the daemon (target/release/worker-memory, target/release/daemon-probe)\n")
    print("| what | median | min–max | runs | target |")
    print("|---|---:|---:|---:|---|")
    print("\n".join(figure_lines))

    if unlisted:
        print("\n### criterion results no row above uses (listed so that none is dropped)\n")
        print("| benchmark | median | min–max | runs |")
        print("|---|---:|---:|---:|")
        print("\n".join(unlisted))
    return 0


if __name__ == "__main__":
    sys.exit(main())

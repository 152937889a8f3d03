#!/usr/bin/env python3
"""Drives the HTTP pool benchmark (see bench/http.sh, which builds first).

Each run measures, with the same wrk settings (RELOAD_ONLY=1: only the
rolling reloads; CLOSE_ONLY=1: only the rows with a new connection per
request, each mode against shared; SCALE_ONLY=1: only handoff pools of 2,
16 and 64 replicas with a new connection per request, with arbord's CPU
time per connection):
- standalone: one http-hello process on its own --listen address;
- shared, reuseport, handoff: arbord with one pool of 2 http-hello replicas;
- node: node's cluster module with 2 workers (when node is installed);
then fairness (requests per replica under wrk, handoff round-robin, counted
by bench/wrk/pids.lua) and a rolling reload under wrk (arborctl reload in a
loop for the whole wrk run, per mode, counting the reloads arborctl reports as
refused or failed beside the ones carried out). The report takes the median
over runs.
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
RUNS = int(os.environ.get("RUNS", "3"))
DURATION = int(os.environ.get("DURATION", "10"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "64"))
THREADS = 2
LIMIT = 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, condition):
    deadline = time.time() + LIMIT
    while not condition():
        if time.time() > deadline:
            raise RuntimeError(f"{what}: not within {LIMIT}s")
        time.sleep(0.02)


def answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return b"hello from pid" in s.recv(4096)
    except OSError:
        return False


def wrk(port, duration=DURATION, script=None, close=False):
    command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency"]
    if script:
        command += ["-s", script]
    if close:
        # A new connection per request: the distribution of connections.
        command += ["-H", "Connection: close"]
    command.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + LIMIT).stdout
    return parse_wrk(out)


def seconds(value, unit):
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def parse_wrk(out):
    result = {"raw": out}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    result["p99"] = seconds(*m.groups()) if m else None
    m = re.search(r"(\d+) requests in", out)
    result["requests"] = int(m.group(1)) if m else 0
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    result["errors"] = errors
    result["pids"] = {int(p): int(n) for p, n in re.findall(r"^pid (\d+) (\d+)$", out, re.M)}
    return result


class Arbord:
    """arbord with one pool `web` of http-hello replicas on `port`."""

    def __init__(self, mode, port, replicas=2):
        self.dir = tempfile.mkdtemp(prefix="arbor-http-bench-")
        self.socket = os.path.join(self.dir, "arbord.sock")
        config = os.path.join(self.dir, "arbord.toml")
        with open(config, "w") as f:
            f.write(
                f'[[pool]]\nname = "web"\nprogram = "{RELEASE}/http-hello"\n'
                f'replicas = {replicas}\nrestart = "on-failure"\n\n'
                f'[[pool.socket]]\nname = "http"\nlisten = "127.0.0.1:{port}"\nmode = "{mode}"\n'
            )
        self.process = subprocess.Popen(
            [f"{RELEASE}/arbord", "--config", config, "--socket", self.socket],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for("arbord's pool", lambda: self.running() == replicas)

    def ctl(self, *args):
        return subprocess.run(
            [f"{RELEASE}/arborctl", "--socket", self.socket, *args],
            capture_output=True, text=True, timeout=LIMIT,
        )

    def running(self):
        out = self.ctl("--json", "ps")
        if out.returncode != 0:
            return 0
        return sum(1 for w in json.loads(out.stdout) if w.get("pool") == "web" and w["state"] == "running")

    def close(self):
        self.ctl("shutdown")
        try:
            self.process.wait(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def spawned(command, port):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(command[0], lambda: answers(port))
    except RuntimeError:
        process.kill()
        raise
    return process


def stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def one_run():
    if os.environ.get("RELOAD_ONLY"):
        return reload_rows({})
    if os.environ.get("CLOSE_ONLY"):
        return close_rows({})
    if os.environ.get("SCALE_ONLY"):
        return scale_rows({})
    rows = {}
    port = free_port()
    p = spawned([f"{RELEASE}/http-hello", "--listen", f"127.0.0.1:{port}"], port)
    rows["standalone"] = wrk(port)
    stop(p)
    for mode in ["shared", "reuseport", "handoff"]:
        port = free_port()
        daemon = Arbord(mode, port)
        rows[mode] = wrk(port)
        daemon.close()
    if shutil.which("node"):
        port = free_port()
        p = spawned(["node", os.path.join(ROOT, "bench/node/cluster_http.js"), str(port), "2"], port)
        rows["node"] = wrk(port)
        stop(p)
    # Fairness: requests per replica, counted from the bodies, over
    # keep-alive connections and with a new connection per request.
    pids = os.path.join(ROOT, "bench/wrk/pids.lua")
    for mode in ["handoff", "shared", "reuseport"]:
        port = free_port()
        daemon = Arbord(mode, port)
        rows[f"fairness_{mode}"] = wrk(port, script=pids)
        rows[f"fairness_close_{mode}"] = wrk(port, script=pids, close=True)
        daemon.close()
    return reload_rows(rows)


def close_rows(rows):
    """A new connection per request (`Connection: close`) in each socket
    mode, the modes run in turn within the run: what a connection costs."""
    pids = os.path.join(ROOT, "bench/wrk/pids.lua")
    for mode in ["handoff", "shared", "reuseport"]:
        port = free_port()
        daemon = Arbord(mode, port)
        rows[f"fairness_close_{mode}"] = wrk(port, script=pids, close=True)
        daemon.close()
    return rows


SCALE_REPLICAS = [2, 16, 64]


def cpu_seconds(pid):
    """A process's user + system CPU time so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scale_rows(rows):
    """A handoff pool of 2, 16 and 64 replicas under wrk with a new
    connection per request: requests/s, and arbord's own CPU time per
    connection handed out (its dispatch cost as the replicas grow)."""
    for replicas in SCALE_REPLICAS:
        port = free_port()
        daemon = Arbord("handoff", port, replicas=replicas)
        before = cpu_seconds(daemon.process.pid)
        result = wrk(port, close=True)
        result["arbord_cpu"] = cpu_seconds(daemon.process.pid) - before
        rows[f"scale_handoff_{replicas}"] = result
        daemon.close()
    return rows


def reload_rows(rows):
    """Rolling reloads, back to back, for the whole wrk run, per mode."""
    for mode in ["shared", "reuseport", "handoff"]:
        port = free_port()
        daemon = Arbord(mode, port)
        load = subprocess.Popen(
            ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency",
             f"http://127.0.0.1:{port}/"],
            stdout=subprocess.PIPE, text=True,
        )
        # Every reload is counted: the ones arbord carried out and the ones
        # arborctl reports as refused or failed (a non-zero exit, or no
        # answer within LIMIT), with the first failure's message kept.
        reloads, refused, first_refusal = 0, 0, None
        while load.poll() is None:
            try:
                out = daemon.ctl("reload", "web")
                failure = None if out.returncode == 0 else (
                    f"exit {out.returncode}: {out.stderr.strip() or out.stdout.strip() or '(no output)'}")
            except subprocess.TimeoutExpired:
                failure = f"no answer within {LIMIT} s"
            if failure is None:
                reloads += 1
            else:
                refused += 1
                if first_refusal is None:
                    first_refusal = failure
        result = parse_wrk(load.stdout.read())
        result["reloads"] = reloads
        result["refused"] = refused
        result["first_refusal"] = first_refusal
        rows[f"reload_{mode}"] = result
        daemon.close()
    return rows


def main():
    out_dir = os.path.join(ROOT, "target", "arbor-bench-http")
    os.makedirs(out_dir, exist_ok=True)
    runs = []
    for i in range(RUNS):
        rows = one_run()
        runs.append(rows)
        with open(os.path.join(out_dir, f"run-{i + 1}.json"), "w") as f:
            json.dump(rows, f, indent=1)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v['rps']:.0f}/s" for k, v in rows.items()), file=sys.stderr)
    report(runs)


def median(runs, row, key):
    values = [r[row][key] for r in runs if row in r and r[row].get(key) is not None]
    return statistics.median(values) if values else None


def report(runs):
    if os.environ.get("RELOAD_ONLY"):
        return report_reloads(runs)
    if os.environ.get("CLOSE_ONLY"):
        return report_close(runs)
    if os.environ.get("SCALE_ONLY"):
        return report_scale(runs)
    base_rps = median(runs, "standalone", "rps")
    base_p99 = median(runs, "standalone", "p99")
    node_rps = median(runs, "node", "rps")
    print(f"\nwrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}s, median of {len(runs)} runs\n")
    print("| server | requests/s | p99 latency | rps / standalone | p99 / standalone | rps / node |")
    print("|---|---:|---:|---:|---:|---:|")
    for row, label in [("standalone", "http-hello, 1 process"), ("shared", "arbord pool, shared"),
                       ("reuseport", "arbord pool, reuseport"), ("handoff", "arbord pool, handoff round-robin"),
                       ("node", "node cluster, 2 workers")]:
        rps, p99 = median(runs, row, "rps"), median(runs, row, "p99")
        if rps is None:
            continue
        node = f"{rps / node_rps:.2f}x" if node_rps and row != "node" else ""
        print(f"| {label} | {rps:.0f} | {p99 * 1000:.2f} ms | {rps / base_rps:.2f}x | {p99 / base_p99:.2f}x | {node} |")
    print("\n| requests per replica, max/min | keep-alive connections | a connection per request |")
    print("|---|---:|---:|")
    for mode in ["handoff", "shared", "reuseport"]:
        cells = []
        for row in [f"fairness_{mode}", f"fairness_close_{mode}"]:
            ratios = []
            for r in runs:
                pids = r[row]["pids"]
                ratios.append(max(pids.values()) / min(pids.values()) if len(pids) >= 2 else float("inf"))
            cells.append(f"{statistics.median(ratios):.3f} (runs {', '.join(f'{x:.2f}' for x in ratios)})")
        print(f"| {mode} | {cells[0]} | {cells[1]} |")
    report_close(runs)
    report_reloads(runs)


def report_close(runs):
    """Requests/s with a new connection per request, each mode against
    shared (the kernel spreading accepts, nothing in between) run by run."""
    print(f"\n| a connection per request (wrk -H 'Connection: close') | requests/s | / shared "
          f"| per-run ratios, min–max | runs |")
    print("|---|---:|---:|---:|---:|")
    for mode in ["shared", "reuseport", "handoff"]:
        row = f"fairness_close_{mode}"
        rps = median(runs, row, "rps")
        ratios = [r[row]["rps"] / r["fairness_close_shared"]["rps"] for r in runs]
        print(f"| {mode} | {rps:.0f} | {rps / median(runs, 'fairness_close_shared', 'rps'):.2f}x "
              f"| {min(ratios):.2f}–{max(ratios):.2f}x | {len(runs)} |")


def report_scale(runs):
    """Dispatch cost per connection as a handoff pool grows."""
    print("\n| handoff pool, a connection per request | requests/s | arbord CPU per connection "
          "| per-run, min–max | runs |")
    print("|---|---:|---:|---:|---:|")
    for replicas in SCALE_REPLICAS:
        row = f"scale_handoff_{replicas}"
        per = [r[row]["arbord_cpu"] / r[row]["requests"] * 1e6 for r in runs]
        print(f"| {replicas} replicas | {median(runs, row, 'rps'):.0f} | {statistics.median(per):.1f} µs "
              f"| {min(per):.1f}–{max(per):.1f} µs | {len(runs)} |")


def report_reloads(runs):
    """Per mode and run: reloads carried out, reloads refused or failed,
    wrk's requests and its failed requests; then each first refusal."""
    print("\n| rolling reload under wrk | reloads | refused | requests | failed |")
    print("|---|---:|---:|---:|---:|")
    refusals = []
    for mode in ["shared", "reuseport", "handoff"]:
        for i, r in enumerate(runs):
            row = r[f"reload_{mode}"]
            print(f"| {mode}, run {i + 1} | {row['reloads']} | {row['refused']} | {row['requests']} "
                  f"| {row['errors']} |")
            if row["first_refusal"] is not None:
                refusals.append(f"{mode}, run {i + 1}: {row['first_refusal']}")
    print("\n(reloads: `arborctl reload web` exited 0; refused: it exited non-zero or gave no answer; "
          "failed: wrk's socket errors and non-2xx replies)")
    for line in refusals:
        print(f"first refused reload, {line}")


if __name__ == "__main__":
    main()

//! Pool helpers for the tests that run arbord's pools: configuration text,
//! the replicas as `arborctl ps --json` shows them, and the verdicts on a
//! load run.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::arbord::{wait_until, Daemon, LIMIT};
use crate::http::{Client, Stats, Target};

/// How long the load runs around reloads and scaling ("about 20 s").
pub const LOAD_TIME: Duration = Duration::from_secs(20);

/// The bound on one reload or scale: each step may wait for a replica's
/// Ready (ready_timeout 30 s) and an old one's close (close_grace 10 s, then
/// SIGTERM), and a loaded 2-core machine is slow.
pub const OPERATION_LIMIT: Duration = Duration::from_secs(90);

/// The tests that put a machine under load take turns: run side by side on
/// two cores, they would measure each other.
static UNDER_LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this test's turn to put the machine under load.
pub fn load_turn() -> std::sync::MutexGuard<'static, ()> {
    UNDER_LOAD.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `[[pool]]` of `program` replicas with one socket.
pub fn pool_running(
    name: &str,
    mode: &str,
    listen: &str,
    replicas: u32,
    program: &Path,
    args: &[String],
) -> String {
    format!(
        "[[pool]]\nname = {name:?}\nprogram = {:?}\nargs = {args:?}\nreplicas = {replicas}\nrestart = \"on-failure\"\nclose_grace = \"10s\"\nready_timeout = \"30s\"\n\n[[pool.socket]]\nname = \"{name}-socket\"\nlisten = {listen:?}\nmode = {mode:?}\n\n",
        program.display().to_string()
    )
}

/// A loopback TCP address on `port`, as configuration text and as a target.
pub fn tcp(port: u16) -> (String, Target) {
    let addr = format!("127.0.0.1:{port}");
    let target = Target::Tcp(addr.parse().unwrap());
    (addr, target)
}

/// The pool's replicas from `arborctl ps --json`: (id, pid, state, connections).
pub fn replicas(daemon: &Daemon, pool: &str) -> Vec<(u64, u32, String, u64)> {
    daemon
        .ps_json()
        .into_iter()
        .filter(|w| w["pool"] == pool)
        .map(|w| {
            (
                w["id"].as_u64().unwrap(),
                w["pid"].as_u64().unwrap() as u32,
                w["state"].as_str().unwrap().to_string(),
                w["connections"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The pids of the pool's running replicas.
pub fn running_pids(daemon: &Daemon, pool: &str) -> BTreeSet<u32> {
    replicas(daemon, pool)
        .into_iter()
        .filter(|r| r.2 == "running")
        .map(|r| r.1)
        .collect()
}

/// Waits until `count` replicas of `pool` run; their pids.
pub fn wait_running(daemon: &Daemon, pool: &str, count: usize) -> BTreeSet<u32> {
    wait_until(&format!("{count} replicas of {pool} running"), || {
        running_pids(daemon, pool).len() == count
    });
    running_pids(daemon, pool)
}

/// Fresh connections, eight at a time, until every pid in `pids` answered.
pub fn served_by_all(target: &Target, pids: &BTreeSet<u32>) {
    let deadline = Instant::now() + LIMIT;
    let mut seen = BTreeSet::new();
    while !pids.is_subset(&seen) {
        assert!(
            Instant::now() < deadline,
            "only {seen:?} of {pids:?} answered within {LIMIT:?}"
        );
        let burst: Vec<_> = (0..8)
            .map(|_| {
                let target = target.clone();
                std::thread::spawn(move || Client::new(target).get())
            })
            .collect();
        for thread in burst {
            let reply = thread.join().unwrap().expect("a request");
            assert!(pids.contains(&reply.pid), "{} is not a replica", reply.pid);
            seen.insert(reply.pid);
        }
    }
}

/// Prints what the load saw and fails if any request failed.
fn none_failed(stats: &Stats, what: &str) {
    eprintln!(
        "{what}: {} requests, {} failed, per pid {:?}",
        stats.ok, stats.failed, stats.by_pid
    );
    assert_eq!(
        stats.failed,
        0,
        "{what}: {} of {} requests failed: {:?}",
        stats.failed,
        stats.ok + stats.failed,
        stats.reasons
    );
}

/// Fails unless the load saw no failed request and was answered both by a
/// replica of `before` (running when the load began) and by one of `after`
/// (running when it stopped): it ran across every operation in between,
/// however slow the machine (a slow server on a loaded machine may answer
/// fewer than the 100 requests [`assert_no_failure`] asks for).
pub fn assert_no_failure_across(
    stats: &Stats,
    what: &str,
    before: &BTreeSet<u32>,
    after: &BTreeSet<u32>,
) {
    none_failed(stats, what);
    for (replicas, when) in [(before, "before"), (after, "after")] {
        assert!(
            replicas.iter().any(|pid| stats.by_pid.contains_key(pid)),
            "{what}: no request answered by a replica from {when} ({replicas:?}): {:?}",
            stats.by_pid
        );
    }
}

/// Fails unless the load run saw no failed request and more than 100 answers.
pub fn assert_no_failure(stats: &Stats, what: &str) {
    none_failed(stats, what);
    assert!(
        stats.ok > 100,
        "{what}: only {} requests answered",
        stats.ok
    );
}

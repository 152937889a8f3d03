//! Reaping what workers leave behind.
//!
//! Each worker is reaped by its own driver (its pidfd, then `wait4` of its
//! pid), and its whole process group is killed when it exits. Processes
//! that leave the group (`setsid`, a daemonising double fork) or outlive a
//! worker that died are orphans: with [`become_subreaper`] they are
//! re-parented to this process instead of to init, and then:
//!
//! - an orphan that exits is reaped by [`reap_orphans`] (arbord runs
//!   [`reap_orphans_forever`], woken by SIGCHLD): never left a zombie;
//! - one still running is killed at shutdown by [`kill_orphans`], after the
//!   workers are gone: nothing a worker started outlives arbord.
//!
//! With a cgroup per worker ([`crate::cgroup`], where arbord has a writable
//! cgroup v2 subtree) an escaped descendant is killed with its worker: the
//! cgroup knows whose it is. Without one, an escaped descendant runs on
//! after its worker's exit until arbord shuts down (which worker it came
//! from is not known once it left the group). Not guaranteed either way: a
//! descendant that escapes to another process tree entirely (re-parented
//! above arbord, or started through another service), or one moved out of
//! its cgroup by a worker with write access to the hierarchy.
//!
//! Only for a process whose children are all workers (arbord): the orphan
//! reaper takes any other child's status too.
//!
//! Workers are told apart from orphans by a process-wide set of the pids
//! this crate started. The start and the pid's entry in the set happen
//! under a gate the orphan reaper holds for its whole round, so it never
//! takes a worker's exit status. The reaper only tries the gate: a start
//! can wait in the kernel for as long as the host holds its cgroup mutex
//! (tens of seconds have been seen) or its child takes to reach its exec,
//! and an async thread must not wait with it; the round is then skipped and
//! the next SIGCHLD or tick does it. The set
//! itself is only ever locked for a moment.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sys;

static MANAGED: Mutex<BTreeSet<libc::pid_t>> = Mutex::new(BTreeSet::new());
/// Held across a start and its pid's entry in [`MANAGED`], and by the orphan
/// reaper for its round.
static FORK_GATE: Mutex<()> = Mutex::new(());

/// The pids of live workers (forked here, not yet reaped by their driver).
fn managed() -> MutexGuard<'static, BTreeSet<libc::pid_t>> {
    MANAGED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The gate a start holds until its pid is registered with [`registered`].
pub(crate) fn fork_gate() -> MutexGuard<'static, ()> {
    FORK_GATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// `pid` was just started here (under [`fork_gate`]): a worker, not an orphan.
pub(crate) fn registered(pid: libc::pid_t) {
    managed().insert(pid);
}

/// `pid` was reaped by its owner.
pub(crate) fn forget(pid: libc::pid_t) {
    managed().remove(&pid);
}

/// Kills `pid`'s process group and reaps `pid`, for a child that was
/// started but cannot be supervised. The reap runs on its own thread; a
/// killed child is reaped within milliseconds.
pub(crate) fn kill_and_reap(pid: libc::pid_t) {
    let _ = sys::killpg(pid, libc::SIGKILL);
    std::thread::spawn(move || {
        while let Ok(None) = sys::try_reap(pid) {
            std::thread::sleep(Duration::from_millis(1));
        }
        forget(pid);
    });
}

/// Makes this process the reaper of its orphaned descendants
/// (`PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> std::io::Result<()> {
    sys::set_child_subreaper()
}

/// Children of this process that are not workers: orphans re-parented here.
fn orphans(managed: &BTreeSet<libc::pid_t>) -> Vec<libc::pid_t> {
    crate::procfs::children()
        .into_iter()
        .filter_map(|pid| libc::pid_t::try_from(pid).ok())
        .filter(|pid| !managed.contains(pid))
        .collect()
}

/// Reaps every orphan that has exited; returns their pids and raw statuses.
/// Nothing when a fork is under way (see the module doc).
pub fn reap_orphans() -> Vec<(u32, i32)> {
    let _gate = match FORK_GATE.try_lock() {
        Ok(gate) => gate,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return Vec::new(),
    };
    let managed = managed().clone();
    orphans(&managed)
        .into_iter()
        .filter_map(|pid| match sys::try_reap(pid) {
            Ok(Some(reaped)) => Some((pid as u32, reaped.status)),
            _ => None,
        })
        .collect()
}

/// Reaps orphans for as long as the task runs: at each SIGCHLD, and every
/// second in case a signal was coalesced or missed.
pub async fn reap_orphans_forever() {
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        match &mut sigchld {
            Some(signal) => {
                tokio::select! {
                    _ = signal.recv() => {}
                    _ = tick.tick() => {}
                }
            }
            None => {
                tick.tick().await;
            }
        }
        for (pid, status) in reap_orphans() {
            tracing::info!(pid, status, "reaped an orphaned descendant of a worker");
        }
    }
}

/// Kills every orphan still running (SIGKILL) and reaps it, waiting at most
/// `limit`; returns how many there were. For shutdown, once the workers are gone.
pub fn kill_orphans(limit: Duration) -> usize {
    // Not behind the gate: at shutdown a worker forked this moment may go
    // with the orphans, and a fork stuck in the kernel must not hold the
    // shutdown up.
    let pids = orphans(&managed().clone());
    for pid in &pids {
        let _ = sys::kill(*pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + limit;
    let mut left: Vec<libc::pid_t> = pids.clone();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|pid| matches!(sys::try_reap(*pid), Ok(None)));
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    pids.len()
}

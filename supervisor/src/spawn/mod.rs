//! Starting a worker process: `clone3(CLONE_VM | CLONE_VFORK)` into its
//! cgroup, then exec, from one long-lived spawner thread.
//!
//! # Why one dedicated spawner thread
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that started the child exits,
//! not the process. A start from a tokio worker or blocking-pool thread
//! (the pool retires idle threads after seconds) would later kill healthy
//! workers. So every start happens on one thread, `arbor-spawner`, that
//! lives exactly as long as the [`crate::Supervisor`] and the tasks of
//! every worker it runs (each running worker's spawn requests are served
//! by a task that holds a clone): when the last of them is gone the thread
//! exits and the kernel kills what is left, which is the "workers die with
//! their supervisor" guarantee (and when the whole process dies, the same
//! happens).
//!
//! One thread, not several: an `execve` of the supervisor's own process
//! (replacing arbord in place) ends every thread but the one that calls it,
//! and the children of each thread so ended get their death signal. Workers
//! started from one thread can all outlive such an exec, if that thread is
//! the one that calls it.
//!
//! The thread sleeps from each clone until the child has exec'ed
//! ([`vfork`](self::vfork)), a fraction of a millisecond; a child stuck
//! before its exec (a `cwd` on a hung mount) holds up the starts behind it
//! until it is killed at [`EXEC_LIMIT`], and a start whose caller stopped
//! waiting meanwhile is skipped.
//!
//! # Why our own clone rather than `std::process::Command`
//!
//! `LISTEN_PID` must be the child's own pid, which exists only after the
//! clone, and setting an environment variable there is not
//! async-signal-safe. Here the parent prepares every byte before the clone:
//! `argv`, `envp` with a reserved `LISTEN_PID=` slot, the fds already moved
//! above the numbers they are dup'ed to. Between clone and exec the child
//! only calls async-signal-safe functions (rt_sigaction, sigprocmask,
//! setpgid, prctl, getppid, dup2, close_range, chdir, getpid, execve,
//! write, _exit) and writes digits into the slot; it allocates nothing and
//! takes no lock (the process is multi-threaded; another thread may hold
//! the allocator's lock at that moment). And `Command` cannot start a child
//! in its cgroup (`CLONE_INTO_CGROUP`).
//!
//! A failure in the child is reported through a close-on-exec pipe (the
//! step and errno); end of file on that pipe means `execve` succeeded.
//!
//! Where `clone3` or the trampoline is missing (Linux before 5.3, another
//! architecture) the child is forked instead, and runs the same steps.
//!
//! # nix and libc here
//!
//! The child's calls go through nix where its wrapper is the bare syscall
//! (it allocates nothing and takes no lock): sigprocmask, setpgid,
//! prctl, getppid, chdir (on a `CStr`, which nix passes through as it is),
//! getpid, write. These stay on libc: `execve`, because nix's builds a `Vec`
//! of pointers (an allocation after the clone); `dup2`, because nix's takes
//! the target as an `OwnedFd` (an fd that must already be open) and its
//! `dup2_raw` does not check the call's result; `rt_sigaction`, because
//! nix's `sigaction` goes through the C library's, which refuses the
//! signals the C library keeps for itself, and names no real-time signal;
//! `_exit`, `close_range` and `clone3`, which nix does not have.

mod vfork;

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc};

use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::unistd::{chdir, getpid, getppid, setpgid, write, ForkResult, Pid};

use tokio::sync::oneshot;

use crate::sys;
use vfork::{BlockedSignals, ChildStack};

/// Steps of the child, as reported through the error pipe.
const STEPS: [&str; 6] = [
    "setpgid",
    "prctl(PR_SET_PDEATHSIG)",
    "dup2",
    "chdir",
    "execve",
    "close_range(CLOSE_RANGE_CLOEXEC)",
];

/// Everything the child needs, prepared before the fork. `Send`, so it can
/// travel to the spawner thread; the pointer arrays are built there.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) path: CString,
    pub(crate) argv: Vec<CString>,
    pub(crate) envp: Vec<CString>,
    /// Whether to append a `LISTEN_PID=<child pid>` entry.
    pub(crate) listen_pid: bool,
    pub(crate) cwd: Option<CString>,
    /// (fd to give, number it gets in the child).
    pub(crate) fds: Vec<(OwnedFd, RawFd)>,
    /// The worker's cgroup directory (close-on-exec): the child is created
    /// in it (`clone3` with `CLONE_INTO_CGROUP`).
    pub(crate) cgroup: Option<OwnedFd>,
}

/// A started child.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) pid: libc::pid_t,
    pub(crate) pidfd: OwnedFd,
    /// The errno with which the child could not be created in its cgroup,
    /// if so (not fatal: it was forked outside it).
    pub(crate) cgroup_refused: Option<i32>,
}

/// A child just started: its report pipe says how its exec went.
#[derive(Debug)]
struct Forked {
    pid: libc::pid_t,
    pidfd: io::Result<OwnedFd>,
    reports: OwnedFd,
    cgroup_refused: Option<i32>,
}

/// How long a child may take from its start to its exec (a `cwd` or
/// program on a hung network or FUSE mount can stall it) before it is
/// killed.
const EXEC_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a start failed.
#[derive(Debug)]
pub(crate) enum StartError {
    /// In the parent: preparing, forking, pidfd.
    Parent(io::Error),
    /// In the child, at this step.
    Child(&'static str, io::Error),
}

/// What to start, where the child's pid goes as soon as it exists (for a
/// kill if it never gets to its exec), and where the result goes.
type Request = (
    Prepared,
    Arc<AtomicI32>,
    oneshot::Sender<Result<Forked, StartError>>,
);

/// Handle to the spawner thread; the thread ends when the last handle drops.
#[derive(Debug)]
pub(crate) struct Spawner {
    requests: mpsc::Sender<Request>,
}

impl Spawner {
    pub(crate) fn start() -> io::Result<Self> {
        let (requests, incoming) = mpsc::channel::<Request>();
        let mut stack = ChildStack::new()?;
        std::thread::Builder::new()
            .name("arbor-spawner".into())
            .spawn(move || {
                for (prepared, pid_slot, reply) in incoming {
                    if reply.is_closed() {
                        // Its caller stopped waiting (cancelled, or out of
                        // time behind a child stuck before its exec).
                        continue;
                    }
                    let started = start_process(prepared, &mut stack, &pid_slot);
                    if let Err(Ok(orphan)) = reply.send(started) {
                        // The caller stopped waiting (its spawn was cancelled,
                        // or its child never got to exec): nobody will
                        // supervise this child, so it must not live.
                        crate::reap::kill_and_reap(orphan.pid);
                    }
                }
            })?;
        Ok(Self { requests })
    }

    /// Starts `prepared` on the spawner thread, then reads (on the blocking
    /// pool) how its exec went; at most [`EXEC_LIMIT`] for each.
    pub(crate) async fn start_child(&self, prepared: Prepared) -> Result<Started, StartError> {
        let (reply, mut result) = oneshot::channel();
        let gone = || StartError::Parent(io::Error::other("spawner thread is gone"));
        let pid_slot = Arc::new(AtomicI32::new(0));
        self.requests
            .send((prepared, Arc::clone(&pid_slot), reply))
            .map_err(|_| gone())?;
        let forked = match tokio::time::timeout(EXEC_LIMIT, &mut result).await {
            Ok(forked) => forked.map_err(|_| gone())??,
            Err(_) => {
                // The spawner thread still sleeps on a child that has not
                // exec'ed (this one, or one before it): kill this one if it
                // is that child (the thread then wakes), and let the spawner
                // reap it, unless its result came just now.
                let pid = pid_slot.load(Ordering::SeqCst);
                if pid > 0 {
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
                result.close();
                if let Ok(Ok(late)) = result.try_recv() {
                    crate::reap::kill_and_reap(late.pid);
                }
                return Err(not_started());
            }
        };
        let pid = forked.pid;
        // Cancelled from here on (the caller dropped this future), the child
        // is killed: nobody would supervise it.
        let mut guard = KillUnlessStarted(Some(pid));
        let reports = forked.reports;
        let waited = tokio::time::timeout(
            EXEC_LIMIT,
            tokio::task::spawn_blocking(move || read_report(&reports)),
        )
        .await;
        let fatal = match waited {
            Ok(Ok(reports)) => reports,
            Ok(Err(_)) => return Err(gone()),
            Err(_) => return Err(not_started()),
        };
        if let Some((step, errno)) = fatal {
            guard.0 = None;
            // The child exits right after its report; reap it so it leaves
            // no zombie.
            tokio::task::spawn_blocking(move || {
                while matches!(sys::try_reap(pid), Ok(None)) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                crate::reap::forget(pid);
            });
            return Err(StartError::Child(step, io::Error::from_raw_os_error(errno)));
        }
        let pidfd = forked.pidfd.map_err(StartError::Parent)?;
        guard.0 = None;
        Ok(Started {
            pid,
            pidfd,
            cgroup_refused: forked.cgroup_refused,
        })
    }
}

/// A child that did not get to its exec within [`EXEC_LIMIT`].
fn not_started() -> StartError {
    StartError::Child(
        "exec",
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("not started within {EXEC_LIMIT:?}"),
        ),
    )
}

/// Moves each fd above every target number, so the child's dup2 calls can
/// never overwrite a source that is still to be copied.
pub(crate) fn above_targets(fds: Vec<(OwnedFd, RawFd)>) -> io::Result<Vec<(OwnedFd, RawFd)>> {
    let floor = fds.iter().map(|(_, target)| *target).max().unwrap_or(2) + 1;
    fds.into_iter()
        .map(|(fd, target)| Ok((sys::dup_at_least(fd.as_fd(), floor.max(10))?, target)))
        .collect()
}

/// Kills and reaps a started child unless it was handed over.
struct KillUnlessStarted(Option<libc::pid_t>);

impl Drop for KillUnlessStarted {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            crate::reap::kill_and_reap(pid);
        }
    }
}

fn start_process(
    prepared: Prepared,
    stack: &mut ChildStack,
    pid_slot: &AtomicI32,
) -> Result<Forked, StartError> {
    // Everything the child touches is built here, before the clone.
    let mut listen_pid_slot = prepared.listen_pid.then(|| {
        let mut slot = b"LISTEN_PID=".to_vec();
        slot.resize(slot.len() + 24, 0);
        slot
    });
    let argv: Vec<*const libc::c_char> = prepared
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut envp: Vec<*const libc::c_char> = prepared.envp.iter().map(|e| e.as_ptr()).collect();
    if let Some(slot) = &listen_pid_slot {
        envp.push(slot.as_ptr().cast());
    }
    envp.push(std::ptr::null());
    let slot_digits: *mut u8 = match &mut listen_pid_slot {
        Some(slot) => slot[b"LISTEN_PID=".len()..].as_mut_ptr(),
        None => std::ptr::null_mut(),
    };
    let dups: Vec<(RawFd, RawFd)> = prepared
        .fds
        .iter()
        .map(|(fd, target)| (fd.as_raw_fd(), *target))
        .collect();
    let cwd = prepared.cwd.as_ref().map(|c| c.as_ptr());
    // The error pipe must not sit on a number the child dup2's onto.
    let floor = prepared
        .fds
        .iter()
        .map(|(_, target)| *target)
        .max()
        .unwrap_or(2)
        + 1;
    let (error_read, error_write) = sys::pipe()
        .and_then(|(read, write)| Ok((read, sys::dup_at_least(write.as_fd(), floor.max(10))?)))
        .map_err(StartError::Parent)?;
    let error_fd = error_write.as_raw_fd();
    let parent = nix::unistd::getpid().as_raw();

    let mut child = ChildPlan {
        path: prepared.path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        slot_digits,
        dups: &dups,
        cwd,
        error_fd,
        parent,
        highest_signal: libc::SIGRTMAX(),
    };
    // The orphan reaper must never take a worker's status: the pid is
    // registered as managed before the gate the reaper's round needs opens.
    let gate = crate::reap::fork_gate();
    let cgroup = prepared.cgroup.as_ref().map(AsRawFd::as_raw_fd);
    let blocked = BlockedSignals::now().map_err(StartError::Parent)?;
    // SAFETY: the child runs only `child.run` (through `child_entry`), which
    // makes async-signal-safe calls on memory prepared above, with every
    // signal blocked until it has reset their handlers, and never returns;
    // `child` lives until the clone returns.
    let started = unsafe { start(&mut child, stack, cgroup, pid_slot) };
    drop(blocked);
    let (pid, pidfd, cgroup_refused) = started.map_err(StartError::Parent)?;
    crate::reap::registered(pid);
    drop(gate);
    drop(error_write);
    // The child has exec'ed (or failed) and no longer reads any of it.
    drop(prepared);
    Ok(Forked {
        pid,
        pidfd,
        reports: error_read,
        cgroup_refused,
    })
}

/// Starts the child of `plan`: with [`vfork::clone_vfork`], in the cgroup
/// whose directory is `cgroup` where there is one (no migration afterwards,
/// whose lock can stall for seconds under load), else, or where the kernel
/// refuses it (the errno is returned beside the pid), outside it; with a
/// fork where there is no `clone3`. The pid, its pidfd (a pidfd_open right
/// after a fork, while the unreaped pid is surely ours), and the cgroup's
/// refusal.
///
/// # Safety
///
/// `plan.run` is what the child runs: every signal must be blocked on this
/// thread, and `plan` must point at memory that stays valid until this
/// returns.
unsafe fn start(
    plan: &mut ChildPlan<'_>,
    stack: &mut ChildStack,
    cgroup: Option<RawFd>,
    pid_slot: &AtomicI32,
) -> io::Result<(libc::pid_t, io::Result<OwnedFd>, Option<i32>)> {
    let arg = (plan as *mut ChildPlan<'_>).cast::<std::ffi::c_void>();
    let mut cgroup_refused = None;
    let mut clone = |cgroup| {
        // SAFETY: the caller's promise; child_entry runs plan.run.
        unsafe { vfork::clone_vfork(stack, cgroup, pid_slot, child_entry, arg) }
    };
    let mut cloned = clone(cgroup);
    if let (Some(_), Err(refusal)) = (cgroup, &cloned) {
        if refusal.raw_os_error() != Some(libc::ENOSYS) {
            cgroup_refused = refusal.raw_os_error();
            cloned = clone(None);
        }
    }
    match cloned {
        Ok(child) => return Ok((child.pid, Ok(child.pidfd), cgroup_refused)),
        Err(e) if e.raw_os_error() != Some(libc::ENOSYS) => return Err(e),
        Err(_) => {}
    }
    // SAFETY: the caller's promise: the child makes async-signal-safe calls only.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            // SAFETY: we are the child of a fork; see ChildPlan::run.
            unsafe { plan.run() }
        }
        ForkResult::Parent { child } => {
            let pid = child.as_raw();
            pid_slot.store(pid, Ordering::SeqCst);
            Ok((pid, sys::pidfd_open(pid), cgroup.map(|_| libc::ENOSYS)))
        }
    }
}

/// Where a child of [`vfork::clone_vfork`] starts, on its own stack.
extern "C" fn child_entry(plan: *mut std::ffi::c_void) -> ! {
    // SAFETY: `plan` is the ChildPlan that `start` passed, valid while the
    // parent thread sleeps until this child execs or exits.
    let plan = unsafe { &*plan.cast::<ChildPlan<'_>>() };
    // SAFETY: we are the child of `start`, with every signal blocked.
    unsafe { plan.run() }
}

/// Reads the child's report until end of file (its exec succeeded): the
/// step and errno it failed with, if it did.
fn read_report(pipe: &OwnedFd) -> Option<(&'static str, i32)> {
    let pipe = pipe.try_clone().ok()?;
    let mut file = std::fs::File::from(pipe);
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        match io::Read::read(&mut file, &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if got < report.len() {
        return None;
    }
    let (step, errno) = report.split_at(4);
    let step = u32::from_ne_bytes(step.try_into().unwrap_or_default());
    let errno = i32::from_ne_bytes(errno.try_into().unwrap_or_default());
    Some((STEPS.get(step as usize).copied().unwrap_or("exec"), errno))
}

/// Raw pointers into memory the parent prepared; all the child may touch.
struct ChildPlan<'a> {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    slot_digits: *mut u8,
    dups: &'a [(RawFd, RawFd)],
    cwd: Option<*const libc::c_char>,
    error_fd: RawFd,
    parent: libc::pid_t,
    /// The highest signal number (SIGRTMAX, read before the clone).
    highest_signal: i32,
}

impl ChildPlan<'_> {
    /// The child between its start and its exec.
    ///
    /// # Safety
    ///
    /// Call only in the child of [`start`], with every signal blocked and
    /// every pointer valid (they point into the parent's memory, which the
    /// child shares or has a copy of). Only async-signal-safe functions are
    /// called.
    unsafe fn run(&self) -> ! {
        // Signal state: no handler of the parent's may run here (the memory
        // may be the parent's own), and a worker starts as systemd starts a
        // service: every signal at its default (Rust ignores SIGPIPE), none
        // blocked (the spawner blocked them all around the clone).
        // SAFETY: we are that child, with every signal blocked.
        unsafe { vfork::reset_signal_dispositions(self.highest_signal) };
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);

        // Its own process group, so a signal to the group reaches what it forks.
        if setpgid(Pid::from_raw(0), Pid::from_raw(0)).is_err() {
            // SAFETY: async-signal-safe failure path.
            unsafe { self.fail(0) };
        }
        // Die with the spawner thread; then close the race where the parent
        // died before the prctl took effect.
        if set_pdeathsig(Signal::SIGKILL).is_err() {
            // SAFETY: async-signal-safe failure path.
            unsafe { self.fail(1) };
        }
        if getppid().as_raw() != self.parent {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(127) };
        }
        for &(from, to) in self.dups {
            // dup2 leaves the new number without FD_CLOEXEC: the only fds
            // that survive exec are these and stdio.
            // SAFETY: both are plain fd numbers; `from` is open.
            if unsafe { libc::dup2(from, to) } < 0 {
                // SAFETY: async-signal-safe failure path.
                unsafe { self.fail(2) };
            }
        }
        // Fds the supervisor itself inherited without close-on-exec (from a
        // careless parent) must not reach the worker either: mark every fd
        // above the ones given close-on-exec. The error pipe is already
        // close-on-exec, so it stays open until exec succeeds.
        let first_free = self.dups.iter().map(|&(_, to)| to).max().unwrap_or(2) + 1;
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes fd flags.
        if unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first_free as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        } != 0
        {
            // SAFETY: async-signal-safe failure path.
            unsafe { self.fail(5) };
        }
        if let Some(cwd) = self.cwd {
            // SAFETY: `cwd` is a NUL-terminated string prepared before fork
            // (from_ptr only measures it).
            if chdir(unsafe { CStr::from_ptr(cwd) }).is_err() {
                // SAFETY: async-signal-safe failure path.
                unsafe { self.fail(3) };
            }
        }
        if !self.slot_digits.is_null() {
            let pid = getpid().as_raw();
            // SAFETY: the slot has 24 writable bytes, enough for any pid and a NUL.
            unsafe { write_decimal(self.slot_digits, pid as u32) };
        }
        // SAFETY: path, argv and envp are NUL-terminated and null-terminated
        // arrays prepared before fork.
        unsafe { libc::execve(self.path, self.argv, self.envp) };
        // SAFETY: async-signal-safe failure path.
        unsafe { self.fail(4) }
    }

    /// Reports `step` and errno on the error pipe and exits 127.
    ///
    /// # Safety
    ///
    /// Only in the child after fork.
    unsafe fn fail(&self, step: u32) -> ! {
        // Reading errno this way neither allocates nor locks.
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let mut report = [0u8; 8];
        report[..4].copy_from_slice(&step.to_ne_bytes());
        report[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: the error pipe's write end is open until exec succeeds.
        let _ = write(unsafe { BorrowedFd::borrow_raw(self.error_fd) }, &report);
        // SAFETY: _exit is async-signal-safe and does not run atexit handlers.
        unsafe { libc::_exit(127) }
    }
}

/// Writes `value` in decimal followed by a NUL at `out`, without allocating.
///
/// # Safety
///
/// `out` must have room for 11 bytes.
unsafe fn write_decimal(out: *mut u8, mut value: u32) {
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for i in 0..n {
        // SAFETY: i < n <= 10 and the caller guarantees 11 bytes.
        unsafe { out.wrapping_add(i).write(digits[n - 1 - i]) };
    }
    // SAFETY: n <= 10, within the 11 bytes.
    unsafe { out.wrapping_add(n).write(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits_are_written_without_allocation() {
        for value in [0u32, 7, 42, 4_194_304, u32::MAX] {
            let mut buf = [0xffu8; 11];
            // SAFETY: buf has 11 bytes.
            unsafe { write_decimal(buf.as_mut_ptr(), value) };
            let end = buf.iter().position(|&b| b == 0).unwrap();
            assert_eq!(std::str::from_utf8(&buf[..end]).unwrap(), value.to_string());
        }
    }
}

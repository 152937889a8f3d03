//! Starting a worker process: fork (or `clone3` into its cgroup) and exec
//! from one long-lived thread.
//!
//! # Why a dedicated spawner thread
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! not the process. A fork from a tokio worker or blocking-pool thread (the
//! pool retires idle threads after seconds) would later kill healthy
//! workers. So every fork happens on one thread, `arbor-spawner`, that lives
//! exactly as long as the [`crate::Supervisor`] and the tasks of every
//! worker it runs (each running worker's spawn requests are served by a
//! task that holds a clone): when the last of them is gone the thread exits
//! and the kernel kills what is left, which is the "workers die with their
//! supervisor" guarantee (and when the whole process dies, the same happens).
//!
//! # Why our own fork rather than `std::process::Command`
//!
//! `LISTEN_PID` must be the child's own pid, which exists only after fork,
//! and setting an environment variable after fork is not async-signal-safe.
//! Here the parent prepares every byte before forking: `argv`, `envp` with a
//! reserved `LISTEN_PID=` slot, the fds already moved above the numbers they
//! are dup'ed to. Between fork and exec the child only calls
//! async-signal-safe functions (sigprocmask, signal, setpgid, prctl, getppid,
//! dup2, close_range, chdir, getpid, execve, write, _exit) and writes digits into the
//! slot; it allocates nothing and takes no lock (the process is
//! multi-threaded; another thread may hold the allocator's lock at the
//! moment of fork).
//!
//! A failure in the child is reported through a close-on-exec pipe (the
//! step and errno); end of file on that pipe means `execve` succeeded.
//!
//! # nix and libc here
//!
//! The child's calls go through nix where its wrapper is the bare syscall
//! (it allocates nothing and takes no lock): sigprocmask, signal, setpgid,
//! prctl, getppid, chdir (on a `CStr`, which nix passes through as it is),
//! getpid, write. These stay on libc: `execve`, because nix's builds a `Vec`
//! of pointers (an allocation after fork); `dup2`, because nix's takes the
//! target as an `OwnedFd` (an fd that must already be open) and its
//! `dup2_raw` does not check the call's result; `_exit`, `close_range` and
//! `clone3`, which nix does not have.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::mpsc;

use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{chdir, getpid, getppid, setpgid, write, ForkResult, Pid};

use tokio::sync::oneshot;

use crate::sys;

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

/// A child just forked: its report pipe says how its exec went.
#[derive(Debug)]
struct Forked {
    pid: libc::pid_t,
    pidfd: io::Result<OwnedFd>,
    reports: OwnedFd,
    cgroup_refused: Option<i32>,
}

/// How long a child may take from fork to exec (a `cwd` or program on a
/// hung network or FUSE mount can stall it) before it is killed.
const EXEC_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a start failed.
#[derive(Debug)]
pub(crate) enum StartError {
    /// In the parent: preparing, forking, pidfd.
    Parent(io::Error),
    /// In the child, at this step.
    Child(&'static str, io::Error),
}

type Request = (Prepared, oneshot::Sender<Result<Forked, StartError>>);

/// Handle to the spawner thread; the thread ends when the last handle drops.
#[derive(Debug)]
pub(crate) struct Spawner {
    requests: mpsc::Sender<Request>,
}

impl Spawner {
    pub(crate) fn start() -> io::Result<Self> {
        let (requests, incoming) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("arbor-spawner".into())
            .spawn(move || {
                // Only the fork happens here: the wait for the exec is the
                // caller's, so one child stuck before exec stalls no other.
                for (prepared, reply) in incoming {
                    if let Err(Ok(orphan)) = reply.send(fork_child(prepared)) {
                        // The caller stopped waiting (its spawn was cancelled):
                        // nobody will supervise this child, so it must not live.
                        crate::reap::kill_and_reap(orphan.pid);
                    }
                }
            })?;
        Ok(Self { requests })
    }

    /// Forks `prepared` on the spawner thread, then waits (on the blocking
    /// pool, at most [`EXEC_LIMIT`]) for its exec.
    pub(crate) async fn start_child(&self, prepared: Prepared) -> Result<Started, StartError> {
        let (reply, result) = oneshot::channel();
        let gone = || StartError::Parent(io::Error::other("spawner thread is gone"));
        self.requests.send((prepared, reply)).map_err(|_| gone())?;
        let forked = result.await.map_err(|_| gone())??;
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
            Err(_) => {
                return Err(StartError::Child(
                    "exec",
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("not started within {EXEC_LIMIT:?}"),
                    ),
                ))
            }
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

/// Moves each fd above every target number, so the child's dup2 calls can
/// never overwrite a source that is still to be copied.
pub(crate) fn above_targets(fds: Vec<(OwnedFd, RawFd)>) -> io::Result<Vec<(OwnedFd, RawFd)>> {
    let floor = fds.iter().map(|(_, target)| *target).max().unwrap_or(2) + 1;
    fds.into_iter()
        .map(|(fd, target)| Ok((sys::dup_at_least(fd.as_fd(), floor.max(10))?, target)))
        .collect()
}

/// Kills and reaps a forked child unless it was handed over.
struct KillUnlessStarted(Option<libc::pid_t>);

impl Drop for KillUnlessStarted {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            crate::reap::kill_and_reap(pid);
        }
    }
}

fn fork_child(prepared: Prepared) -> Result<Forked, StartError> {
    // Everything the child touches is built here, before the fork.
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

    let child = ChildPlan {
        path: prepared.path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        slot_digits,
        dups: &dups,
        cwd,
        error_fd,
        parent,
    };
    // The orphan reaper must never take a worker's status: the pid is
    // registered as managed under the gate the reaper's round holds.
    let gate = crate::reap::fork_gate();
    let cgroup = prepared.cgroup.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: the child runs only `child.run`, which makes async-signal-safe
    // calls on memory prepared above and never returns.
    let (pid, cgroup_refused) = unsafe { fork(cgroup) }.map_err(StartError::Parent)?;
    if pid == 0 {
        // SAFETY: we are the child of a fork; see ChildPlan::run.
        unsafe { child.run() }
    }
    crate::reap::registered(pid);
    drop(gate);
    drop(error_write);
    // Before anything else: a pidfd, while the pid is surely ours.
    let pidfd = sys::pidfd_open(pid);
    // The child has its own copy of everything it needs.
    drop(prepared);
    Ok(Forked {
        pid,
        pidfd,
        reports: error_read,
        cgroup_refused,
    })
}

/// Forks, the child born in the cgroup whose directory is `cgroup` where
/// there is one (no migration afterwards, whose lock can stall for seconds
/// under load); else, or where the kernel refuses (the errno is returned
/// beside the pid), an ordinary fork. The child's pid in the parent, 0 in
/// the child.
///
/// # Safety
///
/// As `fork`: the child of a multi-threaded process may only make
/// async-signal-safe calls until it execs.
unsafe fn fork(cgroup: Option<RawFd>) -> io::Result<(libc::pid_t, Option<i32>)> {
    let mut cgroup_refused = None;
    if let Some(cgroup) = cgroup {
        // SAFETY: the caller's promise, as for the fork below.
        let pid = unsafe { clone_into_cgroup(cgroup) };
        if pid >= 0 {
            return Ok((pid, None));
        }
        cgroup_refused = io::Error::last_os_error().raw_os_error();
    }
    // SAFETY: the caller's promise: the child makes async-signal-safe calls only.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => Ok((0, cgroup_refused)),
        ForkResult::Parent { child } => Ok((child.as_raw(), cgroup_refused)),
    }
}

/// `clone3`'s arguments (`struct clone_args`, its version 2 with `cgroup`).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A fork whose child starts in the cgroup whose directory is `cgroup`:
/// the child's pid in the parent, 0 in the child, -1 with errno set.
///
/// # Safety
///
/// As `fork`: the child of a multi-threaded process may only make
/// async-signal-safe calls until it execs. Unlike glibc's `fork` no atfork
/// handler runs, which the child (it calls no allocator, no stdio, takes
/// no lock) does not need.
unsafe fn clone_into_cgroup(cgroup: RawFd) -> libc::pid_t {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        // Reaped like any child (waitpid without __WALL).
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup as u64,
    };
    // SAFETY: clone3 with a valid clone_args of the size passed and no
    // shared memory (no CLONE_VM): a copy of this process, like fork.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        ) as libc::pid_t
    }
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
}

impl ChildPlan<'_> {
    /// The child between fork and exec.
    ///
    /// # Safety
    ///
    /// Call only in the child of a `fork`, with every pointer valid (they
    /// point into the parent's memory, which the child has a copy of).
    /// Only async-signal-safe functions are called.
    unsafe fn run(&self) -> ! {
        // Signal state: the runtime may block or ignore signals (Rust ignores
        // SIGPIPE); a worker starts with an empty mask and SIGPIPE default.
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        // SAFETY: restores the default disposition (no handler is installed).
        let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };

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

//! The supervisor's process syscalls: pidfds, signals, reaping, fd moves.
//!
//! One of the two modules of arbor-supervisor with `unsafe` (the other is
//! [`crate::spawn`]). Every call here is a thin wrapper with its errno
//! turned into `io::Error`; nix makes the call wherever it has it. What is
//! left hand-written, nix lacks: `pidfd_open` and `pidfd_send_signal`, and
//! `wait4` (nix's waits give no resource usage).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A pidfd for `pid`, close-on-exec. Race-free for our own unreaped child:
/// its pid cannot be reused until we reap it.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just created this fd (O_CLOEXEC is implied) and
    // nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process behind `pidfd` (never to a reused pid).
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with a null siginfo and no flags.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
}

/// Sends `signal` (a standard signal: the close escalation's SIGTERM or
/// SIGKILL) to every process of process group `pgid`.
///
/// Only called while the group's leader (our worker) is not yet reaped, so
/// the group id cannot have been reused.
pub(crate) fn killpg(pgid: libc::pid_t, signal: i32) -> io::Result<()> {
    let signal = Signal::try_from(signal)?;
    Ok(nix::sys::signal::killpg(Pid::from_raw(pgid), signal)?)
}

/// How a reaped child ended, with its resource usage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reaped {
    pub(crate) status: libc::c_int,
    pub(crate) user_time: Duration,
    pub(crate) system_time: Duration,
    pub(crate) max_rss_kib: u64,
}

impl Reaped {
    /// A child whose status could not be read (someone else reaped it).
    pub(crate) fn unknown() -> Self {
        Self {
            status: -1,
            user_time: Duration::ZERO,
            system_time: Duration::ZERO,
            max_rss_kib: 0,
        }
    }
}

/// Reaps `pid` if it has exited (`WNOHANG`).
pub(crate) fn try_reap(pid: libc::pid_t) -> io::Result<Option<Reaped>> {
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let ret = loop {
        // SAFETY: wait4 writes only into `status` and `usage`, both live.
        let ret = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if ret >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break ret;
        }
    };
    match ret {
        0 => Ok(None),
        r if r < 0 => Err(io::Error::last_os_error()),
        _ => Ok(Some(Reaped {
            status,
            user_time: timeval(usage.ru_utime),
            system_time: timeval(usage.ru_stime),
            max_rss_kib: usage.ru_maxrss.max(0) as u64,
        })),
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

/// Sends `signal` (a standard one) to process `pid`.
pub(crate) fn kill(pid: libc::pid_t, signal: i32) -> io::Result<()> {
    let signal = Signal::try_from(signal)?;
    Ok(nix::sys::signal::kill(Pid::from_raw(pid), signal)?)
}

/// Makes this process the reaper of its orphaned descendants
/// (`PR_SET_CHILD_SUBREAPER`): a process a worker leaves behind is
/// re-parented here instead of to init.
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    Ok(nix::sys::prctl::set_child_subreaper(true)?)
}

/// A close-on-exec duplicate of `fd` numbered at least `min`.
pub(crate) fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    let new = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: F_DUPFD_CLOEXEC just created this fd and nothing else owns it
    // (nix's fcntl returns it as a plain number).
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// Registers `fd` with tokio's reactor for readability (a pidfd, readable
/// when its process exits; a listening socket).
pub(crate) fn async_readable(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open and returns the same number from
    // as_raw_fd until the AsyncFd that owns it is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft
/// limit (or the error, leaving the limit as it was).
pub(crate) fn raise_fd_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// Accepts one connection on the listening socket `listener`, without
/// blocking: the new socket is close-on-exec and non-blocking (as a worker
/// that serves it with an event loop expects), and is never registered with
/// arbord's own reactor. `WouldBlock` when none is waiting.
pub(crate) fn accept_nonblocking(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use nix::sys::socket::{accept4, SockFlag};
    let fd = accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    // SAFETY: accept4 just returned this fd, new in this process, and
    // nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

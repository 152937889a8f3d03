//! The supervisor's raw process syscalls: pidfds, signals, reaping, fd moves.
//!
//! One of the two modules of arbor-supervisor with `unsafe` (the other is
//! [`crate::spawn`]). Every call here is a thin wrapper with its errno
//! turned into `io::Error`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

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

/// Sends `signal` to every process of process group `pgid`.
///
/// Only called while the group's leader (our worker) is not yet reaped, so
/// the group id cannot have been reused.
pub(crate) fn killpg(pgid: libc::pid_t, signal: i32) -> io::Result<()> {
    // SAFETY: killpg takes plain integers.
    check(unsafe { libc::killpg(pgid, signal) }.into()).map(drop)
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

/// Sends `signal` to process `pid`.
pub(crate) fn kill(pid: libc::pid_t, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    check(unsafe { libc::kill(pid, signal) }.into()).map(drop)
}

/// Makes this process the reaper of its orphaned descendants
/// (`PR_SET_CHILD_SUBREAPER`): a process a worker leaves behind is
/// re-parented here instead of to init.
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes plain integers.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }.into()).map(drop)
}

/// A close-on-exec duplicate of `fd` numbered at least `min`.
pub(crate) fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd or -1.
    let new = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) }.into())?;
    // SAFETY: the new fd was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new as RawFd) })
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
    // SAFETY: pipe2 just created this fd and nothing else owns it.
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above, for the write end.
    let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((read, write))
}

/// Registers a pidfd with tokio's reactor (readable when the process exits).
pub(crate) fn async_pidfd(pidfd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open and returns the same number from
    // as_raw_fd until the AsyncFd that owns it is dropped.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(|e| e.into_parts().1)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft
/// limit (or the error, leaving the limit as it was).
pub(crate) fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

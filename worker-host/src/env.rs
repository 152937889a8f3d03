//! What a worker learns from its environment, and the channel it inherits.
//!
//! The fds named by the environment are only numbers until they are
//! checked: each is probed with `getsockopt` on the raw number before it is
//! wrapped in an [`OwnedFd`]. That probe stays on libc: nix's calls take
//! `AsFd`, and a `BorrowedFd` may only be made for an fd that is open, which
//! is what the probe is there to find out. Once an fd is owned, nix sets its
//! close-on-exec flag.

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use crate::error::{Error, Result};

/// The worker's identity, from `ARBOR_WORKER_ID` and `ARBOR_WORKER_NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The id the supervisor gave this worker.
    pub id: u64,
    /// The worker's name.
    pub name: String,
}

/// The named entry point this process was started for (`ARBOR_ENTRY`), if
/// any: a binary that holds both a parent and its workers checks this first
/// thing in `main` and runs the worker's code when it is set.
pub fn entry_point() -> Option<String> {
    std::env::var("ARBOR_ENTRY").ok()
}

/// The first fd of socket activation (`sd_listen_fds(3)`).
const SD_LISTEN_FDS_START: RawFd = 3;

/// A listening socket passed by the socket-activation convention.
#[derive(Debug)]
pub struct ListenFd {
    /// Its name from `LISTEN_FDNAMES` (`"unknown"` when none is given).
    pub name: String,
    /// The socket, close-on-exec.
    pub fd: OwnedFd,
}

/// Takes the listening sockets passed by the socket-activation convention,
/// once: `LISTEN_FDS` fds with names in `LISTEN_FDNAMES`, when `LISTEN_PID`
/// is this process. They start at fd 3 (`SD_LISTEN_FDS_START`) under an
/// arbor supervisor as under systemd, so the same program serves either
/// way; an arbor worker's channel follows them. Empty when nothing was
/// passed; an fd that is not an open socket is skipped.
pub fn take_listen_fds() -> Vec<ListenFd> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    let count: RawFd = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // More than 1024 is not a real socket-activation environment.
    if !for_us || !(1..=1024).contains(&count) || TAKEN.swap(true, Ordering::SeqCst) {
        return Vec::new();
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':');
    let mut taken = Vec::new();
    // Never the channel, whatever a mismatched supervisor said.
    let channel: Option<RawFd> = std::env::var("ARBOR_CHANNEL_FD")
        .ok()
        .and_then(|fd| fd.parse().ok());
    for fd in SD_LISTEN_FDS_START..SD_LISTEN_FDS_START.saturating_add(count) {
        let name = names.next().filter(|n| !n.is_empty()).unwrap_or("unknown");
        if !is_socket(fd) || Some(fd) == channel {
            continue;
        }
        // SAFETY: the supervisor (or systemd) passed this fd to this process
        // for LISTEN_PID = our pid, it is an open socket (just checked), and
        // TAKEN guarantees it is wrapped only once in this process.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        set_cloexec(&owned);
        taken.push(ListenFd {
            name: name.to_string(),
            fd: owned,
        });
    }
    taken
}

fn is_socket(fd: RawFd) -> bool {
    socket_option(fd, libc::SO_TYPE).is_some()
}

/// Takes the channel the supervisor left at `ARBOR_CHANNEL_FD`, once.
pub(crate) fn take_channel() -> Result<(UnixStream, Identity)> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let not_supervised = |reason: String| Error::NotUnderSupervisor { reason };
    let raw = std::env::var("ARBOR_CHANNEL_FD")
        .map_err(|_| not_supervised("ARBOR_CHANNEL_FD is not set".into()))?;
    let fd: RawFd = raw
        .parse()
        .map_err(|_| not_supervised(format!("ARBOR_CHANNEL_FD={raw:?} is not a number")))?;
    if fd < 3 {
        return Err(not_supervised(format!(
            "ARBOR_CHANNEL_FD={fd} names a stdio stream"
        )));
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(not_supervised(
            "the channel was already taken by this process".into(),
        ));
    }
    if !is_unix_stream_socket(fd) {
        TAKEN.store(false, Ordering::SeqCst);
        return Err(not_supervised(format!(
            "fd {fd} is not an open Unix stream socket"
        )));
    }
    // SAFETY: the supervisor left this fd open for us, it is a socket (just
    // checked), and TAKEN guarantees it is wrapped only once in this process.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_cloexec(&owned);
    let id = std::env::var("ARBOR_WORKER_ID")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let name = std::env::var("ARBOR_WORKER_NAME").unwrap_or_default();
    Ok((UnixStream::from(owned), Identity { id, name }))
}

/// Takes the sub-worker's tree link at `ARBOR_TREE_FD`, once: set only for
/// a worker started by another worker, whose channel (`ARBOR_CHANNEL_FD`)
/// leads to that worker; the link leads to the supervisor, for its own Spawn frames.
/// `None` for a top-level worker (its channel is the link).
pub(crate) fn take_tree_link() -> Option<UnixStream> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let fd: RawFd = std::env::var("ARBOR_TREE_FD").ok()?.parse().ok()?;
    if fd < 3 || !is_unix_stream_socket(fd) || TAKEN.swap(true, Ordering::SeqCst) {
        return None;
    }
    // SAFETY: the supervisor left this fd open for us, it is a Unix stream
    // socket (just checked), and TAKEN guarantees it is wrapped only once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_cloexec(&owned);
    Some(UnixStream::from(owned))
}

fn is_unix_stream_socket(fd: RawFd) -> bool {
    socket_option(fd, libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && socket_option(fd, libc::SO_TYPE) == Some(libc::SOCK_STREAM)
}

/// An int SOL_SOCKET option of `fd`; `None` for a closed fd or a non-socket.
///
/// Hand-written on libc, not nix: `fd` is a number that may not be open,
/// and nix's `getsockopt` would need a `BorrowedFd`, which only an open fd
/// may be.
fn socket_option(fd: RawFd, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`; on a
    // closed fd or a non-socket it fails with EBADF/ENOTSOCK.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (ret == 0).then_some(value)
}

// The channel must not leak into programs this worker runs itself.
fn set_cloexec(fd: &OwnedFd) {
    let _ = fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
}

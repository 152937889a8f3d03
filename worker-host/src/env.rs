//! What a worker learns from its environment, and the channel it inherits.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

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
    set_cloexec(owned.as_raw_fd());
    let id = std::env::var("ARBOR_WORKER_ID")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let name = std::env::var("ARBOR_WORKER_NAME").unwrap_or_default();
    Ok((UnixStream::from(owned), Identity { id, name }))
}

fn is_unix_stream_socket(fd: RawFd) -> bool {
    let get = |option| {
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
    };
    get(libc::SO_DOMAIN) == Some(libc::AF_UNIX) && get(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
}

// The channel must not leak into programs this worker runs itself.
fn set_cloexec(fd: RawFd) {
    // SAFETY: F_SETFD with an int flag on an fd this process owns.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

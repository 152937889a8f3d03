//! Helpers shared by the protocol's integration tests: a hostile peer that
//! writes raw bytes and fds, and an fd census of this process.

#![allow(dead_code)]

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};

use arbor_protocol::message::{encode_frame, Outgoing};
use arbor_protocol::{Frame, Limits};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

/// Tests that count this process's fds take this lock, so that no other test
/// of the same binary opens or closes fds meanwhile.
pub fn fd_census_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How many fds this process has open.
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// One frame's bytes, as a well-behaved peer encodes it.
pub fn frame_bytes(frame: &Frame, fd_count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame::<()>(
        &mut out,
        Outgoing::Frame(frame),
        fd_count,
        &Limits::default(),
    )
    .unwrap();
    out
}

/// Writes `bytes` with `fds` attached in one sendmsg, as a raw peer would.
pub fn raw_send(socket: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let raw: Vec<i32> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let mut sent = 0;
    while sent < bytes.len() || (sent == 0 && bytes.is_empty()) {
        let cm: &[ControlMessage<'_>] = if sent == 0 { &cmsgs } else { &[] };
        let n = sendmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &[IoSlice::new(&bytes[sent..])],
            cm,
            MsgFlags::empty(),
            None,
        )
        .expect("raw sendmsg");
        sent += n;
        if bytes.is_empty() {
            break;
        }
    }
}

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe2")
}

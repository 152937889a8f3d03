//! The raw syscalls of a channel: `sendmsg` and `recvmsg` with `SCM_RIGHTS`.
//!
//! One of the two modules of arbor-protocol that make syscalls (the other
//! is [`crate::transfer`]: memfd, seals, mmap), and one of the two with
//! `unsafe`. Their edge cases matter: sends pass `MSG_NOSIGNAL` (a peer that
//! went away is an `EPIPE` error, not a `SIGPIPE` that kills the
//! supervisor); receives pass `MSG_CMSG_CLOEXEC`, so a received fd is
//! close-on-exec from the instant it exists and cannot leak into a child
//! forked meanwhile; and on `MSG_CTRUNC` the fds that did arrive are closed
//! before the error is returned.
//!
//! Sends, shutdown and the fd checks go through nix. A send without fds
//! allocates nothing (nix sizes its control buffer from the control
//! messages, and there are none); a send with fds costs one small
//! allocation for that buffer.
//!
//! The receive stays hand-written on libc: nix's `RecvMsg::cmsgs()` refuses
//! to walk a control buffer the kernel marked `MSG_CTRUNC` (it returns
//! `ENOBUFS`), and its `msghdr` is private, so through nix the fds that did
//! arrive with a truncated message could not be found to be closed: they
//! would leak. nix would also allocate a `Vec` per `SCM_RIGHTS` message on
//! every receive that carries fds.

use std::io::{self, IoSlice};
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    getsockname, getsockopt, sendmsg, sockopt, AddressFamily, ControlMessage, MsgFlags, Shutdown,
    SockType, SockaddrLike, SockaddrStorage, UnixAddr,
};

use crate::error::Error;
use crate::frame::SCM_MAX_FD;

/// Control-message space for `SCM_MAX_FD` fds, aligned for `cmsghdr`.
#[repr(C, align(8))]
pub(crate) struct CmsgBuffer([u8; 1280]);

impl CmsgBuffer {
    pub(crate) fn new() -> Self {
        Self([0; 1280])
    }
}

impl std::fmt::Debug for CmsgBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CmsgBuffer")
    }
}

/// Bytes of control space that hold `count` fds.
fn cmsg_space(count: usize) -> usize {
    let data = (count * mem::size_of::<RawFd>()) as libc::c_uint;
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
    unsafe { libc::CMSG_SPACE(data) as usize }
}

/// `cmsg_len` of a header carrying `count` fds.
fn cmsg_len(count: usize) -> usize {
    let data = (count * mem::size_of::<RawFd>()) as libc::c_uint;
    // SAFETY: CMSG_LEN is pure arithmetic on its argument.
    unsafe { libc::CMSG_LEN(data) as usize }
}

/// Writes `iov` with `fds` attached (when not empty) in one `sendmsg`.
///
/// Returns the bytes written, which may be fewer than offered. The fds are
/// sent with the first byte; once this returns `Ok`, they are in flight.
pub(crate) fn send(
    socket: BorrowedFd<'_>,
    iov: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    assert!(fds.len() <= SCM_MAX_FD, "callers check the fd limit");
    if fds.is_empty() {
        // No control message: nix's control buffer is empty, nothing is allocated.
        return send_with(socket, iov, &[]);
    }
    let mut raw = [0 as RawFd; SCM_MAX_FD];
    for (slot, fd) in raw.iter_mut().zip(fds) {
        *slot = fd.as_raw_fd();
    }
    send_with(socket, iov, &[ControlMessage::ScmRights(&raw[..fds.len()])])
}

/// One `sendmsg` with `MSG_NOSIGNAL`, retried on `EINTR`.
fn send_with(
    socket: BorrowedFd<'_>,
    iov: &[IoSlice<'_>],
    control: &[ControlMessage<'_>],
) -> io::Result<usize> {
    loop {
        match sendmsg::<UnixAddr>(
            socket.as_raw_fd(),
            iov,
            control,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// What one receive produced.
#[derive(Debug)]
pub(crate) enum Received {
    /// Bytes (at least one) and the fds that came with them.
    Data(usize, Vec<OwnedFd>),
    /// The peer closed its end.
    Eof,
}

/// Reads into `buf` with one `recvmsg`, taking up to `max_fds` fds.
///
/// Every fd taken is close-on-exec. More fds than `max_fds` is
/// [`Error::ControlTruncated`], with the ones that arrived already closed.
pub(crate) fn recv(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
    control: &mut CmsgBuffer,
) -> Result<Received, Error> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg_space(max_fds.clamp(1, SCM_MAX_FD));
    let n = loop {
        // SAFETY: `msg` points at `buf` and `control`, both live and writable
        // for the whole call, with their true lengths.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(Error::Io(err));
        }
    };
    let fds = take_fds(&msg);
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        drop(fds);
        return Err(Error::ControlTruncated);
    }
    if fds.len() > max_fds {
        // Room is made for at least one fd; more than the limit is refused.
        let count = fds.len();
        drop(fds);
        return Err(Error::TooManyFds {
            count,
            limit: max_fds,
        });
    }
    if n == 0 && fds.is_empty() {
        return Ok(Received::Eof);
    }
    Ok(Received::Data(n, fds))
}

/// Takes ownership of every fd in the `SCM_RIGHTS` messages of `msg`.
fn take_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    if msg.msg_controllen == 0 {
        return fds;
    }
    // SAFETY: `msg` was filled in by recvmsg; msg_controllen bounds the
    // headers CMSG_FIRSTHDR/CMSG_NXTHDR walk, and the kernel wrote them.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is a non-null header inside the control buffer.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            let data_len = header.cmsg_len.saturating_sub(cmsg_len(0));
            // SAFETY: CMSG_DATA points at the header's payload inside the buffer.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            for i in 0..data_len / mem::size_of::<RawFd>() {
                // SAFETY: `i` is within the `data_len` bytes the kernel wrote.
                let raw = unsafe { ptr::read_unaligned(data.wrapping_add(i)) };
                // SAFETY: SCM_RIGHTS installed `raw` as a new fd in this
                // process; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `cmsg` is a valid header of `msg`; NXTHDR returns null past the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    fds
}

/// Shuts down both directions of `socket`, so the peer sees end of stream
/// even while other handles to the socket stay open.
pub(crate) fn shutdown(socket: BorrowedFd<'_>) {
    // The error is ignored: the socket may already be shut down or the peer gone.
    let _ = nix::sys::socket::shutdown(socket.as_raw_fd(), Shutdown::Both);
}

/// Whether `fd` has close-on-exec set.
pub fn is_cloexec(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let flags = fcntl(fd, FcntlArg::F_GETFD)?;
    Ok(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC))
}

/// Whether `fd` is a Unix stream socket (what a port must be). The domain
/// comes from the socket's own address (nix has no `SO_DOMAIN` option);
/// on a non-socket both calls fail with `ENOTSOCK`.
pub(crate) fn is_unix_stream(fd: BorrowedFd<'_>) -> bool {
    let unix = getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .is_ok_and(|addr| addr.family() == Some(AddressFamily::Unix));
    unix && getsockopt(&fd, sockopt::SockType) == Ok(SockType::Stream)
}

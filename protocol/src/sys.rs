//! The raw syscalls of a channel: `sendmsg` and `recvmsg` with `SCM_RIGHTS`.
//!
//! One of the two modules of arbor-protocol with `unsafe` (the other is
//! [`crate::transfer`]: memfd, seals, mmap). It calls libc
//! directly rather than through a wrapper because both calls are on the hot
//! path and their edge cases matter: sends pass `MSG_NOSIGNAL` (a peer that
//! went away is an `EPIPE` error, not a `SIGPIPE` that kills the supervisor);
//! receives pass `MSG_CMSG_CLOEXEC`, so a received fd is close-on-exec from
//! the instant it exists and cannot leak into a child forked meanwhile; and on
//! `MSG_CTRUNC` the fds that did arrive are closed before the error is
//! returned (wrappers that refuse to parse a truncated control buffer leak
//! them).

use std::io::{self, IoSlice};
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

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
    let mut control = CmsgBuffer::new();
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec; // IoSlice is ABI-compatible with iovec.
    msg.msg_iovlen = iov.len();
    if !fds.is_empty() {
        let space = cmsg_space(fds.len());
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points at `space` bytes of aligned, zeroed
        // storage, so the first header exists and is writable.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        // SAFETY: `cmsg` is non-null and aligned: `space` leaves room for
        // one header inside `control`, which nothing else references now.
        let header = unsafe { &mut *cmsg };
        header.cmsg_level = libc::SOL_SOCKET;
        header.cmsg_type = libc::SCM_RIGHTS;
        header.cmsg_len = cmsg_len(fds.len());
        // SAFETY: CMSG_DATA of a valid header is its data area.
        let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
        for (i, fd) in fds.iter().enumerate() {
            // SAFETY: the data area holds `fds.len()` RawFds (`space` was
            // sized for them); unaligned writes need no alignment.
            unsafe { ptr::write_unaligned(data.wrapping_add(i), fd.as_raw_fd()) };
        }
    }
    loop {
        // SAFETY: `msg` points at live iovecs and control data for the whole call.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
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
    // SAFETY: shutdown takes any fd; the worst case is an error we ignore
    // (the socket may already be shut down or the peer gone).
    let _ = unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_RDWR) };
}

/// Whether `fd` has close-on-exec set.
pub fn is_cloexec(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: F_GETFD on a borrowed, open fd reads its flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & libc::FD_CLOEXEC != 0)
}

// std documents IoSlice as ABI-compatible with iovec on Unix; `send` relies on it.
const _: () = assert!(mem::size_of::<IoSlice<'static>>() == mem::size_of::<libc::iovec>());

/// Whether `fd` is a Unix stream socket (what a port must be).
pub(crate) fn is_unix_stream(fd: BorrowedFd<'_>) -> bool {
    let get = |option| {
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`; on a
        // non-socket it fails with ENOTSOCK.
        let ret = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
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

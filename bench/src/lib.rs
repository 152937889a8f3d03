//! Shared pieces of arbor's benchmarks: the peer process and the raw
//! baseline it is measured against.
//!
//! The baseline is what a careful programmer writes with no framing library:
//! a 4-byte little-endian length then the payload, written with one
//! `write_all` from a reused buffer and read through a 64 KiB `BufReader`;
//! for fds, one `sendmsg` per message with the fd in `SCM_RIGHTS`, received
//! with `recvmsg(MSG_CMSG_CLOEXEC)`; for large buffers (the transfer
//! benchmark's `raw_copy`), an 8-byte little-endian length then the bytes,
//! written straight from one reused buffer and read straight into another
//! (no `BufReader`: at MiB sizes it would only add a copy).

use std::io::{self, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};

/// A raw-baseline length that asks the peer for a one-byte acknowledgement.
pub const RAW_ACK: u32 = u32::MAX;

/// Starts the peer binary in `mode`, its channel as its stdin.
pub fn spawn_peer(peer_exe: &str, mode: &str) -> io::Result<(Child, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    let child = Command::new(peer_exe)
        .arg(mode)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()?;
    Ok((child, ours))
}

/// The peer's end of the channel: a duplicate of its stdin.
pub fn channel_from_stdin() -> io::Result<UnixStream> {
    Ok(UnixStream::from(io::stdin().as_fd().try_clone_to_owned()?))
}

/// Raw length-prefixed framing over a stream socket.
#[derive(Debug)]
pub struct RawChannel {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    out: Vec<u8>,
}

impl RawChannel {
    /// Raw framing over `socket`.
    pub fn new(socket: UnixStream) -> io::Result<Self> {
        Ok(Self {
            reader: BufReader::with_capacity(64 * 1024, socket.try_clone()?),
            writer: socket,
            out: Vec::new(),
        })
    }

    /// Queues one message, writing the queue out once 64 KiB are waiting
    /// (the same mark as arbor's queue).
    pub fn feed(&mut self, payload: &[u8]) -> io::Result<()> {
        self.out
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.out.extend_from_slice(payload);
        if self.out.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what is queued.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// Sends one message.
    pub fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        self.feed(payload)?;
        self.flush()
    }

    /// Sends the acknowledgement request.
    pub fn send_ack_request(&mut self) -> io::Result<()> {
        self.writer.write_all(&RAW_ACK.to_le_bytes())
    }

    /// Receives one message into `buf`; `Ok(false)` on an ack request.
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len == RAW_ACK {
            return Ok(false);
        }
        buf.resize(len as usize, 0);
        self.reader.read_exact(buf)?;
        Ok(true)
    }

    /// Writes the one-byte acknowledgement.
    pub fn ack(&mut self) -> io::Result<()> {
        self.writer.write_all(&[1])
    }

    /// Waits for the one-byte acknowledgement.
    pub fn wait_ack(&mut self) -> io::Result<()> {
        let mut byte = [0u8; 1];
        self.reader.read_exact(&mut byte)
    }
}

/// One raw `sendmsg` of a length-prefixed message with one fd attached.
pub fn raw_send_with_fd(socket: &UnixStream, payload: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    let len = (payload.len() as u32).to_le_bytes();
    let fds = [fd.as_raw_fd()];
    let iov = [IoSlice::new(&len), IoSlice::new(payload)];
    let sent = sendmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    assert_eq!(sent, 4 + payload.len(), "short raw sendmsg");
    Ok(())
}

/// Receives raw length-prefixed messages carrying fds until an ack request;
/// closes every fd; returns how many fds came.
pub fn raw_recv_fds_until_ack(socket: &UnixStream) -> io::Result<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut control = nix::cmsg_space!([RawFd; 8]);
    let (mut have, mut fds) = (0usize, 0usize);
    loop {
        // Parse whole messages from the front of the buffer.
        let mut at = 0;
        while have - at >= 4 {
            let len = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
            if len == RAW_ACK {
                return Ok(fds);
            }
            if have - at < 4 + len as usize {
                break;
            }
            at += 4 + len as usize;
        }
        buf.copy_within(at..have, 0);
        have -= at;
        let mut iov = [IoSliceMut::new(&mut buf[have..])];
        let msg = recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        if msg.bytes == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                for fd in raw {
                    // SAFETY: SCM_RIGHTS just installed `fd` in this process.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                    fds += 1;
                }
            }
        }
        have += msg.bytes;
    }
}

/// The sum of every byte, read 8 at a time: how the transfer benchmark's
/// receiver makes sure it touched every byte.
pub fn byte_sum(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut sum = 0u64;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        sum = sum.wrapping_add(word);
    }
    for byte in chunks.remainder() {
        sum = sum.wrapping_add(u64::from(*byte));
    }
    sum
}

/// Sends one raw large message: its length as 8 little-endian bytes, then
/// the bytes, each with one `write_all` straight from the caller's buffer.
pub fn raw_send_blob(socket: &UnixStream, payload: &[u8]) -> io::Result<()> {
    let mut socket = socket;
    socket.write_all(&(payload.len() as u64).to_le_bytes())?;
    socket.write_all(payload)
}

/// Receives one raw large message (see [`raw_send_blob`]) into `buf`, which
/// is reused: it only grows when a message is larger than any before.
/// `Ok(false)` when the peer closed the socket between messages.
pub fn raw_recv_blob(socket: &UnixStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut socket = socket;
    let mut len = [0u8; 8];
    match socket.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = usize::try_from(u64::from_le_bytes(len))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "raw blob length over usize"))?;
    buf.resize(len, 0);
    socket.read_exact(buf)?;
    Ok(true)
}

/// Resident memory of process `pid` (`"self"` for this one) in KiB, from
/// `/proc/PID/statm`. The benchmarks read it themselves rather than through
/// the code they measure. An unreadable or malformed file is an error, never
/// 0: a 0 would make a memory target pass without measuring anything.
pub fn rss_kib(pid: impl std::fmt::Display) -> io::Result<u64> {
    let path = format!("/proc/{pid}/statm");
    let statm = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {path}: {e}")))?;
    let resident_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{path}: no resident page count in {statm:?}"),
            )
        })?;
    let page_bytes = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .map_err(io::Error::from)?
        .ok_or_else(|| io::Error::other("sysconf(PAGE_SIZE) has no value"))?;
    let page_kib = u64::try_from(page_bytes / 1024)
        .map_err(|_| io::Error::other(format!("sysconf(PAGE_SIZE) = {page_bytes}")))?;
    Ok(resident_pages * page_kib)
}

/// Raises this process's fd limit (inherited by what it starts) to `wanted`
/// where it may (root with CAP_SYS_RESOURCE), else the soft limit to the
/// hard one; the limit now in force.
pub fn raise_fd_limit(wanted: u64) -> nix::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_err() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?.0)
}

/// A control connection to arbord at `socket`, reads bounded by `timeout`.
pub fn control_connect(
    socket: &std::path::Path,
    timeout: std::time::Duration,
) -> Result<arbor_protocol::blocking::Channel, Box<dyn std::error::Error + Send + Sync>> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    Ok(arbor_protocol::blocking::Channel::new(stream)?)
}

/// The next control answer on `channel`.
pub fn control_answer(
    channel: &mut arbor_protocol::blocking::Channel,
) -> Result<arbor_protocol::control::ControlResponse, Box<dyn std::error::Error + Send + Sync>> {
    match channel.recv()? {
        (arbor_protocol::Frame::Message(message), _) => Ok(message.decode()?),
        (other, _) => Err(format!("a {:?} frame instead of an answer", other.kind()).into()),
    }
}

/// One control request to arbord on a fresh connection, and its answer
/// (reads bounded by 60 s).
pub fn control_ask(
    socket: &std::path::Path,
    request: &arbor_protocol::control::ControlRequest,
) -> Result<arbor_protocol::control::ControlResponse, Box<dyn std::error::Error + Send + Sync>> {
    let mut channel = control_connect(socket, std::time::Duration::from_secs(60))?;
    channel.send_value(request, &[])?;
    control_answer(&mut channel)
}

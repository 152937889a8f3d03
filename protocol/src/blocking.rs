//! The blocking transport: a channel over a std `UnixStream`.
//!
//! Built on the same send and receive halves as [`crate::nonblocking`]; only
//! the waiting differs (the socket blocks instead of `async_io`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use serde::Serialize;

use crate::channel::{close_on_fatal, DirectWrite, RecvHalf, SendHalf, DIRECT_AT, FLUSH_AT};
use crate::error::Result;
use crate::frame::Limits;
use crate::message::{Frame, FrameRef, Outgoing};

/// Both ends of one arbor channel over a blocking Unix stream socket.
///
/// `send*` queue a frame and write everything queued; `feed*` only queue it
/// (writing once 64 KiB are waiting), so a burst of small messages goes out
/// in few syscalls, and [`Channel::flush`] writes the rest. A frame that
/// carries fds is always written before the call returns, so the borrowed fds
/// are not needed afterwards.
///
/// # Examples
///
/// ```
/// use arbor_protocol::{blocking::Channel, Frame, Message};
///
/// let (mut parent, mut worker) = Channel::pair()?;
/// parent.send_bytes(b"ping", &[])?;
/// let (frame, fds) = worker.recv()?;
/// assert_eq!(frame, Frame::Message(Message::new(b"ping".to_vec())));
/// assert!(fds.is_empty());
/// # Ok::<(), arbor_protocol::Error>(())
/// ```
#[derive(Debug)]
pub struct Channel {
    sender: Sender,
    receiver: Receiver,
}

/// The sending half of a [`Channel`].
#[derive(Debug)]
pub struct Sender {
    socket: Arc<UnixStream>,
    half: SendHalf,
}

/// The receiving half of a [`Channel`].
#[derive(Debug)]
pub struct Receiver {
    socket: Arc<UnixStream>,
    half: RecvHalf,
}

impl Channel {
    /// A channel over `socket` with default [`Limits`]. The socket is put in
    /// blocking mode.
    pub fn new(socket: UnixStream) -> io::Result<Self> {
        Self::with_limits(socket, Limits::default())
    }

    /// A channel over `socket` that enforces `limits` on what it receives
    /// and what it sends.
    pub fn with_limits(socket: UnixStream, limits: Limits) -> io::Result<Self> {
        socket.set_nonblocking(false)?;
        let socket = Arc::new(socket);
        Ok(Self {
            sender: Sender {
                socket: Arc::clone(&socket),
                half: SendHalf::new(limits),
            },
            receiver: Receiver {
                socket,
                half: RecvHalf::new(limits),
            },
        })
    }

    /// Two connected channels (a close-on-exec socketpair).
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Self::new(a)?, Self::new(b)?))
    }

    /// The underlying socket, for timeouts and the like.
    pub fn socket(&self) -> &UnixStream {
        &self.receiver.socket
    }

    /// Splits the channel so that one thread can receive while another sends.
    pub fn into_split(self) -> (Sender, Receiver) {
        (self.sender, self.receiver)
    }

    /// See [`Sender::send`].
    pub fn send(&mut self, frame: &Frame, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.sender.send(frame, fds)
    }

    /// See [`Sender::feed`].
    pub fn feed(&mut self, frame: &Frame, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.sender.feed(frame, fds)
    }

    /// See [`Sender::send_bytes`].
    pub fn send_bytes(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.sender.send_bytes(data, fds)
    }

    /// See [`Sender::feed_bytes`].
    #[inline]
    pub fn feed_bytes(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.sender.feed_bytes(data, fds)
    }

    /// See [`Sender::send_value`].
    pub fn send_value<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        self.sender.send_value(value, fds)
    }

    /// See [`Sender::flush`].
    pub fn flush(&mut self) -> Result<()> {
        self.sender.flush()
    }

    /// See [`Receiver::recv`].
    pub fn recv(&mut self) -> Result<(Frame, Vec<OwnedFd>)> {
        self.receiver.recv()
    }

    /// See [`Receiver::recv_ref`].
    pub fn recv_ref(&mut self) -> Result<(FrameRef<'_>, Vec<OwnedFd>)> {
        self.receiver.recv_ref()
    }
}

impl Sender {
    /// Queues `frame` with `fds`, then writes everything queued.
    pub fn send(&mut self, frame: &Frame, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.feed(frame, fds)?;
        self.flush()
    }

    /// Queues `frame`; a frame with fds is written at once.
    pub fn feed(&mut self, frame: &Frame, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.feed_outgoing::<()>(Outgoing::Frame(frame), fds)
    }

    /// Sends a Message frame carrying `data`, then flushes.
    pub fn send_bytes(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.feed_bytes(data, fds)?;
        self.flush()
    }

    /// Queues a Message frame carrying `data`. Messages of 64 KiB or more are
    /// written at once, straight from `data`, with no copy into the queue.
    #[inline]
    pub fn feed_bytes(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        if data.len() < DIRECT_AT {
            return self.feed_outgoing::<()>(Outgoing::Bytes(data), fds);
        }
        self.flush()?;
        let mut direct = DirectWrite::new(self.half.direct_prefix(data.len(), fds.len())?, data);
        self.half.set_direct_in_progress(true);
        while !direct.is_done() {
            direct.step(self.socket.as_fd(), fds)?;
        }
        self.half.set_direct_in_progress(false);
        Ok(())
    }

    /// Sends a Message frame carrying `value` encoded with the wire codec;
    /// the receiver reads it back with [`crate::Message::decode`].
    pub fn send_value<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        self.feed_outgoing(Outgoing::Value(value), fds)?;
        self.flush()
    }

    fn feed_outgoing<T: Serialize + ?Sized>(
        &mut self,
        frame: Outgoing<'_, T>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        self.half.begin()?;
        if fds.is_empty() {
            self.half.queue(frame)?;
            if self.half.queued() >= FLUSH_AT {
                self.flush()?;
            }
            return Ok(());
        }
        // A frame with fds begins its own sendmsg (WIRE.md).
        self.flush()?;
        self.half.queue_with_fds(frame, fds.len())?;
        while self.half.fds_unsent() {
            self.half.write_step(self.socket.as_fd(), fds)?;
        }
        Ok(())
    }

    /// Writes everything queued.
    pub fn flush(&mut self) -> Result<()> {
        self.half.begin()?;
        while self.half.has_pending() {
            self.half.write_step(self.socket.as_fd(), &[])?;
        }
        Ok(())
    }
}

impl Receiver {
    /// The next frame and exactly the fds its header names, all close-on-exec.
    ///
    /// Blocks until a whole frame is in (or the socket's read timeout passes:
    /// an `Io` error that is not fatal). Any other error closes the channel
    /// and every fd received with the broken frame; later calls return
    /// [`crate::Error::Poisoned`].
    pub fn recv(&mut self) -> Result<(Frame, Vec<OwnedFd>)> {
        let (frame, fds) = self.recv_ref()?;
        Ok((frame.into_owned(), fds))
    }

    /// As [`Receiver::recv`], with a Message's bytes borrowed from the
    /// receive buffer until the next receive instead of copied out: a burst
    /// of messages costs no allocation each.
    pub fn recv_ref(&mut self) -> Result<(FrameRef<'_>, Vec<OwnedFd>)> {
        let socket = self.socket.as_fd();
        let taken = close_on_fatal(
            socket,
            loop {
                match self.half.take() {
                    Ok(Some(taken)) => break Ok(taken),
                    Ok(None) => {
                        self.half.before_blocking_read(socket);
                        match self.half.fill(socket) {
                            Ok(Ok(())) => continue,
                            Ok(Err(e)) => break Err(e),
                            Err(e) => break Err(e.into()),
                        }
                    }
                    Err(e) => break Err(e),
                }
            },
        )?;
        Ok(self.half.lend(taken))
    }

    /// The underlying socket.
    pub fn socket(&self) -> &UnixStream {
        &self.socket
    }
}

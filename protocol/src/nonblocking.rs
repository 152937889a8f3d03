//! The async transport: a channel over a tokio `UnixStream`.
//!
//! The same send and receive halves as [`crate::blocking`], each step run
//! inside `UnixStream::async_io`, which waits for readiness and retries on
//! `WouldBlock`.
//!
//! # Cancellation
//!
//! `recv` is cancel-safe: bytes already read stay buffered for the next call.
//! A cancelled `send`/`feed` of a frame with fds drops that frame if its fds
//! had not gone out. A cancelled send of a large (direct) message that had
//! started writing leaves the stream out of step; further sends return
//! [`crate::Error::Poisoned`].

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use serde::Serialize;
use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::channel::{close_on_fatal, DirectWrite, RecvHalf, SendHalf, DIRECT_AT, FLUSH_AT};
use crate::error::Result;
use crate::frame::Limits;
use crate::message::{Frame, FrameRef, Outgoing};

/// Both ends of one arbor channel over a tokio Unix stream socket.
///
/// The same semantics as [`crate::blocking::Channel`].
#[derive(Debug)]
pub struct AsyncChannel {
    sender: AsyncSender,
    receiver: AsyncReceiver,
}

/// The sending half of an [`AsyncChannel`].
#[derive(Debug)]
pub struct AsyncSender {
    socket: Arc<UnixStream>,
    half: SendHalf,
}

/// The receiving half of an [`AsyncChannel`].
#[derive(Debug)]
pub struct AsyncReceiver {
    socket: Arc<UnixStream>,
    half: RecvHalf,
}

impl AsyncChannel {
    /// A channel over `socket` with default [`Limits`].
    pub fn new(socket: UnixStream) -> Self {
        Self::with_limits(socket, Limits::default())
    }

    /// A channel over `socket` that enforces `limits`.
    pub fn with_limits(socket: UnixStream, limits: Limits) -> Self {
        let socket = Arc::new(socket);
        Self {
            sender: AsyncSender {
                socket: Arc::clone(&socket),
                half: SendHalf::new(limits),
            },
            receiver: AsyncReceiver {
                socket,
                half: RecvHalf::new(limits),
            },
        }
    }

    /// A channel over a std socket (for example one a worker inherited at `ARBOR_CHANNEL_FD`),
    /// switched to non-blocking mode. Must be called inside a tokio runtime.
    pub fn from_std(socket: std::os::unix::net::UnixStream, limits: Limits) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self::with_limits(UnixStream::from_std(socket)?, limits))
    }

    /// Two connected channels (a close-on-exec socketpair).
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Self::new(a), Self::new(b)))
    }

    /// The underlying socket.
    pub fn socket(&self) -> &UnixStream {
        &self.receiver.socket
    }

    /// Splits the channel so that one task can receive while another sends.
    pub fn into_split(self) -> (AsyncSender, AsyncReceiver) {
        (self.sender, self.receiver)
    }

    /// See [`AsyncSender::send`].
    pub async fn send(&mut self, frame: &Frame, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.sender.send(frame, fds).await
    }

    /// See [`AsyncSender::feed`].
    pub async fn feed(&mut self, frame: &Frame, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.sender.feed(frame, fds).await
    }

    /// See [`AsyncSender::send_bytes`].
    pub async fn send_bytes(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.sender.send_bytes(data, fds).await
    }

    /// See [`AsyncSender::feed_bytes`].
    pub async fn feed_bytes(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.sender.feed_bytes(data, fds).await
    }

    /// See [`AsyncSender::send_value`].
    pub async fn send_value<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        self.sender.send_value(value, fds).await
    }

    /// See [`AsyncSender::flush`].
    pub async fn flush(&mut self) -> Result<()> {
        self.sender.flush().await
    }

    /// See [`AsyncReceiver::recv`].
    pub async fn recv(&mut self) -> Result<(Frame, Vec<OwnedFd>)> {
        self.receiver.recv().await
    }

    /// See [`AsyncReceiver::recv_ref`].
    pub async fn recv_ref(&mut self) -> Result<(FrameRef<'_>, Vec<OwnedFd>)> {
        self.receiver.recv_ref().await
    }
}

impl AsyncSender {
    /// Queues `frame` with `fds`, then writes everything queued.
    pub async fn send(&mut self, frame: &Frame, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.feed(frame, fds).await?;
        self.flush().await
    }

    /// Queues `frame`; a frame with fds is written at once.
    pub async fn feed(&mut self, frame: &Frame, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.feed_outgoing::<()>(Outgoing::Frame(frame), fds).await
    }

    /// Sends a Message frame carrying `data`, then flushes.
    pub async fn send_bytes(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.feed_bytes(data, fds).await?;
        self.flush().await
    }

    /// Queues a Message frame carrying `data`; 64 KiB or more is written at
    /// once, straight from `data`.
    pub async fn feed_bytes(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        if data.len() < DIRECT_AT {
            return self.feed_outgoing::<()>(Outgoing::Bytes(data), fds).await;
        }
        self.flush().await?;
        let mut direct = DirectWrite::new(self.half.direct_prefix(data.len(), fds.len())?, data);
        self.half.set_direct_in_progress(true);
        let socket = &self.socket;
        while !direct.is_done() {
            socket
                .async_io(Interest::WRITABLE, || direct.step(socket.as_fd(), fds))
                .await?;
        }
        self.half.set_direct_in_progress(false);
        Ok(())
    }

    /// Sends a Message frame carrying `value` encoded with the wire codec.
    pub async fn send_value<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        self.feed_outgoing(Outgoing::Value(value), fds).await?;
        self.flush().await
    }

    async fn feed_outgoing<T: Serialize + ?Sized>(
        &mut self,
        frame: Outgoing<'_, T>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        self.half.begin()?;
        if fds.is_empty() {
            self.half.queue(frame)?;
            if self.half.queued() >= FLUSH_AT {
                self.flush().await?;
            }
            return Ok(());
        }
        // A frame with fds begins its own sendmsg (WIRE.md).
        self.flush().await?;
        self.half.queue_with_fds(frame, fds.len())?;
        let (socket, half) = (&self.socket, &mut self.half);
        while half.fds_unsent() {
            socket
                .async_io(Interest::WRITABLE, || half.write_step(socket.as_fd(), fds))
                .await?;
        }
        Ok(())
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        self.half.begin()?;
        let (socket, half) = (&self.socket, &mut self.half);
        while half.has_pending() {
            socket
                .async_io(Interest::WRITABLE, || half.write_step(socket.as_fd(), &[]))
                .await?;
        }
        Ok(())
    }
}

impl AsyncReceiver {
    /// The next frame and exactly the fds its header names, all close-on-exec.
    ///
    /// Errors as for [`crate::blocking::Receiver::recv`].
    pub async fn recv(&mut self) -> Result<(Frame, Vec<OwnedFd>)> {
        let (frame, fds) = self.recv_ref().await?;
        Ok((frame.into_owned(), fds))
    }

    /// As [`AsyncReceiver::recv`], with a Message's bytes borrowed from the
    /// receive buffer until the next receive instead of copied out.
    pub async fn recv_ref(&mut self) -> Result<(FrameRef<'_>, Vec<OwnedFd>)> {
        let (socket, half) = (&self.socket, &mut self.half);
        let result = loop {
            match half.take() {
                Ok(Some(taken)) => break Ok(taken),
                Ok(None) => {
                    if half.drained() {
                        // Every whole frame is taken and the socket was
                        // empty at the last read: the channel is idle.
                        half.idle();
                    }
                    match fill(socket, half).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => break Err(e),
                        Err(e) => break Err(e.into()),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let taken = close_on_fatal(socket.as_fd(), result)?;
        Ok(self.half.lend(taken))
    }

    /// The underlying socket.
    pub fn socket(&self) -> &UnixStream {
        &self.socket
    }
}

/// One read into the receive half once the socket is readable. A read that
/// emptied the socket ([`RecvHalf::drained`]) clears the socket's readiness
/// as an EAGAIN would, so the next receive waits for the reactor instead of
/// making a `recvmsg` only to hear EAGAIN: one syscall less per message
/// when messages come one at a time (a round trip). Clearing is safe: it
/// only clears the readiness this read saw (tokio compares the event's
/// tick), so bytes that came after it, with their own edge, still wake the
/// next receive.
async fn fill(socket: &UnixStream, half: &mut RecvHalf) -> io::Result<Result<()>> {
    loop {
        socket.readable().await?;
        let mut filled = None;
        let attempt = socket.try_io(Interest::READABLE, || {
            filled = Some(half.fill(socket.as_fd())?);
            match half.drained() {
                // Read, and nothing more is there: cleared as for EAGAIN.
                true => Err(io::ErrorKind::WouldBlock.into()),
                false => Ok(()),
            }
        });
        match (filled, attempt) {
            (Some(result), _) => return Ok(result),
            // Nothing read: not ready after all (readiness now cleared).
            (None, Err(e)) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            (None, _) => continue,
        }
    }
}

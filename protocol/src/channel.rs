//! The state both transports share: a receive half (decoder, control buffer,
//! failure state) and a send half (the outgoing buffer). Each step is one
//! syscall on a borrowed fd, so the blocking transport loops over the steps
//! and the tokio transport runs the same steps inside `async_io`: one
//! implementation of framing, fd matching and error handling, two ways of
//! waiting.

use std::io::{self, IoSlice};
use std::ops::Range;
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::Serialize;

use crate::codec::BYTES_PREFIX;
use crate::decoder::FrameDecoder;
use crate::error::{Error, Result};
use crate::frame::{FrameKind, Header, Limits, HEADER_LEN};
use crate::message::{encode_frame, Checked, Frame, FrameRef, Outgoing};
use crate::sys::{self, CmsgBuffer, Received};

/// Queued bytes past which `feed` writes them out without waiting for `flush`.
pub(crate) const FLUSH_AT: usize = 64 * 1024;
/// Byte messages at least this large are written straight from the caller's
/// buffer with a vectored send instead of being copied into the queue.
pub(crate) const DIRECT_AT: usize = 64 * 1024;

#[derive(Debug)]
enum RecvState {
    Open,
    /// A fatal error happened; the decoder and its fds are gone.
    Failed,
}

/// The receive half of a channel.
#[derive(Debug)]
pub(crate) struct RecvHalf {
    decoder: FrameDecoder,
    control: Box<CmsgBuffer>,
    state: RecvState,
    /// The last read took less than there was room for and no fds: the
    /// socket held nothing more at that moment (see [`RecvHalf::fill`]).
    drained: bool,
}

/// A frame taken and checked by [`RecvHalf::take`], with its fds.
#[derive(Debug)]
pub(crate) enum Taken {
    /// A Message: where its bytes are in the receive buffer.
    Message(Range<usize>, Vec<OwnedFd>),
    /// Any other frame, decoded; boxed, so that a Message (the frame that
    /// comes by the thousand) moves a small value through the receive.
    Other(Box<Frame>, Vec<OwnedFd>),
}

impl RecvHalf {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            decoder: FrameDecoder::new(limits),
            control: Box::new(CmsgBuffer::new()),
            state: RecvState::Open,
            drained: false,
        }
    }

    /// Takes a buffered frame and checks it, or `None` until one is whole.
    /// Its bytes stay in the receive buffer, for [`RecvHalf::lend`]. Fatal
    /// errors close the channel (the caller shuts the socket down) and drop
    /// every held fd.
    #[inline]
    pub(crate) fn take(&mut self) -> Result<Option<Taken>> {
        if let RecvState::Failed = self.state {
            return Err(Error::Poisoned);
        }
        let span = match self.decoder.next_frame_span() {
            Ok(None) => return Ok(None),
            Ok(Some(span)) => span,
            Err(e) => return Err(self.fail(e)),
        };
        // Checked before anything is lent, so that a broken frame fails the
        // channel (and its fds close with the span) while nothing borrows it.
        match Checked::check(span.header.kind, self.decoder.bytes(span.payload.clone())) {
            Ok(Checked::Message) => Ok(Some(Taken::Message(
                span.payload.start + BYTES_PREFIX..span.payload.end,
                span.fds,
            ))),
            Ok(Checked::Other(frame)) => Ok(Some(Taken::Other(Box::new(frame), span.fds))),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The frame [`RecvHalf::take`] took, a Message's bytes borrowed from the
    /// receive buffer until the next read.
    #[inline]
    pub(crate) fn lend(&self, taken: Taken) -> (FrameRef<'_>, Vec<OwnedFd>) {
        match taken {
            Taken::Message(bytes, fds) => (FrameRef::Message(self.decoder.bytes(bytes)), fds),
            Taken::Other(frame, fds) => (FrameRef::Other(*frame), fds),
        }
    }

    /// One `recvmsg` into the decoder. `WouldBlock` is passed through for the
    /// async transport; end of stream and errors fail the channel.
    pub(crate) fn fill(&mut self, socket: BorrowedFd<'_>) -> io::Result<Result<()>> {
        let max_fds = self.decoder.limits().max_fds;
        let spare = self.decoder.spare();
        let room = spare.len();
        self.drained = false;
        match sys::recv(socket, spare, max_fds, &mut self.control) {
            Ok(Received::Data(n, fds)) => {
                // A stream socket's recvmsg copies queued bytes until the
                // buffer is full, the queue is empty, or it has taken a
                // message's fds (nothing here sets SO_PASSCRED, the other
                // boundary it stops at). So a short read without fds means
                // the socket was empty, and the async transport need not
                // ask again only to hear EAGAIN.
                self.drained = n < room && fds.is_empty();
                self.decoder.commit(n, fds);
                Ok(Ok(()))
            }
            Ok(Received::Eof) => {
                let end = self.decoder.finish();
                Ok(Err(self.fail(end)))
            }
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.decoder.idle();
                Err(e)
            }
            Err(e) => Ok(Err(self.fail(e))),
        }
    }

    /// Whether the last [`RecvHalf::fill`] emptied the socket.
    pub(crate) fn drained(&self) -> bool {
        self.drained
    }

    /// The socket was seen empty and every whole frame taken: a drained
    /// large buffer goes back (see [`FrameDecoder::idle`]).
    pub(crate) fn idle(&mut self) {
        self.decoder.idle();
    }

    /// Before a read that blocks: if the decoder holds a large drained
    /// buffer and nothing is waiting on the socket, the stream is idle and
    /// the buffer goes back (as a `WouldBlock` tells the async transport).
    pub(crate) fn before_blocking_read(&mut self, socket: BorrowedFd<'_>) {
        if !self.decoder.holds_large_buffer() {
            return;
        }
        let mut fds = [nix::poll::PollFd::new(socket, nix::poll::PollFlags::POLLIN)];
        if let Ok(0) = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            self.decoder.idle();
        }
    }

    fn fail(&mut self, error: Error) -> Error {
        self.state = RecvState::Failed;
        // Dropping the decoder closes every fd it held.
        self.decoder = FrameDecoder::new(*self.decoder.limits());
        error
    }
}

/// The send half of a channel: encoded frames waiting to be written.
#[derive(Debug)]
pub(crate) struct SendHalf {
    limits: Limits,
    out: Vec<u8>,
    written: usize,
    /// The queue starts with a frame whose fds have not been sent yet.
    fd_frame_unsent: bool,
    /// A direct write was interrupted part-way (an async send was cancelled):
    /// the stream is out of step and nothing more may be sent.
    broken: bool,
}

impl SendHalf {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            out: Vec::new(),
            written: 0,
            fd_frame_unsent: false,
            broken: false,
        }
    }

    /// Checks that sending may go on, first dropping a frame whose fds were
    /// never sent because the send that queued it was cancelled.
    #[inline]
    pub(crate) fn begin(&mut self) -> Result<()> {
        if self.broken {
            return Err(Error::Poisoned);
        }
        if self.fd_frame_unsent {
            self.fd_frame_unsent = false;
            self.out.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// Appends a frame without fds to the queue.
    pub(crate) fn queue<T: Serialize + ?Sized>(&mut self, frame: Outgoing<'_, T>) -> Result<()> {
        encode_frame(&mut self.out, frame, 0, &self.limits)
    }

    /// Queues a frame that carries `fd_count` fds. The queue must be empty:
    /// such a frame begins its own `sendmsg` (WIRE.md), and the next
    /// [`SendHalf::write_step`] must carry its fds.
    pub(crate) fn queue_with_fds<T: Serialize + ?Sized>(
        &mut self,
        frame: Outgoing<'_, T>,
        fd_count: usize,
    ) -> Result<()> {
        debug_assert!(
            !self.has_pending(),
            "flush before queueing a frame with fds"
        );
        encode_frame(&mut self.out, frame, fd_count, &self.limits)?;
        self.fd_frame_unsent = true;
        Ok(())
    }

    /// Whether the fds of the queued fd frame still have to go out.
    pub(crate) fn fds_unsent(&self) -> bool {
        self.fd_frame_unsent
    }

    /// Marks the start and end of a direct write; see `broken`.
    pub(crate) fn set_direct_in_progress(&mut self, in_progress: bool) {
        self.broken = in_progress;
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.written < self.out.len()
    }

    #[inline]
    pub(crate) fn queued(&self) -> usize {
        self.out.len() - self.written
    }

    /// One `sendmsg` of queued bytes, with `fds` attached. Only call with fds
    /// when the queue starts at the frame that carries them.
    pub(crate) fn write_step(
        &mut self,
        socket: BorrowedFd<'_>,
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<()> {
        let n = sys::send(socket, &[IoSlice::new(&self.out[self.written..])], fds)?;
        if !fds.is_empty() {
            self.fd_frame_unsent = false;
        }
        self.written += n;
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// Header and byte-string length prefix of a Message frame of `len` bytes,
    /// for writing large messages straight from the caller's buffer.
    pub(crate) fn direct_prefix(
        &self,
        len: usize,
        fd_count: usize,
    ) -> Result<[u8; HEADER_LEN + 8]> {
        let payload_len = len as u64 + 8;
        if payload_len > u64::from(self.limits.max_payload) {
            return Err(Error::PayloadTooLarge {
                len: payload_len,
                limit: self.limits.max_payload,
            });
        }
        if fd_count > self.limits.max_fds {
            return Err(Error::TooManyFds {
                count: fd_count,
                limit: self.limits.max_fds,
            });
        }
        let header = Header {
            kind: FrameKind::Message as u8,
            payload_len: payload_len as u32,
            fd_count: fd_count as u16,
        };
        let mut prefix = [0u8; HEADER_LEN + 8];
        prefix[..HEADER_LEN].copy_from_slice(&header.encode());
        prefix[HEADER_LEN..].copy_from_slice(&(len as u64).to_le_bytes());
        Ok(prefix)
    }
}

/// Progress of a message written straight from the caller's buffer.
#[derive(Debug)]
pub(crate) struct DirectWrite<'a> {
    prefix: [u8; HEADER_LEN + 8],
    data: &'a [u8],
    written: usize,
}

impl<'a> DirectWrite<'a> {
    pub(crate) fn new(prefix: [u8; HEADER_LEN + 8], data: &'a [u8]) -> Self {
        Self {
            prefix,
            data,
            written: 0,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.written == self.prefix.len() + self.data.len()
    }

    /// One vectored `sendmsg`; the fds go with the first one.
    pub(crate) fn step(
        &mut self,
        socket: BorrowedFd<'_>,
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<()> {
        let fds = if self.written == 0 { fds } else { &[] };
        let n = if self.written < self.prefix.len() {
            sys::send(
                socket,
                &[
                    IoSlice::new(&self.prefix[self.written..]),
                    IoSlice::new(self.data),
                ],
                fds,
            )?
        } else {
            sys::send(
                socket,
                &[IoSlice::new(&self.data[self.written - self.prefix.len()..])],
                fds,
            )?
        };
        self.written += n;
        Ok(())
    }
}

/// Shuts the socket down after a fatal receive error, so the peer sees the
/// channel close at once.
#[inline]
pub(crate) fn close_on_fatal<T>(socket: BorrowedFd<'_>, result: Result<T>) -> Result<T> {
    if let Err(e) = &result {
        if e.is_fatal() {
            sys::shutdown(socket);
        }
    }
    result
}

//! The receive side of a channel, sans I/O: bytes and fd batches in, whole
//! frames with exactly their fds out.
//!
//! # How fds are matched to frames
//!
//! On a `SOCK_STREAM` Unix socket the kernel attaches the fds of one
//! `sendmsg` to the first bytes that call wrote, hands them to the first
//! `recvmsg` that reads any of those bytes, and ends that `recvmsg` after
//! them, so one receive returns at most one batch of fds. arbor's sending rule
//! (WIRE.md) is: a frame that carries fds starts its own `sendmsg`, and that
//! call carries that frame's fds and no others.
//!
//! So for every batch the decoder remembers the stream offsets of the receive
//! that delivered it, `[start, end)`. The frame that owns a batch begins
//! inside that range, and its fds are there by the time its last byte is. A
//! frame that names `k > 0` fds takes the front batch if that batch arrived
//! no later than the frame began and holds exactly `k` fds; anything else is
//! [`Error::FdCountMismatch`]. A batch still unclaimed when a frame begins at
//! or past its `end` was sent with a frame that named no fds:
//! [`Error::StrayFds`]. The receiver's reads and the sender's writes may be
//! split anywhere; none of this depends on where.
//!
//! Every limit is checked as soon as a header is complete. On any error the
//! caller drops the decoder, which closes every fd it still holds.

use std::collections::VecDeque;
use std::ops::Range;
use std::os::fd::OwnedFd;

use crate::error::{Error, Result};
use crate::frame::{Header, Limits, HEADER_LEN};

/// Bytes requested from the socket when no frame asks for more, at first;
/// the chunk doubles while reads fill it, up to [`READ_CHUNK`], so an idle
/// channel costs a few KiB and a busy one reads 64 KiB at a time.
const FIRST_READ_CHUNK: usize = 1024;
/// The largest read chunk.
const READ_CHUNK: usize = 64 * 1024;
/// A receive buffer larger than this is kept only while frames that need it
/// come back to back: it is given back once the stream goes idle (see
/// [`FrameDecoder::idle`]) or the next frame fits in this much.
const KEEP_BUFFER: usize = 4 * 1024 * 1024;
/// Room made for a frame ahead of its bytes: its whole length up to this
/// (a 1 MiB message is read into room made once), beyond it twice what has
/// arrived. A header that announces a large frame and then stalls costs
/// its sender's peer at most this much, not the announced length.
const RESERVE_AHEAD: usize = 1024 * 1024 + HEADER_LEN;

/// Large receive buffers that channels gave back, kept for the next large
/// frame of any channel in the process. A ping-pong of large messages
/// (every one followed by a pause, at which the receiver gives its buffer
/// back) reuses one buffer instead of allocating, faulting in and
/// zero-filling a new one per message, and an idle channel still holds no
/// large buffer. At most [`SPARE_BYTES`] are kept in all; beyond that a
/// buffer given back is freed.
mod large_buffers {
    use std::sync::Mutex;

    /// The most the spares hold in all (one frame of the 16 MiB limit and
    /// more, or several smaller ones).
    pub(super) const SPARE_BYTES: usize = 32 * 1024 * 1024;

    static SPARES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

    fn spares() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
        // A Vec of Vecs is whole after any panic: a poisoned lock is usable.
        SPARES.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `buffer` for a later large frame, if there is room. Not in
    /// this crate's unit tests, which run side by side in one process and
    /// check one decoder's own buffer; `tests/large_buffer_reuse.rs`
    /// checks the reuse.
    pub(super) fn give_back(buffer: Vec<u8>) {
        if cfg!(test) {
            return;
        }
        let mut spares = spares();
        let held: usize = spares.iter().map(Vec::len).sum();
        if held + buffer.len() <= SPARE_BYTES {
            spares.push(buffer);
        }
    }

    /// The smallest spare of at least `len` bytes (initialised, its length
    /// at least `len`), if one is kept.
    pub(super) fn take(len: usize) -> Option<Vec<u8>> {
        let mut spares = spares();
        let at = (0..spares.len())
            .filter(|&i| spares[i].len() >= len)
            .min_by_key(|&i| spares[i].len())?;
        Some(spares.swap_remove(at))
    }
}

/// A frame's header, payload and fds, before its payload is interpreted.
#[derive(Debug)]
pub struct RawFrame<'a> {
    /// The checked header.
    pub header: Header,
    /// The payload, borrowed from the decoder's buffer.
    pub payload: &'a [u8],
    /// Exactly the fds the header names, close-on-exec.
    pub fds: Vec<OwnedFd>,
}

/// A whole frame taken from the decoder, its payload left in the receive
/// buffer until the next receive.
#[derive(Debug)]
pub(crate) struct FrameSpan {
    pub(crate) header: Header,
    /// Where the payload is in the receive buffer.
    pub(crate) payload: Range<usize>,
    pub(crate) fds: Vec<OwnedFd>,
}

#[derive(Debug)]
struct FdBatch {
    fds: Vec<OwnedFd>,
    /// Stream offset of the first byte of the receive that delivered the batch.
    start: u64,
    /// Stream offset just past that receive's last byte.
    end: u64,
}

/// Reassembles frames from a byte stream with fds attached.
#[derive(Debug)]
pub struct FrameDecoder {
    limits: Limits,
    /// Receive buffer; `buf[head..tail]` is received and not yet consumed.
    buf: Vec<u8>,
    head: usize,
    tail: usize,
    /// Stream offset of `buf[head]`.
    offset: u64,
    batches: VecDeque<FdBatch>,
    /// Current read chunk, between FIRST_READ_CHUNK and READ_CHUNK.
    chunk: usize,
    /// A problem found when bytes or fds were committed, reported by the
    /// next call to `next_frame`.
    pending_error: Option<Error>,
}

/// Most fd batches held at once. A receiver that drains whole frames before
/// reading again holds at most two (the batch of the frame being completed
/// and the one of the frame just begun); more means a peer is piling fds up.
const MAX_BATCHES: usize = 4;

impl FrameDecoder {
    /// A decoder that enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buf: Vec::new(),
            head: 0,
            tail: 0,
            offset: 0,
            batches: VecDeque::new(),
            chunk: FIRST_READ_CHUNK,
            pending_error: None,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Free space to receive into: the rest of the frame being assembled, or
    /// a chunk for whatever comes next. Never empty.
    pub fn spare(&mut self) -> &mut [u8] {
        let buffered = self.tail - self.head;
        if self.buf.len() > KEEP_BUFFER
            && matches!(self.peek_header(), Some(Ok(header)) if header.frame_len() <= KEEP_BUFFER)
        {
            // Large frames are over for now: give back what they needed,
            // keeping the start of the small one that came after them.
            let mut small = vec![0; buffered.max(self.chunk)];
            small[..buffered].copy_from_slice(&self.buf[self.head..self.tail]);
            large_buffers::give_back(std::mem::replace(&mut self.buf, small));
            self.head = 0;
            self.tail = buffered;
        }
        // A header that fails its checks is reported by next_frame before the
        // caller reads again, so a bad length never sizes the buffer; a good
        // one sizes it only as far as its bytes come (RESERVE_AHEAD).
        let frame_len = match self.peek_header() {
            Some(Ok(header)) => Some(header.frame_len()),
            _ => None,
        };
        let wanted = frame_len.map_or(self.chunk, |len| {
            len.min(RESERVE_AHEAD.max(2 * buffered)).max(self.chunk)
        });
        if self.buf.len() - self.head < wanted {
            // Move the unconsumed bytes to the front, then grow if still short.
            self.buf.copy_within(self.head..self.tail, 0);
            self.head = 0;
            self.tail = buffered;
            if self.buf.len() < wanted {
                // A large frame whose first RESERVE_AHEAD bytes have come
                // (its sender is sending, not stalling) takes a buffer an
                // idle channel gave back, whole, when one is big enough:
                // no allocation, page faults or zero-filling for the rest,
                // and no regrowth as its bytes come.
                let reused = frame_len
                    .filter(|len| *len > KEEP_BUFFER && buffered >= RESERVE_AHEAD)
                    .and_then(large_buffers::take);
                match reused {
                    Some(mut large) => {
                        large[..buffered].copy_from_slice(&self.buf[..buffered]);
                        self.buf = large;
                    }
                    None => self.buf.resize(wanted, 0),
                }
            }
        } else if self.tail == self.buf.len() {
            self.buf.copy_within(self.head..self.tail, 0);
            self.head = 0;
            self.tail = buffered;
        }
        if self.tail == self.buf.len() {
            // The caller did not drain whole frames first; make room anyway.
            self.buf.resize(self.buf.len() + self.chunk, 0);
        }
        &mut self.buf[self.tail..]
    }

    /// Nothing more has arrived for now (a read would block): a drained
    /// receive buffer that very large frames needed is given back, to the
    /// process-wide spares the next large frame takes (see
    /// [`large_buffers`]). While large frames come back to back it is kept.
    pub fn idle(&mut self) {
        if self.holds_large_buffer() {
            large_buffers::give_back(std::mem::take(&mut self.buf));
            self.head = 0;
            self.tail = 0;
        }
    }

    /// Whether the decoder holds a drained buffer larger than it keeps
    /// when idle (the blocking transport then checks for idleness first).
    pub fn holds_large_buffer(&self) -> bool {
        self.tail == self.head && self.buf.len() > KEEP_BUFFER
    }

    /// Records that `len` bytes were received into [`FrameDecoder::spare`],
    /// with the fds that arrived in the same receive.
    pub fn commit(&mut self, len: usize, fds: Vec<OwnedFd>) {
        assert!(
            self.tail + len <= self.buf.len(),
            "committed more than spare() offered"
        );
        if self.tail + len == self.buf.len() && self.chunk < READ_CHUNK {
            // The read filled all the room there was: more is probably waiting.
            self.chunk *= 2;
        }
        let start = self.received();
        self.tail += len;
        if fds.is_empty() || self.pending_error.is_some() {
            return;
        }
        let end = self.received();
        // A batch whose receive began after the frame being assembled and
        // ended inside it has no frame to belong to: frames start only at
        // that frame's end or later. Refuse it now rather than hold it.
        if let Some(Ok(header)) = self.peek_header() {
            let frame_end = self.offset + header.frame_len() as u64;
            if start > self.offset && end <= frame_end {
                self.pending_error = Some(Error::StrayFds { count: fds.len() });
                return;
            }
        }
        if self.batches.len() >= MAX_BATCHES {
            self.pending_error = Some(Error::StrayFds {
                count: fds.len() + self.batches.iter().map(|b| b.fds.len()).sum::<usize>(),
            });
            self.batches.clear();
            return;
        }
        self.batches.push_back(FdBatch { fds, start, end });
    }

    /// Total bytes received on the stream so far.
    fn received(&self) -> u64 {
        self.offset + (self.tail - self.head) as u64
    }

    #[inline]
    fn peek_header(&self) -> Option<Result<Header>> {
        let bytes = self.buf.get(self.head..self.head + HEADER_LEN)?;
        if self.tail - self.head < HEADER_LEN {
            return None;
        }
        let bytes: &[u8; HEADER_LEN] = bytes.try_into().ok()?;
        Some(Header::decode(bytes, &self.limits))
    }

    /// The next whole frame, or `None` until more bytes arrive.
    ///
    /// An error means the stream is broken: drop the decoder (closing every
    /// fd it holds) and close the channel.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame<'_>>> {
        Ok(self.next_frame_span()?.map(|span| RawFrame {
            header: span.header,
            payload: &self.buf[span.payload],
            fds: span.fds,
        }))
    }

    /// As [`FrameDecoder::next_frame`], with the payload as a range of the
    /// receive buffer ([`FrameDecoder::bytes`]) instead of a borrow, so that
    /// a caller can check a frame, and fail, before it lends out its bytes.
    #[inline]
    pub(crate) fn next_frame_span(&mut self) -> Result<Option<FrameSpan>> {
        if let Some(error) = self.pending_error.take() {
            self.batches.clear();
            return Err(error);
        }
        let header = match self.peek_header() {
            None => return Ok(None),
            Some(header) => header?,
        };
        let len = header.frame_len();
        if self.tail - self.head < len {
            return Ok(None);
        }
        let fds = self.claim_fds(self.offset, usize::from(header.fd_count))?;
        let payload = self.head + HEADER_LEN..self.head + len;
        self.head += len;
        self.offset += len as u64;
        if self.head == self.tail {
            // The bytes stay where they are until the next receive.
            self.head = 0;
            self.tail = 0;
        }
        Ok(Some(FrameSpan {
            header,
            payload,
            fds,
        }))
    }

    /// Bytes of the receive buffer: a range that [`FrameDecoder::next_frame_span`]
    /// handed out since the last [`FrameDecoder::spare`].
    pub(crate) fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    #[inline]
    fn claim_fds(&mut self, frame_start: u64, declared: usize) -> Result<Vec<OwnedFd>> {
        let Some(front) = self.batches.front() else {
            return match declared {
                0 => Ok(Vec::new()),
                _ => Err(Error::FdCountMismatch {
                    declared,
                    received: 0,
                }),
            };
        };
        if front.end <= frame_start {
            return Err(Error::StrayFds {
                count: front.fds.len(),
            });
        }
        match declared {
            0 => Ok(Vec::new()),
            _ if front.start > frame_start => Err(Error::FdCountMismatch {
                declared,
                received: 0,
            }),
            _ if front.fds.len() != declared => Err(Error::FdCountMismatch {
                declared,
                received: front.fds.len(),
            }),
            _ => Ok(self
                .batches
                .pop_front()
                .map(|batch| batch.fds)
                .unwrap_or_default()),
        }
    }

    /// Checks the stream's end: [`Error::Closed`] on a frame boundary with no
    /// fds left over, otherwise what was left unfinished.
    pub fn finish(&mut self) -> Error {
        if let Some(error) = self.pending_error.take() {
            error
        } else if self.tail > self.head {
            Error::Truncated {
                buffered: self.tail - self.head,
            }
        } else if let Some(batch) = self.batches.front() {
            Error::StrayFds {
                count: batch.fds.len(),
            }
        } else {
            Error::Closed
        }
    }

    /// Whether a frame is partly received (bytes or fds waiting for the rest).
    pub fn is_mid_frame(&self) -> bool {
        self.tail > self.head || !self.batches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::DEFAULT_MAX_PAYLOAD;
    use crate::message::{encode_frame, Frame, Outgoing};

    fn frame_bytes(payload: &[u8], fd_count: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame::<()>(
            &mut out,
            Outgoing::Bytes(payload),
            fd_count,
            &Limits::default(),
        )
        .unwrap();
        out
    }

    /// Feeds `bytes` in reads as large as `spare` offers, calling `after`
    /// with the decoder and the bytes fed so far after each.
    fn feed_as_room_allows(
        decoder: &mut FrameDecoder,
        bytes: &[u8],
        mut after: impl FnMut(&FrameDecoder, usize),
    ) {
        let mut fed = 0;
        while fed < bytes.len() {
            let spare = decoder.spare();
            let n = spare.len().min(bytes.len() - fed);
            spare[..n].copy_from_slice(&bytes[fed..fed + n]);
            decoder.commit(n, vec![]);
            fed += n;
            after(decoder, fed);
        }
    }

    fn devnull() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn feed(decoder: &mut FrameDecoder, bytes: &[u8], fds: Vec<OwnedFd>) {
        let spare = decoder.spare();
        spare[..bytes.len()].copy_from_slice(bytes);
        decoder.commit(bytes.len(), fds);
    }

    fn message(frame: RawFrame<'_>) -> (Vec<u8>, usize) {
        let Frame::Message(m) = Frame::decode(frame.header.kind, frame.payload).unwrap() else {
            panic!("not a message")
        };
        (m.data, frame.fds.len())
    }

    #[test]
    fn byte_at_a_time_reassembles_frames_and_fds() {
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut stream = frame_bytes(b"one", 2);
        let second = stream.len();
        stream.extend(frame_bytes(b"two", 0));
        let mut got = Vec::new();
        for (i, byte) in stream.iter().enumerate() {
            let fds = if i == 0 {
                vec![devnull(), devnull()]
            } else {
                vec![]
            };
            feed(&mut decoder, &[*byte], fds);
            while let Some(frame) = decoder.next_frame().unwrap() {
                got.push((i, message(frame)));
            }
        }
        assert_eq!(
            got,
            vec![
                (second - 1, (b"one".to_vec(), 2)),
                (stream.len() - 1, (b"two".to_vec(), 0))
            ]
        );
        assert!(matches!(decoder.finish(), Error::Closed));
    }

    #[test]
    fn fds_for_a_frame_may_arrive_with_an_earlier_frames_bytes() {
        // A receive that merged an fd-less frame with the start of an fd frame.
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut stream = frame_bytes(b"plain", 0);
        stream.extend(frame_bytes(b"with fd", 1));
        feed(&mut decoder, &stream, vec![devnull()]);
        assert_eq!(
            message(decoder.next_frame().unwrap().unwrap()),
            (b"plain".to_vec(), 0)
        );
        assert_eq!(
            message(decoder.next_frame().unwrap().unwrap()),
            (b"with fd".to_vec(), 1)
        );
    }

    #[test]
    fn a_frame_naming_more_fds_than_arrived_is_a_mismatch() {
        let mut decoder = FrameDecoder::new(Limits::default());
        feed(&mut decoder, &frame_bytes(b"x", 2), vec![devnull()]);
        assert!(matches!(
            decoder.next_frame(),
            Err(Error::FdCountMismatch {
                declared: 2,
                received: 1
            })
        ));
        let mut decoder = FrameDecoder::new(Limits::default());
        feed(&mut decoder, &frame_bytes(b"x", 1), vec![]);
        assert!(matches!(
            decoder.next_frame(),
            Err(Error::FdCountMismatch {
                declared: 1,
                received: 0
            })
        ));
    }

    #[test]
    fn fds_no_frame_names_are_stray() {
        let mut decoder = FrameDecoder::new(Limits::default());
        feed(&mut decoder, &frame_bytes(b"a", 0), vec![devnull()]);
        // The frame that began the receive named no fds; it is still accepted,
        // since a later frame in the same receive could own them...
        assert!(decoder.next_frame().unwrap().is_some());
        // ...but the next frame, in a later receive, shows nobody did.
        feed(&mut decoder, &frame_bytes(b"b", 0), vec![]);
        assert!(matches!(
            decoder.next_frame(),
            Err(Error::StrayFds { count: 1 })
        ));

        let mut decoder = FrameDecoder::new(Limits::default());
        feed(&mut decoder, &frame_bytes(b"a", 0), vec![devnull()]);
        assert!(decoder.next_frame().unwrap().is_some());
        assert!(matches!(decoder.finish(), Error::StrayFds { count: 1 }));
    }

    #[test]
    fn fds_arriving_inside_an_unfinished_frame_are_refused_at_once() {
        let mut decoder = FrameDecoder::new(Limits::default());
        let bytes = frame_bytes(&[0u8; 1000], 0);
        feed(&mut decoder, &bytes[..100], vec![]);
        // A receive that starts and ends inside the frame cannot carry fds
        // for any frame; they are closed now, not held until the frame ends.
        feed(&mut decoder, &bytes[100..101], vec![devnull(), devnull()]);
        assert!(matches!(
            decoder.next_frame(),
            Err(Error::StrayFds { count: 2 })
        ));
    }

    #[test]
    fn a_pile_of_fd_batches_is_refused() {
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut stream = Vec::new();
        for _ in 0..MAX_BATCHES + 1 {
            stream.extend(frame_bytes(b"x", 1));
        }
        // Each receive brings one frame's first byte and its fd, never draining.
        let len = stream.len() / (MAX_BATCHES + 1);
        for i in 0..=MAX_BATCHES {
            feed(&mut decoder, &stream[i * len..i * len + 1], vec![devnull()]);
            feed(&mut decoder, &stream[i * len + 1..(i + 1) * len], vec![]);
        }
        let mut result = Ok(());
        for _ in 0..=MAX_BATCHES {
            if let Err(e) = decoder.next_frame() {
                result = Err(e);
                break;
            }
        }
        assert!(matches!(result, Err(Error::StrayFds { .. })));
    }

    #[test]
    fn a_bad_header_fails_before_its_payload_arrives() {
        let mut decoder = FrameDecoder::new(Limits::default().with_max_payload(100));
        let bytes = frame_bytes(&[0u8; 200], 0);
        feed(&mut decoder, &bytes[..HEADER_LEN], vec![]);
        assert!(matches!(
            decoder.next_frame(),
            Err(Error::PayloadTooLarge { limit: 100, .. })
        ));
        assert!(
            decoder.spare().len() <= READ_CHUNK,
            "a refused length never sizes the buffer"
        );
    }

    #[test]
    fn end_of_stream_inside_a_frame_is_truncation() {
        let mut decoder = FrameDecoder::new(Limits::default());
        let bytes = frame_bytes(b"hello", 0);
        feed(&mut decoder, &bytes[..bytes.len() - 1], vec![]);
        assert!(decoder.next_frame().unwrap().is_none());
        assert!(decoder.is_mid_frame());
        assert!(
            matches!(decoder.finish(), Error::Truncated { buffered } if buffered == bytes.len() - 1)
        );
    }

    #[test]
    fn a_large_buffer_is_kept_while_large_frames_come_back_to_back() {
        let data = vec![3u8; 2 * KEEP_BUFFER];
        let bytes = frame_bytes(&data, 0);
        let mut decoder = FrameDecoder::new(Limits::default());
        feed_as_room_allows(&mut decoder, &bytes, |_, _| {});
        assert_eq!(message(decoder.next_frame().unwrap().unwrap()).0, data);
        assert!(decoder.next_frame().unwrap().is_none());
        assert!(decoder.holds_large_buffer());
        // The next large frame is read into the same buffer: no new one,
        // and no growth as its bytes come.
        let (at, len) = (decoder.buf.as_ptr(), decoder.buf.len());
        feed_as_room_allows(&mut decoder, &bytes, |decoder, _| {
            assert_eq!((decoder.buf.as_ptr(), decoder.buf.len()), (at, len));
        });
        assert_eq!(message(decoder.next_frame().unwrap().unwrap()).0, data);
    }

    #[test]
    fn a_large_buffer_goes_back_when_the_stream_idles_or_a_small_frame_comes() {
        let large = frame_bytes(&vec![3u8; 2 * KEEP_BUFFER], 0);
        let mut decoder = FrameDecoder::new(Limits::default());
        feed_as_room_allows(&mut decoder, &large, |_, _| {});
        decoder.next_frame().unwrap().unwrap();
        decoder.idle();
        assert!(!decoder.holds_large_buffer());
        assert!(decoder.spare().len() <= READ_CHUNK);
        // Again, then a small frame's first bytes: the buffer shrinks to
        // what the small frame needs, and the frame still arrives whole.
        feed_as_room_allows(&mut decoder, &large, |_, _| {});
        decoder.next_frame().unwrap().unwrap();
        let small = frame_bytes(b"small", 0);
        feed(&mut decoder, &small[..HEADER_LEN + 2], vec![]);
        assert!(decoder.next_frame().unwrap().is_none());
        decoder.spare();
        assert!(decoder.buf.len() <= KEEP_BUFFER, "{}", decoder.buf.len());
        feed(&mut decoder, &small[HEADER_LEN + 2..], vec![]);
        assert_eq!(message(decoder.next_frame().unwrap().unwrap()).0, b"small");
    }

    #[test]
    fn a_large_frame_gets_room_as_its_bytes_come_not_all_at_once() {
        // The largest message the default limits allow (a Message payload is
        // the data's u64 length, then the data).
        let data = vec![7u8; DEFAULT_MAX_PAYLOAD as usize - 8];
        let bytes = frame_bytes(&data, 0);
        let mut decoder = FrameDecoder::new(Limits::default());
        let spare = decoder.spare();
        spare[..HEADER_LEN].copy_from_slice(&bytes[..HEADER_LEN]);
        decoder.commit(HEADER_LEN, vec![]);
        assert!(decoder.next_frame().unwrap().is_none());
        // The header alone makes room for RESERVE_AHEAD, not 16 MiB.
        decoder.spare();
        assert!(decoder.buf.len() <= RESERVE_AHEAD, "{}", decoder.buf.len());
        // As the bytes come the room grows with them, and the frame completes.
        feed_as_room_allows(&mut decoder, &bytes[HEADER_LEN..], |decoder, fed| {
            let fed = HEADER_LEN + fed;
            assert!(decoder.buf.len() <= (2 * fed).max(RESERVE_AHEAD) + READ_CHUNK);
        });
        assert_eq!(message(decoder.next_frame().unwrap().unwrap()).0, data);
    }

    #[test]
    fn a_frame_larger_than_the_read_chunk_gets_room() {
        let mut decoder = FrameDecoder::new(Limits::default());
        let payload = vec![9u8; 3 * READ_CHUNK];
        let bytes = frame_bytes(&payload, 0);
        feed_as_room_allows(&mut decoder, &bytes, |_, _| {});
        assert_eq!(message(decoder.next_frame().unwrap().unwrap()).0, payload);
    }
}

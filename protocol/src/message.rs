//! Typed frames: what each frame kind's payload means.
//!
//! This is the layer above the raw "header + bytes + fds" frames of
//! [`crate::decoder`]: it maps a kind byte and a payload to a [`Frame`] and
//! back, through [`crate::codec`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::codec;
use crate::error::{Error, Result};
use crate::exit::{ExitRecord, Initiator, ResourceUsage};
use crate::frame::{FrameKind, Header, Limits, HEADER_LEN, PROTOCOL_VERSION};
use crate::signal::Signal;

/// Sent once by a worker when its handlers are installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// Highest protocol version the worker speaks.
    pub protocol_version: u8,
    /// The id the supervisor gave the worker (`ARBOR_WORKER_ID`).
    pub worker_id: u64,
    /// The worker's name (`ARBOR_WORKER_NAME`).
    pub name: String,
    /// The worker's process id.
    pub pid: u32,
}

impl Ready {
    /// A Ready for this crate's protocol version.
    pub fn new(worker_id: u64, name: impl Into<String>, pid: u32) -> Self {
        Self {
            protocol_version: PROTOCOL_VERSION,
            worker_id,
            name: name.into(),
            pid,
        }
    }
}

/// Application bytes. The fds sent with the frame travel beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The message's bytes: opaque to arbor, or a value encoded by
    /// [`crate::blocking::Channel::send_value`] and read back with [`Message::decode`].
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl Message {
    /// A message carrying `data`.
    pub fn new(data: impl Into<Vec<u8>>) -> Self {
        Self { data: data.into() }
    }

    /// A message carrying `value` encoded with the wire codec, for senders
    /// that queue messages before writing them (`send_value` writes in place).
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let mut data = Vec::new();
        codec::encode_into(value, &mut data).map_err(|reason| Error::Encode { reason })?;
        Ok(Self { data })
    }

    /// Decodes the message's bytes as a `T` that was sent with `send_value`.
    ///
    /// A mismatch is [`Error::MessageDecode`] (the spec's `messageerror`);
    /// the channel stays usable.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        codec::decode_exact(&self.data).map_err(|reason| Error::MessageDecode {
            type_name: std::any::type_name::<T>(),
            reason,
        })
    }
}

/// Where in the worker's source an error was raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Source file.
    pub file: String,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

/// A worker-side failure (a panic, an uncaught error), as the spec's `onerror` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// What went wrong.
    pub message: String,
    /// Where, when known.
    pub location: Option<Location>,
}

/// One frame of the worker channel, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// See [`Ready`].
    Ready(Ready),
    /// See [`Message`].
    Message(Message),
    /// Ask the worker to run onclose and exit. Empty payload.
    Close,
    /// See [`ErrorReport`].
    Error(ErrorReport),
    /// Liveness probe with a nonce.
    Ping(u64),
    /// Answer to a ping, echoing its nonce.
    Pong(u64),
    /// A message that expects one [`Frame::Reply`] with the same id.
    Request(Request),
    /// The answer to the request with this id.
    Reply(Request),
    /// An accepted connection for a pool replica; its fd travels with the
    /// frame (exactly one).
    Connection(Connection),
    /// A replica's answer to a [`Frame::Connection`].
    ConnectionAck(ConnectionAck),
    /// A replica's count of the handed-off connections it has open, sent
    /// whenever one of them closes.
    Load(u32),
    /// A worker asks for a sub-worker; its listen fds travel with the frame.
    Spawn(Box<Spawn>),
    /// The answer to a [`Frame::Spawn`]; a started sub-worker's channel end
    /// travels with it (exactly one fd).
    SpawnResult(SpawnResult),
    /// A sub-worker's exit, sent to the worker that started it after that
    /// worker got the sub-worker's SpawnResult.
    ChildExit(ChildExit),
    /// Send Close to your sub-worker with this id (its channel is yours).
    CloseChild(u64),
    /// Close or terminate my sub-worker (and its subtree).
    ChildControl(ChildControl),
    /// A client connected (a shared worker's `onconnect`): the frame's one
    /// fd is the worker's end of a new port.
    Port(PortOpen),
}

/// The payload of a Port frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortOpen {
    /// Chosen by the supervisor, unique among this worker's ports.
    pub id: u64,
    /// Who connected, for logs (`arborctl attach` says its pid and uid).
    pub origin: String,
}

/// The payload of a Spawn frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawn {
    /// Chosen by the worker; the [`SpawnResult`] names it.
    pub id: u64,
    /// What to start.
    pub spec: crate::spec::SpawnSpec,
}

/// The payload of a SpawnResult frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnResult {
    /// The [`Spawn`] answered.
    pub id: u64,
    /// Started, or refused.
    pub outcome: SpawnOutcome,
}

/// What became of a Spawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpawnOutcome {
    /// The sub-worker runs; its channel end is the frame's one fd.
    Started {
        /// Its id (`ARBOR_WORKER_ID`), which ChildExit and ChildControl name.
        worker_id: u64,
        /// Its process id.
        pid: u32,
    },
    /// Nothing was started.
    Refused(SpawnRefusal),
}

/// Why a Spawn was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SpawnRefusal {
    /// The sub-worker would be deeper in the tree than allowed.
    #[error("the worker tree may be at most {limit} levels deep")]
    Depth {
        /// The configured limit.
        limit: u32,
    },
    /// The worker has as many sub-workers (running or starting) as allowed.
    #[error("a worker may have at most {limit} sub-workers")]
    Children {
        /// The configured limit.
        limit: u32,
    },
    /// The supervisor runs as many workers as allowed.
    #[error("the supervisor runs at most {limit} workers")]
    Total {
        /// The configured limit.
        limit: u32,
    },
    /// The worker is closing or terminating (with its subtree).
    #[error("the worker is closing")]
    Closing,
    /// The spec was not valid (a bad path, a NUL byte, fds without names).
    #[error("bad spec: {reason}")]
    BadSpec {
        /// What was wrong.
        reason: String,
    },
    /// The spec was valid but the process did not start (no such program,
    /// exec failed, out of resources).
    #[error("did not start: {reason}")]
    Failed {
        /// What went wrong.
        reason: String,
    },
    /// The top-level worker's tree has as many sub-workers (all levels,
    /// running or starting) as allowed.
    #[error("one worker tree may have at most {limit} sub-workers")]
    Tree {
        /// The configured limit.
        limit: u32,
    },
}

/// The payload of a ChildExit frame: a sub-worker's exit as the supervisor
/// recorded it (`wait4`'s status and usage, and who asked for the end).
/// [`ChildExit::record`] turns it into the [`ExitRecord`] a top-level
/// worker's exit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildExit {
    /// The sub-worker, as its SpawnResult named it.
    pub worker_id: u64,
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal number, if a signal killed it.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    pub core_dumped: bool,
    /// What started the end.
    pub initiated_by: Initiator,
    /// For a close: the number of the last signal the escalation sent.
    pub escalated_to: Option<i32>,
    /// User CPU time, microseconds.
    pub user_time_us: u64,
    /// System CPU time, microseconds.
    pub system_time_us: u64,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
}

impl ChildExit {
    /// The frame for sub-worker `worker_id`'s exit `record`.
    pub fn new(worker_id: u64, record: &ExitRecord) -> Self {
        let micros = |time: Duration| u64::try_from(time.as_micros()).unwrap_or(u64::MAX);
        Self {
            worker_id,
            code: record.code,
            signal: record.signal.map(Signal::number),
            core_dumped: record.core_dumped,
            initiated_by: record.initiated_by,
            escalated_to: record.escalated_to.map(Signal::number),
            user_time_us: micros(record.usage.user_time),
            system_time_us: micros(record.usage.system_time),
            max_rss_kib: record.usage.max_rss_kib,
        }
    }

    /// The exit as an [`ExitRecord`]. A signal number outside
    /// `1..=SIGRTMAX` (from a peer that is not arbor) reads as none.
    pub fn record(&self) -> ExitRecord {
        ExitRecord {
            code: self.code,
            signal: self.signal.and_then(Signal::from_number),
            core_dumped: self.core_dumped,
            initiated_by: self.initiated_by,
            escalated_to: self.escalated_to.and_then(Signal::from_number),
            usage: ResourceUsage {
                user_time: Duration::from_micros(self.user_time_us),
                system_time: Duration::from_micros(self.system_time_us),
                max_rss_kib: self.max_rss_kib,
            },
        }
    }
}

/// The payload of a ChildControl frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildControl {
    /// The sub-worker, as its SpawnResult named it.
    pub worker_id: u64,
    /// What to do with it.
    pub action: ChildAction,
}

/// What a worker asks for one of its sub-workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildAction {
    /// Close it leaves first: Close frames, then SIGTERM and SIGKILL
    /// after this grace.
    Close {
        /// Milliseconds between steps.
        grace_ms: u64,
    },
    /// SIGKILL it and its subtree at once.
    Terminate,
}

/// The payload of a Connection frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Chosen by the supervisor; the [`ConnectionAck`] names it.
    pub id: u64,
    /// The pool socket it was accepted on (its `[[pool.socket]]` name).
    pub socket: String,
}

/// The payload of a ConnectionAck frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionAck {
    /// The [`Connection`] answered.
    pub id: u64,
    /// `false`: the replica did not take it (it is closing, or has no
    /// connection handler), and the supervisor hands it to another.
    pub accepted: bool,
    /// Handed-off connections the replica has open, this one included.
    pub open: u32,
}

/// The payload of a Request or a Reply: an id and the message's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the requester, unique among its requests in flight; the
    /// reply carries it back.
    pub id: u64,
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Ready(_) => FrameKind::Ready,
            Frame::Message(_) => FrameKind::Message,
            Frame::Close => FrameKind::Close,
            Frame::Error(_) => FrameKind::Error,
            Frame::Ping(_) => FrameKind::Ping,
            Frame::Pong(_) => FrameKind::Pong,
            Frame::Request(_) => FrameKind::Request,
            Frame::Reply(_) => FrameKind::Reply,
            Frame::Connection(_) => FrameKind::Connection,
            Frame::ConnectionAck(_) => FrameKind::ConnectionAck,
            Frame::Load(_) => FrameKind::Load,
            Frame::Spawn(_) => FrameKind::Spawn,
            Frame::SpawnResult(_) => FrameKind::SpawnResult,
            Frame::ChildExit(_) => FrameKind::ChildExit,
            Frame::CloseChild(_) => FrameKind::CloseChild,
            Frame::ChildControl(_) => FrameKind::ChildControl,
            Frame::Port(_) => FrameKind::Port,
        }
    }

    /// Appends this frame's payload encoding to `out`.
    fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Frame::Ready(ready) => codec::encode_into(ready, out),
            Frame::Message(message) => {
                codec::encode_bytes(&message.data, out);
                Ok(())
            }
            Frame::Close => Ok(()),
            Frame::Error(report) => codec::encode_into(report, out),
            Frame::Ping(nonce) | Frame::Pong(nonce) => codec::encode_into(nonce, out),
            Frame::Request(request) | Frame::Reply(request) => codec::encode_into(request, out),
            Frame::Connection(connection) => codec::encode_into(connection, out),
            Frame::ConnectionAck(ack) => codec::encode_into(ack, out),
            Frame::Load(open) => codec::encode_into(open, out),
            Frame::Spawn(spawn) => codec::encode_into(spawn, out),
            Frame::SpawnResult(result) => codec::encode_into(result, out),
            Frame::ChildExit(exit) => codec::encode_into(exit, out),
            Frame::CloseChild(id) => codec::encode_into(id, out),
            Frame::ChildControl(control) => codec::encode_into(control, out),
            Frame::Port(open) => codec::encode_into(open, out),
        }
    }

    /// Decodes a frame from its header's kind byte and its payload.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Frame> {
        let kind = FrameKind::from_byte(kind).ok_or(Error::UnknownKind { kind })?;
        let malformed = |reason| Error::MalformedPayload {
            kind: kind.name(),
            reason,
        };
        Ok(match kind {
            FrameKind::Ready => Frame::Ready(codec::decode_exact(payload).map_err(malformed)?),
            FrameKind::Message => Frame::Message(Message {
                data: codec::decode_bytes(payload).map_err(malformed)?.to_vec(),
            }),
            FrameKind::Close if payload.is_empty() => Frame::Close,
            FrameKind::Close => {
                return Err(malformed(format!(
                    "{} bytes where none belong",
                    payload.len()
                )))
            }
            FrameKind::Error => Frame::Error(codec::decode_exact(payload).map_err(malformed)?),
            FrameKind::Ping => Frame::Ping(codec::decode_exact(payload).map_err(malformed)?),
            FrameKind::Pong => Frame::Pong(codec::decode_exact(payload).map_err(malformed)?),
            FrameKind::Request => Frame::Request(codec::decode_exact(payload).map_err(malformed)?),
            FrameKind::Reply => Frame::Reply(codec::decode_exact(payload).map_err(malformed)?),
            FrameKind::Connection => {
                Frame::Connection(codec::decode_exact(payload).map_err(malformed)?)
            }
            FrameKind::ConnectionAck => {
                Frame::ConnectionAck(codec::decode_exact(payload).map_err(malformed)?)
            }
            FrameKind::Load => Frame::Load(codec::decode_exact(payload).map_err(malformed)?),
            FrameKind::Spawn => {
                Frame::Spawn(Box::new(codec::decode_exact(payload).map_err(malformed)?))
            }
            FrameKind::SpawnResult => {
                Frame::SpawnResult(codec::decode_exact(payload).map_err(malformed)?)
            }
            FrameKind::ChildExit => {
                Frame::ChildExit(codec::decode_exact(payload).map_err(malformed)?)
            }
            FrameKind::CloseChild => {
                Frame::CloseChild(codec::decode_exact(payload).map_err(malformed)?)
            }
            FrameKind::ChildControl => {
                Frame::ChildControl(codec::decode_exact(payload).map_err(malformed)?)
            }
            FrameKind::Port => Frame::Port(codec::decode_exact(payload).map_err(malformed)?),
        })
    }
}

/// A received frame whose message bytes are borrowed from the channel's
/// receive buffer, valid until the channel's next receive: a stream of
/// messages then costs no allocation each.
/// [`FrameRef::into_owned`] copies it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameRef<'a> {
    /// A [`FrameKind::Message`]'s bytes.
    Message(&'a [u8]),
    /// Any other frame, decoded.
    Other(Frame),
}

impl FrameRef<'_> {
    /// The frame, owning its bytes.
    pub fn into_owned(self) -> Frame {
        match self {
            FrameRef::Message(data) => Frame::Message(Message {
                data: data.to_vec(),
            }),
            FrameRef::Other(frame) => frame,
        }
    }
}

/// A received frame, checked: a Message (whose bytes follow the payload's
/// [`codec::BYTES_PREFIX`]), or any other frame, decoded.
pub(crate) enum Checked {
    Message,
    Other(Frame),
}

impl Checked {
    /// Checks a frame from its header's kind byte and its payload, without
    /// copying a Message's bytes.
    #[inline]
    pub(crate) fn check(kind: u8, payload: &[u8]) -> Result<Checked> {
        if FrameKind::from_byte(kind) != Some(FrameKind::Message) {
            return Frame::decode(kind, payload).map(Checked::Other);
        }
        codec::decode_bytes(payload).map_err(|reason| Error::MalformedPayload {
            kind: FrameKind::Message.name(),
            reason,
        })?;
        Ok(Checked::Message)
    }
}

/// What to put in a frame: a whole [`Frame`], or a message built in place
/// from borrowed bytes or a serializable value (so sending never copies the
/// caller's data into an intermediate `Vec`).
#[derive(Debug, Clone, Copy)]
pub enum Outgoing<'a, T: ?Sized = ()> {
    /// A complete frame.
    Frame(&'a Frame),
    /// A [`FrameKind::Message`] carrying these bytes.
    Bytes(&'a [u8]),
    /// A [`FrameKind::Message`] carrying the encoding of this value.
    Value(&'a T),
}

impl<T: Serialize + ?Sized> Outgoing<'_, T> {
    fn kind(&self) -> FrameKind {
        match self {
            Outgoing::Frame(frame) => frame.kind(),
            Outgoing::Bytes(_) | Outgoing::Value(_) => FrameKind::Message,
        }
    }

    fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Outgoing::Frame(frame) => frame.encode_payload(out),
            Outgoing::Bytes(bytes) => {
                codec::encode_bytes(bytes, out);
                Ok(())
            }
            Outgoing::Value(value) => codec::encode_as_bytes(*value, out),
        }
    }
}

/// Appends one whole frame (header and payload) to `out`.
///
/// On error `out` is left as it was: a frame over `limits` or one whose value
/// does not encode is refused before anything is queued.
pub fn encode_frame<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    frame: Outgoing<'_, T>,
    fd_count: usize,
    limits: &Limits,
) -> Result<()> {
    if fd_count > limits.max_fds {
        return Err(Error::TooManyFds {
            count: fd_count,
            limit: limits.max_fds,
        });
    }
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    if let Err(reason) = frame.encode_payload(out) {
        out.truncate(start);
        return Err(Error::Encode { reason });
    }
    let len = out.len() - start - HEADER_LEN;
    if len > limits.max_payload as usize {
        out.truncate(start);
        return Err(Error::PayloadTooLarge {
            len: len as u64,
            limit: limits.max_payload,
        });
    }
    let header = Header {
        kind: frame.kind() as u8,
        payload_len: len as u32,
        fd_count: fd_count as u16,
    };
    out[start..start + HEADER_LEN].copy_from_slice(&header.encode());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Ready(Ready::new(7, "echo", 4242)),
            Frame::Message(Message::new(b"hello".to_vec())),
            Frame::Message(Message::default()),
            Frame::Close,
            Frame::Error(ErrorReport {
                message: "boom".into(),
                location: Some(Location {
                    file: "src/main.rs".into(),
                    line: 3,
                    column: 9,
                }),
            }),
            Frame::Error(ErrorReport {
                message: "no location".into(),
                location: None,
            }),
            Frame::Ping(u64::MAX),
            Frame::Pong(1),
            Frame::Request(Request {
                id: 9,
                data: b"question".to_vec(),
            }),
            Frame::Reply(Request {
                id: 9,
                data: b"answer".to_vec(),
            }),
            Frame::Connection(Connection {
                id: 5,
                socket: "http".into(),
            }),
            Frame::ConnectionAck(ConnectionAck {
                id: 5,
                accepted: true,
                open: 3,
            }),
            Frame::Load(2),
            Frame::Spawn(Box::new(Spawn {
                id: 3,
                spec: crate::spec::SpawnSpec {
                    program: b"/bin/sleep".to_vec(),
                    args: vec![b"1".to_vec()],
                    clear_env: false,
                    env: vec![(b"A".to_vec(), Some(b"b".to_vec())), (b"C".to_vec(), None)],
                    cwd: Some(b"/".to_vec()),
                    name: "nap".into(),
                    close_grace_ms: 500,
                    speaks_protocol: false,
                    stdout: crate::spec::Output::Capture,
                    stderr: crate::spec::Output::Inherit,
                    listen_names: vec!["http".into()],
                },
            })),
            Frame::SpawnResult(SpawnResult {
                id: 3,
                outcome: SpawnOutcome::Started {
                    worker_id: 9,
                    pid: 77,
                },
            }),
            Frame::SpawnResult(SpawnResult {
                id: 4,
                outcome: SpawnOutcome::Refused(SpawnRefusal::Children { limit: 2 }),
            }),
            Frame::ChildExit(ChildExit {
                worker_id: 9,
                code: None,
                signal: Some(9),
                core_dumped: false,
                initiated_by: Initiator::Close,
                escalated_to: Some(9),
                user_time_us: 1_500,
                system_time_us: 250,
                max_rss_kib: 4096,
            }),
            Frame::CloseChild(9),
            Frame::Port(PortOpen {
                id: 1,
                origin: "arborctl".into(),
            }),
            Frame::ChildControl(ChildControl {
                worker_id: 9,
                action: ChildAction::Close { grace_ms: 100 },
            }),
        ]
    }

    fn encode(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame::<()>(&mut out, Outgoing::Frame(frame), 0, &Limits::default()).unwrap();
        out
    }

    #[test]
    fn every_frame_kind_round_trips() {
        for frame in all_frames() {
            let bytes = encode(&frame);
            let header =
                Header::decode(bytes[..HEADER_LEN].try_into().unwrap(), &Limits::default())
                    .unwrap();
            assert_eq!(header.frame_len(), bytes.len());
            assert_eq!(
                Frame::decode(header.kind, &bytes[HEADER_LEN..]).unwrap(),
                frame
            );
        }
    }

    #[test]
    fn payload_layouts_match_wire_md() {
        // Connection: u64 id, then the socket name as u64 length + UTF-8.
        assert_eq!(
            &encode(&Frame::Connection(Connection {
                id: 1,
                socket: "h".into()
            }))[HEADER_LEN..],
            &[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'h']
        );
        // ConnectionAck: u64 id, u8 accepted, u32 open.
        assert_eq!(
            &encode(&Frame::ConnectionAck(ConnectionAck {
                id: 2,
                accepted: false,
                open: 7
            }))[HEADER_LEN..],
            &[2, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0]
        );
        // ChildExit: u64 worker_id, Option<i32> code, Option<i32> signal,
        // bool core_dumped, then u32 initiated_by, Option<i32> escalated_to,
        // u64 user_time_us, u64 system_time_us, u64 max_rss_kib.
        assert_eq!(
            &encode(&Frame::ChildExit(ChildExit {
                worker_id: 5,
                code: Some(1),
                signal: None,
                core_dumped: false,
                initiated_by: Initiator::Close,
                escalated_to: Some(15),
                user_time_us: 1,
                system_time_us: 2,
                max_rss_kib: 3,
            }))[HEADER_LEN..],
            &[
                5, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, // as before
                2, 0, 0, 0, // Close
                1, 15, 0, 0, 0, // SIGTERM
                1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
            ]
        );
        // SpawnResult: u64 id, then the outcome's u32 variant and fields.
        assert_eq!(
            &encode(&Frame::SpawnResult(SpawnResult {
                id: 1,
                outcome: SpawnOutcome::Started {
                    worker_id: 2,
                    pid: 3
                }
            }))[HEADER_LEN..],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0]
        );
        // Message: u64 length + bytes.
        assert_eq!(
            &encode(&Frame::Message(Message::new(b"hi".to_vec())))[HEADER_LEN..],
            &[2, 0, 0, 0, 0, 0, 0, 0, b'h', b'i']
        );
        // Close: empty.
        assert_eq!(encode(&Frame::Close).len(), HEADER_LEN);
        // Ping: u64 nonce.
        assert_eq!(
            &encode(&Frame::Ping(258))[HEADER_LEN..],
            &[2, 1, 0, 0, 0, 0, 0, 0]
        );
        // Ready: u8 version, u64 id, string name, u32 pid.
        assert_eq!(
            &encode(&Frame::Ready(Ready::new(1, "w", 2)))[HEADER_LEN..],
            &[1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'w', 2, 0, 0, 0]
        );
        // Error: string message, Option<Location{string file, u32 line, u32 column}>.
        let report = Frame::Error(ErrorReport {
            message: "x".into(),
            location: Some(Location {
                file: "f".into(),
                line: 1,
                column: 2,
            }),
        });
        assert_eq!(
            &encode(&report)[HEADER_LEN..],
            &[
                1, 0, 0, 0, 0, 0, 0, 0, b'x', 1, 1, 0, 0, 0, 0, 0, 0, 0, b'f', 1, 0, 0, 0, 2, 0, 0,
                0
            ]
        );
    }

    #[test]
    fn outgoing_bytes_and_values_encode_as_messages() {
        let mut direct = Vec::new();
        encode_frame::<()>(&mut direct, Outgoing::Bytes(b"abc"), 0, &Limits::default()).unwrap();
        assert_eq!(
            direct,
            encode(&Frame::Message(Message::new(b"abc".to_vec())))
        );

        let mut valued = Vec::new();
        encode_frame(
            &mut valued,
            Outgoing::Value(&(1u16, "two".to_string())),
            0,
            &Limits::default(),
        )
        .unwrap();
        let Frame::Message(message) =
            Frame::decode(FrameKind::Message as u8, &valued[HEADER_LEN..]).unwrap()
        else {
            panic!("not a message");
        };
        assert_eq!(
            message.decode::<(u16, String)>().unwrap(),
            (1, "two".to_string())
        );
        assert!(matches!(
            message.decode::<Vec<u64>>(),
            Err(Error::MessageDecode { .. })
        ));
    }

    #[test]
    fn send_side_limits_leave_the_buffer_untouched() {
        let limits = Limits::default().with_max_payload(8);
        let mut out = b"queued".to_vec();
        let err =
            encode_frame::<()>(&mut out, Outgoing::Bytes(b"0123456789"), 0, &limits).unwrap_err();
        assert!(matches!(err, Error::PayloadTooLarge { len: 18, limit: 8 }));
        let err = encode_frame::<()>(&mut out, Outgoing::Bytes(b""), 254, &limits).unwrap_err();
        assert!(matches!(err, Error::TooManyFds { count: 254, .. }));
        assert_eq!(out, b"queued");
    }

    #[test]
    fn bad_payloads_are_typed_errors() {
        assert!(matches!(
            Frame::decode(12, &[]),
            Err(Error::UnknownKind { kind: 12 })
        ));
        assert!(matches!(
            Frame::decode(0, &[]),
            Err(Error::UnknownKind { kind: 0 })
        ));
        assert!(matches!(
            Frame::decode(FrameKind::Close as u8, &[1]),
            Err(Error::MalformedPayload { kind: "Close", .. })
        ));
        assert!(matches!(
            Frame::decode(FrameKind::Ping as u8, &[1, 2, 3]),
            Err(Error::MalformedPayload { kind: "Ping", .. })
        ));
        // A name that is not UTF-8.
        let mut ready = vec![
            1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 2, 0, 0, 0,
        ];
        assert!(Frame::decode(FrameKind::Ready as u8, &ready).is_err());
        ready.push(0);
        assert!(Frame::decode(FrameKind::Ready as u8, &ready).is_err());
    }
}

//! The frame header: a fixed 16-byte prefix in front of every payload.
//!
//! ```text
//! offset  size  field
//!  0      4     magic        b"ARBR"
//!  4      1     version      1
//!  5      1     kind         FrameKind
//!  6      2     flags        u16 little-endian, no flag is defined in version 1 (must be 0)
//!  8      4     payload_len  u32 little-endian, bytes of payload after the header
//! 12      2     fd_count     u16 little-endian, fds sent with this frame (SCM_RIGHTS)
//! 14      2     reserved     must be 0
//! ```
//!
//! Everything here is pure: no sockets, no allocation. The header is checked
//! against the receiver's [`Limits`] as soon as its 16 bytes are in, so a
//! hostile length is refused before a single byte of payload is buffered.

use crate::error::{Error, Result};

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"ARBR";
/// The protocol version this crate speaks. Any change to the header, to a
/// frame kind's payload or to the bincode configuration bumps it.
pub const PROTOCOL_VERSION: u8 = 1;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 16;
/// The kernel's limit on fds in one `SCM_RIGHTS` message (`SCM_MAX_FD`).
pub const SCM_MAX_FD: usize = 253;
/// Default limit on a frame's payload: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 << 20;

/// The kinds of frame version 1 defines.
///
/// Kind 12 is reserved for the frame the design has room for (`Transfer`:
/// transfers travel as fds of Messages instead), 19 to 31
/// for later worker-channel frames and 32 to 63 for the control socket; a
/// kind a peer does not know is [`Error::UnknownKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// The worker is set up and its handlers are installed.
    Ready = 1,
    /// Application bytes, with optional fds.
    Message = 2,
    /// Ask the worker to run its onclose handler and exit.
    Close = 3,
    /// A worker-side failure with message and location.
    Error = 4,
    /// Liveness probe.
    Ping = 5,
    /// Answer to a [`FrameKind::Ping`], echoing its nonce.
    Pong = 6,
    /// A message that expects one answer, carrying an id.
    Request = 13,
    /// The answer to a [`FrameKind::Request`], naming its id.
    Reply = 14,
    /// An accepted connection handed to a pool replica; exactly one fd.
    Connection = 10,
    /// A replica's answer to a [`FrameKind::Connection`]: taken or refused.
    ConnectionAck = 15,
    /// A replica's count of connections it has open (for least-busy handoff).
    Load = 16,
    /// A worker asks its supervisor to start a sub-worker.
    Spawn = 7,
    /// The supervisor's answer to a [`FrameKind::Spawn`]: the sub-worker's
    /// channel end (one fd), or why it was refused.
    SpawnResult = 8,
    /// A sub-worker's exit, reported to the worker that started it.
    ChildExit = 9,
    /// The supervisor asks a worker to send Close to one of its sub-workers
    /// (whose channel only that worker holds).
    CloseChild = 17,
    /// A worker asks its supervisor to close or terminate one of its
    /// sub-workers (with its subtree).
    ChildControl = 18,
    /// A client connected to this (shared) worker: the frame's one fd is
    /// the worker's end of a new port to it.
    Port = 11,
}

/// Kinds reserved in version 1 for frames the design names, with their names.
pub const RESERVED_KINDS: [(u8, &str); 1] = [(12, "Transfer")];

impl FrameKind {
    /// The kind for a kind byte, if version 1 defines it.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Ready,
            2 => Self::Message,
            3 => Self::Close,
            4 => Self::Error,
            5 => Self::Ping,
            6 => Self::Pong,
            13 => Self::Request,
            14 => Self::Reply,
            10 => Self::Connection,
            15 => Self::ConnectionAck,
            16 => Self::Load,
            7 => Self::Spawn,
            8 => Self::SpawnResult,
            9 => Self::ChildExit,
            17 => Self::CloseChild,
            18 => Self::ChildControl,
            11 => Self::Port,
            _ => return None,
        })
    }

    /// The kind's name, as WIRE.md spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Message => "Message",
            Self::Close => "Close",
            Self::Error => "Error",
            Self::Ping => "Ping",
            Self::Pong => "Pong",
            Self::Request => "Request",
            Self::Reply => "Reply",
            Self::Connection => "Connection",
            Self::ConnectionAck => "ConnectionAck",
            Self::Load => "Load",
            Self::Spawn => "Spawn",
            Self::SpawnResult => "SpawnResult",
            Self::ChildExit => "ChildExit",
            Self::CloseChild => "CloseChild",
            Self::ChildControl => "ChildControl",
            Self::Port => "Port",
        }
    }
}

/// What a receiver accepts; every limit is checked before allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted, in bytes (default 16 MiB).
    pub max_payload: u32,
    /// Most fds accepted with one frame (default and maximum: 253, `SCM_MAX_FD`).
    pub max_fds: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_fds: SCM_MAX_FD,
        }
    }
}

impl Limits {
    /// These limits with another payload limit.
    pub fn with_max_payload(self, max_payload: u32) -> Self {
        Self {
            max_payload,
            ..self
        }
    }

    /// Checks a Message of `len` bytes with `fd_count` fds against these
    /// limits, as a sender would before queueing it.
    pub fn check_message(&self, len: usize, fd_count: usize) -> Result<()> {
        let payload = len as u64 + 8;
        if payload > u64::from(self.max_payload) {
            return Err(Error::PayloadTooLarge {
                len: payload,
                limit: self.max_payload,
            });
        }
        if fd_count > self.max_fds {
            return Err(Error::TooManyFds {
                count: fd_count,
                limit: self.max_fds,
            });
        }
        Ok(())
    }

    /// These limits with another fd limit, capped at [`SCM_MAX_FD`].
    pub fn with_max_fds(self, max_fds: usize) -> Self {
        Self {
            max_fds: max_fds.min(SCM_MAX_FD),
            ..self
        }
    }
}

/// A decoded, checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The kind byte. Checked against [`FrameKind`] by the typed layer, so the
    /// raw layer can carry kinds it does not interpret.
    pub kind: u8,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Number of fds sent with the frame.
    pub fd_count: u16,
}

impl Header {
    /// The header's 16 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = PROTOCOL_VERSION;
        out[5] = self.kind;
        // flags (6..8) and reserved (14..16) stay zero in version 1.
        out[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        out[12..14].copy_from_slice(&self.fd_count.to_le_bytes());
        out
    }

    /// Parses and checks a header against `limits`.
    #[inline]
    pub fn decode(bytes: &[u8; HEADER_LEN], limits: &Limits) -> Result<Self> {
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        if bytes[4] != PROTOCOL_VERSION {
            return Err(Error::UnsupportedVersion {
                found: bytes[4],
                supported: PROTOCOL_VERSION,
            });
        }
        let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
        let reserved = u16::from_le_bytes([bytes[14], bytes[15]]);
        if flags != 0 || reserved != 0 {
            return Err(Error::ReservedBits { flags, reserved });
        }
        let payload_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if payload_len > limits.max_payload {
            return Err(Error::PayloadTooLarge {
                len: payload_len.into(),
                limit: limits.max_payload,
            });
        }
        let fd_count = u16::from_le_bytes([bytes[12], bytes[13]]);
        if usize::from(fd_count) > limits.max_fds {
            return Err(Error::TooManyFds {
                count: fd_count.into(),
                limit: limits.max_fds,
            });
        }
        Ok(Self {
            kind: bytes[5],
            payload_len,
            fd_count,
        })
    }

    /// Header plus payload, in bytes.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, payload_len: u32, fd_count: u16) -> Header {
        Header {
            kind,
            payload_len,
            fd_count,
        }
    }

    #[test]
    fn header_round_trips_and_is_little_endian() {
        let h = header(2, 0x0102_0304, 0x0506);
        let bytes = h.encode();
        assert_eq!(
            bytes,
            [b'A', b'R', b'B', b'R', 1, 2, 0, 0, 4, 3, 2, 1, 6, 5, 0, 0]
        );
        let limits = Limits::default().with_max_payload(u32::MAX);
        assert_eq!(
            Header::decode(
                &bytes,
                &Limits {
                    max_fds: 0x0506,
                    ..limits
                }
            )
            .unwrap(),
            h
        );
    }

    #[test]
    fn header_checks_come_in_wire_order() {
        let limits = Limits::default();
        let good = header(1, 10, 1).encode();

        let mut bad = good;
        bad[0] = b'X';
        assert!(
            matches!(Header::decode(&bad, &limits), Err(Error::BadMagic { found }) if found == *b"XRBR")
        );

        let mut bad = good;
        bad[4] = 9;
        assert!(matches!(
            Header::decode(&bad, &limits),
            Err(Error::UnsupportedVersion {
                found: 9,
                supported: 1
            })
        ));

        let mut bad = good;
        bad[6] = 1;
        assert!(matches!(
            Header::decode(&bad, &limits),
            Err(Error::ReservedBits { flags: 1, .. })
        ));
        let mut bad = good;
        bad[15] = 1;
        assert!(matches!(
            Header::decode(&bad, &limits),
            Err(Error::ReservedBits {
                reserved: 0x100,
                ..
            })
        ));

        let huge = header(2, DEFAULT_MAX_PAYLOAD + 1, 0).encode();
        assert!(matches!(
            Header::decode(&huge, &limits),
            Err(Error::PayloadTooLarge {
                limit: DEFAULT_MAX_PAYLOAD,
                ..
            })
        ));

        let many = header(2, 0, 254).encode();
        assert!(matches!(
            Header::decode(&many, &limits),
            Err(Error::TooManyFds {
                count: 254,
                limit: 253
            })
        ));
        assert!(
            Header::decode(&many, &limits.with_max_fds(1000)).is_err(),
            "fd limit is capped at SCM_MAX_FD"
        );
    }

    #[test]
    fn kinds_round_trip_and_reserved_kinds_are_not_defined() {
        for byte in 0..=255u8 {
            if let Some(kind) = FrameKind::from_byte(byte) {
                assert_eq!(kind as u8, byte);
            }
        }
        for (byte, _) in RESERVED_KINDS {
            assert!(FrameKind::from_byte(byte).is_none());
        }
    }
}

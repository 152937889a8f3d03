//! The one error type of arbor-protocol.
//!
//! Every way a peer can misbehave has its own variant, with the numbers that
//! explain it (which limit, how many fds, how many bytes). [`Error::is_fatal`]
//! tells the transports whether the channel can go on: a payload that does not
//! decode into the type the receiver asked for is the Web Workers spec's
//! `messageerror` and leaves the channel usable; a broken frame does not.

use std::io;

/// Errors of the arbor wire protocol and its transports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed the channel cleanly, on a frame boundary.
    #[error("channel closed by the peer")]
    Closed,

    /// The channel was closed earlier because of a fatal error, or by this side.
    #[error("channel already closed after an earlier error or shutdown")]
    Poisoned,

    /// The stream ended inside a frame.
    #[error("peer closed the channel in the middle of a frame ({buffered} bytes of an unfinished frame buffered)")]
    Truncated {
        /// Bytes of the unfinished frame that had arrived.
        buffered: usize,
    },

    /// The first four bytes of a frame header were not `ARBR`.
    #[error("bad frame magic {found:02x?} (expected \"ARBR\"); the peer does not speak arbor or the stream is out of step")]
    BadMagic {
        /// The four bytes found where the magic belongs.
        found: [u8; 4],
    },

    /// The header's version byte names a protocol version this side does not speak.
    #[error("unsupported protocol version {found} (this side speaks version {supported})")]
    UnsupportedVersion {
        /// The version the peer sent.
        found: u8,
        /// The version this side speaks.
        supported: u8,
    },

    /// The header's flags or reserved bytes have bits this version does not define.
    #[error("frame header has undefined bits set (flags {flags:#06x}, reserved {reserved:#06x})")]
    ReservedBits {
        /// The flags field as sent.
        flags: u16,
        /// The reserved field as sent.
        reserved: u16,
    },

    /// A frame kind this version does not define (or only reserves).
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The kind byte as sent.
        kind: u8,
    },

    /// The header announces a payload larger than the receiver's limit; it is
    /// refused before anything is allocated for it.
    #[error("frame payload of {len} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The announced (or, when sending, encoded) payload length.
        len: u64,
        /// The configured limit.
        limit: u32,
    },

    /// The header announces more fds than the receiver accepts per frame.
    #[error("frame carries {count} fds, over the limit of {limit} per frame")]
    TooManyFds {
        /// The announced fd count.
        count: usize,
        /// The configured limit.
        limit: usize,
    },

    /// The fds that arrived with a frame are not the number its header names.
    #[error("frame header names {declared} fds but {received} arrived with it")]
    FdCountMismatch {
        /// The count in the header.
        declared: usize,
        /// The count that arrived with the frame's first bytes.
        received: usize,
    },

    /// Fds arrived that no frame claimed: the peer attached fds to a frame whose
    /// header names none.
    #[error("{count} fds arrived that no frame header claims")]
    StrayFds {
        /// How many fds were left over (they have been closed).
        count: usize,
    },

    /// The kernel truncated the control message (`MSG_CTRUNC`): fds were lost
    /// in transit, so the stream can no longer be matched to its fds.
    #[error("control message truncated (MSG_CTRUNC): the peer sent more fds than fit, some were dropped")]
    ControlTruncated,

    /// A protocol frame's payload does not decode as its kind's type.
    #[error("malformed {kind} frame payload: {reason}")]
    MalformedPayload {
        /// The frame kind's name.
        kind: &'static str,
        /// What the decoder said.
        reason: String,
    },

    /// A message's bytes do not decode into the type the receiver asked for
    /// (the Web Workers `messageerror`). Not fatal: the channel stays usable.
    #[error("message does not decode as {type_name}: {reason}")]
    MessageDecode {
        /// The Rust type the receiver asked for.
        type_name: &'static str,
        /// What the decoder said.
        reason: String,
    },

    /// A value could not be encoded (for example a serde `Serialize` impl failed).
    #[error("value could not be encoded: {reason}")]
    Encode {
        /// What the encoder said.
        reason: String,
    },

    /// An I/O error from the socket.
    #[error("channel I/O error: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// Whether a receive that returned this error closed the channel.
    ///
    /// [`Error::MessageDecode`] (the spec's `messageerror`) and a read timeout
    /// leave the channel usable; every other receive error closes it. Send
    /// errors about limits or encoding refuse one frame and change nothing.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::MessageDecode { .. } | Error::Encode { .. } => false,
            Error::Io(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            ),
            _ => true,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! arbor's wire protocol: length-framed bincode frames that carry file
//! descriptors over Unix stream sockets.
//!
//! The crate is layered so that each layer can be tested alone:
//!
//! - [`frame`]: the fixed 16-byte header and the receiver's [`Limits`] (pure).
//! - [`codec`](crate::Message::decode): every bincode call, in one private module.
//! - [`decoder`]: reassembles frames from bytes and fd batches, matching
//!   each frame to exactly its fds (sans I/O).
//! - [`message`]: what each frame kind's payload means ([`Frame`]).
//! - [`blocking`] and [`nonblocking`]: the same channel over a std and a
//!   tokio `UnixStream`, sharing one implementation of the steps.
//! - [`spec`]: [`WorkerSpec`], what to start, as a parent or a worker
//!   asking for a sub-worker builds it.
//! - [`port`]: `MessagePort` pairs (the standard's `MessageChannel`),
//!   transferable inside messages.
//! - [`transfer`]: large buffers moved as sealed memfds instead of copied.
//! - [`exit`] and [`signal`]: how a worker ended ([`ExitRecord`]), the same
//!   for a worker and a sub-worker.
//!
//! Received fds are close-on-exec from the moment they exist
//! (`MSG_CMSG_CLOEXEC`). A broken frame is a typed [`Error`] that closes that
//! one channel and every fd that came with it. `protocol/WIRE.md` describes
//! the bytes for peers in other languages.

#![deny(missing_docs)]

pub mod blocking;
mod channel;
mod codec;
pub mod control;
pub mod decoder;
pub mod error;
pub mod exit;
pub mod frame;
pub mod message;
pub mod nonblocking;
pub mod port;
pub mod signal;
pub mod spec;
mod sys;
pub mod transfer;

pub use error::{Error, Result};
pub use exit::{ExitRecord, Initiator, ResourceUsage};
pub use frame::{FrameKind, Limits, PROTOCOL_VERSION};
pub use message::{
    ChildAction, ChildControl, ChildExit, Connection, ConnectionAck, ErrorReport, Frame, FrameRef,
    Location, Message, PortOpen, Ready, Request, Spawn, SpawnOutcome, SpawnRefusal, SpawnResult,
};
pub use port::MessagePort;
pub use signal::Signal;
pub use spec::{ListenFds, Output, Program, SpawnSpec, WhenFull, WorkerSpec};
pub use sys::is_cloexec;
pub use transfer::{Transfer, TransferBuffer};

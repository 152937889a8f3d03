//! arbor-worker: what runs inside a worker process.
//!
//! A worker started by an arbor supervisor finds its channel at the fd
//! `ARBOR_CHANNEL_FD` names (right after any sockets it was handed, which
//! start at fd 3 as under systemd's socket activation), its id and name in
//! `ARBOR_WORKER_ID` and `ARBOR_WORKER_NAME`. This crate gives it the Web Workers model's worker
//! side: `on_message`, `post_message` (with fds), `on_close`, `close()`, in
//! a blocking API ([`blocking::Worker`]) and a tokio one
//! ([`nonblocking::AsyncWorker`]) over the same channel. Both send Ready
//! once the handlers are installed, and both install a panic hook that
//! reports the panic's message and location to the parent before the
//! process dies.
//!
//! Started outside a supervisor, `connect` returns
//! [`Error::NotUnderSupervisor`] rather than panicking.

#![deny(missing_docs)]

pub mod blocking;
mod env;
pub mod error;
pub mod nonblocking;
mod panic;
mod poster;
pub mod tree;

pub use arbor_protocol::{
    ExitRecord, Initiator, Message, Output, ResourceUsage, Signal, WorkerSpec,
};
pub use env::{entry_point, take_listen_fds, Identity, ListenFd};
pub use error::{Error, Result};
pub use tree::{Spawner, SubWorker, SubWorkerEvent};

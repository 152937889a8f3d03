//! The one error type of arbor-supervisor.

use std::io;
use std::path::PathBuf;

use crate::exit::ExitRecord;

/// Errors of the supervisor library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The program could not be found in `PATH`.
    #[error("program {program:?} not found in PATH")]
    ProgramNotFound {
        /// The name looked up.
        program: PathBuf,
    },

    /// Preparing or forking the worker failed in the supervisor.
    #[error("could not start worker {name:?}: {source}")]
    Spawn {
        /// The worker's name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// The child failed before `exec` (its working directory, or `execve` itself).
    #[error("worker {name:?} failed to start: {step} failed: {source}")]
    Exec {
        /// The worker's name.
        name: String,
        /// Which step in the child failed (`chdir`, `execve`, ...).
        step: &'static str,
        /// The errno it failed with.
        #[source]
        source: io::Error,
    },

    /// An argument, environment entry or path contains a NUL byte.
    #[error("{what} contains a NUL byte")]
    Nul {
        /// Which input.
        what: &'static str,
    },

    /// The spec asks for what a program may not be given (a name with a
    /// newline, an environment name with `=`, a NUL byte, ...).
    #[error("bad worker spec: {reason}")]
    BadSpec {
        /// What is wrong, naming the field.
        reason: String,
    },

    /// The message queue for the worker is full and its spec says not to wait.
    #[error("message queue of worker {id} is full ({limit} messages)")]
    QueueFull {
        /// The worker's id.
        id: u64,
        /// The configured bound.
        limit: usize,
    },

    /// The worker has exited (or its channel closed); nothing more can be posted.
    #[error("worker {id} is gone")]
    WorkerGone {
        /// The worker's id.
        id: u64,
    },

    /// A request's worker exited, or closed its channel, before it replied.
    #[error("request to worker {id}: no reply, the worker is gone{}", exit.map(|e| format!(" ({e})")).unwrap_or_default())]
    RequestUnanswered {
        /// The worker's id.
        id: u64,
        /// Its exit, when it was known as the request ended.
        exit: Option<ExitRecord>,
    },

    /// A request got no reply in time.
    #[error("request {id}: no reply from the worker within {timeout:?}")]
    RequestTimeout {
        /// The worker's id.
        id: u64,
        /// The time allowed.
        timeout: std::time::Duration,
    },

    /// Signalling the worker failed.
    #[error("could not signal worker {id}: {source}")]
    Signal {
        /// The worker's id.
        id: u64,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// The worker that asked for this sub-worker exited or began closing
    /// while it started; it was killed at once.
    #[error("sub-worker {name:?}: its parent worker is gone or closing")]
    ParentGone {
        /// The sub-worker's name.
        name: String,
    },

    /// A sub-worker's channel belongs to the worker that started it: the
    /// supervisor can close, terminate and signal it, not post to it.
    #[error("worker {id} is a sub-worker: its channel is its parent worker's")]
    ChannelHeldByParent {
        /// The sub-worker's id.
        id: u64,
    },

    /// The worker does not speak the protocol: it has no channel to post to.
    #[error("worker {id} does not speak the protocol: it has no channel")]
    NoChannel {
        /// The worker's id.
        id: u64,
    },

    /// arbord's control socket refused or failed a request.
    #[error("arbord at {socket}: {message}")]
    Control {
        /// The control socket.
        socket: PathBuf,
        /// What went wrong, or arbord's own error message.
        message: String,
    },

    /// The supervisor's spawner thread is gone.
    #[error("the supervisor is shut down")]
    ShutDown,

    /// A protocol error on a worker channel.
    #[error(transparent)]
    Protocol(#[from] arbor_protocol::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

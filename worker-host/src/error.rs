//! The one error type of arbor-worker.

/// Errors of the worker side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process was not started by an arbor supervisor: `ARBOR_CHANNEL_FD`
    /// is missing or not an open socket.
    #[error("not running under an arbor supervisor: {reason}")]
    NotUnderSupervisor {
        /// What was missing or wrong.
        reason: String,
    },

    /// The parent closed the channel.
    #[error("the parent closed the channel")]
    ParentGone,

    /// The supervisor refused to start a sub-worker (a limit, a bad spec,
    /// a program that does not start, or this worker is closing).
    #[error("sub-worker not started: {0}")]
    SpawnRefused(#[from] arbor_protocol::SpawnRefusal),

    /// The spec could not be sent (its entry point's executable is unknown).
    #[error("sub-worker spec: {0}")]
    Spec(#[source] std::io::Error),

    /// The worker's channel to its supervisor closed before an answer came.
    #[error("the supervisor is gone")]
    SupervisorGone,

    /// A protocol error on the channel.
    #[error(transparent)]
    Protocol(#[from] arbor_protocol::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

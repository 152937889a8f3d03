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

    /// A protocol error on the channel.
    #[error(transparent)]
    Protocol(#[from] arbor_protocol::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

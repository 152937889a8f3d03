//! Why arbord could not run ([`DaemonError`]), and why a control request
//! failed: one enum, each variant with its context,
//! and the [`ErrorKind`] a client can match on the wire
//! ([`arbor_protocol::control::ControlResponse::Failed`]).

use std::path::PathBuf;
use std::time::Duration;

use arbor_protocol::control::{ControlResponse, ErrorKind, WorkerState};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another arbord answers on the socket path.
    #[error("another arbord is already running on {0}")]
    AlreadyRunning(PathBuf),
    /// The control socket could not be set up.
    #[error("control socket {path}: {source}")]
    Socket {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor could not start.
    #[error(transparent)]
    Supervisor(#[from] crate::Error),
}

/// The longest grace or timeout a control request may ask for (a longer
/// one is surely a mistake, and a sum with the clock could overflow).
pub(super) const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// `ms` milliseconds for the request field `field`, or a `bad-request`
/// naming it when above [`MAX_WAIT`].
pub(super) fn wait_field(field: &str, ms: u64) -> Result<Duration, ControlError> {
    let wait = Duration::from_millis(ms);
    if wait > MAX_WAIT {
        return Err(ControlError::BadRequest(format!(
            "{field} {ms} is above a day ({} ms)",
            MAX_WAIT.as_millis()
        )));
    }
    Ok(wait)
}

/// A failed control request.
#[derive(Debug, thiserror::Error)]
pub(super) enum ControlError {
    #[error("no worker {0}")]
    NoSuchWorker(u64),
    #[error("worker {id} ({name}) is {state}")]
    NotRunning {
        id: u64,
        name: String,
        state: WorkerState,
    },
    #[error("worker {0} is between restarts; try again")]
    BetweenRestarts(u64),
    #[error("no pool {0}")]
    NoSuchPool(String),
    #[error("no shared worker {0:?}")]
    NoSuchShared(String),
    #[error("a shared worker {0:?} exists already")]
    SharedExists(String),
    #[error("arbord is shutting down")]
    ShuttingDown,
    #[error("arbord is serving {0} clients already; try again")]
    TooManyClients(usize),
    #[error("uid {0} is not allowed on this control socket")]
    NotAllowed(u32),
    #[error("no complete request within {0:?}; connection closed")]
    Idle(Duration),
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
    #[error("at most {0} replicas")]
    TooManyReplicas(u32),
    #[error("replica {id} is {state} instead of Ready")]
    ReplicaNotReady { id: u64, state: WorkerState },
    #[error("replica {0} is gone")]
    ReplicaGone(u64),
    #[error("replica {id} not Ready within {limit:?}")]
    ReplicaTimeout { id: u64, limit: Duration },
    /// A pool operation stopped at `source`, after `done` of its steps.
    #[error("pool {pool}: {source}{done}")]
    Pool {
        pool: String,
        source: Box<ControlError>,
        done: PoolProgress,
    },
    #[error("pool {pool} socket {socket} ({listen}): {source}")]
    PoolSocket {
        pool: String,
        socket: String,
        listen: String,
        source: std::io::Error,
    },
    #[error("shared worker {name:?} did not start: {source}")]
    SharedStart { name: String, source: crate::Error },
    #[error("shared worker {name:?}: {source}")]
    Shared { name: String, source: crate::Error },
    #[error("a port for {name:?}: {source}")]
    Port {
        name: String,
        source: std::io::Error,
    },
    /// What the supervisor library said (a spawn, a post, a close).
    #[error(transparent)]
    Worker(#[from] crate::Error),
    #[error("{0}")]
    Internal(String),
}

/// How far a pool operation got before it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PoolProgress {
    /// Nothing to say (a scale).
    Nothing,
    /// A rolling reload that could not start a replica.
    Replaced { replaced: usize, of: usize },
    /// A rolling reload that stopped at a replica not Ready.
    Stopped { replaced: usize, of: usize },
}

impl std::fmt::Display for PoolProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nothing => Ok(()),
            Self::Replaced { replaced, of } => write!(f, "; {replaced} of {of} replaced"),
            Self::Stopped { replaced, of } => {
                write!(f, "; reload stopped, {replaced} of {of} replaced")
            }
        }
    }
}

impl ControlError {
    /// The kind a client matches on.
    pub(super) fn kind(&self) -> ErrorKind {
        match self {
            Self::NoSuchWorker(_) => ErrorKind::NoSuchWorker,
            Self::NotRunning { .. } => ErrorKind::NotRunning,
            Self::BetweenRestarts(_) | Self::TooManyClients(_) => ErrorKind::Busy,
            Self::NoSuchPool(_) => ErrorKind::NoSuchPool,
            Self::NoSuchShared(_) => ErrorKind::NoSuchSharedWorker,
            Self::SharedExists(_) => ErrorKind::AlreadyExists,
            Self::ShuttingDown => ErrorKind::ShuttingDown,
            Self::NotAllowed(_) => ErrorKind::NotAllowed,
            Self::BadRequest(_) | Self::UnknownSignal(_) => ErrorKind::BadRequest,
            Self::TooManyReplicas(_) => ErrorKind::Limit,
            Self::ReplicaNotReady { .. } | Self::ReplicaGone(_) => ErrorKind::NotReady,
            Self::ReplicaTimeout { .. } | Self::Idle(_) => ErrorKind::Timeout,
            Self::Pool { source, .. } => source.kind(),
            Self::PoolSocket { .. } | Self::Port { .. } | Self::Internal(_) => ErrorKind::Internal,
            Self::SharedStart { source, .. } => match source {
                crate::Error::ShutDown => ErrorKind::ShuttingDown,
                _ => ErrorKind::SpawnFailed,
            },
            Self::Shared { source, .. } | Self::Worker(source) => library_kind(source),
        }
    }

    /// The answer that reports it.
    pub(super) fn response(&self) -> ControlResponse {
        ControlResponse::Failed {
            kind: self.kind(),
            message: self.to_string(),
        }
    }
}

/// The kind of a supervisor library error.
fn library_kind(error: &crate::Error) -> ErrorKind {
    use crate::Error;
    match error {
        Error::ProgramNotFound { .. }
        | Error::Spawn { .. }
        | Error::Exec { .. }
        | Error::Nul { .. } => ErrorKind::SpawnFailed,
        Error::QueueFull { .. } => ErrorKind::Busy,
        Error::BadSpec { .. } => ErrorKind::BadRequest,
        Error::WorkerGone { .. } | Error::ParentGone { .. } | Error::RequestUnanswered { .. } => {
            ErrorKind::NotRunning
        }
        Error::RequestTimeout { .. } => ErrorKind::Timeout,
        Error::ChannelHeldByParent { .. } | Error::NoChannel { .. } => ErrorKind::Unsupported,
        Error::ShutDown => ErrorKind::ShuttingDown,
        Error::Protocol(arbor_protocol::Error::PayloadTooLarge { .. })
        | Error::Protocol(arbor_protocol::Error::TooManyFds { .. }) => ErrorKind::Limit,
        Error::Signal { .. } | Error::Control { .. } | Error::Protocol(_) => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_messages_clients_and_tests_read_are_unchanged() {
        assert_eq!(ControlError::NoSuchWorker(999).to_string(), "no worker 999");
        assert_eq!(
            ControlError::NotAllowed(65534).to_string(),
            "uid 65534 is not allowed on this control socket"
        );
        assert_eq!(
            ControlError::SharedExists("c".into()).to_string(),
            "a shared worker \"c\" exists already"
        );
        assert_eq!(
            ControlError::NoSuchShared("nobody".into()).to_string(),
            "no shared worker \"nobody\""
        );
        let stopped = ControlError::Pool {
            pool: "web".into(),
            source: Box::new(ControlError::ReplicaGone(4)),
            done: PoolProgress::Stopped { replaced: 1, of: 2 },
        };
        assert_eq!(
            stopped.to_string(),
            "pool web: replica 4 is gone; reload stopped, 1 of 2 replaced"
        );
    }

    #[test]
    fn a_pool_failure_has_the_kind_of_its_cause() {
        let timed_out = ControlError::Pool {
            pool: "web".into(),
            source: Box::new(ControlError::ReplicaTimeout {
                id: 3,
                limit: Duration::from_secs(30),
            }),
            done: PoolProgress::Nothing,
        };
        assert_eq!(timed_out.kind(), ErrorKind::Timeout);
        assert_eq!(
            ControlError::Worker(crate::Error::NoChannel { id: 1 }).kind(),
            ErrorKind::Unsupported
        );
        assert!(matches!(
            ControlError::NoSuchWorker(1).response(),
            ControlResponse::Failed {
                kind: ErrorKind::NoSuchWorker,
                ..
            }
        ));
    }
}

//! The control socket's requests and responses (arbord ⇄ arborctl or any
//! client). They travel as typed Message frames on an ordinary arbor
//! channel: each request is one Message whose bytes are a [`ControlRequest`]
//! in the wire codec, answered by one Message holding a [`ControlResponse`].

use serde::{Deserialize, Serialize};

/// A worker to start, as a control client describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// Name; defaults to the program's file name.
    pub name: Option<String>,
    /// Program path or a name looked up in PATH.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<String>,
    /// `never`, `on-failure` or `always`.
    pub restart: String,
    /// Close grace in milliseconds.
    pub close_grace_ms: u64,
    /// Whether the program speaks arbor's protocol.
    pub speaks_protocol: bool,
    /// Register it as a shared worker under its name: `Attach` connects
    /// to it, and starts it again when it is not running.
    pub shared: bool,
}

/// One request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Start a worker; answered with [`ControlResponse::Spawned`].
    Spawn(SpawnRequest),
    /// List workers; answered with [`ControlResponse::Workers`].
    List,
    /// Post a message to a worker; answered with [`ControlResponse::Ok`].
    Post {
        /// Worker id.
        id: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Ask a worker and wait for its reply; answered with [`ControlResponse::Reply`].
    Request {
        /// Worker id.
        id: u64,
        /// The bytes.
        data: Vec<u8>,
        /// How long to wait, in milliseconds.
        timeout_ms: u64,
    },
    /// Close a worker gracefully; answered with [`ControlResponse::Ended`]
    /// (older daemons: [`ControlResponse::Exited`]).
    Close {
        /// Worker id.
        id: u64,
        /// Grace in milliseconds; the worker's own when absent.
        grace_ms: Option<u64>,
    },
    /// Kill a worker at once; answered with [`ControlResponse::Ended`]
    /// (older daemons: [`ControlResponse::Exited`]).
    Terminate {
        /// Worker id.
        id: u64,
    },
    /// Send a signal; answered with [`ControlResponse::Ok`].
    Signal {
        /// Worker id.
        id: u64,
        /// Signal name (`SIGHUP`, `HUP`, `hup`).
        signal: String,
    },
    /// The tail of a worker's captured output; answered with [`ControlResponse::Logs`],
    /// then, with `follow`, one [`ControlResponse::Event`] per new line
    /// until the client hangs up.
    Logs {
        /// Worker id.
        id: u64,
        /// At most this many lines.
        lines: u32,
        /// Keep streaming new lines.
        follow: bool,
    },
    /// Stream events (of one worker, or all) as [`ControlResponse::Event`]s
    /// until the client hangs up.
    Watch {
        /// Only this worker's events.
        id: Option<u64>,
    },
    /// Daemon status; answered with [`ControlResponse::Status`].
    Status,
    /// Stop every worker and exit; answered with [`ControlResponse::Ok`] first.
    Shutdown,
    /// Set a pool's replica count: starts replicas (answered once they are
    /// Ready) or closes the newest ones with their grace (answered once
    /// they exited). Answered with [`ControlResponse::Done`].
    Scale {
        /// The pool.
        pool: String,
        /// The replica count wanted.
        replicas: u32,
    },
    /// Rolling reload: replaces every replica of the pool (or of every pool)
    /// a step at a time: start new ones, wait for their Ready, close as many
    /// old ones. Answered with [`ControlResponse::Done`] when done, or an
    /// error at the first replica not Ready in time (the old replicas it
    /// would have replaced keep running).
    Reload {
        /// The pool; `None` for every pool.
        pool: Option<String>,
    },
    /// Pools with their sockets and replicas; answered with [`ControlResponse::Pools`].
    Pools,
    /// Connect to the shared worker `name` (starting it if it is not
    /// running): answered with [`ControlResponse::Attached`], whose one fd
    /// is the client's end of a new port; the worker gets the other end as
    /// a Port frame (its `onconnect`). The control connection ends there.
    Attach {
        /// The shared worker's name.
        name: String,
    },
    /// Stream events (of one worker, or all) as [`ControlResponse::Notice`]s
    /// until the client hangs up: typed, with a sub-worker's parent and an
    /// exit's signal number and core dump; answered with
    /// [`ControlResponse::Ok`] first. ([`ControlRequest::Watch`] streams the
    /// same events in the older flat form.)
    Events {
        /// Only this worker's events.
        id: Option<u64>,
    },
}

/// A pool socket, as [`ControlResponse::Pools`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSocketInfo {
    /// Its name.
    pub name: String,
    /// The address (`127.0.0.1:8080`, `unix:/path`).
    pub listen: String,
    /// `shared`, `reuseport` or `handoff`.
    pub mode: String,
    /// The handoff policy (`round-robin`, `least-busy`); empty otherwise.
    pub policy: String,
    /// Whether systemd passed it (socket activation) rather than arbord binding it.
    pub activated: bool,
}

/// One replica of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// Its worker id.
    pub id: u64,
    /// Its pid (0 when not running).
    pub pid: u32,
    /// Its state, as in [`WorkerInfo::state`].
    pub state: String,
    /// Established connections it holds on the pool's sockets.
    pub connections: u32,
}

/// A pool, as [`ControlResponse::Pools`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    /// Its name.
    pub name: String,
    /// The replica count wanted.
    pub replicas_wanted: u32,
    /// Its sockets.
    pub sockets: Vec<PoolSocketInfo>,
    /// Its replicas.
    pub replicas: Vec<ReplicaInfo>,
}

/// A managed worker's state: the names [`WorkerInfo::state`] and
/// [`ReplicaInfo::state`] carry on the wire come from here alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerState {
    /// Started, not yet Ready.
    Starting,
    /// Ready (at once for a program that does not speak the protocol).
    Running,
    /// Stopped by an operator or a reload; its exit is awaited.
    Closing,
    /// Exited; its restart policy starts it again after a backoff.
    Restarting,
    /// Gone, and not to be started again.
    Exited,
    /// Restarted too often within its intensity limit: given up on.
    Failed,
}

impl WorkerState {
    /// Every state, in the order of a worker's life.
    pub const ALL: [Self; 6] = [
        Self::Starting,
        Self::Running,
        Self::Closing,
        Self::Restarting,
        Self::Exited,
        Self::Failed,
    ];

    /// Its name on the wire: `starting`, `running`, `closing`,
    /// `restarting`, `exited`, `failed`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Closing => "closing",
            Self::Restarting => "restarting",
            Self::Exited => "exited",
            Self::Failed => "failed",
        }
    }

    /// Whether the worker is gone for good (exited or failed).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Exited | Self::Failed)
    }
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for WorkerState {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|state| state.name() == name)
            .ok_or_else(|| format!("unknown worker state {name:?}"))
    }
}

/// A worker as `list` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Daemon-wide id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Current process id (0 when not running).
    pub pid: u32,
    /// A [`WorkerState`]'s name: `starting`, `running`, `closing`,
    /// `restarting`, `exited` or `failed`.
    pub state: String,
    /// Seconds since the current process started.
    pub uptime_secs: u64,
    /// Restarts so far.
    pub restarts: u32,
    /// Resident memory of the process, KiB (0 when unknown).
    pub rss_kib: u64,
    /// The last exit, as "code N" or "signal NAME", when there was one.
    pub last_exit: Option<String>,
    /// The worker that started it, for a sub-worker (its daemon-wide id).
    pub parent: Option<u64>,
}

/// How a worker ended, for `close` and `terminate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal name, if it was killed.
    pub signal: Option<String>,
}

/// Something that happened to a worker, as `watch` streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonEvent {
    /// `spawned`, `ready`, `message`, `error`, `messageerror`, `output`,
    /// `exit`, `restarting`, `failed`; or `missed` for a watcher that fell
    /// behind (then `missed` says how many events it lost).
    pub event: String,
    /// Worker id (0 for `missed`).
    pub worker: u64,
    /// Worker name.
    pub name: String,
    /// For `exit`: the code, if it exited.
    pub code: Option<i32>,
    /// For `exit`: the signal's name, if it was killed.
    pub signal: Option<String>,
    /// For `message`, `error`, `messageerror`, `output`: the text.
    pub text: Option<String>,
    /// For `missed`: how many events were dropped for this watcher.
    pub missed: Option<u64>,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// Done.
    Ok,
    /// The new worker's id.
    Spawned {
        /// Its id.
        id: u64,
    },
    /// Every worker.
    Workers(Vec<WorkerInfo>),
    /// The worker's reply.
    Reply(Vec<u8>),
    /// The worker's exit.
    Exited(ExitInfo),
    /// Captured lines, oldest first.
    Logs(Vec<String>),
    /// Daemon status.
    Status {
        /// arbord's pid.
        pid: u32,
        /// Seconds since arbord started.
        uptime_secs: u64,
        /// Workers known.
        workers: u32,
        /// Of which running.
        running: u32,
    },
    /// One streamed event (`watch`, `logs --follow`).
    Event(DaemonEvent),
    /// The request failed.
    Error {
        /// A one-line reason.
        message: String,
    },
    /// Answer to [`ControlRequest::Pools`].
    Pools(Vec<PoolInfo>),
    /// A pool operation finished.
    Done {
        /// What it did, in words.
        message: String,
    },
    /// Answer to [`ControlRequest::Attach`]; the port travels as the
    /// frame's one fd.
    Attached {
        /// The shared worker's id.
        worker: u64,
    },
    /// The request failed: what kind of failure, for a client to match,
    /// and a one-line reason. arbord answers every failure with it
    /// ([`ControlResponse::Error`] is the older form, without the kind).
    Failed {
        /// What kind of failure.
        kind: ErrorKind,
        /// A one-line reason.
        message: String,
    },
    /// The worker's exit, answer to `Close` and `Terminate` (the older
    /// [`ControlResponse::Exited`] has no signal number and no core dump).
    Ended(Exit),
    /// One typed event, streamed after [`ControlRequest::Events`].
    Notice(Event),
}

/// What kind of failure a [`ControlResponse::Failed`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No worker has the id.
    NoSuchWorker,
    /// No pool has the name.
    NoSuchPool,
    /// No shared worker has the name.
    NoSuchSharedWorker,
    /// The worker is not running (exited, failed, between restarts).
    NotRunning,
    /// Busy: too many clients, a full queue, a restart in progress; the
    /// same request may succeed later.
    Busy,
    /// arbord is shutting down.
    ShuttingDown,
    /// A limit refused it (replicas, tree depth).
    Limit,
    /// The request itself is wrong (a bad spec, an unknown signal).
    BadRequest,
    /// The client's uid is not allowed on the control socket.
    NotAllowed,
    /// The name is taken.
    AlreadyExists,
    /// A worker could not be started.
    SpawnFailed,
    /// A replica did not become Ready.
    NotReady,
    /// A request or a wait ran out of time.
    Timeout,
    /// The worker cannot do it (it has no channel, or its channel is its
    /// parent's).
    Unsupported,
    /// Something failed inside arbord.
    Internal,
}

impl ErrorKind {
    /// Its name, for humans and JSON: `no-such-worker`, `busy`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::NoSuchWorker => "no-such-worker",
            Self::NoSuchPool => "no-such-pool",
            Self::NoSuchSharedWorker => "no-such-shared-worker",
            Self::NotRunning => "not-running",
            Self::Busy => "busy",
            Self::ShuttingDown => "shutting-down",
            Self::Limit => "limit",
            Self::BadRequest => "bad-request",
            Self::NotAllowed => "not-allowed",
            Self::AlreadyExists => "already-exists",
            Self::SpawnFailed => "spawn-failed",
            Self::NotReady => "not-ready",
            Self::Timeout => "timeout",
            Self::Unsupported => "unsupported",
            Self::Internal => "internal",
        }
    }
}

/// The signal that ended a process: its number and its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalInfo {
    /// Its number (`9`).
    pub number: i32,
    /// Its name (`SIGKILL`).
    pub name: String,
}

/// How a worker's process ended, as `waitpid` saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Its exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when it was killed.
    pub signal: Option<SignalInfo>,
    /// Whether the kernel dumped its core.
    pub core_dumped: bool,
}

/// What happened to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A run started.
    Spawned,
    /// It sent Ready.
    Ready,
    /// It posted a message (as text, lossily).
    Message(String),
    /// A message of its could not be read, or its channel broke.
    MessageError(String),
    /// A line of its output.
    Output(String),
    /// It reported an error (a panic, with its location).
    Error(String),
    /// A run ended; `None` when no process exit was seen (a stop during a
    /// restart's backoff).
    Exit(Option<Exit>),
    /// It is to be started again after a backoff.
    Restarting,
    /// It restarted too often: given up on.
    Failed,
    /// For a watcher that fell behind: how many events it missed.
    Missed(u64),
}

impl EventKind {
    /// Its name: `spawned`, `ready`, `message`, `messageerror`, `output`,
    /// `error`, `exit`, `restarting`, `failed`, `missed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Spawned => "spawned",
            Self::Ready => "ready",
            Self::Message(_) => "message",
            Self::MessageError(_) => "messageerror",
            Self::Output(_) => "output",
            Self::Error(_) => "error",
            Self::Exit(_) => "exit",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::Missed(_) => "missed",
        }
    }
}

/// Something that happened to a worker, as [`ControlRequest::Events`]
/// streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The worker's id (0 for [`EventKind::Missed`]).
    pub worker: u64,
    /// Its name.
    pub name: String,
    /// The worker that started it, for a sub-worker.
    pub parent: Option<u64>,
    /// What happened.
    pub kind: EventKind,
}

impl From<&Event> for DaemonEvent {
    /// The older flat form, as [`ControlRequest::Watch`] streams it.
    fn from(event: &Event) -> Self {
        let mut flat = DaemonEvent {
            event: event.kind.name().to_string(),
            worker: event.worker,
            name: event.name.clone(),
            code: None,
            signal: None,
            text: None,
            missed: None,
        };
        match &event.kind {
            EventKind::Message(text)
            | EventKind::MessageError(text)
            | EventKind::Output(text)
            | EventKind::Error(text) => flat.text = Some(text.clone()),
            EventKind::Exit(Some(exit)) => {
                flat.code = exit.code;
                flat.signal = exit.signal.as_ref().map(|s| s.name.clone());
            }
            EventKind::Missed(count) => flat.missed = Some(*count),
            EventKind::Spawned
            | EventKind::Ready
            | EventKind::Exit(None)
            | EventKind::Restarting
            | EventKind::Failed => {}
        }
        flat
    }
}

impl From<&Exit> for ExitInfo {
    /// The older form of an exit, without the signal's number and the core.
    fn from(exit: &Exit) -> Self {
        ExitInfo {
            code: exit.code,
            signal: exit.signal.as_ref().map(|s| s.name.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Limits;
    use crate::message::{encode_frame, Outgoing};

    #[test]
    fn a_typed_exit_event_flattens_to_the_older_watch_form() {
        let event = Event {
            worker: 7,
            name: "web".into(),
            parent: Some(3),
            kind: EventKind::Exit(Some(Exit {
                code: None,
                signal: Some(SignalInfo {
                    number: 9,
                    name: "SIGKILL".into(),
                }),
                core_dumped: false,
            })),
        };
        let flat = DaemonEvent::from(&event);
        assert_eq!(flat.event, "exit");
        assert_eq!((flat.worker, flat.name.as_str()), (7, "web"));
        assert_eq!((flat.code, flat.signal.as_deref()), (None, Some("SIGKILL")));
        let output = Event {
            kind: EventKind::Output("hello".into()),
            ..event
        };
        assert_eq!(DaemonEvent::from(&output).text.as_deref(), Some("hello"));
    }

    #[test]
    fn failed_is_appended_after_attached_with_its_kind_as_a_u32() {
        let failed = ControlResponse::Failed {
            kind: ErrorKind::NoSuchWorker,
            message: "no worker 9".into(),
        };
        let mut bytes = Vec::new();
        crate::codec::encode_into(&failed, &mut bytes).unwrap();
        // u32 variant 12, u32 kind 0, then the message: a u64 length and bytes.
        assert_eq!(&bytes[..8], &[12, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[8..16], &[11, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[16..], b"no worker 9");
    }

    #[test]
    fn every_worker_state_goes_by_its_name_and_back() {
        let names: Vec<&str> = WorkerState::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "starting",
                "running",
                "closing",
                "restarting",
                "exited",
                "failed"
            ]
        );
        for state in WorkerState::ALL {
            assert_eq!(state.name().parse::<WorkerState>(), Ok(state));
        }
        assert!("sleeping".parse::<WorkerState>().is_err());
    }

    #[test]
    fn status_is_encoded_as_wire_md_shows() {
        let mut bytes = Vec::new();
        encode_frame(
            &mut bytes,
            Outgoing::Value(&ControlRequest::Status),
            0,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            bytes,
            [
                0x41, 0x52, 0x42, 0x52, 1, 2, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, // header
                4, 0, 0, 0, 0, 0, 0, 0, // byte string length
                9, 0, 0, 0, // variant 9
            ]
        );
    }
}

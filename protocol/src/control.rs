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
    /// Close a worker gracefully; answered with [`ControlResponse::Exited`].
    Close {
        /// Worker id.
        id: u64,
        /// Grace in milliseconds; the worker's own when absent.
        grace_ms: Option<u64>,
    },
    /// Kill a worker at once; answered with [`ControlResponse::Exited`].
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

/// A worker as `list` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Daemon-wide id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Current process id (0 when not running).
    pub pid: u32,
    /// `starting`, `running`, `closing`, `restarting`, `exited` or `failed`.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Limits;
    use crate::message::{encode_frame, Outgoing};

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

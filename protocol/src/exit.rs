//! How a worker ended: [`ExitRecord`], the same type for a worker its
//! supervisor started and for a sub-worker another worker started (the
//! supervisor sends the sub-worker's record to its parent in a ChildExit
//! frame).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::signal::Signal;

/// Who or what ended a worker. On the wire (ChildExit) a `u32`, in the
/// order declared here, from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Initiator {
    /// The worker exited on its own with a code (including `close()` from
    /// inside, or a panic's exit code).
    Worker,
    /// A signal nobody in the supervisor sent (a segfault, an outside `kill`).
    Crash,
    /// A close: Close frame, then SIGTERM, then SIGKILL.
    Close,
    /// A terminate (SIGKILL to the worker and its subtree), or its handle was
    /// dropped.
    Terminate,
    /// A signal its parent sent it on purpose (`Worker::signal`).
    Signal,
}

/// CPU time and memory of a finished worker, from `wait4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceUsage {
    /// User CPU time.
    pub user_time: Duration,
    /// System CPU time.
    pub system_time: Duration,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
}

/// A worker's exit, exactly as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    /// The exit code, when the worker exited (rather than being killed).
    pub code: Option<i32>,
    /// The signal that killed it, when it was killed.
    pub signal: Option<Signal>,
    /// Whether the kernel reports a core dump.
    pub core_dumped: bool,
    /// What started the end.
    pub initiated_by: Initiator,
    /// For a close: the last signal the escalation sent (SIGTERM or SIGKILL),
    /// if the worker did not exit on the Close frame alone.
    pub escalated_to: Option<Signal>,
    /// Resource usage.
    pub usage: ResourceUsage,
}

impl ExitRecord {
    /// Whether the worker exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}")?,
            (None, Some(signal)) => write!(f, "killed by {signal}")?,
            (None, None) => write!(f, "ended")?,
        }
        if self.core_dumped {
            write!(f, " (core dumped)")?;
        }
        write!(f, ", initiated by {:?}", self.initiated_by)
    }
}

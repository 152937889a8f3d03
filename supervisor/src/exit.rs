//! How a worker ended: [`ExitRecord`].
//!
//! The raw wait status is decoded with libc's `W*` macros (pure arithmetic,
//! no `unsafe`) rather than nix's `WaitStatus::from_raw`: nix turns the
//! terminating signal into its `Signal` enum, which has no realtime
//! signals and makes `from_raw` fail (`EINVAL`) on a status a realtime
//! signal ended, whose signal arbor must still report.

use std::fmt;
use std::time::Duration;

use crate::signal::Signal;
use crate::sys::Reaped;

/// Who or what ended a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// The worker exited on its own with a code (including `close()` from
    /// inside, or a panic's exit code).
    Worker,
    /// A signal nobody in the supervisor sent (a segfault, an outside `kill`).
    Crash,
    /// [`crate::Worker::close`]: Close frame, then SIGTERM, then SIGKILL.
    Close,
    /// [`crate::Worker::terminate`], or the handle was dropped.
    Terminate,
    /// [`crate::Worker::signal`].
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
    pub(crate) fn from_reaped(
        reaped: &Reaped,
        asked: Option<Initiator>,
        escalated_to: Option<Signal>,
    ) -> Self {
        let status = reaped.status;
        let (code, signal) = if status == -1 {
            (None, None) // the status was lost (see sys::Reaped::unknown)
        } else if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None)
        } else if libc::WIFSIGNALED(status) {
            (None, Signal::from_number(libc::WTERMSIG(status)))
        } else {
            (None, None)
        };
        let core_dumped = status != -1 && libc::WIFSIGNALED(status) && libc::WCOREDUMP(status);
        let initiated_by = match (asked, signal) {
            (Some(who), _) => who,
            (None, Some(_)) => Initiator::Crash,
            (None, None) => Initiator::Worker,
        };
        Self {
            code,
            signal,
            core_dumped,
            initiated_by,
            escalated_to,
            usage: ResourceUsage {
                user_time: reaped.user_time,
                system_time: reaped.system_time,
                max_rss_kib: reaped.max_rss_kib,
            },
        }
    }

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

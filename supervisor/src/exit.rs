//! How a worker ended: [`ExitRecord`] (defined in `arbor-protocol`, so that
//! a sub-worker's parent gets the same type), built here from what `wait4`
//! reported.
//!
//! The raw wait status is decoded with libc's `W*` macros (pure arithmetic,
//! no `unsafe`) rather than nix's `WaitStatus::from_raw`: nix turns the
//! terminating signal into its `Signal` enum, which has no realtime
//! signals and makes `from_raw` fail (`EINVAL`) on a status a realtime
//! signal ended, whose signal arbor must still report.

pub use arbor_protocol::exit::{ExitRecord, Initiator, ResourceUsage};

use crate::signal::Signal;
use crate::sys::Reaped;

/// The record of an exit `wait4` reported: `asked` is who asked for the end
/// (none: the worker itself, or a crash when a signal ended it), and
/// `escalated_to` the last signal a close sent.
pub(crate) fn from_reaped(
    reaped: &Reaped,
    asked: Option<Initiator>,
    escalated_to: Option<Signal>,
) -> ExitRecord {
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
    ExitRecord {
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

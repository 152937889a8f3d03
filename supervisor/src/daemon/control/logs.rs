//! `logs`: the last lines a worker printed, and with `-f` the new ones as
//! they come.

use std::collections::VecDeque;

use arbor_protocol::control::ControlResponse;

use super::{Reply, StreamForm};
use crate::daemon::error::ControlError;
use crate::daemon::registry::Daemon;

/// The last `lines` lines of worker `id`.
pub(super) fn tail(daemon: &Daemon, id: u64, lines: u32) -> Result<ControlResponse, ControlError> {
    let entries = daemon.entries();
    let entry = entries.get(&id).ok_or(ControlError::NoSuchWorker(id))?;
    Ok(last_lines(&entry.logs, lines))
}

/// The last `lines` lines of worker `id`, then each new one.
pub(super) fn follow(daemon: &Daemon, id: u64, lines: u32) -> Result<Reply, ControlError> {
    // The snapshot and the subscription under one lock, the one output
    // enters the ring under: each line is seen exactly once.
    let entries = daemon.entries();
    let entry = entries.get(&id).ok_or(ControlError::NoSuchWorker(id))?;
    Ok(Reply::Stream {
        first: last_lines(&entry.logs, lines),
        events: daemon.events.subscribe(),
        worker: Some(id),
        form: StreamForm::Output,
    })
}

fn last_lines(logs: &VecDeque<String>, lines: u32) -> ControlResponse {
    let skip = logs.len().saturating_sub(lines as usize);
    ControlResponse::Logs(logs.iter().skip(skip).cloned().collect())
}

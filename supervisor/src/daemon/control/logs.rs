//! `logs`: the last lines a worker printed, and with `-f` the new ones as
//! they come.

use arbor_protocol::control::ControlResponse;

use super::reply::{Reply, StreamForm};
use crate::daemon::context::Daemon;
use crate::daemon::error::ControlError;

/// The last `lines` lines of worker `id`.
pub(super) fn tail(daemon: &Daemon, id: u64, lines: u32) -> Result<ControlResponse, ControlError> {
    Ok(ControlResponse::Logs(daemon.registry.tail(id, lines)?))
}

/// The last `lines` lines of worker `id`, then each new one (the snapshot
/// and the subscription are taken together: each line is seen once).
pub(super) fn follow(daemon: &Daemon, id: u64, lines: u32) -> Result<Reply, ControlError> {
    let (snapshot, events) = daemon.registry.follow(id, lines)?;
    Ok(Reply::Stream {
        first: ControlResponse::Logs(snapshot),
        events,
        worker: Some(id),
        form: StreamForm::Output,
    })
}

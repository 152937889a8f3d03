//! `watch` and `events`: the event stream, of one worker or of all, in the
//! older flat form (`Watch`) or typed (`Events`).

use arbor_protocol::control::ControlResponse;

use super::reply::{Reply, StreamForm};
use crate::daemon::context::Daemon;
use crate::daemon::error::ControlError;

/// The stream of every worker's events, or of worker `id`'s: one arbord
/// knows (running, or exited and still listed), else `NoSuchWorker`.
pub(super) fn watch(
    daemon: &Daemon,
    id: Option<u64>,
    form: StreamForm,
) -> Result<Reply, ControlError> {
    // Subscribed first: an event of the worker between the check and the
    // subscription is not missed.
    let events = daemon.registry.subscribe();
    if let Some(id) = id {
        if daemon.registry.watch(id).is_none() {
            return Err(ControlError::NoSuchWorker(id));
        }
    }
    Ok(Reply::Stream {
        first: ControlResponse::Ok,
        events,
        worker: id,
        form,
    })
}

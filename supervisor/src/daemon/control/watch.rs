//! `watch` and `events`: the event stream, of one worker or of all, in the
//! older flat form (`Watch`) or typed (`Events`).

use arbor_protocol::control::ControlResponse;

use super::reply::{Reply, StreamForm};
use crate::daemon::context::Daemon;

pub(super) fn watch(daemon: &Daemon, id: Option<u64>, form: StreamForm) -> Reply {
    Reply::Stream {
        first: ControlResponse::Ok,
        events: daemon.registry.subscribe(),
        worker: id,
        form,
    }
}

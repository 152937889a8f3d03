//! `watch`: the event stream, of one worker or of all.

use arbor_protocol::control::ControlResponse;

use super::Reply;
use crate::daemon::registry::Daemon;

pub(super) fn watch(daemon: &Daemon, id: Option<u64>) -> Reply {
    Reply::Stream {
        first: ControlResponse::Ok,
        events: daemon.events.subscribe(),
        worker: id,
        only: None,
    }
}

//! `logs`: the last lines a worker printed, and with `-f` the new ones as
//! they come.

use arbor_protocol::control::ControlResponse;

use super::{error, Reply};
use crate::daemon::registry::Daemon;

pub(super) fn logs(daemon: &Daemon, id: u64, lines: u32, follow: bool) -> Reply {
    // The snapshot and the subscription under one lock, the one output
    // enters the ring under: each line is seen exactly once.
    let entries = daemon.entries();
    let Some(entry) = entries.get(&id) else {
        let missing = error(format!("no worker {id}"));
        return if follow {
            Reply::End(missing)
        } else {
            Reply::One(missing)
        };
    };
    let skip = entry.logs.len().saturating_sub(lines as usize);
    let snapshot = ControlResponse::Logs(entry.logs.iter().skip(skip).cloned().collect());
    if !follow {
        return Reply::One(snapshot);
    }
    Reply::Stream {
        first: snapshot,
        events: daemon.events.subscribe(),
        worker: Some(id),
        only: Some("output"),
    }
}

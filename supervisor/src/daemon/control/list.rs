//! `ps`: every worker the registry knows, running or not.

use arbor_protocol::control::{ControlResponse, WorkerInfo};

use crate::daemon::registry::Daemon;

pub(super) fn list(daemon: &Daemon) -> ControlResponse {
    ControlResponse::Workers(
        daemon
            .entries()
            .iter()
            .map(|(id, e)| WorkerInfo {
                id: *id,
                name: e.recipe.name.clone(),
                pid: e.pid,
                state: e.state.name().to_string(),
                uptime_secs: if e.worker.is_some() {
                    e.started.elapsed().as_secs()
                } else {
                    0
                },
                restarts: e.restarts,
                rss_kib: if e.pid > 0 {
                    crate::procfs::rss_kib(e.pid)
                } else {
                    0
                },
                last_exit: e.last_exit.clone(),
                parent: e.parent,
            })
            .collect(),
    )
}

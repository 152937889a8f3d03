//! `status`: arbord's pid, uptime and worker counts.

use arbor_protocol::control::ControlResponse;

use crate::daemon::registry::Daemon;

pub(super) fn status(daemon: &Daemon) -> ControlResponse {
    let entries = daemon.entries();
    ControlResponse::Status {
        pid: std::process::id(),
        uptime_secs: daemon.started.elapsed().as_secs(),
        workers: entries.len() as u32,
        running: entries.values().filter(|e| e.worker.is_some()).count() as u32,
    }
}

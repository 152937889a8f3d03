//! `status`: arbord's pid, uptime and worker counts.

use arbor_protocol::control::ControlResponse;

use crate::daemon::context::Daemon;

pub(super) fn status(daemon: &Daemon) -> ControlResponse {
    let (known, running) = daemon.registry.counts();
    ControlResponse::Status {
        pid: std::process::id(),
        uptime_secs: daemon.started.elapsed().as_secs(),
        workers: known as u32,
        running: running as u32,
    }
}

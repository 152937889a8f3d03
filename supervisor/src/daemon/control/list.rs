//! `ps`: every worker the registry knows, running or not.

use arbor_protocol::control::ControlResponse;

use crate::daemon::context::Daemon;

pub(super) fn list(daemon: &Daemon) -> ControlResponse {
    let mut workers = daemon.registry.list();
    for worker in workers.iter_mut().filter(|w| w.pid > 0) {
        worker.rss_kib = crate::procfs::rss_kib(worker.pid);
    }
    ControlResponse::Workers(workers)
}

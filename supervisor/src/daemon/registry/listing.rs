//! What `ps`, `status` and a reload read of the registry's workers.

use arbor_protocol::control::WorkerInfo;

use super::Registry;
use crate::daemon::recipe::Recipe;

impl Registry {
    /// Every worker as `ps` lists it, with no memory figure (read from
    /// /proc by the caller, outside the lock).
    pub(in crate::daemon) fn list(&self) -> Vec<WorkerInfo> {
        self.lock()
            .workers
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
                rss_kib: 0,
                last_exit: e.last_exit.clone(),
                parent: e.parent,
            })
            .collect()
    }

    /// (known, running) workers.
    pub(in crate::daemon) fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.workers.len(), state.running())
    }

    pub(in crate::daemon) fn status_line(&self) -> String {
        let (known, running) = self.counts();
        format!("STATUS={running} workers running, {known} known")
    }

    /// The workers the configuration file declared (not pool replicas),
    /// whatever their state, with their recipes.
    pub(in crate::daemon) fn config_workers(&self) -> Vec<(u64, Recipe)> {
        self.lock()
            .workers
            .iter()
            .filter(|(_, e)| e.is_declared())
            .map(|(id, e)| (*id, e.recipe.clone()))
            .collect()
    }
}

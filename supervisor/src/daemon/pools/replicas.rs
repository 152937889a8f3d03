//! Waiting for a replica's Ready, and closing replicas for good.

use std::time::Duration;

use arbor_protocol::control::WorkerState;

use crate::daemon::context::Daemon;
use crate::daemon::error::ControlError;

/// Waits until worker `id` is Ready; an error when it exits first or
/// `timeout` passes.
pub(super) async fn wait_ready(
    daemon: &Daemon,
    id: u64,
    timeout: Duration,
) -> Result<(), ControlError> {
    let Some(mut seen) = daemon.registry.watch(id) else {
        return Err(ControlError::ReplicaGone(id));
    };
    let started =
        tokio::time::timeout(timeout, seen.wait_for(|s| s.state != WorkerState::Starting)).await;
    match started {
        Err(_) => Err(ControlError::ReplicaTimeout { id, limit: timeout }),
        Ok(Err(_)) => Err(ControlError::ReplicaGone(id)),
        Ok(Ok(seen)) if seen.state == WorkerState::Running => Ok(()),
        Ok(Ok(seen)) => Err(ControlError::ReplicaNotReady {
            id,
            state: seen.state,
        }),
    }
}

/// Closes replicas for good (out of dispatch first), concurrently, each
/// with `grace`, and waits for their exits.
pub(super) async fn stop_replicas(daemon: &Daemon, ids: &[u64], grace: Duration) {
    let mut closing = Vec::new();
    for id in ids {
        if let Ok(Some(worker)) = daemon.registry.request_stop(*id) {
            tracing::info!(id, "closing replica");
            worker.begin_close(grace);
            closing.push(worker);
        }
    }
    for worker in closing {
        let _ = worker.wait().await;
    }
}

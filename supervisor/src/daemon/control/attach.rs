//! `attach`: a client connected to a shared worker by name, as the Web
//! Workers standard's SharedWorker connects: the worker is started when it
//! is not running (the first attach, or the first after it exited), gets
//! one end of a new port (a Port frame, queued until it is Ready, its
//! `onconnect`), and the client the other.

use std::sync::Arc;
use std::time::Duration;

use super::reply::Reply;
use crate::daemon::context::Daemon;
use crate::daemon::error::ControlError;
use crate::daemon::monitor::start;
use crate::Worker;

pub(super) async fn attach(daemon: &Arc<Daemon>, name: &str, origin: &str) -> Reply {
    match connect(daemon, name, origin).await {
        Ok((worker, port)) => Reply::Port {
            worker,
            port: port.into_fd(),
        },
        Err(failed) => Reply::End(failed.response()),
    }
}

/// How many runs an attach tries: a shared worker that dies as its port is
/// handed over is met again on its next run.
const ATTEMPTS: usize = 3;
/// How long an attach waits for the exit of a worker that died under it.
const GONE_WAIT: Duration = Duration::from_secs(5);

/// The worker's id and the client's end of its new port.
async fn connect(
    daemon: &Arc<Daemon>,
    name: &str,
    origin: &str,
) -> Result<(u64, arbor_protocol::MessagePort), ControlError> {
    let mut attempt = 1;
    loop {
        if daemon.registry.is_stopping() {
            return Err(ControlError::ShuttingDown);
        }
        let (id, worker) = current_run(daemon, name).await?;
        let (ours, theirs) =
            arbor_protocol::MessagePort::pair().map_err(|source| ControlError::Port {
                name: name.into(),
                source,
            })?;
        let port = daemon.registry.next_port();
        match worker.connect_port(port, origin, theirs).await {
            Ok(()) => {
                tracing::info!(worker = name, id, port, "{origin} attached");
                return Ok((id, ours));
            }
            // Killed, its exit not in yet: once it is, the next run (a
            // restart, or a start of ours) takes the port.
            Err(crate::Error::WorkerGone { .. }) if attempt < ATTEMPTS => {
                attempt += 1;
                let _ = tokio::time::timeout(GONE_WAIT, worker.wait()).await;
            }
            Err(source) => {
                return Err(ControlError::Shared {
                    name: name.into(),
                    source,
                })
            }
        }
    }
}

/// The shared worker's running run, started when there is none.
async fn current_run(daemon: &Arc<Daemon>, name: &str) -> Result<(u64, Arc<Worker>), ControlError> {
    // One start per name at a time; other names are not held.
    let gate = daemon.registry.shared_gate(name)?;
    let _starting = gate.lock().await;
    let (recipe, current) = daemon.registry.shared_run(name)?;
    if let Some(id) = current {
        if let Some(worker) = live_handle(daemon, id).await? {
            return Ok((id, worker));
        }
    }
    let id = start(daemon, recipe, false)
        .await
        .map_err(|source| ControlError::SharedStart {
            name: name.into(),
            source,
        })?;
    daemon.registry.set_shared_run(name, id);
    Ok((id, daemon.registry.running(id)?))
}

/// The running worker of entry `id`, or `None` when it is gone for good
/// (exited, failed, or stopped): a start is then due. One between runs
/// (its exit seen, its restart not yet started) is waited for, up to 30 s,
/// so a shared worker is never started twice.
async fn live_handle(daemon: &Daemon, id: u64) -> Result<Option<Arc<Worker>>, ControlError> {
    let Some(mut seen) = daemon.registry.watch(id) else {
        return Ok(None);
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = *seen.borrow_and_update();
        if now.stop_requested || now.state.is_final() {
            return Ok(None);
        }
        // A handle whose exit is in but not yet seen by its monitor is
        // between runs too.
        if let Ok(worker) = daemon.registry.running(id) {
            if worker.try_exit().is_none() {
                return Ok(Some(worker));
            }
        }
        match tokio::time::timeout_at(deadline, seen.changed()).await {
            Ok(Ok(())) => {}
            // Forgotten by the registry: gone for good.
            Ok(Err(_)) => return Ok(None),
            Err(_) => return Err(ControlError::BetweenRestarts(id)),
        }
    }
}

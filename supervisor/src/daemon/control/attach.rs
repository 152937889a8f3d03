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

/// The worker's id and the client's end of its new port.
async fn connect(
    daemon: &Arc<Daemon>,
    name: &str,
    origin: &str,
) -> Result<(u64, arbor_protocol::MessagePort), ControlError> {
    if daemon.registry.is_stopping() {
        return Err(ControlError::ShuttingDown);
    }
    // One start per name at a time; other names are not held.
    let gate = daemon.registry.shared_gate(name)?;
    let starting = gate.lock().await;
    let (recipe, current) = daemon.registry.shared_run(name)?;
    let running = match current {
        Some(id) => live_handle(daemon, id).await?.map(|worker| (id, worker)),
        None => None,
    };
    let (id, worker) = match running {
        Some(running) => running,
        None => {
            let id =
                start(daemon, recipe, false)
                    .await
                    .map_err(|source| ControlError::SharedStart {
                        name: name.into(),
                        source,
                    })?;
            daemon.registry.set_shared_run(name, id);
            (id, daemon.registry.running(id)?)
        }
    };
    drop(starting);
    let (ours, theirs) =
        arbor_protocol::MessagePort::pair().map_err(|source| ControlError::Port {
            name: name.into(),
            source,
        })?;
    let port = daemon.registry.next_port();
    worker
        .connect_port(port, origin, theirs)
        .await
        .map_err(|source| ControlError::Shared {
            name: name.into(),
            source,
        })?;
    tracing::info!(worker = name, id, port, "{origin} attached");
    Ok((id, ours))
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

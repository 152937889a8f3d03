//! The pool requests: `pools` (as `ps` shows them), `scale` and rolling
//! `reload`. Scale and reload take the reconfiguration lock for reading: a
//! SIGHUP reload never runs over them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arbor_protocol::control::ControlResponse;

use super::error;
use crate::daemon::pools;
use crate::daemon::registry::Daemon;

pub(super) async fn pools(daemon: &Arc<Daemon>) -> ControlResponse {
    // /proc reads block: off the runtime's threads.
    let daemon = Arc::clone(daemon);
    match tokio::task::spawn_blocking(move || pools::infos(&daemon)).await {
        Ok(infos) => ControlResponse::Pools(infos),
        Err(e) => error(e.to_string()),
    }
}

pub(super) async fn scale(daemon: &Arc<Daemon>, pool: &str, replicas: u32) -> ControlResponse {
    if daemon.stopping.load(Ordering::SeqCst) {
        return error("arbord is shutting down");
    }
    let _beside_other_pool_operations = daemon.reconfig.read().await;
    match pools::scale(daemon, pool, replicas).await {
        Ok(message) => ControlResponse::Done { message },
        Err(message) => error(message),
    }
}

/// Rolls pool `pool`, or every pool, one after another.
pub(super) async fn reload(daemon: &Arc<Daemon>, pool: Option<String>) -> ControlResponse {
    if daemon.stopping.load(Ordering::SeqCst) {
        return error("arbord is shutting down");
    }
    let _beside_other_pool_operations = daemon.reconfig.read().await;
    let names = match pool {
        Some(name) => vec![name],
        None => pools::names(daemon),
    };
    let mut done = Vec::new();
    for name in names {
        match pools::rolling_reload(daemon, &name).await {
            Ok(message) => done.push(message),
            Err(message) => return error(message),
        }
    }
    ControlResponse::Done {
        message: if done.is_empty() {
            "no pools".into()
        } else {
            done.join("\n")
        },
    }
}

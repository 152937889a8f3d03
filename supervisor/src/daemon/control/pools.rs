//! The pool requests: `pools` (as `ps` shows them), `scale` and rolling
//! `reload`. Scale and reload take the reconfiguration lock for reading: a
//! SIGHUP reload never runs over them.

use std::sync::Arc;

use arbor_protocol::control::ControlResponse;

use crate::daemon::context::Daemon;
use crate::daemon::error::ControlError;
use crate::daemon::pools;

pub(super) async fn pools(daemon: &Arc<Daemon>) -> Result<ControlResponse, ControlError> {
    // /proc reads block: off the runtime's threads.
    let daemon = Arc::clone(daemon);
    let infos = tokio::task::spawn_blocking(move || pools::infos(&daemon))
        .await
        .map_err(|e| ControlError::Internal(e.to_string()))?;
    Ok(ControlResponse::Pools(infos))
}

pub(super) async fn scale(
    daemon: &Arc<Daemon>,
    pool: &str,
    replicas: u32,
) -> Result<ControlResponse, ControlError> {
    if daemon.registry.is_stopping() {
        return Err(ControlError::ShuttingDown);
    }
    let _beside_other_pool_operations = daemon.reconfig.read().await;
    let message = pools::scale(daemon, pool, replicas).await?;
    Ok(ControlResponse::Done { message })
}

/// Rolls pool `pool`, or every pool, one after another.
pub(super) async fn reload(
    daemon: &Arc<Daemon>,
    pool: Option<String>,
) -> Result<ControlResponse, ControlError> {
    if daemon.registry.is_stopping() {
        return Err(ControlError::ShuttingDown);
    }
    let _beside_other_pool_operations = daemon.reconfig.read().await;
    let names = match pool {
        Some(name) => vec![name],
        None => daemon.registry.pool_names(),
    };
    let mut done = Vec::new();
    for name in names {
        done.push(pools::rolling_reload(daemon, &name).await?);
    }
    let message = if done.is_empty() {
        "no pools".into()
    } else {
        done.join("\n")
    };
    Ok(ControlResponse::Done { message })
}

//! `arborctl scale` and the replica count of a (re)configured pool.

use std::sync::Arc;

use super::replicas::{stop_replicas, wait_ready};
use crate::config::{DEFAULT_READY_TIMEOUT, MAX_REPLICAS};
use crate::daemon::context::Daemon;
use crate::daemon::error::{ControlError, PoolProgress};
use crate::daemon::monitor::start;

/// `arborctl scale POOL N`.
pub(crate) async fn scale(
    daemon: &Arc<Daemon>,
    name: &str,
    wanted: u32,
) -> Result<String, ControlError> {
    if wanted > MAX_REPLICAS {
        return Err(ControlError::TooManyReplicas(MAX_REPLICAS));
    }
    scale_to(daemon, name, wanted, true).await
}

pub(super) async fn scale_to(
    daemon: &Arc<Daemon>,
    name: &str,
    wanted: u32,
    wait: bool,
) -> Result<String, ControlError> {
    let turn = daemon.registry.pool_turn(name)?;
    let _turn = turn.lock().await;
    let (recipe, live) = daemon.registry.want_replicas(name, wanted)?;
    let timeout = recipe.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT);
    let have = live.len() as u32;
    if wanted > have {
        let mut started = Vec::new();
        for _ in have..wanted {
            let id = start(daemon, recipe.clone(), true)
                .await
                .map_err(|e| ControlError::Pool {
                    pool: name.into(),
                    source: Box::new(e.into()),
                    done: PoolProgress::Nothing,
                })?;
            daemon.registry.add_replica(name, id);
            started.push(id);
        }
        if wait {
            for id in &started {
                wait_ready(daemon, *id, timeout).await?;
            }
        }
        Ok(format!("pool {name}: {have} → {wanted} replicas"))
    } else {
        // Those serving nobody (waiting out a restart backoff, or not yet
        // Ready) go first, then the newest running: the oldest have proven
        // themselves, and a pool never closes a serving replica while one
        // that serves nobody stays.
        let going: Vec<u64> = live[wanted as usize..].to_vec();
        stop_replicas(daemon, &going, recipe.close_grace()).await;
        daemon.registry.drop_replicas(name, &going);
        Ok(format!("pool {name}: {have} → {wanted} replicas"))
    }
}

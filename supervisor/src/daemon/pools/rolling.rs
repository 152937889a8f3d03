//! Rolling replacement: `arborctl reload` and a changed `[[pool]]` on
//! SIGHUP, each new replica Ready before an old one is closed.

use std::sync::Arc;

use super::replicas::{stop_replicas, wait_ready};
use super::scale::scale_to;
use crate::config::PoolConfig;
use crate::config::DEFAULT_READY_TIMEOUT;
use crate::daemon::context::Daemon;
use crate::daemon::error::{ControlError, PoolProgress};
use crate::daemon::monitor::start;
use crate::daemon::recipe::Recipe;
use crate::daemon::registry::Plan;

/// `arborctl reload [POOL]`: a rolling replacement of every replica,
/// `surge` at a time, each new one Ready before an old one is closed.
pub(crate) async fn rolling_reload(
    daemon: &Arc<Daemon>,
    name: &str,
) -> Result<String, ControlError> {
    rolling_replace(daemon, name, None).await
}

/// A rolling replacement with the pool's recipe, or with `new` (recipe and
/// configuration), which becomes the pool's only once every replica runs it.
async fn rolling_replace(
    daemon: &Arc<Daemon>,
    name: &str,
    new: Option<(Recipe, PoolConfig)>,
) -> Result<String, ControlError> {
    let turn = daemon.registry.pool_turn(name)?;
    let _turn = turn.lock().await;
    let Plan { recipe, old, surge } = daemon.registry.plan_replacement(name, new.as_ref())?;
    let timeout = recipe.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT);
    let mut replaced = 0;
    for step in old.chunks(surge) {
        let mut fresh = Vec::new();
        for _ in step {
            let id = start(daemon, recipe.clone(), true)
                .await
                .map_err(|e| ControlError::Pool {
                    pool: name.into(),
                    source: Box::new(e.into()),
                    done: PoolProgress::Replaced {
                        replaced,
                        of: old.len(),
                    },
                })?;
            daemon.registry.add_replica(name, id);
            fresh.push(id);
        }
        for id in &fresh {
            if let Err(e) = wait_ready(daemon, *id, timeout).await {
                // The old replicas of this step stay. A new one that did
                // come up stays too (the pool is over its count until the
                // next scale or reload).
                stop_replicas(daemon, &[*id], recipe.close_grace()).await;
                daemon.registry.drop_replicas(name, &[*id]);
                return Err(ControlError::Pool {
                    pool: name.into(),
                    source: Box::new(e),
                    done: PoolProgress::Stopped {
                        replaced,
                        of: old.len(),
                    },
                });
            }
        }
        stop_replicas(daemon, step, recipe.close_grace()).await;
        daemon.registry.drop_replicas(name, step);
        replaced += step.len();
    }
    if let Some((recipe, config)) = new {
        daemon.registry.commit_pool(name, recipe, config);
    }
    Ok(format!("pool {name}: {replaced} replicas replaced"))
}

/// Applies a changed `[[pool]]` on SIGHUP: new settings roll in (a rolling
/// reload with the new recipe, which the pool keeps only once it is done:
/// a failed one is tried again at the next SIGHUP), then the replica count.
pub(crate) async fn reconfigure(
    daemon: &Arc<Daemon>,
    config: &PoolConfig,
) -> Result<(), ControlError> {
    let new = daemon.registry.pool_change(config)?;
    if let Some(new) = new {
        rolling_replace(daemon, &config.worker.name, Some(new)).await?;
    }
    scale_to(daemon, &config.worker.name, config.replicas, true).await?;
    Ok(())
}

//! SIGHUP: the configuration file read again and applied to the running
//! daemon. Workers from the file are started, closed or replaced; shared
//! workers are re-declared; pools open, close or roll.
//!
//! One reload at a time ([`super::reload_gate`]); `READY=1` once the last
//! pass is done.

use std::path::PathBuf;
use std::sync::Arc;

use super::monitor::start;
use super::pools;
use super::recipe::Recipe;
use super::registry::{lock, Daemon, SharedWorker};
use crate::config::Config;
use crate::systemd::notify;

/// The reload SIGHUP asks for: reads the configuration file and applies it,
/// again while SIGHUPs came meanwhile, then tells systemd `READY=1`, once,
/// when the last pass is done. Pool operations of the control socket wait
/// for it, and it for them.
pub(super) async fn reload_on_signal(daemon: Arc<Daemon>, config_path: Option<PathBuf>) {
    loop {
        match &config_path {
            Some(path) => match Config::load(path) {
                Ok(new) => {
                    let boot = &daemon.config.daemon;
                    if new.daemon.socket != boot.socket
                        || new.daemon.mode != boot.mode
                        || new.daemon.allowed_uids != boot.allowed_uids
                    {
                        tracing::warn!("SIGHUP: [daemon] changes take effect at the next start");
                    }
                    let _alone = daemon.reconfig.write().await;
                    reload(&daemon, new).await;
                }
                Err(e) => tracing::error!("SIGHUP: keeping the running configuration: {e}"),
            },
            None => tracing::info!("SIGHUP: no configuration file to reload"),
        }
        if !lock(&daemon.reload_gate).finish() {
            break;
        }
    }
    notify("READY=1");
    notify(&daemon.status_line());
}

/// Applies a new configuration to workers, shared workers and pools.
async fn reload(daemon: &Arc<Daemon>, new: Config) {
    reload_workers(daemon, &new).await;
    reload_shared(daemon, &new).await;
    reload_pools(daemon, &new).await;
}

/// Starts added workers, closes removed ones, and replaces changed ones
/// (close, then start with the new settings).
async fn reload_workers(daemon: &Arc<Daemon>, new: &Config) {
    // Every worker from the old configuration, whatever its state: running,
    // waiting for a restart, or stopped by an operator.
    let current: Vec<(u64, Recipe)> = daemon
        .entries()
        .iter()
        .filter(|(_, e)| e.from_config && e.recipe.pool.is_none())
        .map(|(id, e)| (*id, e.recipe.clone()))
        .collect();
    let wanted: Vec<Recipe> = new.workers.iter().map(Recipe::from_config).collect();
    let kept = |recipe: &Recipe| {
        wanted
            .iter()
            .any(|w| w.name == recipe.name && w.same_as(recipe))
    };
    let mut closing = Vec::new();
    for (id, recipe) in current.iter().filter(|(_, r)| !kept(r)) {
        tracing::info!(worker = %recipe.name, id, "reload: stopping");
        if let Ok(Some(worker)) = daemon.request_stop(*id) {
            worker.begin_close(recipe.close_grace);
            closing.push(worker);
        }
    }
    for worker in &closing {
        let _ = worker.wait().await;
    }
    for (id, _) in current.iter().filter(|(_, r)| !kept(r)) {
        daemon.entries().remove(id);
    }
    for recipe in wanted {
        let present = current
            .iter()
            .any(|(_, r)| r.name == recipe.name && r.same_as(&recipe));
        if !present {
            tracing::info!(worker = %recipe.name, "reload: starting");
            if let Err(e) = start(daemon, recipe, true).await {
                tracing::error!("reload: {e}");
            }
        }
    }
}

/// Shared workers: a removed one closes; an added or changed one is started
/// from its new recipe on the next attach that finds none running (a
/// changed one keeps serving its clients until it exits).
async fn reload_shared(daemon: &Arc<Daemon>, new: &Config) {
    let mut shared = daemon.shared.lock().await;
    let removed: Vec<String> = shared
        .iter()
        .filter(|(name, s)| s.from_config && !new.shared.iter().any(|n| &n.name == *name))
        .map(|(name, _)| name.clone())
        .collect();
    for name in removed {
        if let Some(SharedWorker {
            current: Some(id), ..
        }) = shared.remove(&name)
        {
            tracing::info!(worker = %name, id, "reload: closing shared worker");
            if let Ok(Some(worker)) = daemon.request_stop(id) {
                worker.begin_close(daemon.grace(id));
            }
        }
    }
    for config in &new.shared {
        let recipe = Recipe::from_config(config);
        match shared.get_mut(&config.name) {
            Some(entry) if entry.from_config => {
                // A changed one is replaced: the running run closes (its
                // clients see their ports close), the next attach starts
                // the new recipe.
                if !entry.recipe.same_as(&recipe) {
                    if let Some(id) = entry.current.take() {
                        tracing::info!(worker = %config.name, id, "reload: replacing shared worker");
                        if let Ok(Some(worker)) = daemon.request_stop(id) {
                            worker.begin_close(entry.recipe.close_grace);
                        }
                    }
                }
                entry.recipe = recipe;
            }
            Some(_) => {
                tracing::warn!(worker = %config.name, "reload: [[shared]] {:?} is taken by spawn --shared; left as it is", config.name)
            }
            None => {
                let entry = SharedWorker {
                    recipe,
                    gate: Arc::default(),
                    current: None,
                    from_config: true,
                };
                shared.insert(config.name.clone(), entry);
            }
        }
    }
}

/// Pools: removed ones close, added ones open, changed ones roll.
async fn reload_pools(daemon: &Arc<Daemon>, new: &Config) {
    let running = pools::configs(daemon);
    for name in running.keys() {
        if !new.pools.iter().any(|p| &p.name == name) {
            tracing::info!(pool = %name, "reload: closing pool");
            pools::remove(daemon, name).await;
        }
    }
    let mut no_sockets = Vec::new();
    for pool in &new.pools {
        let result = match running.get(&pool.name) {
            Some(_) => pools::reconfigure(daemon, pool).await,
            None => {
                tracing::info!(pool = %pool.name, "reload: opening pool");
                pools::open(daemon, pool, &mut no_sockets).await
            }
        };
        if let Err(e) = result {
            tracing::error!("reload: {e}");
        }
    }
}

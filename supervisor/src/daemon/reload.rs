//! SIGHUP: the configuration file read again and applied to the running
//! daemon. Workers from the file are started, closed or replaced; shared
//! workers are re-declared; pools open, close or roll.
//!
//! One reload at a time ([`super::reload_gate`]); `READY=1` once the last
//! pass is done.

use std::path::PathBuf;
use std::sync::Arc;

use super::context::Daemon;
use super::monitor::start;
use super::pools;
use super::recipe::Recipe;
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
        if !daemon.registry.finish_reload() {
            break;
        }
    }
    notify("READY=1");
    notify(&daemon.registry.status_line());
}

/// Applies a new configuration to workers, shared workers and pools.
async fn reload(daemon: &Arc<Daemon>, new: Config) {
    reload_workers(daemon, &new).await;
    reload_shared(daemon, &new);
    reload_pools(daemon, &new).await;
}

/// Starts added workers, closes removed ones, and replaces changed ones
/// (close, then start with the new settings).
async fn reload_workers(daemon: &Arc<Daemon>, new: &Config) {
    // Every worker from the old configuration, whatever its state: running,
    // waiting for a restart, or stopped by an operator.
    let current = daemon.registry.config_workers();
    let wanted: Vec<Recipe> = new.workers.iter().map(Recipe::from_config).collect();
    let kept = |recipe: &Recipe| wanted.contains(recipe);
    let mut closing = Vec::new();
    for (id, recipe) in current.iter().filter(|(_, r)| !kept(r)) {
        tracing::info!(worker = %recipe.name, id, "reload: stopping");
        if let Ok(Some(worker)) = daemon.registry.request_stop(*id) {
            worker.begin_close(recipe.close_grace());
            closing.push(worker);
        }
    }
    for worker in &closing {
        let _ = worker.wait().await;
    }
    for (id, _) in current.iter().filter(|(_, r)| !kept(r)) {
        daemon.registry.remove(*id);
    }
    for recipe in wanted {
        let present = current.iter().any(|(_, r)| *r == recipe);
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
fn reload_shared(daemon: &Daemon, new: &Config) {
    for (worker, grace) in daemon.registry.reload_shared(&new.shared) {
        worker.begin_close(grace);
    }
}

/// Pools: removed ones close, added ones open, changed ones roll.
async fn reload_pools(daemon: &Arc<Daemon>, new: &Config) {
    let running = daemon.registry.pool_configs();
    for name in running.keys() {
        if !new.pools.iter().any(|p| &p.worker.name == name) {
            tracing::info!(pool = %name, "reload: closing pool");
            pools::remove(daemon, name).await;
        }
    }
    let mut no_sockets = Vec::new();
    for pool in &new.pools {
        let result = match running.get(&pool.worker.name) {
            Some(_) => pools::reconfigure(daemon, pool).await,
            None => {
                tracing::info!(pool = %pool.worker.name, "reload: opening pool");
                pools::open(daemon, pool, &mut no_sockets).await
            }
        };
        if let Err(e) = result {
            tracing::error!("reload: {e}");
        }
    }
}

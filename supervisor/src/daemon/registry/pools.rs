//! The registry's pools: each change to a pool's replicas and settings,
//! and what `ps` shows of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use arbor_protocol::control::{PoolInfo, ReplicaInfo, WorkerState};

use super::Registry;
use crate::config::PoolConfig;
use crate::daemon::error::ControlError;
use crate::daemon::pools::Pool;
use crate::daemon::recipe::Recipe;
use crate::listen::ListenAddr;

/// What a rolling replacement works from.
#[derive(Debug)]
pub(in crate::daemon) struct Plan {
    /// The recipe new replicas are started from.
    pub(in crate::daemon) recipe: Recipe,
    /// The replicas to replace, oldest first.
    pub(in crate::daemon) old: Vec<u64>,
    /// How many at a time.
    pub(in crate::daemon) surge: usize,
}

impl Registry {
    pub(in crate::daemon) fn insert_pool(&self, name: String, pool: Pool) {
        self.lock().pools.insert(name, pool);
    }

    pub(in crate::daemon) fn remove_pool(&self, name: &str) -> Option<Pool> {
        self.lock().pools.remove(name)
    }

    /// The lock scale and reload of pool `name` take turns on.
    pub(in crate::daemon) fn pool_turn(
        &self,
        name: &str,
    ) -> Result<Arc<tokio::sync::Mutex<()>>, ControlError> {
        self.lock()
            .pools
            .get(name)
            .map(|pool| Arc::clone(&pool.turn))
            .ok_or_else(|| ControlError::NoSuchPool(name.into()))
    }

    /// Sets pool `name`'s replica count to `wanted` and forgets its replicas
    /// that are gone for good (failed, or stopped by an operator: the count
    /// is made up with new ones); its recipe and live replicas, those that
    /// serve first: running ones (oldest first), then starting ones, then
    /// those waiting out a restart backoff. A scale down drops from the
    /// end, so a replica that serves nobody goes before one that serves.
    pub(in crate::daemon) fn want_replicas(
        &self,
        name: &str,
        wanted: u32,
    ) -> Result<(Recipe, Vec<u64>), ControlError> {
        let mut state = self.lock();
        let pool = state.prune_replicas(name)?;
        pool.wanted = wanted;
        let (recipe, mut live) = (pool.recipe.clone(), pool.replicas.clone());
        // A stable sort: each group keeps its oldest-first order.
        live.sort_by_key(|id| match state.workers.get(id).map(|e| e.state) {
            Some(WorkerState::Running) => 0,
            Some(WorkerState::Starting) => 1,
            _ => 2,
        });
        Ok((recipe, live))
    }

    /// The replacement of pool `name`'s live replicas by `new` (recipe and
    /// configuration), or by its own recipe.
    pub(in crate::daemon) fn plan_replacement(
        &self,
        name: &str,
        new: Option<&(Recipe, PoolConfig)>,
    ) -> Result<Plan, ControlError> {
        let mut state = self.lock();
        let pool = state.prune_replicas(name)?;
        let live = pool.replicas.clone();
        let (recipe, config) = match new {
            Some((recipe, config)) => (recipe.clone(), config),
            None => (pool.recipe.clone(), &pool.config),
        };
        Ok(Plan {
            recipe,
            old: live,
            surge: config.surge as usize,
        })
    }

    /// A replica of pool `name` started.
    pub(in crate::daemon) fn add_replica(&self, name: &str, id: u64) {
        if let Some(pool) = self.lock().pools.get_mut(name) {
            pool.replicas.push(id);
        }
    }

    /// Replicas of pool `name` left it.
    pub(in crate::daemon) fn drop_replicas(&self, name: &str, ids: &[u64]) {
        if let Some(pool) = self.lock().pools.get_mut(name) {
            pool.replicas.retain(|id| !ids.contains(id));
        }
    }

    /// A replacement by `recipe` and `config` is done: they are pool
    /// `name`'s from now on.
    pub(in crate::daemon) fn commit_pool(&self, name: &str, recipe: Recipe, config: PoolConfig) {
        if let Some(pool) = self.lock().pools.get_mut(name) {
            pool.recipe = recipe;
            pool.config = config;
        }
    }

    /// What a changed `[[pool]]` means for its pool: the recipe
    /// and configuration to roll in, or `None` when only the replica count
    /// may have changed. A changed socket waits for the next start.
    pub(in crate::daemon) fn pool_change(
        &self,
        config: &PoolConfig,
    ) -> Result<Option<(Recipe, PoolConfig)>, ControlError> {
        let state = self.lock();
        let pool = state
            .pools
            .get(&config.worker.name)
            .ok_or_else(|| ControlError::NoSuchPool(config.worker.name.clone()))?;
        if pool.config.sockets != config.sockets {
            tracing::warn!(pool = %config.worker.name, "socket changes take effect at the next start");
        }
        let recipe = Recipe::for_pool(config, &pool.runtime);
        let config = PoolConfig {
            sockets: pool.config.sockets.clone(),
            ..config.clone()
        };
        let changed = recipe != pool.recipe || pool.config.surge != config.surge;
        Ok(changed.then_some((recipe, config)))
    }

    pub(in crate::daemon) fn pool_names(&self) -> Vec<String> {
        self.lock().pools.keys().cloned().collect()
    }

    /// The configuration of every pool.
    pub(in crate::daemon) fn pool_configs(&self) -> BTreeMap<String, PoolConfig> {
        self.lock()
            .pools
            .iter()
            .map(|(name, pool)| (name.clone(), pool.config.clone()))
            .collect()
    }

    /// Every pool as `ps` shows it, with no connection counts (read from
    /// /proc by the caller, outside the lock), and the addresses to count
    /// them on.
    pub(in crate::daemon) fn pool_infos(&self) -> Vec<(PoolInfo, Vec<ListenAddr>)> {
        let state = self.lock();
        state
            .pools
            .iter()
            .map(|(name, pool)| {
                let replicas = pool
                    .replicas
                    .iter()
                    .filter_map(|id| state.workers.get(id).map(|e| (id, e)))
                    .map(|(id, entry)| ReplicaInfo {
                        id: *id,
                        pid: entry.pid,
                        state: entry.state.name().to_string(),
                        connections: 0,
                    })
                    .collect();
                let info = PoolInfo {
                    name: name.clone(),
                    replicas_wanted: pool.wanted,
                    sockets: pool.runtime.socket_infos(),
                    replicas,
                };
                (info, pool.runtime.ports())
            })
            .collect()
    }
}

impl super::State {
    /// Pool `name`, with its replicas that were stopped or are gone for good
    /// forgotten (the rest stay oldest first).
    fn prune_replicas(&mut self, name: &str) -> Result<&mut Pool, ControlError> {
        let pool = self
            .pools
            .get(name)
            .ok_or_else(|| ControlError::NoSuchPool(name.into()))?;
        let live: Vec<u64> = pool
            .replicas
            .iter()
            .copied()
            .filter(|id| self.is_live(*id))
            .collect();
        let pool = self
            .pools
            .get_mut(name)
            .ok_or_else(|| ControlError::NoSuchPool(name.into()))?;
        pool.replicas = live;
        Ok(pool)
    }
}

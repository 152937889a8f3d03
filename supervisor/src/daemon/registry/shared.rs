//! The registry's shared workers (`[[shared]]`, `spawn --shared`): started
//! on demand by an attach, one start per name at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::Registry;
use crate::config::SharedConfig;
use crate::daemon::error::ControlError;
use crate::daemon::recipe::Recipe;
use crate::Worker;

/// A shared worker: how to start it, and its current run.
#[derive(Debug)]
pub(in crate::daemon) struct SharedWorker {
    recipe: Recipe,
    /// Held while an attach finds or starts it, so it starts once.
    gate: Arc<Mutex<()>>,
    /// Its entry while it runs (or last ran).
    current: Option<u64>,
    /// Declared by `[[shared]]` (a reload may change or remove it), not by
    /// `spawn --shared`.
    from_config: bool,
    /// A `[[shared]]` of the same name that a reload found while this one's
    /// `spawn --shared` was starting: declared if that start fails.
    declared_meanwhile: Option<Recipe>,
}

impl SharedWorker {
    /// One that `[[shared]]` declares.
    pub(super) fn declared(recipe: Recipe) -> Self {
        Self {
            recipe,
            gate: Arc::default(),
            current: None,
            from_config: true,
            declared_meanwhile: None,
        }
    }
}

impl Registry {
    /// The lock an attach to `name` holds while it finds or starts it.
    pub(in crate::daemon) fn shared_gate(
        &self,
        name: &str,
    ) -> Result<Arc<Mutex<()>>, ControlError> {
        self.lock()
            .shared
            .get(name)
            .map(|s| Arc::clone(&s.gate))
            .ok_or_else(|| ControlError::NoSuchShared(name.into()))
    }

    /// How to start shared worker `name`, and its current run's entry.
    pub(in crate::daemon) fn shared_run(
        &self,
        name: &str,
    ) -> Result<(Recipe, Option<u64>), ControlError> {
        self.lock()
            .shared
            .get(name)
            .map(|s| (s.recipe.clone(), s.current))
            .ok_or_else(|| ControlError::NoSuchShared(name.into()))
    }

    /// Shared worker `name` runs as entry `id` now.
    pub(in crate::daemon) fn set_shared_run(&self, name: &str, id: u64) {
        if let Some(shared) = self.lock().shared.get_mut(name) {
            shared.current = Some(id);
        }
    }

    /// Takes the name of a new shared worker (`spawn --shared`): refused
    /// when it is taken. Its gate comes back held, so that an attach
    /// waits until its first run is in (or its start failed and
    /// [`Registry::unreserve_shared`] gave the name back).
    pub(in crate::daemon) fn reserve_shared(
        &self,
        recipe: Recipe,
    ) -> Result<OwnedMutexGuard<()>, ControlError> {
        let mut state = self.lock();
        if state.shared.contains_key(&recipe.name) {
            return Err(ControlError::SharedExists(recipe.name));
        }
        let gate = Arc::new(Mutex::new(()));
        let held = Arc::clone(&gate)
            .try_lock_owned()
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        let name = recipe.name.clone();
        let shared = SharedWorker {
            recipe,
            gate,
            current: None,
            from_config: false,
            declared_meanwhile: None,
        };
        state.shared.insert(name, shared);
        Ok(held)
    }

    /// A reserved shared worker did not start: its name is free again, or
    /// the `[[shared]]` a reload declared meanwhile takes it.
    pub(in crate::daemon) fn unreserve_shared(&self, name: &str) {
        let mut state = self.lock();
        let Some(shared) = state.shared.get_mut(name) else {
            return;
        };
        if shared.from_config || shared.current.is_some() {
            return;
        }
        match shared.declared_meanwhile.take() {
            Some(recipe) => *shared = SharedWorker::declared(recipe),
            None => {
                state.shared.remove(name);
            }
        }
    }

    /// Applies the `[[shared]]` tables of a reload: a removed one is
    /// forgotten, an added one declared, a changed one gets its new recipe;
    /// the runs of removed and changed ones are stopped, and returned with
    /// their graces to be closed (their clients see their ports close; the
    /// next attach starts the new recipe).
    pub(in crate::daemon) fn reload_shared(
        &self,
        configs: &[SharedConfig],
    ) -> Vec<(Arc<Worker>, Duration)> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut stopped = Vec::new();
        let removed: Vec<String> = state
            .shared
            .iter()
            .filter(|(name, s)| s.from_config && !configs.iter().any(|c| &c.worker.name == *name))
            .map(|(name, _)| name.clone())
            .collect();
        let mut ending = Vec::new();
        for name in removed {
            if let Some(SharedWorker {
                current: Some(id),
                recipe,
                ..
            }) = state.shared.remove(&name)
            {
                tracing::info!(worker = %name, id, "reload: closing shared worker");
                ending.push((id, recipe.close_grace()));
            }
        }
        for SharedConfig { worker: config } in configs {
            let recipe = Recipe::from_config(config);
            match state.shared.get_mut(&config.name) {
                Some(shared) if shared.from_config => {
                    if shared.recipe != recipe {
                        if let Some(id) = shared.current.take() {
                            tracing::info!(worker = %config.name, id, "reload: replacing shared worker");
                            ending.push((id, shared.recipe.close_grace()));
                        }
                    }
                    shared.recipe = recipe;
                }
                Some(shared) => {
                    tracing::warn!(worker = %config.name, "reload: [[shared]] {:?} is taken by spawn --shared; left as it is", config.name);
                    if shared.current.is_none() {
                        shared.declared_meanwhile = Some(recipe);
                    }
                }
                None => {
                    state
                        .shared
                        .insert(config.name.clone(), SharedWorker::declared(recipe));
                }
            }
        }
        for (id, grace) in ending {
            if let Ok(Some(worker)) = state.request_stop(id) {
                stopped.push((worker, grace));
            }
        }
        stopped
    }
}

//! `spawn`: a managed worker from a client's spec, or a shared worker
//! (`--shared`) that later attaches connect to.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arbor_protocol::control::{ControlResponse, SpawnRequest};

use crate::daemon::error::ControlError;
use crate::daemon::monitor::start;
use crate::daemon::recipe::Recipe;
use crate::daemon::registry::{Daemon, SharedWorker};

pub(super) async fn spawn(
    daemon: &Arc<Daemon>,
    spawn: SpawnRequest,
) -> Result<ControlResponse, ControlError> {
    if daemon.stopping.load(Ordering::SeqCst) {
        return Err(ControlError::ShuttingDown);
    }
    let shared = spawn.shared;
    let recipe = Recipe::from_request(spawn).map_err(ControlError::BadRequest)?;
    let id = if shared {
        spawn_shared(daemon, recipe).await?
    } else {
        start(daemon, recipe, false).await?
    };
    Ok(ControlResponse::Spawned { id })
}

/// Starts a shared worker under its name, which must be free.
async fn spawn_shared(daemon: &Arc<Daemon>, recipe: Recipe) -> Result<u64, ControlError> {
    let name = recipe.name.clone();
    let mut shared = daemon.shared.lock().await;
    if shared.contains_key(&name) {
        return Err(ControlError::SharedExists(name));
    }
    let id = start(daemon, recipe.clone(), false).await?;
    let entry = SharedWorker {
        recipe,
        gate: Arc::default(),
        current: Some(id),
        from_config: false,
    };
    shared.insert(name, entry);
    Ok(id)
}

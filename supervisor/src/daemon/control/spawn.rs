//! `spawn`: a managed worker from a client's spec, or a shared worker
//! (`--shared`) that later attaches connect to.

use std::sync::Arc;

use arbor_protocol::control::{ControlResponse, SpawnRequest};

use crate::daemon::context::Daemon;
use crate::daemon::error::ControlError;
use crate::daemon::monitor::start;
use crate::daemon::recipe::Recipe;

pub(super) async fn spawn(
    daemon: &Arc<Daemon>,
    spawn: SpawnRequest,
) -> Result<ControlResponse, ControlError> {
    if daemon.registry.is_stopping() {
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
/// An attach meanwhile waits for this first run.
async fn spawn_shared(daemon: &Arc<Daemon>, recipe: Recipe) -> Result<u64, ControlError> {
    let name = recipe.name.clone();
    let _starting = daemon.registry.reserve_shared(recipe.clone())?;
    match start(daemon, recipe, false).await {
        Ok(id) => {
            daemon.registry.set_shared_run(&name, id);
            Ok(id)
        }
        Err(e) => {
            daemon.registry.unreserve_shared(&name);
            Err(e.into())
        }
    }
}

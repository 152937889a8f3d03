//! `spawn`: a managed worker from a client's spec, or a shared worker
//! (`--shared`) that later attaches connect to.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arbor_protocol::control::{ControlResponse, SpawnRequest};

use super::error;
use crate::daemon::monitor::start;
use crate::daemon::recipe::Recipe;
use crate::daemon::registry::{Daemon, SharedWorker};

pub(super) async fn spawn(daemon: &Arc<Daemon>, spawn: SpawnRequest) -> ControlResponse {
    if daemon.stopping.load(Ordering::SeqCst) {
        return error("arbord is shutting down");
    }
    if spawn.shared {
        return spawn_shared(daemon, spawn).await;
    }
    match Recipe::from_request(spawn) {
        Ok(recipe) => match start(daemon, recipe, false).await {
            Ok(id) => ControlResponse::Spawned { id },
            Err(e) => error(e.to_string()),
        },
        Err(e) => error(e),
    }
}

/// Starts a shared worker under its name, which must be free.
async fn spawn_shared(daemon: &Arc<Daemon>, spawn: SpawnRequest) -> ControlResponse {
    let Ok(recipe) = Recipe::from_request(spawn) else {
        return error("bad spawn request");
    };
    let name = recipe.name.clone();
    let mut shared = daemon.shared.lock().await;
    if shared.contains_key(&name) {
        return error(format!("a shared worker {name:?} exists already"));
    }
    match start(daemon, recipe.clone(), false).await {
        Ok(id) => {
            let entry = SharedWorker {
                recipe,
                gate: Arc::default(),
                current: Some(id),
                from_config: false,
            };
            shared.insert(name, entry);
            ControlResponse::Spawned { id }
        }
        Err(e) => error(e.to_string()),
    }
}

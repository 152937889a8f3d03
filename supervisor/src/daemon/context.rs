//! [`Daemon`]: what every task of arbord shares (the accept loop, one task
//! per control client, one monitor per worker): the supervisor that forks,
//! the boot configuration, and the registry, the one owner of the state.

use std::time::Instant;

use tokio::sync::{Notify, RwLock};

use super::recipe::Recipe;
use super::registry::Registry;
use crate::config::Config;
use crate::Supervisor;

#[derive(Debug)]
pub(super) struct Daemon {
    pub(super) supervisor: Supervisor,
    /// The configuration arbord started with (`[daemon]` is not reloaded).
    pub(super) config: Config,
    pub(super) started: Instant,
    pub(super) registry: Registry,
    /// A SIGHUP reload holds it for writing, `arborctl scale` and `reload`
    /// for reading: a configuration reload never runs over a pool
    /// operation, nor one over it.
    pub(super) reconfig: RwLock<()>,
    /// `arborctl shutdown` asks for the end here.
    pub(super) shutdown: Notify,
}

impl Daemon {
    /// A daemon with no workers yet, and the shared workers of `config`
    /// known (they start on their first attach).
    pub(super) fn new(supervisor: Supervisor, config: Config) -> Self {
        let shared = config
            .shared
            .iter()
            .map(|s| (s.worker.name.clone(), Recipe::from_config(&s.worker)));
        Self {
            supervisor,
            registry: Registry::new(shared),
            config,
            started: Instant::now(),
            reconfig: RwLock::new(()),
            shutdown: Notify::new(),
        }
    }
}

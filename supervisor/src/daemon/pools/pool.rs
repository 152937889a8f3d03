//! A pool as the registry holds it.

use std::sync::Arc;

use super::runtime::PoolRuntime;
use crate::config::PoolConfig;
use crate::daemon::recipe::Recipe;

/// A pool in the registry.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(in crate::daemon) config: PoolConfig,
    pub(in crate::daemon) runtime: Arc<PoolRuntime>,
    pub(in crate::daemon) recipe: Recipe,
    pub(in crate::daemon) wanted: u32,
    /// Its replicas' worker ids, oldest first.
    pub(in crate::daemon) replicas: Vec<u64>,
    /// Held by scale and reload: one operation at a time per pool.
    pub(in crate::daemon) turn: Arc<tokio::sync::Mutex<()>>,
}

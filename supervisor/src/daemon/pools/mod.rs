//! Pools in arbord: N replicas of one recipe serving the pool's sockets,
//! scaled and replaced (rolling reload) without dropping a connection.
//!
//! Replicas are ordinary managed workers (registry entries with monitors and
//! restart policies); a pool adds its sockets, which each replica gets by
//! the `LISTEN_FDS` convention (`shared`, `reuseport`) or through a
//! [`Dispatcher`] (`handoff`), and the list of its replicas. Operations on
//! one pool (scale, reload) take turns on the pool's lock.

mod rolling;
mod runtime;
mod scale;
mod socket;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::control::{PoolInfo, ReplicaInfo, WorkerState};

pub(super) use self::rolling::{reconfigure, rolling_reload};
pub(super) use self::runtime::PoolRuntime;
pub(super) use self::scale::scale;
use self::scale::scale_to;
use self::socket::PoolSocket;
use super::error::ControlError;
use super::recipe::Recipe;
use super::registry::Daemon;
use crate::config::WorkerConfig;

/// A pool's readiness limit when its recipe has none.
const DEFAULT_READY: Duration = Duration::from_secs(30);

/// A pool in the registry.
#[derive(Debug)]
pub(crate) struct Pool {
    config: WorkerConfig,
    runtime: Arc<PoolRuntime>,
    recipe: Recipe,
    wanted: u32,
    /// Its replicas' worker ids, oldest first.
    replicas: Vec<u64>,
    /// Held by scale and reload: one operation at a time per pool.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// Opens pool `config`'s sockets (taking those systemd passed by name from
/// `activated`) and starts its replicas.
pub(crate) async fn open(
    daemon: &Arc<Daemon>,
    config: &WorkerConfig,
    activated: &mut Vec<(String, OwnedFd)>,
) -> Result<(), ControlError> {
    let mut sockets = Vec::new();
    for socket in &config.socket {
        let passed = activated
            .iter()
            .position(|(name, _)| *name == socket.name)
            .map(|i| activated.remove(i).1);
        let opened =
            PoolSocket::open(socket, passed).map_err(|source| ControlError::PoolSocket {
                pool: config.name.clone(),
                socket: socket.name.clone(),
                listen: socket.listen.to_string(),
                source,
            })?;
        tracing::info!(pool = %config.name, socket = %socket.name, listen = %opened.addr, mode = opened.config.mode.name(), "pool socket open");
        sockets.push(opened);
    }
    let runtime = Arc::new(PoolRuntime { sockets });
    let recipe = Recipe::for_pool(config, &runtime);
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    daemon.pools().insert(
        config.name.clone(),
        Pool {
            config: config.clone(),
            runtime,
            recipe,
            wanted: 0,
            replicas: Vec::new(),
            turn,
        },
    );
    scale_to(daemon, &config.name, config.replica_count(), false).await?;
    Ok(())
}

/// Closes every replica of pool `name` and forgets the pool (SIGHUP with
/// the pool gone from the configuration).
pub(crate) async fn remove(daemon: &Arc<Daemon>, name: &str) {
    let Ok(turn) = pool_turn(daemon, name) else {
        return;
    };
    let _turn = turn.lock().await;
    let Some(pool) = daemon.pools().remove(name) else {
        return;
    };
    pool.runtime.stop();
    stop_replicas(daemon, &pool.replicas, pool.recipe.close_grace).await;
}

/// Every pool, as `arborctl ps` shows them. The registry is read under
/// its locks; /proc (connection counts) is read after they are released.
pub(crate) fn infos(daemon: &Daemon) -> Vec<PoolInfo> {
    let mut infos = Vec::new();
    let mut addrs = Vec::new();
    {
        let pools = daemon.pools();
        let entries = daemon.entries();
        for (name, pool) in pools.iter() {
            addrs.push(pool.runtime.ports());
            infos.push(PoolInfo {
                name: name.clone(),
                replicas_wanted: pool.wanted,
                sockets: pool.runtime.sockets.iter().map(PoolSocket::info).collect(),
                replicas: pool
                    .replicas
                    .iter()
                    .filter_map(|id| entries.get(id).map(|e| (id, e)))
                    .map(|(id, entry)| ReplicaInfo {
                        id: *id,
                        pid: entry.pid,
                        state: entry.state.name().to_string(),
                        connections: 0,
                    })
                    .collect(),
            });
        }
    }
    for (info, addrs) in infos.iter_mut().zip(&addrs) {
        let pids: Vec<u32> = info.replicas.iter().map(|r| r.pid).collect();
        let counts = crate::procfs::established(&pids, addrs);
        for (replica, count) in info.replicas.iter_mut().zip(counts) {
            replica.connections = count;
        }
    }
    infos
}

/// Stops accepting on every pool (shutdown begins).
pub(crate) fn stop_all(daemon: &Daemon) {
    for pool in daemon.pools().values() {
        pool.runtime.stop();
    }
}

/// Names of every pool.
pub(crate) fn names(daemon: &Daemon) -> Vec<String> {
    daemon.pools().keys().cloned().collect()
}

/// The configuration of every pool.
pub(crate) fn configs(daemon: &Daemon) -> BTreeMap<String, WorkerConfig> {
    daemon
        .pools()
        .iter()
        .map(|(name, pool)| (name.clone(), pool.config.clone()))
        .collect()
}

fn pool_turn(daemon: &Daemon, name: &str) -> Result<Arc<tokio::sync::Mutex<()>>, ControlError> {
    daemon
        .pools()
        .get(name)
        .map(|pool| Arc::clone(&pool.turn))
        .ok_or_else(|| ControlError::NoSuchPool(name.into()))
}

/// The pool's replicas that are not stopped or failed for good, oldest first.
fn live_replicas(daemon: &Daemon, pool: &Pool) -> Vec<u64> {
    let entries = daemon.entries();
    pool.replicas
        .iter()
        .copied()
        .filter(|id| {
            entries
                .get(id)
                .is_some_and(|e| !e.stop_requested && !e.state.is_final())
        })
        .collect()
}

/// Waits until worker `id` is Ready; an error when it exits first or
/// `timeout` passes (then it is terminated).
async fn wait_ready(daemon: &Arc<Daemon>, id: u64, timeout: Duration) -> Result<(), ControlError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let changed = daemon.state_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match daemon.entries().get(&id).map(|e| e.state) {
            Some(WorkerState::Running) => return Ok(()),
            Some(WorkerState::Starting) => {}
            Some(state) => return Err(ControlError::ReplicaNotReady { id, state }),
            None => return Err(ControlError::ReplicaGone(id)),
        }
        tokio::select! {
            _ = &mut changed => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Err(ControlError::ReplicaTimeout { id, limit: timeout });
            }
        }
    }
}

/// Closes replicas for good (out of dispatch first), concurrently, each
/// with `grace`, and waits for their exits.
async fn stop_replicas(daemon: &Arc<Daemon>, ids: &[u64], grace: Duration) {
    let mut closing = Vec::new();
    for id in ids {
        if let Ok(Some(worker)) = daemon.request_stop(*id) {
            tracing::info!(id, "closing replica");
            worker.begin_close(grace);
            closing.push(worker);
        }
    }
    for worker in closing {
        let _ = worker.wait().await;
    }
}

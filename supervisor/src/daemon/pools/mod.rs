//! Pools in arbord: N replicas of one recipe serving the pool's sockets,
//! scaled and replaced (rolling reload) without dropping a connection.
//!
//! Replicas are ordinary managed workers (registry entries with monitors and
//! restart policies); a pool adds its sockets, which each replica gets by
//! the `LISTEN_FDS` convention (`shared`, `reuseport`) or through a
//! [`Dispatcher`] (`handoff`), and the list of its replicas. Operations on
//! one pool (scale, reload) take turns on the pool's lock.

mod pool;
mod replicas;
mod rolling;
mod runtime;
mod scale;
mod socket;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use arbor_protocol::control::PoolInfo;

pub(crate) use self::pool::Pool;
use self::replicas::stop_replicas;
pub(super) use self::rolling::{reconfigure, rolling_reload};
pub(super) use self::runtime::PoolRuntime;
pub(super) use self::scale::scale;
use self::scale::scale_to;
use self::socket::PoolSocket;
use super::context::Daemon;
use super::error::ControlError;
use super::recipe::Recipe;
use crate::config::PoolConfig;

/// Opens pool `config`'s sockets (taking those systemd passed by name from
/// `activated`) and starts its replicas.
pub(crate) async fn open(
    daemon: &Arc<Daemon>,
    config: &PoolConfig,
    activated: &mut Vec<(String, OwnedFd)>,
) -> Result<(), ControlError> {
    let mut sockets = Vec::new();
    for socket in &config.sockets {
        let passed = activated
            .iter()
            .position(|(name, _)| *name == socket.name)
            .map(|i| activated.remove(i).1);
        let opened =
            PoolSocket::open(socket, passed).map_err(|source| ControlError::PoolSocket {
                pool: config.worker.name.clone(),
                socket: socket.name.clone(),
                listen: socket.listen.to_string(),
                source,
            })?;
        tracing::info!(pool = %config.worker.name, socket = %socket.name, listen = %opened.addr, mode = opened.config.mode.name(), "pool socket open");
        sockets.push(opened);
    }
    let runtime = Arc::new(PoolRuntime { sockets });
    let recipe = Recipe::for_pool(config, &runtime);
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    daemon.registry.insert_pool(
        config.worker.name.clone(),
        Pool {
            config: config.clone(),
            runtime,
            recipe,
            wanted: 0,
            replicas: Vec::new(),
            turn,
        },
    );
    scale_to(daemon, &config.worker.name, config.replicas, false).await?;
    Ok(())
}

/// Closes every replica of pool `name` and forgets the pool (SIGHUP with
/// the pool gone from the configuration).
pub(crate) async fn remove(daemon: &Arc<Daemon>, name: &str) {
    let Ok(turn) = daemon.registry.pool_turn(name) else {
        return;
    };
    let _turn = turn.lock().await;
    let Some(pool) = daemon.registry.remove_pool(name) else {
        return;
    };
    pool.runtime.stop();
    stop_replicas(daemon, &pool.replicas, pool.recipe.close_grace()).await;
}

/// Every pool, as `arborctl ps` shows them: the registry is read under its
/// lock, /proc (connection counts) after it is released.
pub(crate) fn infos(daemon: &Daemon) -> Vec<PoolInfo> {
    daemon
        .registry
        .pool_infos()
        .into_iter()
        .map(|(mut info, addrs)| {
            let pids: Vec<u32> = info.replicas.iter().map(|r| r.pid).collect();
            let counts = crate::procfs::established(&pids, &addrs);
            for (replica, count) in info.replicas.iter_mut().zip(counts) {
                replica.connections = count;
            }
            info
        })
        .collect()
}

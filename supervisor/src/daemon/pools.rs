//! Pools in arbord: N replicas of one recipe serving the pool's sockets,
//! scaled and replaced (rolling reload) without dropping a connection.
//!
//! Replicas are ordinary managed workers (registry entries with monitors and
//! restart policies); a pool adds its sockets, which each replica gets by
//! the `LISTEN_FDS` convention (`shared`, `reuseport`) or through a
//! [`Dispatcher`] (`handoff`), and the list of its replicas. Operations on
//! one pool (scale, reload) take turns on the pool's lock.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::control::{PoolInfo, PoolSocketInfo, ReplicaInfo};

use super::monitor::start;
use super::recipe::Recipe;
use super::registry::Daemon;

/// A pool's readiness limit when its recipe has none.
const DEFAULT_READY: Duration = Duration::from_secs(30);
use crate::config::{SocketConfig, SocketMode, WorkerConfig};
use crate::handoff::Dispatcher;
use crate::listen::{self, ListenAddr};
use crate::Worker;

/// One pool socket, open for as long as arbord runs.
#[derive(Debug)]
pub(crate) struct PoolSocket {
    config: SocketConfig,
    /// The bound address (the port the kernel chose when configured as `:0`).
    addr: ListenAddr,
    /// `shared`: the listening socket every replica inherits. `reuseport`:
    /// a bound socket that does not listen, holding the port between the
    /// replicas' own listeners. `handoff`: the dispatcher has it. Taken
    /// (closed) when the pool stops.
    fd: std::sync::Mutex<Option<OwnedFd>>,
    dispatcher: Option<Arc<Dispatcher>>,
    activated: bool,
}

impl PoolSocket {
    /// Binds the socket, or takes the one systemd passed under its name.
    fn open(config: &SocketConfig, activated: Option<OwnedFd>) -> std::io::Result<Self> {
        let from_systemd = activated.is_some();
        let mode = match (config.mode, from_systemd) {
            // One socket from systemd cannot become one per replica.
            (SocketMode::Reuseport, true) => {
                tracing::warn!(socket = %config.name, "socket from systemd: served as `shared`, not `reuseport`");
                SocketMode::Shared
            }
            (mode, _) => mode,
        };
        if mode == SocketMode::Reuseport && !migrates_requests() {
            tracing::warn!(socket = %config.name, "reuseport: a connection that reaches a closing replica's listener is reset; net.ipv4.tcp_migrate_req=1 moves it to another replica instead");
        }
        let fd = match activated {
            Some(fd) => fd,
            None => listen::bind(
                &config.listen,
                config.backlog,
                mode == SocketMode::Reuseport,
                mode != SocketMode::Reuseport,
            )?,
        };
        let addr = listen::local_addr(&fd)?;
        let (fd, dispatcher) = match mode {
            SocketMode::Handoff => (
                None,
                Some(Dispatcher::start(&config.name, config.policy, fd)?),
            ),
            _ => (Some(fd), None),
        };
        let fd = std::sync::Mutex::new(fd);
        Ok(Self {
            config: SocketConfig {
                mode,
                ..config.clone()
            },
            addr,
            fd,
            dispatcher,
            activated: from_systemd,
        })
    }

    /// The fd a new replica gets for this socket, if any.
    fn fd_for_replica(&self) -> std::io::Result<Option<OwnedFd>> {
        let fd = self.fd.lock().unwrap_or_else(|p| p.into_inner());
        match (self.config.mode, fd.as_ref()) {
            (SocketMode::Handoff, _) => Ok(None),
            (SocketMode::Shared, Some(fd)) => fd.try_clone().map(Some),
            (SocketMode::Reuseport, Some(_)) => {
                listen::bind(&self.addr, self.config.backlog, true, true).map(Some)
            }
            (_, None) => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the pool's socket is closed",
            )),
        }
    }

    /// Stops accepting (handoff) and closes arbord's copy of the socket.
    fn stop(&self) {
        if let Some(dispatcher) = &self.dispatcher {
            dispatcher.stop();
        }
        self.fd.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn info(&self) -> PoolSocketInfo {
        PoolSocketInfo {
            name: self.config.name.clone(),
            listen: self.addr.to_string(),
            mode: self.config.mode.name().into(),
            policy: match self.config.mode {
                SocketMode::Handoff => self.config.policy.name().into(),
                _ => String::new(),
            },
            activated: self.activated,
        }
    }
}

/// Whether the kernel moves connections queued on a closing `SO_REUSEPORT`
/// listener to another one of its group (Linux 5.14+, off by default).
fn migrates_requests() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "1")
}

impl Drop for PoolSocket {
    fn drop(&mut self) {
        // A dispatcher task holds the listener: it must end with the socket.
        if let Some(dispatcher) = &self.dispatcher {
            dispatcher.stop();
        }
    }
}

/// What every replica of a pool shares; each replica's recipe holds it.
#[derive(Debug)]
pub(crate) struct PoolRuntime {
    sockets: Vec<PoolSocket>,
}

impl PoolRuntime {
    /// The `LISTEN_FDS` sockets of a new replica, in configuration order.
    pub(crate) fn listen_fds(&self) -> std::io::Result<Vec<(String, OwnedFd)>> {
        let mut fds = Vec::new();
        for socket in &self.sockets {
            if let Some(fd) = socket.fd_for_replica()? {
                fds.push((socket.config.name.clone(), fd));
            }
        }
        Ok(fds)
    }

    fn dispatchers(&self) -> impl Iterator<Item = &Arc<Dispatcher>> {
        self.sockets.iter().filter_map(|s| s.dispatcher.as_ref())
    }

    /// Replica `id` sent Ready.
    pub(crate) fn replica_ready(&self, id: u64, worker: &Arc<Worker>) {
        for dispatcher in self.dispatchers() {
            dispatcher.add_replica(id, Arc::clone(worker));
        }
    }

    /// Replica `id` is being stopped: no more connections for it.
    pub(crate) fn retire(&self, id: u64) {
        for dispatcher in self.dispatchers() {
            dispatcher.retire(id);
        }
    }

    /// Replica `id` exited.
    pub(crate) fn replica_gone(&self, id: u64) {
        for dispatcher in self.dispatchers() {
            dispatcher.replica_gone(id);
        }
    }

    /// Replica `id` answered a handoff.
    pub(crate) fn ack(&self, id: u64, connection: u64, accepted: bool, open: u32) {
        for dispatcher in self.dispatchers() {
            dispatcher.ack(id, connection, accepted, open);
        }
    }

    /// Replica `id` reported its open connections.
    pub(crate) fn load(&self, id: u64, open: u32) {
        for dispatcher in self.dispatchers() {
            dispatcher.load(id, open);
        }
    }

    /// Stops accepting on every socket and closes arbord's copies
    /// (shutdown, pool removed); replicas keep theirs until they exit.
    pub(crate) fn stop(&self) {
        for socket in &self.sockets {
            socket.stop();
        }
    }

    fn ports(&self) -> Vec<ListenAddr> {
        self.sockets.iter().map(|s| s.addr.clone()).collect()
    }
}

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
) -> Result<(), String> {
    let mut sockets = Vec::new();
    for socket in &config.socket {
        let passed = activated
            .iter()
            .position(|(name, _)| *name == socket.name)
            .map(|i| activated.remove(i).1);
        let opened = PoolSocket::open(socket, passed).map_err(|e| {
            format!(
                "pool {} socket {} ({}): {e}",
                config.name, socket.name, socket.listen
            )
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

/// `arborctl scale POOL N`.
pub(crate) async fn scale(daemon: &Arc<Daemon>, name: &str, wanted: u32) -> Result<String, String> {
    if wanted > 1000 {
        return Err("at most 1000 replicas".into());
    }
    scale_to(daemon, name, wanted, true).await
}

async fn scale_to(
    daemon: &Arc<Daemon>,
    name: &str,
    wanted: u32,
    wait: bool,
) -> Result<String, String> {
    let turn = pool_turn(daemon, name)?;
    let _turn = turn.lock().await;
    let (recipe, live) = {
        let mut pools = daemon.pools();
        let pool = pools
            .get_mut(name)
            .ok_or_else(|| format!("no pool {name}"))?;
        pool.wanted = wanted;
        // Replicas gone for good (failed, or stopped by an operator) are
        // forgotten here; the count is made up with new ones.
        pool.replicas = live_replicas(daemon, pool);
        (pool.recipe.clone(), pool.replicas.clone())
    };
    let timeout = recipe.ready_timeout.unwrap_or(DEFAULT_READY);
    let have = live.len() as u32;
    if wanted > have {
        let mut started = Vec::new();
        for _ in have..wanted {
            let id = start(daemon, recipe.clone(), true)
                .await
                .map_err(|e| format!("pool {name}: {e}"))?;
            if let Some(pool) = daemon.pools().get_mut(name) {
                pool.replicas.push(id);
            }
            started.push(id);
        }
        if wait {
            for id in &started {
                wait_ready(daemon, *id, timeout).await?;
            }
        }
        Ok(format!("pool {name}: {have} → {wanted} replicas"))
    } else {
        // The newest go first: the oldest have proven themselves.
        let going: Vec<u64> = live[wanted as usize..].to_vec();
        stop_replicas(daemon, &going, recipe.close_grace).await;
        if let Some(pool) = daemon.pools().get_mut(name) {
            pool.replicas.retain(|id| !going.contains(id));
        }
        Ok(format!("pool {name}: {have} → {wanted} replicas"))
    }
}

/// `arborctl reload [POOL]`: a rolling replacement of every replica,
/// `surge` at a time, each new one Ready before an old one is closed.
pub(crate) async fn rolling_reload(daemon: &Arc<Daemon>, name: &str) -> Result<String, String> {
    rolling_replace(daemon, name, None).await
}

/// A rolling replacement with the pool's recipe, or with `new` (recipe and
/// configuration), which becomes the pool's only once every replica runs it.
async fn rolling_replace(
    daemon: &Arc<Daemon>,
    name: &str,
    new: Option<(Recipe, WorkerConfig)>,
) -> Result<String, String> {
    let turn = pool_turn(daemon, name)?;
    let _turn = turn.lock().await;
    let (recipe, old, surge) = {
        let mut pools = daemon.pools();
        let pool = pools
            .get_mut(name)
            .ok_or_else(|| format!("no pool {name}"))?;
        pool.replicas = live_replicas(daemon, pool);
        let (recipe, config) = match &new {
            Some((recipe, config)) => (recipe.clone(), config),
            None => (pool.recipe.clone(), &pool.config),
        };
        (recipe, pool.replicas.clone(), config.surge_count() as usize)
    };
    let timeout = recipe.ready_timeout.unwrap_or(DEFAULT_READY);
    let mut replaced = 0;
    for step in old.chunks(surge) {
        let mut fresh = Vec::new();
        for _ in step {
            let id = start(daemon, recipe.clone(), true)
                .await
                .map_err(|e| format!("pool {name}: {e}; {replaced} of {} replaced", old.len()))?;
            if let Some(pool) = daemon.pools().get_mut(name) {
                pool.replicas.push(id);
            }
            fresh.push(id);
        }
        for id in &fresh {
            if let Err(e) = wait_ready(daemon, *id, timeout).await {
                // The old replicas of this step stay. A new one that did
                // come up stays too (the pool is over its count until the
                // next scale or reload).
                stop_replicas(daemon, &[*id], recipe.close_grace).await;
                if let Some(pool) = daemon.pools().get_mut(name) {
                    pool.replicas.retain(|r| r != id);
                }
                return Err(format!(
                    "pool {name}: {e}; reload stopped, {replaced} of {} replaced",
                    old.len()
                ));
            }
        }
        stop_replicas(daemon, step, recipe.close_grace).await;
        if let Some(pool) = daemon.pools().get_mut(name) {
            pool.replicas.retain(|id| !step.contains(id));
        }
        replaced += step.len();
    }
    if let Some((recipe, config)) = new {
        if let Some(pool) = daemon.pools().get_mut(name) {
            pool.recipe = recipe;
            pool.config = config;
        }
    }
    Ok(format!("pool {name}: {replaced} replicas replaced"))
}

/// Applies a changed `[[pool]]` on SIGHUP: new settings roll in (a rolling
/// reload with the new recipe, which the pool keeps only once it is done:
/// a failed one is tried again at the next SIGHUP), then the replica count.
pub(crate) async fn reconfigure(daemon: &Arc<Daemon>, config: &WorkerConfig) -> Result<(), String> {
    let new = {
        let pools = daemon.pools();
        let pool = pools
            .get(&config.name)
            .ok_or_else(|| format!("no pool {}", config.name))?;
        if pool.config.socket != config.socket {
            tracing::warn!(pool = %config.name, "socket changes take effect at the next start");
        }
        let recipe = Recipe::for_pool(config, &pool.runtime);
        let config = WorkerConfig {
            socket: pool.config.socket.clone(),
            ..config.clone()
        };
        let changed = !recipe.same_as(&pool.recipe) || pool.config.surge != config.surge;
        changed.then_some((recipe, config))
    };
    if let Some(new) = new {
        rolling_replace(daemon, &config.name, Some(new)).await?;
    }
    scale_to(daemon, &config.name, config.replica_count(), true).await?;
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
                        state: entry.state.to_string(),
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

fn pool_turn(daemon: &Daemon, name: &str) -> Result<Arc<tokio::sync::Mutex<()>>, String> {
    daemon
        .pools()
        .get(name)
        .map(|pool| Arc::clone(&pool.turn))
        .ok_or_else(|| format!("no pool {name}"))
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
                .is_some_and(|e| !e.stop_requested && !matches!(e.state, "exited" | "failed"))
        })
        .collect()
}

/// Waits until worker `id` is Ready; an error when it exits first or
/// `timeout` passes (then it is terminated).
async fn wait_ready(daemon: &Arc<Daemon>, id: u64, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let changed = daemon.state_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match daemon.entries().get(&id).map(|e| e.state) {
            Some("running") => return Ok(()),
            Some("starting") => {}
            Some(state) => return Err(format!("replica {id} is {state} instead of Ready")),
            None => return Err(format!("replica {id} is gone")),
        }
        tokio::select! {
            _ = &mut changed => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!("replica {id} not Ready within {timeout:?}"));
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

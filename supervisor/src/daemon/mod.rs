//! arbord: the daemon behind the control socket.
//!
//! [`run`] owns everything: the [`Supervisor`], a registry of managed
//! workers, the control socket and shutdown. Each managed worker has a
//! monitor task that consumes its events (captured output into a bounded
//! ring and the daemon's log, exits into the restart state machine of
//! [`crate::restart`]) and restarts it as its policy says. Each control
//! connection has its own task: a slow or hostile client holds only that.
//! Pools (replicas with sockets, scale, rolling reload) are in [`pools`].

mod pools;
mod reload_gate;

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor_protocol::control::{
    ControlRequest, ControlResponse, DaemonEvent, ExitInfo, SpawnRequest, WorkerInfo,
};
use arbor_protocol::nonblocking::AsyncChannel;
use arbor_protocol::{Frame, Limits};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, Notify};

use self::reload_gate::ReloadGate;
use crate::config::{Config, WorkerConfig};
use crate::restart::{self, Action, Ending, RestartConfig, RestartState};
use crate::systemd::notify;
use crate::systemd::Activated;
use crate::{ExitRecord, Initiator, Output, Signal, Supervisor, Worker, WorkerEvent, WorkerSpec};

/// Control connections served at once; one more is told arbord is busy.
const MAX_CLIENTS: usize = 4096;
/// Workers that have exited for good kept in the registry (for `ps` and
/// `logs`); the oldest are forgotten beyond this.
const KEEP_EXITED: usize = 256;

/// How long READY=1 waits for the boot workers' Ready.
const BOOT_READY_LIMIT: Duration = Duration::from_secs(30);

/// Lines of captured output kept per worker.
const LOG_LINES: usize = 1000;
/// Events buffered for watchers; one that falls further behind is told how
/// many it missed, and never slows a worker or another client.
const WATCH_BUFFER: usize = 1024;

/// Signals the binary forwards to [`run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonSignal {
    /// SIGTERM or SIGINT: close every worker, then exit.
    Shutdown,
    /// SIGHUP: reload the configuration (not implemented yet: logged).
    Reload,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another arbord answers on the socket path.
    #[error("another arbord is already running on {0}")]
    AlreadyRunning(PathBuf),
    /// The control socket could not be set up.
    #[error("control socket {path}: {source}")]
    Socket {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor could not start.
    #[error(transparent)]
    Supervisor(#[from] crate::Error),
}

/// What a managed worker is started from (kept to restart it).
#[derive(Debug, Clone)]
struct Recipe {
    name: String,
    program: crate::Program,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    close_grace: Duration,
    speaks_protocol: bool,
    restart: RestartConfig,
    /// Set for a pool's replicas: the pool's sockets.
    pool: Option<Arc<pools::PoolRuntime>>,
    /// A pool replica not Ready by then is killed (and restarted as a failure).
    ready_timeout: Option<Duration>,
}

impl Recipe {
    fn for_pool(pool: &WorkerConfig, runtime: &Arc<pools::PoolRuntime>) -> Self {
        Self {
            pool: Some(Arc::clone(runtime)),
            ready_timeout: Some(pool.ready_limit()),
            ..Self::from_config(pool)
        }
    }

    /// A sub-worker's entry: known by its name, started by its parent worker
    /// (so never by arbord again).
    fn for_sub_worker(name: &str) -> Self {
        Self {
            name: name.to_string(),
            program: crate::Program::Path(PathBuf::new()),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            close_grace: Duration::from_secs(5),
            speaks_protocol: true,
            restart: RestartConfig::default(),
            pool: None,
            ready_timeout: None,
        }
    }

    fn from_config(worker: &WorkerConfig) -> Self {
        Self {
            name: worker.name.clone(),
            program: match (&worker.entry, &worker.program) {
                (Some(entry), _) => crate::Program::Entry(entry.clone()),
                (None, program) => crate::Program::Path(program.clone().unwrap_or_default().into()),
            },
            args: worker.args.clone(),
            env: worker
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cwd: worker.cwd.clone(),
            close_grace: worker.close_grace,
            speaks_protocol: worker.speaks_protocol,
            restart: worker.restart_config(),
            pool: None,
            ready_timeout: None,
        }
    }

    fn from_request(request: SpawnRequest) -> Result<Self, String> {
        let restart = RestartConfig {
            policy: request.restart.parse()?,
            ..RestartConfig::default()
        };
        let name = request.name.unwrap_or_else(|| {
            std::path::Path::new(&request.program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| request.program.clone())
        });
        Ok(Self {
            name,
            program: crate::Program::Path(request.program.into()),
            args: request.args,
            env: request.env,
            cwd: request.cwd.map(PathBuf::from),
            close_grace: Duration::from_millis(request.close_grace_ms),
            speaks_protocol: request.speaks_protocol,
            restart,
            pool: None,
            ready_timeout: None,
        })
    }

    /// Whether a reload can leave a worker started from `other` running.
    fn same_as(&self, other: &Recipe) -> bool {
        self.program == other.program
            && self.args == other.args
            && self.env == other.env
            && self.cwd == other.cwd
            && self.close_grace == other.close_grace
            && self.speaks_protocol == other.speaks_protocol
            && self.restart == other.restart
            && self.ready_timeout == other.ready_timeout
    }

    /// The spec of a new run; a pool replica gets its sockets here (a
    /// `reuseport` socket is bound anew for each).
    fn spec(&self) -> std::io::Result<WorkerSpec> {
        let spec = match &self.program {
            crate::Program::Path(path) => WorkerSpec::program(path),
            crate::Program::Entry(entry) => WorkerSpec::entry(entry),
        };
        let mut spec = spec
            .name(&self.name)
            .args(&self.args)
            .close_grace(self.close_grace)
            .speaks_protocol(self.speaks_protocol)
            .stdout(Output::Capture)
            .stderr(Output::Capture);
        for (key, value) in &self.env {
            spec = spec.env(key, value);
        }
        if let Some(cwd) = &self.cwd {
            spec = spec.cwd(cwd);
        }
        if let Some(pool) = &self.pool {
            for (name, fd) in pool.listen_fds()? {
                spec = spec.listen_fd(name, fd);
            }
        }
        Ok(spec)
    }
}

/// A shared worker (`[[shared]]`, `spawn --shared`): started on demand.
#[derive(Debug)]
struct SharedWorker {
    recipe: Recipe,
    /// Held while an attach finds or starts it, so it starts once.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Its entry while it runs (or last ran).
    current: Option<u64>,
    /// Declared by `[[shared]]` (a reload may change or remove it), not by
    /// `spawn --shared`.
    from_config: bool,
}

#[derive(Debug)]
struct Entry {
    /// Set for workers from the configuration file (for reloads).
    from_config: bool,
    /// For a sub-worker: the entry of the worker that started it.
    parent: Option<u64>,
    /// An operator (or a reload) stopped this worker: it is not restarted,
    /// whatever its policy and whenever its exit is seen.
    stop_requested: bool,
    recipe: Recipe,
    worker: Option<Arc<Worker>>,
    pid: u32,
    state: &'static str,
    started: Instant,
    restarts: u32,
    logs: VecDeque<String>,
    last_exit: Option<String>,
}

/// A std mutex's guard, also when a panic elsewhere poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug)]
struct Daemon {
    supervisor: Supervisor,
    config: Config,
    workers: Mutex<BTreeMap<u64, Entry>>,
    pools: Mutex<BTreeMap<String, pools::Pool>>,
    /// Shared workers by name: how to start each, and its running entry.
    /// The async lock makes concurrent first attaches start it once.
    shared: tokio::sync::Mutex<BTreeMap<String, SharedWorker>>,
    next_port: AtomicU64,
    next_id: AtomicU64,
    started: Instant,
    stopping: AtomicBool,
    shutdown: Notify,
    /// Woken whenever a worker's state changes or a stop is requested.
    state_changed: Notify,
    events: broadcast::Sender<DaemonEvent>,
    /// One SIGHUP reload at a time.
    reload_gate: Mutex<ReloadGate>,
    /// A SIGHUP reload holds it for writing, `arborctl scale` and `reload`
    /// for reading: a configuration reload never runs over a pool
    /// operation, nor one over it.
    reconfig: tokio::sync::RwLock<()>,
}

impl Daemon {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, pools::Pool>> {
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks worker `id` stopped (no more restarts) and returns its live
    /// handle, if it has one; a worker waiting for a restart just stops. A
    /// pool replica gets no more connections from here on.
    fn request_stop(&self, id: u64) -> Result<Option<Arc<Worker>>, String> {
        let mut entries = self.entries();
        let entry = entries
            .get_mut(&id)
            .ok_or_else(|| format!("no worker {id}"))?;
        if let Some(pool) = &entry.recipe.pool {
            pool.retire(id);
        }
        entry.stop_requested = true;
        let worker = entry.worker.clone();
        if worker.is_some() {
            entry.state = "closing";
        }
        drop(entries);
        self.state_changed.notify_waiters();
        Ok(worker)
    }

    fn stop_requested(&self, id: u64) -> bool {
        self.stopping.load(Ordering::SeqCst)
            || self.entries().get(&id).is_none_or(|e| e.stop_requested)
    }

    fn handle(&self, id: u64) -> Result<Arc<Worker>, String> {
        match self.entries().get(&id) {
            Some(Entry {
                worker: Some(worker),
                ..
            }) => Ok(Arc::clone(worker)),
            Some(entry) => Err(format!(
                "worker {id} ({}) is {}",
                entry.recipe.name, entry.state
            )),
            None => Err(format!("no worker {id}")),
        }
    }

    /// Tells watchers; nobody watching is fine.
    fn emit(&self, event: &str, worker: u64, name: &str, fill: impl FnOnce(&mut DaemonEvent)) {
        let mut daemon_event = DaemonEvent {
            event: event.to_string(),
            worker,
            name: name.to_string(),
            code: None,
            signal: None,
            text: None,
            missed: None,
        };
        fill(&mut daemon_event);
        let _ = self.events.send(daemon_event);
    }

    fn status_line(&self) -> String {
        let entries = self.entries();
        let running = entries.values().filter(|e| e.worker.is_some()).count();
        format!("STATUS={running} workers running, {} known", entries.len())
    }
}

/// Runs arbord until a shutdown request or signal; returns once every
/// worker is gone and the socket is removed.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    socket_path: PathBuf,
    activated: Activated,
    mut signals: mpsc::UnboundedReceiver<DaemonSignal>,
) -> Result<(), DaemonError> {
    let Activated {
        control: activated,
        sockets: mut activated_sockets,
    } = activated;
    let (listener, owned_path) = match activated {
        Some(listener) => (listener, None),
        None => (
            bind(
                &socket_path,
                config.daemon.mode,
                config.daemon.group.as_deref(),
            )?,
            Some(socket_path.clone()),
        ),
    };
    listener
        .set_nonblocking(true)
        .map_err(|source| DaemonError::Socket {
            path: socket_path.clone(),
            source,
        })?;
    let listener = UnixListener::from_std(listener).map_err(|source| DaemonError::Socket {
        path: socket_path.clone(),
        source,
    })?;
    let mut supervisor =
        Supervisor::with_tree_limits(Limits::default(), config.daemon.tree_limits())?;
    match config
        .daemon
        .cgroups
        .then(crate::cgroup::Cgroups::detect)
        .flatten()
    {
        Some(cgroups) => {
            tracing::info!("a cgroup per worker, under {}", cgroups.base().display());
            supervisor = supervisor.with_cgroups(cgroups);
        }
        None => tracing::info!(
            "no cgroup per worker (cgroups = false, or no writable cgroup v2 subtree): \
             what leaves a worker's process group is killed at shutdown"
        ),
    }
    let daemon = Arc::new(Daemon {
        supervisor,
        config: config.clone(),
        workers: Mutex::new(BTreeMap::new()),
        pools: Mutex::new(BTreeMap::new()),
        shared: tokio::sync::Mutex::new(
            config
                .shared
                .iter()
                .map(|s| {
                    let shared = SharedWorker {
                        recipe: Recipe::from_config(s),
                        gate: Arc::default(),
                        current: None,
                        from_config: true,
                    };
                    (s.name.clone(), shared)
                })
                .collect(),
        ),
        next_port: AtomicU64::new(1),
        next_id: AtomicU64::new(1),
        started: Instant::now(),
        stopping: AtomicBool::new(false),
        shutdown: Notify::new(),
        state_changed: Notify::new(),
        events: broadcast::channel(WATCH_BUFFER).0,
        reload_gate: Mutex::default(),
        reconfig: tokio::sync::RwLock::new(()),
    });
    for worker in &config.workers {
        let recipe = Recipe::from_config(worker);
        if let Err(e) = start(&daemon, recipe, true).await {
            tracing::error!("boot worker {}: {e}", worker.name);
        }
    }
    for pool in &config.pools {
        if let Err(e) = pools::open(&daemon, pool, &mut activated_sockets).await {
            tracing::error!("boot pool {}: {e}", pool.name);
        }
    }
    for (name, _) in &activated_sockets {
        tracing::warn!("socket {name:?} from systemd matches no pool socket; closed");
    }
    drop(activated_sockets);
    // READY=1 once the boot workers are up (Ready, or already gone), or
    // after a generous bound so that one hung worker cannot stall the boot.
    let boot_deadline = tokio::time::Instant::now() + BOOT_READY_LIMIT;
    loop {
        let changed = daemon.state_changed.notified();
        let starting = daemon
            .entries()
            .values()
            .filter(|e| e.state == "starting")
            .count();
        if starting == 0 {
            break;
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(boot_deadline) => {
                tracing::warn!("{starting} boot workers not Ready after {BOOT_READY_LIMIT:?}; ready anyway");
                break;
            }
        }
    }
    let mut watchdog = watchdog_interval().map(tokio::time::interval);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    tracing::info!("arbord listening on {}", socket_path.display());
    notify("READY=1");
    notify(&daemon.status_line());

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    match Arc::clone(&connections).try_acquire_owned() {
                        Ok(permit) => {
                            let daemon = Arc::clone(&daemon);
                            tokio::spawn(async move {
                                serve_client(daemon, stream).await;
                                drop(permit);
                            });
                        }
                        // Over the cap: this client is told so and dropped,
                        // the ones already connected go on.
                        Err(_) => {
                            tokio::spawn(refuse_busy(stream));
                        }
                    }
                }
                Err(e) => {
                    // Out of fds (EMFILE) and the like: pause instead of
                    // spinning on a listener that stays readable.
                    tracing::warn!("accept on the control socket: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            signal = signals.recv() => match signal {
                Some(DaemonSignal::Shutdown) | None => break,
                Some(DaemonSignal::Reload) => {
                    if lock(&daemon.reload_gate).begin() {
                        notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", crate::systemd::monotonic_usec()));
                        // In its own task: closing workers takes their grace,
                        // and the accept loop, signals and watchdog go on.
                        tokio::spawn(reload_on_signal(Arc::clone(&daemon), config_path.clone()));
                    } else {
                        tracing::info!("SIGHUP during a reload: the configuration is read again once it is done");
                    }
                }
            },
            _ = tick(&mut watchdog) => notify("WATCHDOG=1"),
            _ = daemon.shutdown.notified() => break,
        }
    }

    notify("STOPPING=1");
    daemon.stopping.store(true, Ordering::SeqCst);
    pools::stop_all(&daemon);
    let handles: Vec<Arc<Worker>> = daemon
        .entries()
        .values()
        .filter_map(|e| e.worker.clone())
        .collect();
    tracing::info!("shutting down {} workers", handles.len());
    // Every close starts at once (each worker's driver escalates on its
    // own clock), then the exits are awaited.
    for worker in &handles {
        worker.begin_close(config.daemon.shutdown_grace);
    }
    let all_closed = async {
        for worker in &handles {
            let _ = worker.wait().await;
        }
    };
    tokio::pin!(all_closed);
    // A second SIGTERM while closing: terminate everything at once.
    loop {
        tokio::select! {
            _ = &mut all_closed => break,
            signal = signals.recv() => if let Some(DaemonSignal::Shutdown) = signal {
                tracing::warn!("second shutdown signal: terminating every worker");
                for worker in daemon.entries().values().filter_map(|e| e.worker.clone()) {
                    worker.begin_terminate();
                }
            },
        }
    }
    if let Some(path) = owned_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The reload SIGHUP asks for: reads the configuration file and applies it,
/// again while SIGHUPs came meanwhile (see [`reload_gate`]), then tells
/// systemd `READY=1`, once, when the last pass is done. Pool operations of
/// the control socket wait for it, and it for them.
async fn reload_on_signal(daemon: Arc<Daemon>, config_path: Option<PathBuf>) {
    loop {
        match &config_path {
            Some(path) => match Config::load(path) {
                Ok(new) => {
                    let boot = &daemon.config.daemon;
                    if new.daemon.socket != boot.socket
                        || new.daemon.mode != boot.mode
                        || new.daemon.allowed_uids != boot.allowed_uids
                    {
                        tracing::warn!("SIGHUP: [daemon] changes take effect at the next start");
                    }
                    let _alone = daemon.reconfig.write().await;
                    reload(&daemon, new).await;
                }
                Err(e) => tracing::error!("SIGHUP: keeping the running configuration: {e}"),
            },
            None => tracing::info!("SIGHUP: no configuration file to reload"),
        }
        if !lock(&daemon.reload_gate).finish() {
            break;
        }
    }
    notify("READY=1");
    notify(&daemon.status_line());
}

/// Applies a new configuration: starts added workers, closes removed ones,
/// and replaces changed ones (close, then start with the new settings).
async fn reload(daemon: &Arc<Daemon>, new: Config) {
    // Every worker from the old configuration, whatever its state: running,
    // waiting for a restart, or stopped by an operator.
    let current: Vec<(u64, Recipe)> = daemon
        .entries()
        .iter()
        .filter(|(_, e)| e.from_config && e.recipe.pool.is_none())
        .map(|(id, e)| (*id, e.recipe.clone()))
        .collect();
    let wanted: Vec<Recipe> = new.workers.iter().map(Recipe::from_config).collect();
    let mut closing = Vec::new();
    for (id, recipe) in &current {
        if wanted
            .iter()
            .any(|w| w.name == recipe.name && w.same_as(recipe))
        {
            continue;
        }
        tracing::info!(worker = %recipe.name, id, "reload: stopping");
        if let Ok(Some(worker)) = daemon.request_stop(*id) {
            worker.begin_close(recipe.close_grace);
            closing.push(worker);
        }
    }
    for worker in &closing {
        let _ = worker.wait().await;
    }
    for (id, recipe) in &current {
        if !wanted
            .iter()
            .any(|w| w.name == recipe.name && w.same_as(recipe))
        {
            daemon.entries().remove(id);
        }
    }
    for recipe in wanted {
        let present = current
            .iter()
            .any(|(_, r)| r.name == recipe.name && r.same_as(&recipe));
        if !present {
            tracing::info!(worker = %recipe.name, "reload: starting");
            if let Err(e) = start(daemon, recipe, true).await {
                tracing::error!("reload: {e}");
            }
        }
    }
    // Shared workers: a removed one closes; an added or changed one is
    // started from its new recipe on the next attach that finds none running
    // (a changed one keeps serving its clients until it exits).
    let mut shared = daemon.shared.lock().await;
    let removed: Vec<String> = shared
        .iter()
        .filter(|(name, s)| s.from_config && !new.shared.iter().any(|n| &n.name == *name))
        .map(|(name, _)| name.clone())
        .collect();
    for name in removed {
        if let Some(SharedWorker {
            current: Some(id), ..
        }) = shared.remove(&name)
        {
            tracing::info!(worker = %name, id, "reload: closing shared worker");
            if let Ok(Some(worker)) = daemon.request_stop(id) {
                worker.begin_close(worker_grace(daemon, id));
            }
        }
    }
    for config in &new.shared {
        let recipe = Recipe::from_config(config);
        match shared.get_mut(&config.name) {
            Some(entry) if entry.from_config => {
                // A changed one is replaced: the running run closes (its
                // clients see their ports close), the next attach starts
                // the new recipe.
                if !entry.recipe.same_as(&recipe) {
                    if let Some(id) = entry.current.take() {
                        tracing::info!(worker = %config.name, id, "reload: replacing shared worker");
                        if let Ok(Some(worker)) = daemon.request_stop(id) {
                            worker.begin_close(entry.recipe.close_grace);
                        }
                    }
                }
                entry.recipe = recipe;
            }
            Some(_) => {
                tracing::warn!(worker = %config.name, "reload: [[shared]] {:?} is taken by spawn --shared; left as it is", config.name)
            }
            None => {
                let entry = SharedWorker {
                    recipe,
                    gate: Arc::default(),
                    current: None,
                    from_config: true,
                };
                shared.insert(config.name.clone(), entry);
            }
        }
    }
    drop(shared);
    // Pools: removed ones close, added ones open, changed ones roll.
    let running = pools::configs(daemon);
    for name in running.keys() {
        if !new.pools.iter().any(|p| &p.name == name) {
            tracing::info!(pool = %name, "reload: closing pool");
            pools::remove(daemon, name).await;
        }
    }
    let mut no_sockets = Vec::new();
    for pool in &new.pools {
        let result = match running.get(&pool.name) {
            Some(_) => pools::reconfigure(daemon, pool).await,
            None => {
                tracing::info!(pool = %pool.name, "reload: opening pool");
                pools::open(daemon, pool, &mut no_sockets).await
            }
        };
        if let Err(e) = result {
            tracing::error!("reload: {e}");
        }
    }
}

/// The close grace of entry `id`'s recipe (5 s when it is gone).
fn worker_grace(daemon: &Daemon, id: u64) -> Duration {
    daemon
        .entries()
        .get(&id)
        .map_or(Duration::from_secs(5), |e| e.recipe.close_grace)
}

/// Half of `$WATCHDOG_USEC`, when systemd asks for keep-alives.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let pid_ok = std::env::var("WATCHDOG_PID")
        .ok()
        .map(|pid| pid.parse::<u32>().ok() == Some(std::process::id()))
        .unwrap_or(true);
    (pid_ok && usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Completes at each tick of `interval` (one schedule, however often the
/// caller's loop turns), or never.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Binds the control socket at `path`: replaces a stale socket file, refuses
/// to start when another arbord answers there, sets `mode`.
fn bind(
    path: &std::path::Path,
    mode: u32,
    group: Option<&str>,
) -> Result<StdUnixListener, DaemonError> {
    let socket_error = |source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(socket_error)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(socket_error)?;
        }
    }
    match crate::listen::remove_stale_socket(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(DaemonError::AlreadyRunning(path.to_path_buf()))
        }
        other => other.map_err(socket_error)?,
    }
    let listener = StdUnixListener::bind(path).map_err(socket_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(socket_error)?;
    if let Some(group) = group {
        let gid = crate::config::group_id(group).ok_or_else(|| {
            socket_error(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no group {group:?}"),
            ))
        })?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(socket_error)?;
    }
    Ok(listener)
}

/// Starts a managed worker and its monitor; returns its id.
async fn start(
    daemon: &Arc<Daemon>,
    recipe: Recipe,
    from_config: bool,
) -> Result<u64, crate::Error> {
    let worker = spawn(daemon, &recipe).await?;
    register(daemon, worker, recipe, from_config, None)
}

/// Enters a started worker in the registry and follows it.
fn register(
    daemon: &Arc<Daemon>,
    mut worker: Worker,
    recipe: Recipe,
    from_config: bool,
    parent: Option<u64>,
) -> Result<u64, crate::Error> {
    if daemon.stopping.load(Ordering::SeqCst) {
        // Shutdown began while it was starting: it must not outlive arbord.
        worker.begin_terminate();
        return Err(crate::Error::ShutDown);
    }
    let id = daemon.next_id.fetch_add(1, Ordering::Relaxed);
    let Some(events) = worker.take_events() else {
        return Err(crate::Error::ShutDown);
    };
    let worker = Arc::new(worker);
    tracing::info!(worker = %recipe.name, id, pid = worker.pid(), "started");
    forget_old_exits(daemon);
    daemon.entries().insert(
        id,
        Entry {
            from_config,
            parent,
            stop_requested: false,
            recipe: recipe.clone(),
            pid: worker.pid(),
            worker: Some(Arc::clone(&worker)),
            state: "starting",
            started: Instant::now(),
            restarts: 0,
            logs: VecDeque::new(),
            last_exit: None,
        },
    );
    daemon.emit("spawned", id, &recipe.name, |_| {});
    tokio::spawn(monitor(Arc::clone(daemon), id, recipe, events));
    notify(&daemon.status_line());
    Ok(id)
}

/// Starts one run of `recipe`.
async fn spawn(daemon: &Daemon, recipe: &Recipe) -> Result<Worker, crate::Error> {
    let spec = recipe.spec().map_err(|source| crate::Error::Spawn {
        name: recipe.name.clone(),
        source,
    })?;
    daemon.supervisor.spawn(spec).await
}

/// Keeps the registry bounded: beyond KEEP_EXITED workers that are gone for
/// good, the oldest are dropped (a client spawning in a loop cannot grow
/// arbord without bound).
fn forget_old_exits(daemon: &Daemon) {
    let mut entries = daemon.entries();
    let gone: Vec<u64> = entries
        .iter()
        .filter(|(_, e)| e.worker.is_none() && matches!(e.state, "exited" | "failed"))
        .map(|(id, _)| *id)
        .collect();
    for id in gone.iter().take(gone.len().saturating_sub(KEEP_EXITED)) {
        entries.remove(id);
    }
}

/// Answers a client over the connection cap with an error, then hangs up.
async fn refuse_busy(stream: UnixStream) {
    let mut channel = AsyncChannel::new(stream);
    let busy = ControlResponse::Error {
        message: format!("arbord is serving {MAX_CLIENTS} clients already; try again"),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), channel.send_value(&busy, &[])).await;
}

/// Follows one managed worker through its events, exits and restarts.
async fn monitor(daemon: Arc<Daemon>, id: u64, recipe: Recipe, mut events: crate::Events) {
    let mut state = RestartState::new(&recipe.restart, Instant::now());
    let pool = recipe.pool.clone();
    loop {
        // A pool replica that is not Ready in time is killed (and restarted
        // by its policy): it must not hold a place in the pool forever.
        let ready_limit = recipe.ready_timeout;
        let mut ready_by = ready_limit.map(|limit| tokio::time::Instant::now() + limit);
        let mut missed_ready = false;
        let record = loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = sleep_until(ready_by) => {
                    tracing::warn!(worker = %recipe.name, id, "not Ready within {:?}: killed", ready_limit.unwrap_or_default());
                    if let Ok(worker) = daemon.handle(id) {
                        worker.begin_terminate();
                    }
                    ready_by = None;
                    missed_ready = true;
                    continue;
                }
            };
            match event {
                Some(WorkerEvent::Ready) => {
                    ready_by = None;
                    set_state(&daemon, id, "running");
                    if let Some(pool) = &pool {
                        // Under the lock request_stop retires replicas under:
                        // a replica being stopped is never put back.
                        let entries = daemon.entries();
                        if let Some(Entry {
                            stop_requested: false,
                            worker: Some(worker),
                            ..
                        }) = entries.get(&id)
                        {
                            if !daemon.stopping.load(Ordering::SeqCst) {
                                pool.replica_ready(id, worker);
                            }
                        }
                    }
                    daemon.emit("ready", id, &recipe.name, |_| {});
                }
                Some(WorkerEvent::ConnectionAck {
                    id: connection,
                    accepted,
                    open,
                }) => {
                    if let Some(pool) = &pool {
                        pool.ack(id, connection, accepted, open);
                    }
                }
                Some(WorkerEvent::Load { open }) => {
                    if let Some(pool) = &pool {
                        pool.load(id, open);
                    }
                }
                Some(WorkerEvent::Message { data, .. }) => {
                    daemon.emit("message", id, &recipe.name, |e| {
                        e.text = Some(String::from_utf8_lossy(&data).into())
                    });
                }
                Some(WorkerEvent::MessageError { reason }) => {
                    daemon.emit("messageerror", id, &recipe.name, |e| e.text = Some(reason));
                }
                Some(WorkerEvent::Output { stream, line }) => {
                    let line = String::from_utf8_lossy(&line).into_owned();
                    tracing::info!(worker = %recipe.name, id, ?stream, "{line}");
                    // Into the ring and out to followers under one lock: a
                    // `logs -f` that takes its snapshot and subscribes under
                    // the same lock sees each line exactly once.
                    let mut entries = daemon.entries();
                    if let Some(entry) = entries.get_mut(&id) {
                        if entry.logs.len() == LOG_LINES {
                            entry.logs.pop_front();
                        }
                        entry.logs.push_back(line.clone());
                    }
                    daemon.emit("output", id, &recipe.name, |e| e.text = Some(line));
                    drop(entries);
                }
                Some(WorkerEvent::Error { message, location }) => {
                    tracing::warn!(worker = %recipe.name, id, ?location, "worker error: {message}");
                    daemon.emit("error", id, &recipe.name, |e| e.text = Some(message));
                }
                Some(WorkerEvent::ChannelError { error }) => {
                    tracing::warn!(worker = %recipe.name, id, "channel closed: {error}");
                    daemon.emit("messageerror", id, &recipe.name, |e| e.text = Some(error));
                }
                Some(WorkerEvent::Exit(record)) => break Some(record),
                Some(WorkerEvent::SubWorker(sub)) => {
                    // A worker started a sub-worker: listed, logged and
                    // stoppable like any worker, never restarted (its
                    // parent owns it).
                    let recipe = Recipe::for_sub_worker(sub.name());
                    tracing::info!(worker = %recipe.name, parent = id, pid = sub.pid(), "sub-worker started");
                    let _ = register(&daemon, sub, recipe, false, Some(id));
                }
                Some(WorkerEvent::Request { id: request, .. }) => {
                    // arbord has nothing to answer with; the worker's request times out.
                    tracing::warn!(worker = %recipe.name, id, request, "worker sent a request arbord cannot answer");
                }
                None => break None,
            }
        };
        if let Some(pool) = &pool {
            pool.replica_gone(id);
        }
        let ending = match record {
            _ if daemon.stop_requested(id) => Ending::Stopped,
            // Killed for not being Ready in time: a failure, restarted by policy.
            _ if missed_ready => Ending::Failure,
            Some(ExitRecord {
                initiated_by: Initiator::Close | Initiator::Terminate,
                ..
            }) => Ending::Stopped,
            Some(record) if record.success() => Ending::Clean,
            _ => Ending::Failure,
        };
        let description = record
            .map(|r| describe_exit(&r))
            .unwrap_or_else(|| "unknown".into());
        tracing::info!(worker = %recipe.name, id, "exited: {description}");
        daemon.emit("exit", id, &recipe.name, |e| {
            e.code = record.and_then(|r| r.code);
            e.signal = record.and_then(|r| r.signal).map(|s| s.name());
        });
        if let Some(entry) = daemon.entries().get_mut(&id) {
            entry.worker = None;
            entry.pid = 0;
            entry.last_exit = Some(description);
        }
        let mut actions = restart::step(
            &mut state,
            &recipe.restart,
            restart::Event::Exited(ending),
            Instant::now(),
        );
        loop {
            match actions.first().copied() {
                Some(Action::RestartAt(at)) => {
                    set_state(&daemon, id, "restarting");
                    daemon.emit("restarting", id, &recipe.name, |_| {});
                    // Sleep out the backoff, unless a stop comes first.
                    let sleep = tokio::time::sleep_until(at.into());
                    tokio::pin!(sleep);
                    loop {
                        let stop = daemon.state_changed.notified();
                        if daemon.stop_requested(id) {
                            break;
                        }
                        tokio::select! {
                            _ = &mut sleep => break,
                            _ = stop => {}
                        }
                    }
                    if daemon.stop_requested(id) {
                        set_state(&daemon, id, "exited");
                        daemon.emit("exit", id, &recipe.name, |_| {});
                        return;
                    }
                    actions = restart::step(
                        &mut state,
                        &recipe.restart,
                        restart::Event::Due,
                        Instant::now(),
                    );
                }
                Some(Action::Start) => match spawn(&daemon, &recipe).await {
                    Ok(worker) if daemon.stop_requested(id) => {
                        // Stopped while this restart was starting.
                        let _ = worker.terminate().await;
                        set_state(&daemon, id, "exited");
                        return;
                    }
                    Ok(mut worker) => {
                        let Some(new_events) = worker.take_events() else {
                            return;
                        };
                        events = new_events;
                        restart::step(
                            &mut state,
                            &recipe.restart,
                            restart::Event::Started,
                            Instant::now(),
                        );
                        if let Some(entry) = daemon.entries().get_mut(&id) {
                            entry.pid = worker.pid();
                            entry.worker = Some(Arc::new(worker));
                            entry.state = "starting";
                            entry.started = Instant::now();
                            entry.restarts += 1;
                        }
                        // An attach waiting for this run can take it now.
                        daemon.state_changed.notify_waiters();
                        tracing::info!(worker = %recipe.name, id, "restarted");
                        daemon.emit("spawned", id, &recipe.name, |_| {});
                        notify(&daemon.status_line());
                        break;
                    }
                    Err(e) => {
                        tracing::error!(worker = %recipe.name, id, "restart failed: {e}");
                        // A start that fails counts as a failed run: back
                        // off and try again, within the intensity limit.
                        actions = restart::step(
                            &mut state,
                            &recipe.restart,
                            restart::Event::Exited(Ending::Failure),
                            Instant::now(),
                        );
                    }
                },
                Some(Action::Failed { restarts }) => {
                    tracing::error!(worker = %recipe.name, id, restarts, "restarting too often: marked failed");
                    set_state(&daemon, id, "failed");
                    daemon.emit("failed", id, &recipe.name, |_| {});
                    notify(&daemon.status_line());
                    return;
                }
                Some(Action::Finished) | None => {
                    set_state(&daemon, id, "exited");
                    forget_old_exits(&daemon);
                    notify(&daemon.status_line());
                    return;
                }
            }
        }
    }
}

/// Completes at `deadline`, or never without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn set_state(daemon: &Daemon, id: u64, state: &'static str) {
    if let Some(entry) = daemon.entries().get_mut(&id) {
        entry.state = state;
    }
    daemon.state_changed.notify_waiters();
}

fn describe_exit(record: &ExitRecord) -> String {
    match (record.code, record.signal) {
        (Some(code), _) => format!("code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => "unknown".into(),
    }
}

fn exit_info(record: &ExitRecord) -> ExitInfo {
    ExitInfo {
        code: record.code,
        signal: record.signal.map(|s| s.name()),
    }
}

/// Serves one control client until it disconnects or misbehaves.
async fn serve_client(daemon: Arc<Daemon>, stream: UnixStream) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!("control client without credentials: {e}");
            return;
        }
    };
    // Fds may come with `post` (arborctl send --fd); they are handed on or closed.
    let mut channel = AsyncChannel::with_limits(stream, Limits::default());
    let own = crate::config::current_uid();
    if uid != 0 && uid != own && !daemon.config.daemon.allowed_uids.contains(&uid) {
        tracing::warn!(uid, "refused a control client");
        let refusal = ControlResponse::Error {
            message: format!("uid {uid} is not allowed on this control socket"),
        };
        let _ = channel.send_value(&refusal, &[]).await;
        return;
    }
    loop {
        let (request, fds) = match channel.recv().await {
            Ok((Frame::Message(message), fds)) => match message.decode::<ControlRequest>() {
                Ok(request) => (request, fds),
                Err(e) => {
                    let _ = channel
                        .send_value(
                            &ControlResponse::Error {
                                message: e.to_string(),
                            },
                            &[],
                        )
                        .await;
                    return;
                }
            },
            Ok((Frame::Ping(nonce), _)) => {
                let _ = channel.send(&Frame::Pong(nonce), &[]).await;
                continue;
            }
            Ok((other, _)) => {
                let message = format!(
                    "unexpected {} frame on the control socket",
                    other.kind().name()
                );
                let _ = channel
                    .send_value(&ControlResponse::Error { message }, &[])
                    .await;
                return;
            }
            Err(arbor_protocol::Error::Closed) => return,
            Err(e) => {
                tracing::warn!("control client dropped: {e}");
                return;
            }
        };
        let stream_filter = match &request {
            ControlRequest::Watch { id } => Some((*id, None)),
            ControlRequest::Logs {
                id, follow: true, ..
            } => Some((Some(*id), Some("output"))),
            _ => None,
        };
        // Subscribe before answering, so that no event falls in between;
        // for `logs -f`, in the same critical section as the snapshot.
        let shutdown = matches!(request, ControlRequest::Shutdown);
        let (response, subscription) = match request {
            ControlRequest::Logs {
                id,
                lines,
                follow: true,
            } => {
                let entries = daemon.entries();
                match entries.get(&id) {
                    Some(entry) => {
                        let skip = entry.logs.len().saturating_sub(lines as usize);
                        let snapshot = entry.logs.iter().skip(skip).cloned().collect();
                        (
                            ControlResponse::Logs(snapshot),
                            Some(daemon.events.subscribe()),
                        )
                    }
                    None => (
                        ControlResponse::Error {
                            message: format!("no worker {id}"),
                        },
                        None,
                    ),
                }
            }
            ControlRequest::Attach { name } => {
                let origin = match peer_of(channel.socket()) {
                    Some((pid, uid)) => format!("control client pid {pid} uid {uid}"),
                    None => "control client".into(),
                };
                match attach(&daemon, &name, &origin).await {
                    Ok((worker, port)) => {
                        let attached = ControlResponse::Attached { worker };
                        let port = port.into_fd();
                        let _ = channel.send_value(&attached, &[port.as_fd()]).await;
                    }
                    Err(message) => {
                        let _ = channel
                            .send_value(&ControlResponse::Error { message }, &[])
                            .await;
                    }
                }
                // The client talks to the worker on its port from here on.
                return;
            }
            request => {
                let subscription = stream_filter.map(|_| daemon.events.subscribe());
                (handle(&daemon, request, fds).await, subscription)
            }
        };
        let failed_stream =
            stream_filter.is_some() && matches!(response, ControlResponse::Error { .. });
        if channel.send_value(&response, &[]).await.is_err() || failed_stream {
            return;
        }
        if shutdown {
            daemon.shutdown.notify_one();
            return;
        }
        if let (Some((id, only)), Some(subscription)) = (stream_filter, subscription) {
            stream_events(channel, subscription, id, only).await;
            return;
        }
    }
}

/// Connects a client to the shared worker `name`: starts it when it is not
/// running (the first attach, or the first after it exited), then hands it
/// one end of a new port (a Port frame, queued until it is Ready) and
/// returns the other.
async fn attach(
    daemon: &Arc<Daemon>,
    name: &str,
    origin: &str,
) -> Result<(u64, arbor_protocol::MessagePort), String> {
    if daemon.stopping.load(Ordering::SeqCst) {
        return Err("arbord is shutting down".into());
    }
    let unknown = || format!("no shared worker {name:?}");
    let gate = {
        let shared = daemon.shared.lock().await;
        Arc::clone(&shared.get(name).ok_or_else(unknown)?.gate)
    };
    // One start per name at a time; other names and the map are not held.
    let starting = gate.lock().await;
    let (recipe, current) = {
        let shared = daemon.shared.lock().await;
        let entry = shared.get(name).ok_or_else(unknown)?;
        (entry.recipe.clone(), entry.current)
    };
    let running = match current {
        Some(id) => live_handle(daemon, id).await?.map(|worker| (id, worker)),
        None => None,
    };
    let (id, worker) = match running {
        Some(running) => running,
        None => {
            let id = start(daemon, recipe, false)
                .await
                .map_err(|e| format!("shared worker {name:?} did not start: {e}"))?;
            if let Some(entry) = daemon.shared.lock().await.get_mut(name) {
                entry.current = Some(id);
            }
            (id, daemon.handle(id)?)
        }
    };
    drop(starting);
    let (ours, theirs) =
        arbor_protocol::MessagePort::pair().map_err(|e| format!("a port for {name:?}: {e}"))?;
    let port = daemon.next_port.fetch_add(1, Ordering::Relaxed);
    worker
        .connect_port(port, origin, theirs)
        .await
        .map_err(|e| format!("shared worker {name:?}: {e}"))?;
    tracing::info!(worker = name, id, port, "{origin} attached");
    Ok((id, ours))
}

/// The running worker of entry `id`, or `None` when it is gone for good
/// (exited, failed, or stopped): a start is then due. One between runs
/// (its exit seen, its restart not yet started) is waited for, up to 30 s,
/// so a shared worker is never started twice.
async fn live_handle(daemon: &Daemon, id: u64) -> Result<Option<Arc<Worker>>, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let changed = daemon.state_changed.notified();
        {
            let entries = daemon.entries();
            let Some(entry) = entries.get(&id) else {
                return Ok(None);
            };
            if entry.stop_requested || matches!(entry.state, "exited" | "failed") {
                return Ok(None);
            }
            // A handle whose exit is in but not yet seen by its monitor is
            // between runs too.
            if let Some(worker) = entry.worker.as_ref().filter(|w| w.try_exit().is_none()) {
                return Ok(Some(Arc::clone(worker)));
            }
        }
        tokio::time::timeout_at(deadline, changed)
            .await
            .map_err(|_| format!("worker {id} is between restarts; try again"))?;
    }
}

/// The pid and uid of a control client (SO_PEERCRED).
fn peer_of(socket: &UnixStream) -> Option<(i32, u32)> {
    let cred = socket.peer_cred().ok()?;
    Some((cred.pid()?, cred.uid()))
}

/// Streams events to a watcher until it hangs up. A watcher that falls
/// behind gets a `missed` event with the count and carries on.
async fn stream_events(
    channel: AsyncChannel,
    mut events: broadcast::Receiver<DaemonEvent>,
    id: Option<u64>,
    only: Option<&str>,
) {
    // Split, so that the client's hang-up is seen while waiting for events.
    let (mut sender, mut receiver) = channel.into_split();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = receiver.recv() => return, // the client sent something or hung up
        };
        let event = match event {
            Ok(event) if id.is_some_and(|id| id != event.worker) => continue,
            Ok(event) if only.is_some_and(|only| only != event.event) => continue,
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => DaemonEvent {
                event: "missed".into(),
                worker: 0,
                name: String::new(),
                code: None,
                signal: None,
                text: None,
                missed: Some(missed),
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if sender
            .send_value(&ControlResponse::Event(event), &[])
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Stops worker `id` for good: closes it (`close` is `Some`, with its grace
/// or the worker's own) or terminates it (`None`), and reports the exit. A
/// worker waiting for a restart just stays stopped.
async fn stop(daemon: &Arc<Daemon>, id: u64, close: Option<Option<Duration>>) -> ControlResponse {
    let worker = match daemon.request_stop(id) {
        Ok(Some(worker)) => worker,
        Ok(None) => {
            return ControlResponse::Exited(ExitInfo {
                code: None,
                signal: None,
            })
        }
        Err(message) => return ControlResponse::Error { message },
    };
    let exit = match close {
        Some(grace) => {
            let grace = grace.unwrap_or_else(|| {
                let entries = daemon.entries();
                entries
                    .get(&id)
                    .map_or(Duration::from_secs(5), |e| e.recipe.close_grace)
            });
            worker.close(grace).await
        }
        None => worker.terminate().await,
    };
    match exit {
        Ok(record) => ControlResponse::Exited(exit_info(&record)),
        Err(e) => ControlResponse::Error {
            message: e.to_string(),
        },
    }
}

/// Answers one request; `fds` came with it (only `post` passes them on).
async fn handle(
    daemon: &Arc<Daemon>,
    request: ControlRequest,
    fds: Vec<std::os::fd::OwnedFd>,
) -> ControlResponse {
    let error = |message: String| ControlResponse::Error { message };
    match request {
        // Answered in serve_client, with the port as an fd.
        ControlRequest::Attach { .. } => error("attach needs a connection of its own".into()),
        ControlRequest::Spawn(_) if daemon.stopping.load(Ordering::SeqCst) => {
            error("arbord is shutting down".into())
        }
        ControlRequest::Spawn(spawn) if spawn.shared => {
            let Ok(recipe) = Recipe::from_request(spawn) else {
                return error("bad spawn request".into());
            };
            let name = recipe.name.clone();
            let mut shared = daemon.shared.lock().await;
            if shared.contains_key(&name) {
                return error(format!("a shared worker {name:?} exists already"));
            }
            match start(daemon, recipe.clone(), false).await {
                Ok(id) => {
                    let current = Some(id);
                    let from_config = false;
                    shared.insert(
                        name,
                        SharedWorker {
                            recipe,
                            gate: Arc::default(),
                            current,
                            from_config,
                        },
                    );
                    ControlResponse::Spawned { id }
                }
                Err(e) => error(e.to_string()),
            }
        }
        ControlRequest::Spawn(spawn) => match Recipe::from_request(spawn) {
            Ok(recipe) => match start(daemon, recipe, false).await {
                Ok(id) => ControlResponse::Spawned { id },
                Err(e) => error(e.to_string()),
            },
            Err(e) => error(e),
        },
        ControlRequest::List => ControlResponse::Workers(
            daemon
                .entries()
                .iter()
                .map(|(id, e)| WorkerInfo {
                    id: *id,
                    name: e.recipe.name.clone(),
                    pid: e.pid,
                    state: e.state.to_string(),
                    uptime_secs: if e.worker.is_some() {
                        e.started.elapsed().as_secs()
                    } else {
                        0
                    },
                    restarts: e.restarts,
                    rss_kib: if e.pid > 0 {
                        crate::procfs::rss_kib(e.pid)
                    } else {
                        0
                    },
                    last_exit: e.last_exit.clone(),
                    parent: e.parent,
                })
                .collect(),
        ),
        ControlRequest::Post { id, data } => match daemon.handle(id) {
            Ok(worker) => match worker.post_message(data, fds).await {
                Ok(()) => ControlResponse::Ok,
                Err(e) => error(e.to_string()),
            },
            Err(e) => error(e),
        },
        ControlRequest::Request {
            id,
            data,
            timeout_ms,
        } => match daemon.handle(id) {
            Ok(worker) => match worker
                .request(data, Duration::from_millis(timeout_ms))
                .await
            {
                Ok(reply) => ControlResponse::Reply(reply),
                Err(e) => error(e.to_string()),
            },
            Err(e) => error(e),
        },
        ControlRequest::Close { id, grace_ms } => {
            stop(daemon, id, Some(grace_ms.map(Duration::from_millis))).await
        }
        ControlRequest::Terminate { id } => stop(daemon, id, None).await,
        ControlRequest::Signal { id, signal } => {
            match (daemon.handle(id), Signal::from_name(&signal)) {
                (Ok(worker), Some(signal)) => match worker.signal(signal).await {
                    Ok(()) => ControlResponse::Ok,
                    Err(e) => error(e.to_string()),
                },
                (Err(e), _) => error(e),
                (_, None) => error(format!("unknown signal {signal:?}")),
            }
        }
        ControlRequest::Watch { .. } => ControlResponse::Ok,
        ControlRequest::Logs { id, lines, .. } => match daemon.entries().get(&id) {
            Some(entry) => {
                let skip = entry.logs.len().saturating_sub(lines as usize);
                ControlResponse::Logs(entry.logs.iter().skip(skip).cloned().collect())
            }
            None => error(format!("no worker {id}")),
        },
        ControlRequest::Status => {
            let entries = daemon.entries();
            ControlResponse::Status {
                pid: std::process::id(),
                uptime_secs: daemon.started.elapsed().as_secs(),
                workers: entries.len() as u32,
                running: entries.values().filter(|e| e.worker.is_some()).count() as u32,
            }
        }
        ControlRequest::Shutdown => ControlResponse::Ok,
        ControlRequest::Pools => {
            // /proc reads block: off the runtime's threads.
            let daemon = Arc::clone(daemon);
            match tokio::task::spawn_blocking(move || pools::infos(&daemon)).await {
                Ok(infos) => ControlResponse::Pools(infos),
                Err(e) => error(e.to_string()),
            }
        }
        ControlRequest::Scale { .. } | ControlRequest::Reload { .. }
            if daemon.stopping.load(Ordering::SeqCst) =>
        {
            error("arbord is shutting down".into())
        }
        ControlRequest::Scale { pool, replicas } => {
            let _beside_other_pool_operations = daemon.reconfig.read().await;
            match pools::scale(daemon, &pool, replicas).await {
                Ok(message) => ControlResponse::Done { message },
                Err(message) => error(message),
            }
        }
        ControlRequest::Reload { pool } => {
            let _beside_other_pool_operations = daemon.reconfig.read().await;
            let names = match pool {
                Some(name) => vec![name],
                None => pools::names(daemon),
            };
            let mut done = Vec::new();
            for name in names {
                match pools::rolling_reload(daemon, &name).await {
                    Ok(message) => done.push(message),
                    Err(message) => return error(message),
                }
            }
            ControlResponse::Done {
                message: if done.is_empty() {
                    "no pools".into()
                } else {
                    done.join("\n")
                },
            }
        }
    }
}

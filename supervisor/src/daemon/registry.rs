//! The daemon's state: its managed workers, pools and shared workers, and
//! how they change.
//!
//! [`Daemon`] is shared by every task of arbord (the accept loop, one task
//! per control client, one monitor per worker). Its maps are behind std
//! mutexes that are never held across an `.await`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor_protocol::control::{Event, WorkerState};
use tokio::sync::{broadcast, Notify};

use super::error::ControlError;
use super::pools::Pool;
use super::recipe::Recipe;
use super::reload_gate::ReloadGate;
use crate::config::Config;
use crate::{Supervisor, Worker};

/// Workers that have exited for good kept in the registry (for `ps` and
/// `logs`); the oldest are forgotten beyond this.
const KEEP_EXITED: usize = 256;
/// Lines of captured output kept per worker.
pub(super) const LOG_LINES: usize = 1000;
/// Events buffered for watchers; one that falls further behind is told how
/// many it missed, and never slows a worker or another client.
pub(super) const WATCH_BUFFER: usize = 1024;

/// A shared worker (`[[shared]]`, `spawn --shared`): started on demand.
#[derive(Debug)]
pub(super) struct SharedWorker {
    pub(super) recipe: Recipe,
    /// Held while an attach finds or starts it, so it starts once.
    pub(super) gate: Arc<tokio::sync::Mutex<()>>,
    /// Its entry while it runs (or last ran).
    pub(super) current: Option<u64>,
    /// Declared by `[[shared]]` (a reload may change or remove it), not by
    /// `spawn --shared`.
    pub(super) from_config: bool,
}

/// One managed worker, across its runs.
#[derive(Debug)]
pub(super) struct Entry {
    /// Set for workers from the configuration file (for reloads).
    pub(super) from_config: bool,
    /// For a sub-worker: the entry of the worker that started it.
    pub(super) parent: Option<u64>,
    /// An operator (or a reload) stopped this worker: it is not restarted,
    /// whatever its policy and whenever its exit is seen.
    pub(super) stop_requested: bool,
    pub(super) recipe: Recipe,
    pub(super) worker: Option<Arc<Worker>>,
    pub(super) pid: u32,
    pub(super) state: WorkerState,
    pub(super) started: Instant,
    pub(super) restarts: u32,
    pub(super) logs: VecDeque<String>,
    pub(super) last_exit: Option<String>,
}

/// A std mutex's guard, also when a panic elsewhere poisoned it.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug)]
pub(super) struct Daemon {
    pub(super) supervisor: Supervisor,
    pub(super) config: Config,
    pub(super) workers: Mutex<BTreeMap<u64, Entry>>,
    pub(super) pools: Mutex<BTreeMap<String, Pool>>,
    /// Shared workers by name: how to start each, and its running entry.
    /// The async lock makes concurrent first attaches start it once.
    pub(super) shared: tokio::sync::Mutex<BTreeMap<String, SharedWorker>>,
    pub(super) next_port: AtomicU64,
    pub(super) next_id: AtomicU64,
    pub(super) started: Instant,
    pub(super) stopping: AtomicBool,
    pub(super) shutdown: Notify,
    /// Woken whenever a worker's state changes or a stop is requested.
    pub(super) state_changed: Notify,
    pub(super) events: broadcast::Sender<Event>,
    /// One SIGHUP reload at a time.
    pub(super) reload_gate: Mutex<ReloadGate>,
    /// A SIGHUP reload holds it for writing, `arborctl scale` and `reload`
    /// for reading: a configuration reload never runs over a pool
    /// operation, nor one over it.
    pub(super) reconfig: tokio::sync::RwLock<()>,
}

impl Daemon {
    /// A daemon with no workers yet, and the shared workers of `config`
    /// known (they start on their first attach).
    pub(super) fn new(supervisor: Supervisor, config: Config) -> Self {
        let shared = config
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
            .collect();
        Self {
            supervisor,
            config,
            workers: Mutex::new(BTreeMap::new()),
            pools: Mutex::new(BTreeMap::new()),
            shared: tokio::sync::Mutex::new(shared),
            next_port: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            shutdown: Notify::new(),
            state_changed: Notify::new(),
            events: broadcast::channel(WATCH_BUFFER).0,
            reload_gate: Mutex::default(),
            reconfig: tokio::sync::RwLock::new(()),
        }
    }

    pub(super) fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        lock(&self.workers)
    }

    pub(super) fn pools(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Pool>> {
        lock(&self.pools)
    }

    /// Marks worker `id` stopped (no more restarts) and returns its live
    /// handle, if it has one; a worker waiting for a restart just stops. A
    /// pool replica gets no more connections from here on.
    pub(super) fn request_stop(&self, id: u64) -> Result<Option<Arc<Worker>>, ControlError> {
        let mut entries = self.entries();
        let entry = entries.get_mut(&id).ok_or(ControlError::NoSuchWorker(id))?;
        if let Some(pool) = &entry.recipe.pool {
            pool.retire(id);
        }
        entry.stop_requested = true;
        let worker = entry.worker.clone();
        if worker.is_some() {
            entry.state = WorkerState::Closing;
        }
        drop(entries);
        self.state_changed.notify_waiters();
        Ok(worker)
    }

    pub(super) fn stop_requested(&self, id: u64) -> bool {
        self.stopping.load(Ordering::SeqCst)
            || self.entries().get(&id).is_none_or(|e| e.stop_requested)
    }

    /// The live handle of worker `id`.
    pub(super) fn running(&self, id: u64) -> Result<Arc<Worker>, ControlError> {
        match self.entries().get(&id) {
            Some(Entry {
                worker: Some(worker),
                ..
            }) => Ok(Arc::clone(worker)),
            Some(entry) => Err(ControlError::NotRunning {
                id,
                name: entry.recipe.name.clone(),
                state: entry.state,
            }),
            None => Err(ControlError::NoSuchWorker(id)),
        }
    }

    /// Tells watchers; nobody watching is fine.
    pub(super) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub(super) fn set_state(&self, id: u64, state: WorkerState) {
        if let Some(entry) = self.entries().get_mut(&id) {
            entry.state = state;
        }
        self.state_changed.notify_waiters();
    }

    /// Keeps the registry bounded: beyond KEEP_EXITED workers that are gone
    /// for good, the oldest are dropped (a client spawning in a loop cannot
    /// grow arbord without bound).
    pub(super) fn forget_old_exits(&self) {
        let mut entries = self.entries();
        let gone: Vec<u64> = entries
            .iter()
            .filter(|(_, e)| e.worker.is_none() && e.state.is_final())
            .map(|(id, _)| *id)
            .collect();
        for id in gone.iter().take(gone.len().saturating_sub(KEEP_EXITED)) {
            entries.remove(id);
        }
    }

    /// The close grace of entry `id`'s recipe (5 s when it is gone).
    pub(super) fn grace(&self, id: u64) -> Duration {
        self.entries()
            .get(&id)
            .map_or(Duration::from_secs(5), |e| e.recipe.close_grace)
    }

    pub(super) fn status_line(&self) -> String {
        let entries = self.entries();
        let running = entries.values().filter(|e| e.worker.is_some()).count();
        format!("STATUS={running} workers running, {} known", entries.len())
    }
}

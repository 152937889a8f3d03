//! The daemon's state and its one owner: [`Registry`].
//!
//! Every managed worker, pool and shared worker, whether arbord is
//! stopping, and the ids it hands out live in one [`State`] behind one
//! std mutex, never held across an `.await`; every change is a method of
//! [`Registry`] (this file for workers, `pools.rs` and `shared.rs` for the
//! rest), so that what must change together changes under one lock.
//!
//! Waiters wait for their own worker: each entry has a `watch` of what a
//! waiter can wait for ([`Seen`]: its state, whether a stop was asked, its
//! run), sent whenever one of them changes, and dropped with the entry.
//! Shutdown has a `watch` of its own.

mod listing;
mod logs;
mod pools;
mod shared;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arbor_protocol::control::{Event, WorkerState};
use tokio::sync::{watch, Notify};

use super::error::ControlError;
use super::events::{EventHub, Subscription};
use super::pools::Pool;
use super::recipe::Recipe;
use super::reload_gate::ReloadGate;
use crate::Worker;

pub(super) use self::pools::Plan;
pub(super) use self::shared::SharedWorker;

/// Workers that have exited for good kept in the registry (for `ps` and
/// `logs`); the oldest are forgotten beyond this.
const KEEP_EXITED: usize = 256;
/// Lines of captured output kept per worker.
const LOG_LINES: usize = 1000;

/// What a waiter can wait for on one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) state: WorkerState,
    /// An operator (or a reload) stopped it: no more restarts.
    pub(super) stop_requested: bool,
    /// Its runs so far (0 for the first): a new run is a change too.
    pub(super) run: u32,
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
    seen: watch::Sender<Seen>,
}

impl Entry {
    /// A `[[worker]]` of the configuration (not a pool's replica).
    pub(super) fn is_declared(&self) -> bool {
        self.from_config && self.recipe.pool.is_none()
    }

    /// Tells its waiters what they can see now.
    fn changed(&self) {
        self.seen.send_replace(Seen {
            state: self.state,
            stop_requested: self.stop_requested,
            run: self.restarts,
        });
    }
}

/// Everything the registry holds, under its one lock.
#[derive(Debug)]
pub(super) struct State {
    pub(super) workers: BTreeMap<u64, Entry>,
    pub(super) pools: BTreeMap<String, Pool>,
    shared: BTreeMap<String, SharedWorker>,
    stopping: bool,
    next_id: u64,
    next_port: u64,
    reload_gate: ReloadGate,
    /// The workers with a live run, and those gone for good that may be
    /// forgotten (see [`KEEP_EXITED`]): kept by [`State::reindex`] as
    /// entries change, so that counting the running, listing their handles
    /// and bounding the exited need no scan of every worker (with thousands
    /// of workers, a scan per start or exit made starts, exit storms and
    /// shutdowns quadratic).
    live: BTreeSet<u64>,
    forgettable: BTreeSet<u64>,
}

/// The one owner of the daemon's state.
#[derive(Debug)]
pub(super) struct Registry {
    state: Mutex<State>,
    events: EventHub,
    stopping: watch::Sender<bool>,
    /// Told whenever a run ends, for shutdown to wait for the last.
    run_over: Notify,
}

impl Registry {
    /// An empty registry that knows the shared workers `shared` (they
    /// start on their first attach).
    pub(super) fn new(shared: impl IntoIterator<Item = (String, Recipe)>) -> Self {
        let shared = shared
            .into_iter()
            .map(|(name, recipe)| (name, SharedWorker::declared(recipe)))
            .collect();
        Self {
            state: Mutex::new(State {
                workers: BTreeMap::new(),
                pools: BTreeMap::new(),
                shared,
                stopping: false,
                next_id: 1,
                next_port: 1,
                reload_gate: ReloadGate::default(),
                live: BTreeSet::new(),
                forgettable: BTreeSet::new(),
            }),
            events: EventHub::new(),
            stopping: watch::channel(false).0,
            run_over: Notify::new(),
        }
    }

    /// The state, locked; also when a panic elsewhere poisoned the lock.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells watchers; nobody watching is fine.
    pub(super) fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    /// Every event from now on.
    pub(super) fn subscribe(&self) -> Subscription {
        self.events.subscribe()
    }

    /// The watchers' hub, for shutdown to close and drain.
    pub(super) fn events(&self) -> &EventHub {
        &self.events
    }

    /// Enters a started worker and returns its id; refused once arbord is
    /// stopping (the caller must not let it outlive arbord). A registry
    /// over its bound forgets its oldest exits first.
    pub(super) fn insert(
        &self,
        recipe: Recipe,
        worker: Option<Arc<Worker>>,
        from_config: bool,
        parent: Option<u64>,
    ) -> Result<u64, ControlError> {
        let mut state = self.lock();
        if state.stopping {
            return Err(ControlError::ShuttingDown);
        }
        state.forget_old_exits();
        let id = state.next_id;
        state.next_id += 1;
        let first = Seen {
            state: WorkerState::Starting,
            stop_requested: false,
            run: 0,
        };
        let entry = Entry {
            from_config,
            parent,
            stop_requested: false,
            recipe,
            pid: worker.as_ref().map_or(0, |w| w.pid()),
            worker,
            state: WorkerState::Starting,
            started: Instant::now(),
            restarts: 0,
            logs: VecDeque::new(),
            last_exit: None,
            seen: watch::channel(first).0,
        };
        state.workers.insert(id, entry);
        state.reindex(id);
        Ok(id)
    }

    /// Marks worker `id` stopped (no more restarts) and returns its live
    /// handle, if it has one; a worker waiting for a restart just stops. A
    /// pool replica gets no more connections from here on.
    pub(super) fn request_stop(&self, id: u64) -> Result<Option<Arc<Worker>>, ControlError> {
        self.lock().request_stop(id)
    }

    /// Whether worker `id` is not to run again: stopped, gone, or arbord
    /// is stopping.
    pub(super) fn stop_requested(&self, id: u64) -> bool {
        let state = self.lock();
        state.stopping || state.workers.get(&id).is_none_or(|e| e.stop_requested)
    }

    /// The live handle of worker `id`.
    pub(super) fn running(&self, id: u64) -> Result<Arc<Worker>, ControlError> {
        match self.lock().workers.get(&id) {
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

    pub(super) fn set_state(&self, id: u64, new: WorkerState) {
        let mut state = self.lock();
        if let Some(entry) = state.workers.get_mut(&id) {
            entry.state = new;
            entry.changed();
            state.reindex(id);
        }
    }

    /// Worker `id` sent Ready: it runs, and a pool replica joins its pool,
    /// unless it is being stopped (under the lock a stop retires it under,
    /// so a replica being stopped is never put back).
    pub(super) fn mark_ready(&self, id: u64) {
        let mut state = self.lock();
        let stopping = state.stopping;
        let Some(entry) = state.workers.get_mut(&id) else {
            return;
        };
        entry.state = WorkerState::Running;
        entry.changed();
        if let (Some(pool), Some(worker), false, false) = (
            &entry.recipe.pool,
            &entry.worker,
            entry.stop_requested,
            stopping,
        ) {
            pool.replica_ready(id, worker);
        }
        state.reindex(id);
    }

    /// A run of worker `id` ended, as `description` says.
    pub(super) fn run_ended(&self, id: u64, description: String) {
        let mut state = self.lock();
        if let Some(entry) = state.workers.get_mut(&id) {
            entry.worker = None;
            entry.pid = 0;
            entry.last_exit = Some(description);
            state.reindex(id);
        }
        drop(state);
        self.run_over.notify_waiters();
    }

    /// Waits until no run is left (every monitor has told its exit).
    pub(super) async fn runs_over(&self) {
        loop {
            let over = self.run_over.notified();
            if self.live_handles().is_empty() {
                return;
            }
            over.await;
        }
    }

    /// A new run of worker `id` started: it takes the last one's place,
    /// unless the worker was stopped or forgotten, or arbord began stopping,
    /// since the run was asked for (then `false`: the caller ends it).
    pub(super) fn restarted(&self, id: u64, worker: Arc<Worker>) -> bool {
        let mut state = self.lock();
        let stopping = state.stopping;
        match state.workers.get_mut(&id) {
            Some(entry) if !entry.stop_requested && !stopping => {
                entry.pid = worker.pid();
                entry.worker = Some(worker);
                entry.state = WorkerState::Starting;
                entry.started = Instant::now();
                entry.restarts += 1;
                entry.changed();
                state.reindex(id);
                true
            }
            _ => false,
        }
    }

    /// Keeps the registry bounded (see [`KEEP_EXITED`]).
    pub(super) fn forget_old_exits(&self) {
        self.lock().forget_old_exits();
    }

    /// Forgets worker `id` (a worker a reload removed).
    pub(super) fn remove(&self, id: u64) {
        let mut state = self.lock();
        state.workers.remove(&id);
        state.reindex(id);
    }

    /// The close grace of worker `id`'s recipe.
    pub(super) fn grace(&self, id: u64) -> Duration {
        self.lock()
            .workers
            .get(&id)
            .map_or(crate::spec::DEFAULT_CLOSE_GRACE, |e| e.recipe.close_grace())
    }

    /// What waiters of worker `id` see; `None` when it is not known.
    pub(super) fn watch(&self, id: u64) -> Option<watch::Receiver<Seen>> {
        self.lock().workers.get(&id).map(|e| e.seen.subscribe())
    }

    /// The watches of every worker that is starting now.
    pub(super) fn starting(&self) -> Vec<watch::Receiver<Seen>> {
        self.lock()
            .workers
            .values()
            .filter(|e| e.state == WorkerState::Starting)
            .map(|e| e.seen.subscribe())
            .collect()
    }

    /// Whether arbord is stopping, to wait on.
    pub(super) fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Shutdown begins: nothing new is entered from here on, the pools stop
    /// accepting, and the handles of every running worker are returned,
    /// all under one lock.
    pub(super) fn begin_shutdown(&self) -> Vec<Arc<Worker>> {
        let mut state = self.lock();
        state.stopping = true;
        self.stopping.send_replace(true);
        for pool in state.pools.values() {
            pool.runtime.stop();
        }
        state.live_handles()
    }

    /// The handles of every running worker.
    pub(super) fn live_handles(&self) -> Vec<Arc<Worker>> {
        self.lock().live_handles()
    }

    /// A fresh port id for a shared worker's `onconnect`.
    pub(super) fn next_port(&self) -> u64 {
        let mut state = self.lock();
        state.next_port += 1;
        state.next_port - 1
    }

    /// A SIGHUP came: `true` when a reload is to start now (see
    /// [`ReloadGate::begin`]).
    pub(super) fn begin_reload(&self) -> bool {
        self.lock().reload_gate.begin()
    }

    /// A reload pass ended: `true` when another is to run.
    pub(super) fn finish_reload(&self) -> bool {
        self.lock().reload_gate.finish()
    }
}

impl State {
    fn request_stop(&mut self, id: u64) -> Result<Option<Arc<Worker>>, ControlError> {
        let entry = self
            .workers
            .get_mut(&id)
            .ok_or(ControlError::NoSuchWorker(id))?;
        if let Some(pool) = &entry.recipe.pool {
            pool.retire(id);
        }
        entry.stop_requested = true;
        let worker = entry.worker.clone();
        if worker.is_some() {
            entry.state = WorkerState::Closing;
        }
        entry.changed();
        self.reindex(id);
        Ok(worker)
    }

    /// Beyond KEEP_EXITED workers that are gone for good, the oldest are
    /// dropped (a client spawning in a loop cannot grow arbord without
    /// bound). A `[[worker]]` of the configuration is never dropped: an
    /// operator's stop of one holds across SIGHUPs whatever the churn (the
    /// file bounds how many there are; a pool's replicas come and go and
    /// are dropped like any other).
    fn forget_old_exits(&mut self) {
        while self.forgettable.len() > KEEP_EXITED {
            if let Some(id) = self.forgettable.pop_first() {
                self.workers.remove(&id);
            }
        }
    }

    /// Puts worker `id` in the indexes its entry belongs in now (and in
    /// none once it is gone); called after every change to an entry's run
    /// or state.
    fn reindex(&mut self, id: u64) {
        let (live, forgettable) = match self.workers.get(&id) {
            Some(e) => (
                e.worker.is_some(),
                e.worker.is_none() && e.state.is_final() && !e.is_declared(),
            ),
            None => (false, false),
        };
        for (set, member) in [(&mut self.live, live), (&mut self.forgettable, forgettable)] {
            if member {
                set.insert(id);
            } else {
                set.remove(&id);
            }
        }
    }

    /// How many workers have a live run.
    pub(super) fn running(&self) -> usize {
        self.live.len()
    }

    fn live_handles(&self) -> Vec<Arc<Worker>> {
        self.live
            .iter()
            .filter_map(|id| self.workers.get(id)?.worker.clone())
            .collect()
    }

    /// Whether worker `id` is known and neither stopped nor gone for good.
    fn is_live(&self, id: u64) -> bool {
        self.workers
            .get(&id)
            .is_some_and(|e| !e.stop_requested && !e.state.is_final())
    }
}

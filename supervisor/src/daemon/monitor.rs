//! Managed workers: started, entered in the registry, and followed by a
//! monitor task each through their events, exits and restarts.
//!
//! A monitor consumes its worker's events (captured output into a bounded
//! ring and the daemon's log, Ready into the pool, sub-workers into the
//! registry), turns the exit into an [`Ending`] and lets the restart state
//! machine of [`crate::restart`] say what comes next.

use std::sync::Arc;
use std::time::Instant;

use arbor_protocol::control::{Event, EventKind, Exit, SignalInfo, WorkerState};

use super::context::Daemon;
use super::lifecycle::{Effect, Input, Lifecycle};
use super::recipe::Recipe;
use crate::systemd::notify;
use crate::{ExitRecord, Worker, WorkerEvent};

/// The worker a monitor follows, across its runs.
#[derive(Debug)]
struct Managed {
    id: u64,
    /// The worker that started it, for a sub-worker.
    parent: Option<u64>,
    recipe: Recipe,
}

impl Managed {
    /// An event about it.
    fn event(&self, kind: EventKind) -> Event {
        Event {
            worker: self.id,
            name: self.recipe.name.clone(),
            parent: self.parent,
            kind,
        }
    }
}

/// Starts a managed worker and its monitor; returns its id.
pub(super) async fn start(
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
    let Some(events) = worker.take_events() else {
        return Err(crate::Error::ShutDown);
    };
    let worker = Arc::new(worker);
    let Ok(id) = daemon.registry.insert(
        recipe.clone(),
        Some(Arc::clone(&worker)),
        from_config,
        parent,
    ) else {
        // Shutdown began while it was starting: it must not outlive arbord.
        worker.begin_terminate();
        return Err(crate::Error::ShutDown);
    };
    tracing::info!(worker = %recipe.name, id, pid = worker.pid(), "started");
    let me = Managed { id, parent, recipe };
    daemon.registry.emit(me.event(EventKind::Spawned));
    tokio::spawn(monitor(Arc::clone(daemon), me, events));
    notify(&daemon.registry.status_line());
    Ok(id)
}

/// Starts one run of `recipe`.
async fn spawn(daemon: &Daemon, recipe: &Recipe) -> Result<Worker, crate::Error> {
    let listen = recipe.listen_fds().map_err(|source| crate::Error::Spawn {
        name: recipe.name.clone(),
        source,
    })?;
    daemon
        .supervisor
        .spawn_with_fds(recipe.spec.clone(), listen)
        .await
}

/// Follows one managed worker through its runs: [`Lifecycle`] decides,
/// this carries its effects out and feeds it what happened.
async fn monitor(daemon: Arc<Daemon>, me: Managed, events: crate::Events) {
    let mut life = Lifecycle::new(me.recipe.restart, me.recipe.ready_timeout, Instant::now());
    let mut run = Run {
        events,
        ready_by: None,
        spawned: None,
    };
    let mut effects = life.step(Input::Started, Instant::now());
    loop {
        let mut next = None;
        for effect in effects.drain(..) {
            match apply(&daemon, &me, &mut run, effect).await {
                Applied::Done => return,
                Applied::Then(input) => next = Some(input),
                Applied::Go => {}
            }
        }
        let input = match next {
            Some(input) => input,
            None => next_input(&daemon, &me, &mut run).await,
        };
        effects = life.step(input, Instant::now());
    }
}

/// The current run, as the monitor holds it.
struct Run {
    events: crate::Events,
    /// When the run must have sent Ready.
    ready_by: Option<tokio::time::Instant>,
    /// A run just spawned, not yet in place.
    spawned: Option<Worker>,
}

/// What carrying out an effect led to.
enum Applied {
    Go,
    /// The effect's outcome, to feed back.
    Then(Input),
    Done,
}

/// The next thing that happened to the run that the lifecycle decides on;
/// every other event is handled on the way.
async fn next_input(daemon: &Arc<Daemon>, me: &Managed, run: &mut Run) -> Input {
    loop {
        let event = tokio::select! {
            event = run.events.next() => event,
            _ = sleep_until(run.ready_by) => return Input::ReadyDeadline,
        };
        let record = match event {
            Some(WorkerEvent::Ready) => return Input::Ready,
            Some(WorkerEvent::Exit(record)) => Some(record),
            None => None,
            Some(event) => {
                on_event(daemon, me, event);
                continue;
            }
        };
        return Input::Exited {
            record,
            stop_requested: daemon.registry.stop_requested(me.id),
        };
    }
}

/// Carries out one effect of the lifecycle.
async fn apply(daemon: &Daemon, me: &Managed, run: &mut Run, effect: Effect) -> Applied {
    let registry = &daemon.registry;
    match effect {
        Effect::ArmReady(at) => run.ready_by = Some(at.into()),
        Effect::DisarmReady => run.ready_by = None,
        Effect::Terminate => {
            let limit = me.recipe.ready_timeout.unwrap_or_default();
            tracing::warn!(worker = %me.recipe.name, id = me.id, "not Ready within {limit:?}: killed");
            if let Ok(worker) = registry.running(me.id) {
                worker.begin_terminate();
            }
        }
        Effect::MarkReady => {
            registry.mark_ready(me.id);
            registry.emit(me.event(EventKind::Ready));
        }
        Effect::EndRun(record) => end_run(daemon, me, record),
        Effect::State(state) => {
            if state == WorkerState::Failed {
                tracing::error!(worker = %me.recipe.name, id = me.id, "restarting too often: marked failed");
            }
            registry.set_state(me.id, state);
        }
        Effect::Emit(kind) => registry.emit(me.event(kind)),
        Effect::Backoff(at) => {
            let stop_requested = !backoff(daemon, me.id, at).await;
            return Applied::Then(Input::BackoffOver { stop_requested });
        }
        // Boxed: a start's future is large (1.7 KiB), and every monitor
        // would carry it unboxed for its whole life.
        Effect::Spawn => match Box::pin(spawn(daemon, &me.recipe)).await {
            Ok(worker) => {
                run.spawned = Some(worker);
                let stop_requested = registry.stop_requested(me.id);
                return Applied::Then(Input::Spawned { stop_requested });
            }
            Err(e) => {
                tracing::error!(worker = %me.recipe.name, id = me.id, "restart failed: {e}");
                return Applied::Then(Input::SpawnFailed);
            }
        },
        Effect::TerminateSpawned => {
            // Stopped while this restart was starting.
            if let Some(worker) = run.spawned.take() {
                let _ = worker.terminate().await;
            }
        }
        Effect::InstallSpawned => {
            let Some(worker) = run.spawned.take() else {
                return Applied::Done;
            };
            let Some(events) = restarted(daemon, me, worker).await else {
                return Applied::Done;
            };
            run.events = events;
        }
        Effect::ForgetOldExits => registry.forget_old_exits(),
        Effect::NotifyStatus => notify(&registry.status_line()),
        Effect::Done => return Applied::Done,
    }
    Applied::Go
}

/// Every event of a run but Ready and the exit.
fn on_event(daemon: &Arc<Daemon>, me: &Managed, event: WorkerEvent) {
    let pool = me.recipe.pool.as_ref();
    match event {
        WorkerEvent::ConnectionAck {
            id: connection,
            accepted,
            open,
        } => {
            if let Some(pool) = pool {
                pool.ack(me.id, connection, accepted, open);
            }
        }
        WorkerEvent::Load { open } => {
            if let Some(pool) = pool {
                pool.load(me.id, open);
            }
        }
        WorkerEvent::Message { data, .. } => {
            daemon
                .registry
                .emit(me.event(EventKind::Message(String::from_utf8_lossy(&data).into())));
        }
        WorkerEvent::MessageError { reason } => {
            daemon
                .registry
                .emit(me.event(EventKind::MessageError(reason)));
        }
        WorkerEvent::Output { stream, line } => {
            let line = String::from_utf8_lossy(&line).into_owned();
            tracing::info!(worker = %me.recipe.name, id = me.id, ?stream, "{line}");
            daemon
                .registry
                .output(me.id, line, |line| me.event(EventKind::Output(line)));
        }
        WorkerEvent::Error { message, location } => {
            tracing::warn!(worker = %me.recipe.name, id = me.id, ?location, "worker error: {message}");
            daemon.registry.emit(me.event(EventKind::Error(message)));
        }
        WorkerEvent::ChannelError { error } => {
            tracing::warn!(worker = %me.recipe.name, id = me.id, "channel closed: {error}");
            daemon
                .registry
                .emit(me.event(EventKind::MessageError(error)));
        }
        WorkerEvent::SubWorker(sub) => {
            // A worker started a sub-worker: listed, logged and stoppable
            // like any worker, never restarted (its parent owns it).
            let sub_recipe = Recipe::for_sub_worker(sub.name());
            tracing::info!(worker = %sub_recipe.name, parent = me.id, pid = sub.pid(), "sub-worker started");
            let _ = register(daemon, *sub, sub_recipe, false, Some(me.id));
        }
        WorkerEvent::Request { id: request, .. } => {
            // arbord has nothing to answer with; the worker's request times out.
            tracing::warn!(worker = %me.recipe.name, id = me.id, request, "worker sent a request arbord cannot answer");
        }
        WorkerEvent::Ready | WorkerEvent::Exit(_) => {}
    }
}

/// A run is over: out of its pool, its exit told to watchers and entered
/// in the registry.
fn end_run(daemon: &Daemon, me: &Managed, record: Option<ExitRecord>) {
    if let Some(pool) = &me.recipe.pool {
        pool.replica_gone(me.id);
    }
    let description = record
        .map(|r| describe_exit(&r))
        .unwrap_or_else(|| "unknown".into());
    tracing::info!(worker = %me.recipe.name, id = me.id, "exited: {description}");
    daemon
        .registry
        .emit(me.event(EventKind::Exit(record.as_ref().map(exit_of))));
    daemon.registry.run_ended(me.id, description);
}

/// Sleeps out a restart's backoff until `at`; `false` when a stop (of this
/// worker, or of arbord) came first.
async fn backoff(daemon: &Daemon, id: u64, at: Instant) -> bool {
    let (Some(mut seen), mut stopping) = (daemon.registry.watch(id), daemon.registry.stopping())
    else {
        return false;
    };
    tokio::select! {
        _ = tokio::time::sleep_until(at.into()) => {}
        _ = seen.wait_for(|s| s.stop_requested) => {}
        _ = stopping.wait_for(|stopping| *stopping) => {}
    }
    !daemon.registry.stop_requested(id)
}

/// Puts a restarted run in place of the last one; its events.
/// `None` when the worker is done instead: it was stopped (or arbord began
/// stopping) while the run started, and the run is ended at once.
async fn restarted(daemon: &Daemon, me: &Managed, mut worker: Worker) -> Option<crate::Events> {
    let events = worker.take_events()?;
    let worker = Arc::new(worker);
    // An attach waiting for this run can take it now.
    if !daemon.registry.restarted(me.id, Arc::clone(&worker)) {
        let _ = worker.terminate().await;
        daemon.registry.set_state(me.id, WorkerState::Exited);
        return None;
    }
    tracing::info!(worker = %me.recipe.name, id = me.id, "restarted");
    daemon.registry.emit(me.event(EventKind::Spawned));
    notify(&daemon.registry.status_line());
    Some(events)
}

/// Completes at `deadline`, or never without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn describe_exit(record: &ExitRecord) -> String {
    match (record.code, record.signal) {
        (Some(code), _) => format!("code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => "unknown".into(),
    }
}

/// A process exit as the control socket reports it.
pub(super) fn exit_of(record: &ExitRecord) -> Exit {
    Exit {
        code: record.code,
        signal: record.signal.map(|s| SignalInfo {
            number: s.number(),
            name: s.name(),
        }),
        core_dumped: record.core_dumped,
    }
}

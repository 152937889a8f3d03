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
use super::recipe::Recipe;
use crate::restart::{self, Action, Ending, RestartState};
use crate::systemd::notify;
use crate::{ExitRecord, Initiator, Worker, WorkerEvent};

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
    let spec = recipe.spec().map_err(|source| crate::Error::Spawn {
        name: recipe.name.clone(),
        source,
    })?;
    daemon.supervisor.spawn(spec).await
}

/// Follows one managed worker through its runs: each run's events, then
/// its exit and what the restart policy makes of it.
async fn monitor(daemon: Arc<Daemon>, me: Managed, mut events: crate::Events) {
    let mut state = RestartState::new(&me.recipe.restart, Instant::now());
    loop {
        let (record, missed_ready) = follow_run(&daemon, &me, &mut events).await;
        let ending = record_exit(&daemon, &me, record, missed_ready);
        match after_exit(&daemon, &me, &mut state, ending).await {
            Some(next_run) => events = next_run,
            None => return,
        }
    }
}

/// One run's events up to its exit (`None` when the events ended without
/// one), and whether it was killed for not being Ready in time.
async fn follow_run(
    daemon: &Arc<Daemon>,
    me: &Managed,
    events: &mut crate::Events,
) -> (Option<ExitRecord>, bool) {
    // A pool replica that is not Ready in time is killed (and restarted
    // by its policy): it must not hold a place in the pool forever.
    let ready_limit = me.recipe.ready_timeout;
    let mut ready_by = ready_limit.map(|limit| tokio::time::Instant::now() + limit);
    let mut missed_ready = false;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = sleep_until(ready_by) => {
                tracing::warn!(worker = %me.recipe.name, id = me.id, "not Ready within {:?}: killed", ready_limit.unwrap_or_default());
                if let Ok(worker) = daemon.registry.running(me.id) {
                    worker.begin_terminate();
                }
                ready_by = None;
                missed_ready = true;
                continue;
            }
        };
        match event {
            Some(WorkerEvent::Exit(record)) => return (Some(record), missed_ready),
            None => return (None, missed_ready),
            Some(WorkerEvent::Ready) => {
                ready_by = None;
                on_ready(daemon, me);
            }
            Some(event) => on_event(daemon, me, event),
        }
    }
}

/// The run is Ready: running, and a pool replica joins its pool.
fn on_ready(daemon: &Daemon, me: &Managed) {
    daemon.registry.mark_ready(me.id);
    daemon.registry.emit(me.event(EventKind::Ready));
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
            let _ = register(daemon, sub, sub_recipe, false, Some(me.id));
        }
        WorkerEvent::Request { id: request, .. } => {
            // arbord has nothing to answer with; the worker's request times out.
            tracing::warn!(worker = %me.recipe.name, id = me.id, request, "worker sent a request arbord cannot answer");
        }
        WorkerEvent::Ready | WorkerEvent::Exit(_) => {}
    }
}

/// Enters a run's exit in the registry and tells watchers; what kind of
/// ending it was, for the restart policy.
fn record_exit(
    daemon: &Daemon,
    me: &Managed,
    record: Option<ExitRecord>,
    missed_ready: bool,
) -> Ending {
    if let Some(pool) = &me.recipe.pool {
        pool.replica_gone(me.id);
    }
    let ending = match record {
        _ if daemon.registry.stop_requested(me.id) => Ending::Stopped,
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
    tracing::info!(worker = %me.recipe.name, id = me.id, "exited: {description}");
    daemon
        .registry
        .emit(me.event(EventKind::Exit(record.as_ref().map(exit_of))));
    daemon.registry.run_ended(me.id, description);
    ending
}

/// What follows a run's exit by the restart policy: the next run's events,
/// or `None` when the worker is done (exited, stopped or failed).
async fn after_exit(
    daemon: &Arc<Daemon>,
    me: &Managed,
    state: &mut RestartState,
    ending: Ending,
) -> Option<crate::Events> {
    let mut actions = restart::step(
        state,
        &me.recipe.restart,
        restart::Event::Exited(ending),
        Instant::now(),
    );
    loop {
        match actions.first().copied() {
            Some(Action::RestartAt(at)) => {
                daemon.registry.set_state(me.id, WorkerState::Restarting);
                daemon.registry.emit(me.event(EventKind::Restarting));
                if !backoff(daemon, me.id, at).await {
                    daemon.registry.set_state(me.id, WorkerState::Exited);
                    daemon.registry.emit(me.event(EventKind::Exit(None)));
                    return None;
                }
                actions = restart::step(
                    state,
                    &me.recipe.restart,
                    restart::Event::Due,
                    Instant::now(),
                );
            }
            Some(Action::Start) => match spawn(daemon, &me.recipe).await {
                Ok(worker) if daemon.registry.stop_requested(me.id) => {
                    // Stopped while this restart was starting.
                    let _ = worker.terminate().await;
                    daemon.registry.set_state(me.id, WorkerState::Exited);
                    return None;
                }
                Ok(worker) => {
                    restart::step(
                        state,
                        &me.recipe.restart,
                        restart::Event::Started,
                        Instant::now(),
                    );
                    return restarted(daemon, me, worker);
                }
                Err(e) => {
                    tracing::error!(worker = %me.recipe.name, id = me.id, "restart failed: {e}");
                    // A start that fails counts as a failed run: back off
                    // and try again, within the intensity limit.
                    actions = restart::step(
                        state,
                        &me.recipe.restart,
                        restart::Event::Exited(Ending::Failure),
                        Instant::now(),
                    );
                }
            },
            Some(Action::Failed { restarts }) => {
                tracing::error!(worker = %me.recipe.name, id = me.id, restarts, "restarting too often: marked failed");
                daemon.registry.set_state(me.id, WorkerState::Failed);
                daemon.registry.emit(me.event(EventKind::Failed));
                notify(&daemon.registry.status_line());
                return None;
            }
            Some(Action::Finished) | None => {
                daemon.registry.set_state(me.id, WorkerState::Exited);
                daemon.registry.forget_old_exits();
                notify(&daemon.registry.status_line());
                return None;
            }
        }
    }
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
fn restarted(daemon: &Daemon, me: &Managed, mut worker: Worker) -> Option<crate::Events> {
    let events = worker.take_events()?;
    // An attach waiting for this run can take it now.
    daemon.registry.restarted(me.id, Arc::new(worker));
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

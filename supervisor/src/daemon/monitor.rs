//! Managed workers: started, entered in the registry, and followed by a
//! monitor task each through their events, exits and restarts.
//!
//! A monitor consumes its worker's events (captured output into a bounded
//! ring and the daemon's log, Ready into the pool, sub-workers into the
//! registry), turns the exit into an [`Ending`] and lets the restart state
//! machine of [`crate::restart`] say what comes next.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::recipe::Recipe;
use super::registry::{Daemon, Entry, LOG_LINES};
use crate::restart::{self, Action, Ending, RestartState};
use crate::systemd::notify;
use crate::{ExitRecord, Initiator, Worker, WorkerEvent};

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
    daemon.forget_old_exits();
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

/// Follows one managed worker through its runs: each run's events, then
/// its exit and what the restart policy makes of it.
async fn monitor(daemon: Arc<Daemon>, id: u64, recipe: Recipe, mut events: crate::Events) {
    let mut state = RestartState::new(&recipe.restart, Instant::now());
    loop {
        let (record, missed_ready) = follow_run(&daemon, id, &recipe, &mut events).await;
        let ending = record_exit(&daemon, id, &recipe, record, missed_ready);
        match after_exit(&daemon, id, &recipe, &mut state, ending).await {
            Some(next_run) => events = next_run,
            None => return,
        }
    }
}

/// One run's events up to its exit (`None` when the events ended without
/// one), and whether it was killed for not being Ready in time.
async fn follow_run(
    daemon: &Arc<Daemon>,
    id: u64,
    recipe: &Recipe,
    events: &mut crate::Events,
) -> (Option<ExitRecord>, bool) {
    // A pool replica that is not Ready in time is killed (and restarted
    // by its policy): it must not hold a place in the pool forever.
    let ready_limit = recipe.ready_timeout;
    let mut ready_by = ready_limit.map(|limit| tokio::time::Instant::now() + limit);
    let mut missed_ready = false;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = sleep_until(ready_by) => {
                tracing::warn!(worker = %recipe.name, id, "not Ready within {:?}: killed", ready_limit.unwrap_or_default());
                if let Ok(worker) = daemon.running(id) {
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
                on_ready(daemon, id, recipe);
            }
            Some(event) => on_event(daemon, id, recipe, event),
        }
    }
}

/// The run is Ready: running, and a pool replica joins its pool.
fn on_ready(daemon: &Daemon, id: u64, recipe: &Recipe) {
    daemon.set_state(id, "running");
    if let Some(pool) = &recipe.pool {
        // Under the lock request_stop retires replicas under: a replica
        // being stopped is never put back.
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

/// Every event of a run but Ready and the exit.
fn on_event(daemon: &Arc<Daemon>, id: u64, recipe: &Recipe, event: WorkerEvent) {
    let pool = recipe.pool.as_ref();
    match event {
        WorkerEvent::ConnectionAck {
            id: connection,
            accepted,
            open,
        } => {
            if let Some(pool) = pool {
                pool.ack(id, connection, accepted, open);
            }
        }
        WorkerEvent::Load { open } => {
            if let Some(pool) = pool {
                pool.load(id, open);
            }
        }
        WorkerEvent::Message { data, .. } => {
            daemon.emit("message", id, &recipe.name, |e| {
                e.text = Some(String::from_utf8_lossy(&data).into())
            });
        }
        WorkerEvent::MessageError { reason } => {
            daemon.emit("messageerror", id, &recipe.name, |e| e.text = Some(reason));
        }
        WorkerEvent::Output { stream, line } => {
            let line = String::from_utf8_lossy(&line).into_owned();
            tracing::info!(worker = %recipe.name, id, ?stream, "{line}");
            // Into the ring and out to followers under one lock: a
            // `logs -f` that takes its snapshot and subscribes under the
            // same lock sees each line exactly once.
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
        WorkerEvent::Error { message, location } => {
            tracing::warn!(worker = %recipe.name, id, ?location, "worker error: {message}");
            daemon.emit("error", id, &recipe.name, |e| e.text = Some(message));
        }
        WorkerEvent::ChannelError { error } => {
            tracing::warn!(worker = %recipe.name, id, "channel closed: {error}");
            daemon.emit("messageerror", id, &recipe.name, |e| e.text = Some(error));
        }
        WorkerEvent::SubWorker(sub) => {
            // A worker started a sub-worker: listed, logged and stoppable
            // like any worker, never restarted (its parent owns it).
            let recipe = Recipe::for_sub_worker(sub.name());
            tracing::info!(worker = %recipe.name, parent = id, pid = sub.pid(), "sub-worker started");
            let _ = register(daemon, sub, recipe, false, Some(id));
        }
        WorkerEvent::Request { id: request, .. } => {
            // arbord has nothing to answer with; the worker's request times out.
            tracing::warn!(worker = %recipe.name, id, request, "worker sent a request arbord cannot answer");
        }
        WorkerEvent::Ready | WorkerEvent::Exit(_) => {}
    }
}

/// Enters a run's exit in the registry and tells watchers; what kind of
/// ending it was, for the restart policy.
fn record_exit(
    daemon: &Daemon,
    id: u64,
    recipe: &Recipe,
    record: Option<ExitRecord>,
    missed_ready: bool,
) -> Ending {
    if let Some(pool) = &recipe.pool {
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
    ending
}

/// What follows a run's exit by the restart policy: the next run's events,
/// or `None` when the worker is done (exited, stopped or failed).
async fn after_exit(
    daemon: &Arc<Daemon>,
    id: u64,
    recipe: &Recipe,
    state: &mut RestartState,
    ending: Ending,
) -> Option<crate::Events> {
    let mut actions = restart::step(
        state,
        &recipe.restart,
        restart::Event::Exited(ending),
        Instant::now(),
    );
    loop {
        match actions.first().copied() {
            Some(Action::RestartAt(at)) => {
                daemon.set_state(id, "restarting");
                daemon.emit("restarting", id, &recipe.name, |_| {});
                if !backoff(daemon, id, at).await {
                    daemon.set_state(id, "exited");
                    daemon.emit("exit", id, &recipe.name, |_| {});
                    return None;
                }
                actions =
                    restart::step(state, &recipe.restart, restart::Event::Due, Instant::now());
            }
            Some(Action::Start) => match spawn(daemon, recipe).await {
                Ok(worker) if daemon.stop_requested(id) => {
                    // Stopped while this restart was starting.
                    let _ = worker.terminate().await;
                    daemon.set_state(id, "exited");
                    return None;
                }
                Ok(worker) => {
                    restart::step(
                        state,
                        &recipe.restart,
                        restart::Event::Started,
                        Instant::now(),
                    );
                    return restarted(daemon, id, recipe, worker);
                }
                Err(e) => {
                    tracing::error!(worker = %recipe.name, id, "restart failed: {e}");
                    // A start that fails counts as a failed run: back off
                    // and try again, within the intensity limit.
                    actions = restart::step(
                        state,
                        &recipe.restart,
                        restart::Event::Exited(Ending::Failure),
                        Instant::now(),
                    );
                }
            },
            Some(Action::Failed { restarts }) => {
                tracing::error!(worker = %recipe.name, id, restarts, "restarting too often: marked failed");
                daemon.set_state(id, "failed");
                daemon.emit("failed", id, &recipe.name, |_| {});
                notify(&daemon.status_line());
                return None;
            }
            Some(Action::Finished) | None => {
                daemon.set_state(id, "exited");
                daemon.forget_old_exits();
                notify(&daemon.status_line());
                return None;
            }
        }
    }
}

/// Sleeps out a restart's backoff until `at`; `false` when a stop came first.
async fn backoff(daemon: &Daemon, id: u64, at: Instant) -> bool {
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
    !daemon.stop_requested(id)
}

/// Puts a restarted run in place of the last one; its events.
fn restarted(
    daemon: &Daemon,
    id: u64,
    recipe: &Recipe,
    mut worker: Worker,
) -> Option<crate::Events> {
    let events = worker.take_events()?;
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

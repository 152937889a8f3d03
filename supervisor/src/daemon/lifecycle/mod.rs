//! A managed worker's life as a pure state machine:
//! [`Lifecycle::step`]`(input, now)` says what to do, and nothing here
//! touches a process, a clock, the registry or a socket, so every path is
//! unit-tested with time passed in.
//!
//! It folds the decisions a monitor makes: the deadline for a replica's
//! Ready (killed and counted a failure when missed), what kind of ending an
//! exit is ([`Ending`]: an operator's stop, a missed Ready, a close or
//! terminate, a clean or failed exit), and what the restart policy of
//! [`crate::restart`] makes of it: a backoff, a new run, a run started
//! after a stop (ended at once), failed for good, or done. The monitor
//! (`super::monitor`) is the I/O around it: it feeds inputs in and carries
//! effects out.

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use arbor_protocol::control::{EventKind, WorkerState};

use crate::restart::{self, Action, Ending, RestartConfig, RestartState};
use crate::{ExitRecord, Initiator};

/// What happened, as the monitor tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Input {
    /// A run started: the first one, or one [`Effect::Spawn`] asked for.
    Started,
    /// The run sent Ready.
    Ready,
    /// The deadline of [`Effect::ArmReady`] passed.
    ReadyDeadline,
    /// The run ended (`None`: its events ended with no exit seen);
    /// `stop_requested` when an operator or a reload stopped the worker.
    Exited {
        record: Option<ExitRecord>,
        stop_requested: bool,
    },
    /// The backoff of [`Effect::Backoff`] is over, or a stop cut it short.
    BackoffOver { stop_requested: bool },
    /// [`Effect::Spawn`] started a run; `stop_requested` when a stop came
    /// while it started.
    Spawned { stop_requested: bool },
    /// [`Effect::Spawn`] could not start a run.
    SpawnFailed,
}

/// What the monitor is to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Effect {
    /// Feed [`Input::ReadyDeadline`] in at this instant.
    ArmReady(Instant),
    /// Forget the Ready deadline.
    DisarmReady,
    /// Kill the current run (it missed its Ready).
    Terminate,
    /// The run is Ready: running, in its pool, and watchers told.
    MarkReady,
    /// The run is over: out of its pool, watchers told of its exit, the
    /// registry's record of it closed.
    EndRun(Option<ExitRecord>),
    /// The worker's state is this now.
    State(WorkerState),
    /// Tell watchers.
    Emit(EventKind),
    /// Wait until this instant, or a stop, then feed [`Input::BackoffOver`].
    Backoff(Instant),
    /// Start a new run, then feed [`Input::Spawned`] or [`Input::SpawnFailed`].
    Spawn,
    /// Kill the run just spawned: the worker was stopped meanwhile.
    TerminateSpawned,
    /// The run just spawned replaces the last one.
    InstallSpawned,
    /// Keep the registry bounded.
    ForgetOldExits,
    /// Tell systemd the counts.
    NotifyStatus,
    /// The worker is done: the monitor ends.
    Done,
}

/// One managed worker's life across its runs.
#[derive(Debug)]
pub(super) struct Lifecycle {
    restart: RestartState,
    config: RestartConfig,
    /// How long a run has to send Ready, for a pool replica.
    ready_timeout: Option<Duration>,
    /// The current run was killed for missing its Ready.
    missed_ready: bool,
}

impl Lifecycle {
    /// The life of a worker whose first run starts at `now`.
    pub(super) fn new(
        config: RestartConfig,
        ready_timeout: Option<Duration>,
        now: Instant,
    ) -> Self {
        Self {
            restart: RestartState::new(&config, now),
            config,
            ready_timeout,
            missed_ready: false,
        }
    }

    /// Advances by `input` at `now` and says what to do.
    pub(super) fn step(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        match input {
            Input::Started => {
                self.missed_ready = false;
                self.ready_timeout
                    .and_then(|limit| now.checked_add(limit))
                    .map(Effect::ArmReady)
                    .into_iter()
                    .collect()
            }
            Input::Ready => vec![Effect::DisarmReady, Effect::MarkReady],
            Input::ReadyDeadline => {
                self.missed_ready = true;
                vec![Effect::DisarmReady, Effect::Terminate]
            }
            Input::Exited {
                record,
                stop_requested,
            } => {
                let ending = self.ending(record.as_ref(), stop_requested);
                let mut effects = vec![Effect::DisarmReady, Effect::EndRun(record)];
                effects.extend(self.restart(restart::Event::Exited(ending), now));
                effects
            }
            Input::BackoffOver {
                stop_requested: true,
            } => vec![
                Effect::State(WorkerState::Exited),
                Effect::Emit(EventKind::Exit(None)),
                Effect::Done,
            ],
            Input::BackoffOver {
                stop_requested: false,
            } => self.restart(restart::Event::Due, now),
            Input::Spawned {
                stop_requested: true,
            } => vec![
                Effect::TerminateSpawned,
                Effect::State(WorkerState::Exited),
                Effect::Done,
            ],
            Input::Spawned {
                stop_requested: false,
            } => {
                restart::step(
                    &mut self.restart,
                    &self.config,
                    restart::Event::Started,
                    now,
                );
                let mut effects = vec![Effect::InstallSpawned];
                effects.extend(self.step(Input::Started, now));
                effects
            }
            // A start that fails counts as a failed run: back off and try
            // again, within the intensity limit.
            Input::SpawnFailed => self.restart(restart::Event::Exited(Ending::Failure), now),
        }
    }

    /// What kind of ending a run's exit is, for the restart policy.
    fn ending(&self, record: Option<&ExitRecord>, stop_requested: bool) -> Ending {
        match record {
            _ if stop_requested => Ending::Stopped,
            // Killed for not being Ready in time: a failure, restarted by policy.
            _ if self.missed_ready => Ending::Failure,
            Some(ExitRecord {
                initiated_by: Initiator::Close | Initiator::Terminate,
                ..
            }) => Ending::Stopped,
            Some(record) if record.success() => Ending::Clean,
            _ => Ending::Failure,
        }
    }

    /// The restart policy's answer to `event`, as effects.
    fn restart(&mut self, event: restart::Event, now: Instant) -> Vec<Effect> {
        let actions = restart::step(&mut self.restart, &self.config, event, now);
        match actions.first().copied() {
            Some(Action::RestartAt(at)) => vec![
                Effect::State(WorkerState::Restarting),
                Effect::Emit(EventKind::Restarting),
                Effect::Backoff(at),
            ],
            Some(Action::Start) => vec![Effect::Spawn],
            Some(Action::Failed { .. }) => vec![
                Effect::State(WorkerState::Failed),
                Effect::Emit(EventKind::Failed),
                Effect::NotifyStatus,
                Effect::Done,
            ],
            Some(Action::Finished) | None => vec![
                Effect::State(WorkerState::Exited),
                Effect::ForgetOldExits,
                Effect::NotifyStatus,
                Effect::Done,
            ],
        }
    }

    /// Restarts within the intensity window.
    #[cfg(test)]
    pub(super) fn recent_restarts(&self) -> usize {
        self.restart.recent_restarts()
    }
}

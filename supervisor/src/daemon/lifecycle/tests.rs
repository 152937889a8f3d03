//! The lifecycle alone, with time passed in.

use std::time::{Duration, Instant};

use arbor_protocol::control::{EventKind, WorkerState};

use super::{Effect, Input, Lifecycle};
use crate::restart::{RestartConfig, RestartPolicy};
use crate::{ExitRecord, Initiator, ResourceUsage};

fn config(policy: RestartPolicy) -> RestartConfig {
    RestartConfig {
        policy,
        first_delay: Duration::from_millis(100),
        factor: 2.0,
        max_delay: Duration::from_secs(1),
        max_restarts: 2,
        within: Duration::from_secs(10),
    }
}

fn exit(code: Option<i32>, initiated_by: Initiator) -> ExitRecord {
    ExitRecord {
        code,
        signal: None,
        core_dumped: false,
        initiated_by,
        escalated_to: None,
        usage: ResourceUsage::default(),
    }
}

fn exited(code: i32) -> Input {
    Input::Exited {
        record: Some(exit(Some(code), Initiator::Worker)),
        stop_requested: false,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_replica_gets_a_ready_deadline_and_loses_it_at_ready() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(config(RestartPolicy::Always), Some(ms(500)), t0);
    assert_eq!(
        life.step(Input::Started, t0),
        [Effect::ArmReady(t0 + ms(500))]
    );
    assert_eq!(
        life.step(Input::Ready, t0 + ms(10)),
        [Effect::DisarmReady, Effect::MarkReady]
    );
}

#[test]
fn a_worker_with_no_ready_limit_gets_no_deadline() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(config(RestartPolicy::Never), None, t0);
    assert!(life.step(Input::Started, t0).is_empty());
}

#[test]
fn a_missed_ready_kills_the_run_and_counts_as_a_failure_even_on_exit_0() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(config(RestartPolicy::OnFailure), Some(ms(500)), t0);
    life.step(Input::Started, t0);
    assert_eq!(
        life.step(Input::ReadyDeadline, t0 + ms(500)),
        [Effect::DisarmReady, Effect::Terminate]
    );
    // Killed by our SIGKILL (a Terminate): on-failure restarts it anyway.
    let killed = Input::Exited {
        record: Some(exit(None, Initiator::Terminate)),
        stop_requested: false,
    };
    let effects = life.step(killed, t0 + ms(510));
    assert_eq!(
        effects[..2],
        [
            Effect::DisarmReady,
            Effect::EndRun(Some(exit(None, Initiator::Terminate)))
        ]
    );
    assert_eq!(
        effects[2..],
        [
            Effect::State(WorkerState::Restarting),
            Effect::Emit(EventKind::Restarting),
            Effect::Backoff(t0 + ms(610)),
        ]
    );
}

#[test]
fn a_clean_exit_under_on_failure_is_done() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(config(RestartPolicy::OnFailure), None, t0);
    let effects = life.step(exited(0), t0 + ms(5));
    assert_eq!(
        effects[2..],
        [
            Effect::State(WorkerState::Exited),
            Effect::ForgetOldExits,
            Effect::NotifyStatus,
            Effect::Done,
        ]
    );
}

#[test]
fn a_close_or_terminate_is_never_restarted_even_under_always() {
    let t0 = Instant::now();
    for initiator in [Initiator::Close, Initiator::Terminate] {
        let mut life = Lifecycle::new(config(RestartPolicy::Always), None, t0);
        let closed = Input::Exited {
            record: Some(exit(Some(0), initiator)),
            stop_requested: false,
        };
        assert_eq!(life.step(closed, t0).last(), Some(&Effect::Done));
    }
}

#[test]
fn an_exit_after_an_operators_stop_is_done_whatever_its_code() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(config(RestartPolicy::Always), None, t0);
    let stopped = Input::Exited {
        record: Some(exit(Some(1), Initiator::Worker)),
        stop_requested: true,
    };
    assert_eq!(life.step(stopped, t0).last(), Some(&Effect::Done));
}

#[test]
fn a_failure_backs_off_then_spawns_and_the_new_run_is_installed() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(config(RestartPolicy::OnFailure), Some(ms(500)), t0);
    assert_eq!(
        life.step(exited(1), t0).last(),
        Some(&Effect::Backoff(t0 + ms(100)))
    );
    assert_eq!(
        life.step(
            Input::BackoffOver {
                stop_requested: false
            },
            t0 + ms(100)
        ),
        [Effect::Spawn]
    );
    assert_eq!(
        life.step(
            Input::Spawned {
                stop_requested: false
            },
            t0 + ms(120)
        ),
        [Effect::InstallSpawned, Effect::ArmReady(t0 + ms(620))]
    );
    assert_eq!(life.recent_restarts(), 1);
}

#[test]
fn a_stop_during_the_backoff_ends_it_with_one_exit_event() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(config(RestartPolicy::Always), None, t0);
    life.step(exited(1), t0);
    assert_eq!(
        life.step(
            Input::BackoffOver {
                stop_requested: true
            },
            t0 + ms(20)
        ),
        [
            Effect::State(WorkerState::Exited),
            Effect::Emit(EventKind::Exit(None)),
            Effect::Done,
        ]
    );
}

#[test]
fn a_run_that_started_after_a_stop_is_killed_and_the_worker_is_done() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(config(RestartPolicy::Always), None, t0);
    life.step(exited(1), t0);
    life.step(
        Input::BackoffOver {
            stop_requested: false,
        },
        t0 + ms(100),
    );
    assert_eq!(
        life.step(
            Input::Spawned {
                stop_requested: true
            },
            t0 + ms(110)
        ),
        [
            Effect::TerminateSpawned,
            Effect::State(WorkerState::Exited),
            Effect::Done,
        ]
    );
}

#[test]
fn a_spawn_that_fails_counts_as_a_failed_run_and_backs_off_longer() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(config(RestartPolicy::Always), None, t0);
    life.step(exited(1), t0);
    life.step(
        Input::BackoffOver {
            stop_requested: false,
        },
        t0 + ms(100),
    );
    // The second delay is twice the first.
    assert_eq!(
        life.step(Input::SpawnFailed, t0 + ms(100)).last(),
        Some(&Effect::Backoff(t0 + ms(300)))
    );
}

#[test]
fn past_the_intensity_limit_the_worker_is_failed_for_good() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(config(RestartPolicy::Always), None, t0);
    let mut now = t0;
    for _ in 0..2 {
        life.step(exited(1), now);
        now += ms(400);
        life.step(
            Input::BackoffOver {
                stop_requested: false,
            },
            now,
        );
        life.step(
            Input::Spawned {
                stop_requested: false,
            },
            now,
        );
    }
    assert_eq!(
        life.step(exited(1), now),
        [
            Effect::DisarmReady,
            Effect::EndRun(Some(exit(Some(1), Initiator::Worker))),
            Effect::State(WorkerState::Failed),
            Effect::Emit(EventKind::Failed),
            Effect::NotifyStatus,
            Effect::Done,
        ]
    );
}

#[test]
fn events_that_ended_with_no_exit_seen_are_a_failure() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(config(RestartPolicy::OnFailure), None, t0);
    let lost = Input::Exited {
        record: None,
        stop_requested: false,
    };
    assert_eq!(
        life.step(lost, t0).last(),
        Some(&Effect::Backoff(t0 + ms(100)))
    );
}

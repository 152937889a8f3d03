//! Restart decisions as a pure state machine: `step(state, event, now)`
//! returns what to do, and nothing here touches a process or a clock, so
//! every policy is unit-tested with time passed in.
//!
//! A policy says when a worker that exited is started again: `never`,
//! `on-failure` (a non-zero code or a signal, unless the supervisor itself
//! stopped it) or `always`. Restarts wait an exponential backoff (first
//! delay, factor, cap), which resets once the worker has stayed up for the
//! cap. An intensity limit, as OTP supervisors have, bounds the restarts:
//! more than `max_restarts` within `within` and the worker is marked failed
//! and reported, instead of looping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When a worker is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never: an exit is final.
    #[default]
    Never,
    /// After an exit with a non-zero code or by a signal the supervisor did not send.
    OnFailure,
    /// After any exit the supervisor did not ask for.
    Always,
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(Self::Never),
            "on-failure" => Ok(Self::OnFailure),
            "always" => Ok(Self::Always),
            other => Err(format!(
                "unknown restart policy {other:?} (never, on-failure or always)"
            )),
        }
    }
}

/// Restart policy, backoff and intensity limit of one worker or pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartConfig {
    /// When to restart.
    pub policy: RestartPolicy,
    /// Delay before the first restart.
    pub first_delay: Duration,
    /// Each further restart waits this many times longer...
    pub factor: f64,
    /// ...up to this.
    pub max_delay: Duration,
    /// At most this many restarts...
    pub max_restarts: u32,
    /// ...within this window; one more and the worker is marked failed.
    pub within: Duration,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::Never,
            first_delay: Duration::from_millis(100),
            factor: 2.0,
            max_delay: Duration::from_secs(30),
            max_restarts: 5,
            within: Duration::from_secs(60),
        }
    }
}

/// How a worker ended, as far as restarting is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Exit code 0.
    Clean,
    /// A non-zero code, or a signal nobody in the supervisor sent.
    Failure,
    /// The supervisor (or an operator through it) closed or terminated it.
    Stopped,
}

/// What happened to the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The worker process started.
    Started,
    /// The worker exited.
    Exited(Ending),
    /// A scheduled restart is due.
    Due,
}

/// What the caller should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Call back with [`Event::Due`] at this instant, then start the worker.
    RestartAt(Instant),
    /// Start the worker now.
    Start,
    /// The worker is done for good; report it as exited.
    Finished,
    /// Too many restarts: report the worker as failed and stop trying.
    Failed {
        /// Restarts within the window when the limit was hit.
        restarts: u32,
    },
}

/// Where a worker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Running since the given instant.
    Running(Instant),
    /// Waiting for a restart due at the given instant.
    Waiting(Instant),
    /// Exited and not coming back.
    Finished,
    /// Gave up after too many restarts.
    Failed,
}

/// The restart state of one worker.
#[derive(Debug, Clone)]
pub struct RestartState {
    phase: Phase,
    /// Instants of recent restarts, for the intensity limit.
    restarts: VecDeque<Instant>,
    /// Delay the next restart will wait.
    next_delay: Duration,
}

impl RestartState {
    /// The state of a worker that has just been started.
    pub fn new(config: &RestartConfig, now: Instant) -> Self {
        Self {
            phase: Phase::Running(now),
            restarts: VecDeque::new(),
            next_delay: config.first_delay,
        }
    }

    /// Where the worker stands.
    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Restarts counted in the current window.
    #[cfg(test)]
    pub fn recent_restarts(&self) -> usize {
        self.restarts.len()
    }
}

/// Advances `state` by `event` at `now` and says what to do.
pub fn step(
    state: &mut RestartState,
    config: &RestartConfig,
    event: Event,
    now: Instant,
) -> Vec<Action> {
    match (state.phase, event) {
        (Phase::Running(_) | Phase::Waiting(_), Event::Started) => {
            state.phase = Phase::Running(now);
            vec![]
        }
        (Phase::Running(since), Event::Exited(ending)) => {
            // A worker that stayed up for the longest delay earned a fresh backoff.
            if now.saturating_duration_since(since) >= config.max_delay {
                state.next_delay = config.first_delay;
            }
            let restart = match (config.policy, ending) {
                (_, Ending::Stopped) | (RestartPolicy::Never, _) => false,
                (RestartPolicy::OnFailure, Ending::Clean) => false,
                (RestartPolicy::OnFailure, Ending::Failure) | (RestartPolicy::Always, _) => true,
            };
            if !restart {
                state.phase = Phase::Finished;
                return vec![Action::Finished];
            }
            while state
                .restarts
                .front()
                .is_some_and(|&at| now.saturating_duration_since(at) >= config.within)
            {
                state.restarts.pop_front();
            }
            if state.restarts.len() >= config.max_restarts as usize {
                state.phase = Phase::Failed;
                return vec![Action::Failed {
                    restarts: state.restarts.len() as u32,
                }];
            }
            state.restarts.push_back(now);
            let delay = state.next_delay;
            let grown = Duration::try_from_secs_f64(delay.as_secs_f64() * config.factor.max(1.0));
            state.next_delay = grown.map_or(config.max_delay, |grown| grown.min(config.max_delay));
            match now.checked_add(delay) {
                _ if delay.is_zero() => {
                    state.phase = Phase::Running(now);
                    vec![Action::Start]
                }
                Some(at) => {
                    state.phase = Phase::Waiting(at);
                    vec![Action::RestartAt(at)]
                }
                // A delay past the end of time: never restart.
                None => {
                    state.phase = Phase::Finished;
                    vec![Action::Finished]
                }
            }
        }
        (Phase::Waiting(at), Event::Due) if now >= at => {
            state.phase = Phase::Running(now);
            vec![Action::Start]
        }
        (Phase::Waiting(at), Event::Due) => vec![Action::RestartAt(at)],
        // Anything else (an exit reported twice, a due timer after a stop)
        // changes nothing.
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(policy: RestartPolicy) -> RestartConfig {
        RestartConfig {
            policy,
            first_delay: Duration::from_millis(100),
            factor: 2.0,
            max_delay: Duration::from_secs(1),
            max_restarts: 3,
            within: Duration::from_secs(10),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn never_finishes_on_any_exit() {
        let t0 = Instant::now();
        let c = config(RestartPolicy::Never);
        for ending in [Ending::Clean, Ending::Failure, Ending::Stopped] {
            let mut s = RestartState::new(&c, t0);
            assert_eq!(
                step(&mut s, &c, Event::Exited(ending), t0),
                [Action::Finished]
            );
            assert_eq!(s.phase(), Phase::Finished);
        }
    }

    #[test]
    fn on_failure_restarts_failures_only() {
        let t0 = Instant::now();
        let c = config(RestartPolicy::OnFailure);
        let mut s = RestartState::new(&c, t0);
        assert_eq!(
            step(&mut s, &c, Event::Exited(Ending::Failure), t0),
            [Action::RestartAt(t0 + ms(100))]
        );
        let mut s = RestartState::new(&c, t0);
        assert_eq!(
            step(&mut s, &c, Event::Exited(Ending::Clean), t0),
            [Action::Finished]
        );
    }

    #[test]
    fn always_restarts_clean_exits_but_not_stops() {
        let t0 = Instant::now();
        let c = config(RestartPolicy::Always);
        let mut s = RestartState::new(&c, t0);
        assert_eq!(
            step(&mut s, &c, Event::Exited(Ending::Clean), t0),
            [Action::RestartAt(t0 + ms(100))]
        );
        let mut s = RestartState::new(&c, t0);
        assert_eq!(
            step(&mut s, &c, Event::Exited(Ending::Stopped), t0),
            [Action::Finished]
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_due_starts() {
        let t0 = Instant::now();
        let c = RestartConfig {
            max_restarts: 100,
            ..config(RestartPolicy::Always)
        };
        let mut s = RestartState::new(&c, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..6 {
            let [Action::RestartAt(at)] = step(&mut s, &c, Event::Exited(Ending::Failure), now)[..]
            else {
                panic!("expected a restart")
            };
            delays.push(at - now);
            // Too early: the timer is re-armed, nothing starts.
            assert_eq!(
                step(&mut s, &c, Event::Due, at - ms(1)),
                [Action::RestartAt(at)]
            );
            assert_eq!(step(&mut s, &c, Event::Due, at), [Action::Start]);
            step(&mut s, &c, Event::Started, at);
            now = at + ms(10);
        }
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
    }

    #[test]
    fn backoff_resets_after_a_long_enough_run() {
        let t0 = Instant::now();
        let c = config(RestartPolicy::Always);
        let mut s = RestartState::new(&c, t0);
        step(&mut s, &c, Event::Exited(Ending::Failure), t0);
        step(&mut s, &c, Event::Due, t0 + ms(100));
        // Up for longer than the cap: the next delay is the first one again.
        let now = t0 + ms(100) + Duration::from_secs(2);
        assert_eq!(
            step(&mut s, &c, Event::Exited(Ending::Failure), now),
            [Action::RestartAt(now + ms(100))]
        );
    }

    #[test]
    fn the_intensity_limit_marks_the_worker_failed() {
        let t0 = Instant::now();
        let c = config(RestartPolicy::Always);
        let mut s = RestartState::new(&c, t0);
        let mut now = t0;
        for _ in 0..3 {
            let [Action::RestartAt(at)] = step(&mut s, &c, Event::Exited(Ending::Failure), now)[..]
            else {
                panic!("expected a restart")
            };
            step(&mut s, &c, Event::Due, at);
            now = at;
        }
        assert_eq!(
            step(&mut s, &c, Event::Exited(Ending::Failure), now),
            [Action::Failed { restarts: 3 }]
        );
        assert_eq!(s.phase(), Phase::Failed);
        // Nothing brings a failed worker back.
        assert_eq!(
            step(&mut s, &c, Event::Due, now + Duration::from_secs(100)),
            []
        );
    }

    #[test]
    fn restarts_outside_the_window_do_not_count() {
        let t0 = Instant::now();
        let c = config(RestartPolicy::Always);
        let mut s = RestartState::new(&c, t0);
        let mut now = t0;
        for _ in 0..10 {
            let actions = step(&mut s, &c, Event::Exited(Ending::Failure), now);
            let [Action::RestartAt(at)] = actions[..] else {
                panic!("gave up: {actions:?}")
            };
            step(&mut s, &c, Event::Due, at);
            now = at + Duration::from_secs(4); // three restarts never fit in 10 s
        }
        assert!(s.recent_restarts() <= 3);
    }

    #[test]
    fn policies_parse_from_their_config_names() {
        assert_eq!(
            "on-failure".parse::<RestartPolicy>(),
            Ok(RestartPolicy::OnFailure)
        );
        assert!("sometimes"
            .parse::<RestartPolicy>()
            .unwrap_err()
            .contains("sometimes"));
    }
}

//! A close's escalation as a pure state machine: `step(state, input, now)`
//! returns what to do, and nothing here touches a process, a socket or a
//! clock, so every path is unit-tested with time passed in. The worker's
//! driver (see [`crate::worker`]) does the I/O: it sends the frames and the
//! signals the effects name and wakes at the deadline they set.
//!
//! A close is three steps, each after the grace of the one before:
//!
//! 1. a Close frame, which runs the worker's onclose: on its own channel
//!    (after every message posted before the close), or, for a sub-worker
//!    whose channel is its parent's, as a CloseChild frame to the parent;
//!    a worker nobody can send a Close frame to (it does not speak the
//!    protocol, or its channel is closed) skips this step;
//! 2. SIGTERM;
//! 3. SIGKILL.
//!
//! A second close may only hurry the first one along, never delay it. A
//! terminate (SIGKILL at once) wins over a close under way and ends it;
//! nothing comes after a terminate. What was asked first, and the last
//! signal the escalation sent, go into the worker's
//! [`ExitRecord`](crate::ExitRecord).

use std::time::{Duration, Instant};

use crate::exit::Initiator;
use crate::signal::Signal;

/// The longest grace a close step gets (a day; a peer may ask for more,
/// and years would overflow the clock).
pub(crate) const MAX_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// Who can deliver a Close frame to the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Its own channel: the writer sends Close after everything posted before it.
    Channel,
    /// A sub-worker's channel is its parent's: the parent is sent CloseChild.
    Parent,
    /// Nobody reads a Close frame: no protocol, or the channel is closed.
    Nobody,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// Close with this grace per step.
    Close { grace: Duration, delivery: Delivery },
    /// Kill at once (also: nobody holds the worker's handle any more).
    Terminate,
    /// The caller sent the worker a signal of its own.
    Signalled,
    /// The deadline of the last [`Effect::Deadline`] came.
    Deadline,
}

/// What the driver does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Send a Close frame on the worker's own channel.
    SendClose,
    /// Send CloseChild (with the worker's id) to its parent.
    SendCloseChild,
    /// Send this signal to the worker's process group and the worker (and,
    /// for SIGKILL, kill its cgroup).
    Kill(Signal),
    /// Come back with [`Input::Deadline`] at this instant; `None`: no
    /// deadline any more.
    Deadline(Option<Instant>),
}

/// The next step of a close under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Next {
    at: Instant,
    signal: Signal,
    /// The wait before the step after it.
    grace: Duration,
}

/// One worker's escalation so far.
#[derive(Debug, Default)]
pub(crate) struct Escalation {
    asked: Option<Initiator>,
    next: Option<Next>,
    escalated_to: Option<Signal>,
}

impl Escalation {
    /// What the supervisor asked first (close, terminate or a signal), if anything.
    pub(crate) fn asked(&self) -> Option<Initiator> {
        self.asked
    }

    /// The last signal a close's escalation sent.
    pub(crate) fn escalated_to(&self) -> Option<Signal> {
        self.escalated_to
    }
}

/// Applies `input`, which happened at `now`, to `state`; returns what to do.
pub(crate) fn step(state: &mut Escalation, input: Input, now: Instant) -> Vec<Effect> {
    match input {
        Input::Close { grace, delivery } => close(state, grace.min(MAX_GRACE), delivery, now),
        Input::Terminate => {
            if state.asked == Some(Initiator::Terminate) {
                return vec![];
            }
            state.asked = Some(Initiator::Terminate);
            let mut effects = vec![Effect::Kill(Signal::KILL)];
            if state.next.take().is_some() {
                effects.push(Effect::Deadline(None));
            }
            effects
        }
        Input::Signalled => {
            if state.asked.is_none() {
                state.asked = Some(Initiator::Signal);
            }
            vec![]
        }
        Input::Deadline => match state.next {
            Some(next) if now >= next.at => {
                state.escalated_to = Some(next.signal);
                state.next = (next.signal == Signal::TERM).then_some(Next {
                    at: now + next.grace,
                    signal: Signal::KILL,
                    grace: next.grace,
                });
                vec![
                    Effect::Kill(next.signal),
                    Effect::Deadline(state.next.map(|next| next.at)),
                ]
            }
            // Early, or nothing under way: nothing changes.
            _ => vec![],
        },
    }
}

fn close(state: &mut Escalation, grace: Duration, delivery: Delivery, now: Instant) -> Vec<Effect> {
    match state.asked {
        Some(Initiator::Terminate) => vec![],
        // A second close may only hurry the first one along: the next step
        // comes no later than the new grace allows.
        Some(Initiator::Close) => match state.next {
            Some(next) if now + grace < next.at => {
                let at = now + grace;
                state.next = Some(Next {
                    at,
                    signal: next.signal,
                    grace: next.grace.min(grace),
                });
                vec![Effect::Deadline(Some(at))]
            }
            _ => vec![],
        },
        // Nothing asked yet, or only a signal sent: the first close.
        _ => {
            state.asked = Some(Initiator::Close);
            let (frame, at) = match delivery {
                Delivery::Channel => (Some(Effect::SendClose), now + grace),
                Delivery::Parent => (Some(Effect::SendCloseChild), now + grace),
                // Nobody reads a Close frame: straight to SIGTERM.
                Delivery::Nobody => (None, now),
            };
            state.next = Some(Next {
                at,
                signal: Signal::TERM,
                grace,
            });
            frame
                .into_iter()
                .chain([Effect::Deadline(Some(at))])
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn close(grace: Duration, delivery: Delivery) -> Input {
        Input::Close { grace, delivery }
    }

    #[test]
    fn a_close_sends_close_then_sigterm_then_sigkill_each_a_grace_apart() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        assert_eq!(
            step(&mut s, close(secs(5), Delivery::Channel), t0),
            [Effect::SendClose, Effect::Deadline(Some(t0 + secs(5)))]
        );
        assert_eq!(s.asked(), Some(Initiator::Close));
        assert_eq!(s.escalated_to(), None);
        assert_eq!(
            step(&mut s, Input::Deadline, t0 + secs(5)),
            [
                Effect::Kill(Signal::TERM),
                Effect::Deadline(Some(t0 + secs(10)))
            ]
        );
        assert_eq!(s.escalated_to(), Some(Signal::TERM));
        assert_eq!(
            step(&mut s, Input::Deadline, t0 + secs(10)),
            [Effect::Kill(Signal::KILL), Effect::Deadline(None)]
        );
        assert_eq!(s.escalated_to(), Some(Signal::KILL));
        assert_eq!(s.asked(), Some(Initiator::Close));
        // Nothing comes after SIGKILL.
        assert_eq!(step(&mut s, Input::Deadline, t0 + secs(60)), []);
    }

    #[test]
    fn the_next_step_counts_its_grace_from_when_the_last_one_was_taken() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        step(&mut s, close(secs(5), Delivery::Channel), t0);
        // The driver woke late: SIGKILL is a full grace after SIGTERM.
        assert_eq!(
            step(&mut s, Input::Deadline, t0 + secs(7)),
            [
                Effect::Kill(Signal::TERM),
                Effect::Deadline(Some(t0 + secs(12)))
            ]
        );
    }

    #[test]
    fn a_sub_worker_is_sent_its_close_through_its_parent() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        assert_eq!(
            step(&mut s, close(secs(2), Delivery::Parent), t0),
            [Effect::SendCloseChild, Effect::Deadline(Some(t0 + secs(2)))]
        );
        assert_eq!(
            step(&mut s, Input::Deadline, t0 + secs(2)),
            [
                Effect::Kill(Signal::TERM),
                Effect::Deadline(Some(t0 + secs(4)))
            ]
        );
    }

    #[test]
    fn a_worker_nobody_can_send_close_to_gets_sigterm_at_once() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        // No frame; the deadline is now, and SIGKILL still waits a grace.
        assert_eq!(
            step(&mut s, close(secs(5), Delivery::Nobody), t0),
            [Effect::Deadline(Some(t0))]
        );
        assert_eq!(
            step(&mut s, Input::Deadline, t0),
            [
                Effect::Kill(Signal::TERM),
                Effect::Deadline(Some(t0 + secs(5)))
            ]
        );
    }

    #[test]
    fn a_deadline_that_comes_early_changes_nothing() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        step(&mut s, close(secs(5), Delivery::Channel), t0);
        assert_eq!(step(&mut s, Input::Deadline, t0 + secs(4)), []);
        assert_eq!(s.escalated_to(), None);
        assert_eq!(
            step(&mut s, Input::Deadline, t0 + secs(5)),
            [
                Effect::Kill(Signal::TERM),
                Effect::Deadline(Some(t0 + secs(10)))
            ]
        );
    }

    #[test]
    fn a_deadline_with_no_close_under_way_does_nothing() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        assert_eq!(step(&mut s, Input::Deadline, t0), []);
        assert_eq!(s.asked(), None);
        assert_eq!(s.escalated_to(), None);
    }

    #[test]
    fn a_second_close_with_a_shorter_grace_hurries_the_first() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        step(&mut s, close(secs(10), Delivery::Channel), t0);
        // No second Close frame: only the deadline moves, and the shorter
        // grace holds for the steps after it too.
        assert_eq!(
            step(&mut s, close(secs(2), Delivery::Channel), t0 + secs(1)),
            [Effect::Deadline(Some(t0 + secs(3)))]
        );
        assert_eq!(
            step(&mut s, Input::Deadline, t0 + secs(3)),
            [
                Effect::Kill(Signal::TERM),
                Effect::Deadline(Some(t0 + secs(5)))
            ]
        );
    }

    #[test]
    fn a_second_close_never_delays_the_first() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        step(&mut s, close(secs(5), Delivery::Channel), t0);
        assert_eq!(
            step(&mut s, close(secs(60), Delivery::Channel), t0 + secs(1)),
            []
        );
        // Ending at the same instant is not sooner either.
        assert_eq!(
            step(&mut s, close(secs(4), Delivery::Channel), t0 + secs(1)),
            []
        );
        assert_eq!(
            step(&mut s, Input::Deadline, t0 + secs(5)),
            [
                Effect::Kill(Signal::TERM),
                Effect::Deadline(Some(t0 + secs(10)))
            ]
        );
    }

    #[test]
    fn a_second_close_after_sigterm_hurries_sigkill() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        step(&mut s, close(secs(5), Delivery::Channel), t0);
        step(&mut s, Input::Deadline, t0 + secs(5));
        assert_eq!(
            step(&mut s, close(secs(1), Delivery::Channel), t0 + secs(6)),
            [Effect::Deadline(Some(t0 + secs(7)))]
        );
        assert_eq!(
            step(&mut s, Input::Deadline, t0 + secs(7)),
            [Effect::Kill(Signal::KILL), Effect::Deadline(None)]
        );
    }

    #[test]
    fn a_second_close_after_sigkill_changes_nothing() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        step(&mut s, close(secs(5), Delivery::Channel), t0);
        step(&mut s, Input::Deadline, t0 + secs(5));
        step(&mut s, Input::Deadline, t0 + secs(10));
        assert_eq!(
            step(&mut s, close(secs(1), Delivery::Channel), t0 + secs(11)),
            []
        );
        assert_eq!(s.escalated_to(), Some(Signal::KILL));
    }

    #[test]
    fn terminate_kills_at_once_and_only_once() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        assert_eq!(
            step(&mut s, Input::Terminate, t0),
            [Effect::Kill(Signal::KILL)]
        );
        assert_eq!(s.asked(), Some(Initiator::Terminate));
        // A terminate is not an escalation.
        assert_eq!(s.escalated_to(), None);
        assert_eq!(step(&mut s, Input::Terminate, t0 + secs(1)), []);
    }

    #[test]
    fn terminate_after_close_wins_and_ends_the_escalation() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        step(&mut s, close(secs(5), Delivery::Channel), t0);
        assert_eq!(
            step(&mut s, Input::Terminate, t0 + secs(1)),
            [Effect::Kill(Signal::KILL), Effect::Deadline(None)]
        );
        assert_eq!(s.asked(), Some(Initiator::Terminate));
        assert_eq!(step(&mut s, Input::Deadline, t0 + secs(5)), []);
        assert_eq!(s.escalated_to(), None);
    }

    #[test]
    fn terminate_after_sigterm_keeps_the_sigterm_on_record() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        step(&mut s, close(secs(5), Delivery::Channel), t0);
        step(&mut s, Input::Deadline, t0 + secs(5));
        assert_eq!(
            step(&mut s, Input::Terminate, t0 + secs(6)),
            [Effect::Kill(Signal::KILL), Effect::Deadline(None)]
        );
        assert_eq!(s.asked(), Some(Initiator::Terminate));
        assert_eq!(s.escalated_to(), Some(Signal::TERM));
    }

    #[test]
    fn a_close_after_terminate_changes_nothing() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        step(&mut s, Input::Terminate, t0);
        assert_eq!(
            step(&mut s, close(secs(5), Delivery::Channel), t0 + secs(1)),
            []
        );
        assert_eq!(s.asked(), Some(Initiator::Terminate));
    }

    #[test]
    fn a_grace_longer_than_a_day_is_cut_to_a_day() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        let years = secs(100 * 365 * 24 * 60 * 60);
        assert_eq!(
            step(&mut s, close(years, Delivery::Channel), t0),
            [Effect::SendClose, Effect::Deadline(Some(t0 + MAX_GRACE))]
        );
        assert_eq!(
            step(&mut s, Input::Deadline, t0 + MAX_GRACE),
            [
                Effect::Kill(Signal::TERM),
                Effect::Deadline(Some(t0 + MAX_GRACE + MAX_GRACE))
            ]
        );
    }

    #[test]
    fn a_signal_is_on_record_only_when_nothing_else_was_asked() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        assert_eq!(step(&mut s, Input::Signalled, t0), []);
        assert_eq!(s.asked(), Some(Initiator::Signal));

        let mut s = Escalation::default();
        step(&mut s, close(secs(5), Delivery::Channel), t0);
        assert_eq!(step(&mut s, Input::Signalled, t0 + secs(1)), []);
        assert_eq!(s.asked(), Some(Initiator::Close));
    }

    #[test]
    fn a_close_after_a_signal_is_the_first_close() {
        let t0 = Instant::now();
        let mut s = Escalation::default();
        step(&mut s, Input::Signalled, t0);
        assert_eq!(
            step(&mut s, close(secs(5), Delivery::Channel), t0 + secs(1)),
            [Effect::SendClose, Effect::Deadline(Some(t0 + secs(6)))]
        );
        assert_eq!(s.asked(), Some(Initiator::Close));
    }
}

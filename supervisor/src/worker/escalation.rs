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
mod tests;

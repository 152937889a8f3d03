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

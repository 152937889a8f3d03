//! Freezes of the whole machine, as the soak itself sees them.
//!
//! On a shared virtual machine every process can stop for tens of seconds
//! at once (the kernel here logged workqueue lockups, and two soaks' arbord
//! logs went silent at the same instants for the same 10–22 s). A bound on
//! arbord's answers must not count that time against arbord: a thread
//! that sleeps [`TICK`] at a time records each wake that came more than
//! [`LATE`] late, and a wait's time **awake** is its time minus the
//! freezes inside it. Every bound in the soak is on time awake; the report
//! lists the freezes, so a run says how much of it the machine was gone.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the watching thread sleeps at a time.
const TICK: Duration = Duration::from_millis(50);
/// A wake this late (beyond its tick) is a freeze.
const LATE: Duration = Duration::from_millis(500);

/// Each freeze: when it ended, and how long it lasted.
static FREEZES: Mutex<Vec<(Instant, Duration)>> = Mutex::new(Vec::new());
static WATCHING: OnceLock<()> = OnceLock::new();

/// Starts the watching thread (once per process).
pub fn watch() {
    WATCHING.get_or_init(|| {
        std::thread::Builder::new()
            .name("soak-freezes".into())
            .spawn(|| loop {
                let slept = Instant::now();
                std::thread::sleep(TICK);
                let late = slept.elapsed().saturating_sub(TICK);
                if late > LATE {
                    freezes().push((Instant::now(), late));
                }
            })
            .expect("the freeze watcher's thread");
    });
}

fn freezes() -> std::sync::MutexGuard<'static, Vec<(Instant, Duration)>> {
    FREEZES.lock().unwrap_or_else(|p| p.into_inner())
}

/// How much of the time since `began` the machine was frozen.
pub fn frozen_since(began: Instant) -> Duration {
    frozen_between(began, Instant::now())
}

/// How much of the time from `from` to `to` the machine was frozen.
pub fn frozen_between(from: Instant, to: Instant) -> Duration {
    freezes()
        .iter()
        .map(|(ended, lasted)| {
            let start = ended.checked_sub(*lasted).unwrap_or(*ended).max(from);
            (*ended).min(to).saturating_duration_since(start)
        })
        .sum()
}

/// The time since `began` that the machine was not frozen.
pub fn awake_since(began: Instant) -> Duration {
    began.elapsed().saturating_sub(frozen_since(began))
}

/// The freezes so far: how many, the longest, and their total.
pub fn summary() -> (usize, Duration, Duration) {
    let all = freezes();
    let longest = all.iter().map(|f| f.1).max().unwrap_or_default();
    (all.len(), longest, all.iter().map(|f| f.1).sum())
}

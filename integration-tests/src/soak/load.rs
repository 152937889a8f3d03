//! Pools under HTTP load for the whole soak: one pool per socket mode,
//! each with keep-alive clients sending requests back to back. Every failed
//! request is kept with its time and reason; at the end each must be
//! explained by an operation: a SIGKILL of one of that pool's replicas,
//! between the kill and shortly after that replica was gone (each of the
//! pool's clients may lose the one request it had there). Any other
//! failure breaks the soak.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::freezes;
use crate::http::{free_port, Client, Target};

/// The socket modes, one pool each.
pub const MODES: [&str; 3] = ["shared", "reuseport", "handoff"];
/// Keep-alive clients per pool.
const CLIENTS: usize = 2;
/// How long after a SIGKILLed replica is gone a failure may still be its
/// doing: the clients send back to back, so a killed replica's requests
/// fail at once; the margin is for a client thread slow to run on a busy
/// machine. Counted from the replica's death, not from the kill: a process
/// dies of SIGKILL only once it leaves an uninterruptible wait, which on
/// this loaded machine took over 3 s once (the seed-2 break at a2d3087).
const KILL_REACH: Duration = Duration::from_secs(3);
/// The longest the soak watches a killed replica for its death.
const DEATH_WATCH: Duration = Duration::from_secs(60);

/// A replica's SIGKILL: when it was sent, and when the replica was seen
/// gone (none while it was not yet, or if it was not within DEATH_WATCH).
#[derive(Clone)]
struct Kill {
    sent: Instant,
    gone: Arc<Mutex<Option<Instant>>>,
}

impl Kill {
    /// Watches `pid` (on a thread of its own) from now until it is gone.
    fn watch(pid: u32) -> Self {
        let kill = Kill {
            sent: Instant::now(),
            gone: Arc::default(),
        };
        let gone = Arc::clone(&kill.gone);
        std::thread::spawn(move || {
            let deadline = Instant::now() + DEATH_WATCH;
            while Instant::now() < deadline {
                if !crate::is_alive(pid) {
                    *gone.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        kill
    }

    /// Whether a failure at `at` may be this kill's doing: after it was
    /// sent, and at most KILL_REACH (awake) after the replica was gone.
    fn reaches(&self, at: Instant) -> bool {
        let gone = self
            .gone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(self.sent + DEATH_WATCH);
        self.sent <= at
            && (at <= gone
                || at.duration_since(gone) - freezes::frozen_between(gone, at) <= KILL_REACH)
    }
}

/// One pool under load.
struct Loaded {
    name: String,
    port: u16,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<(Instant, String)>>>,
    kills: Vec<Kill>,
}

/// Every pool's load.
pub struct Load {
    pools: Vec<Loaded>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// What the load saw, for the report.
#[derive(Debug, Default)]
pub struct Verdict {
    pub ok: u64,
    /// Failed requests, each with the kill that explains it.
    pub explained: Vec<String>,
}

impl Load {
    /// A port for each mode's pool (load starts with [`Load::start`]).
    pub fn new() -> Self {
        let pools = MODES
            .iter()
            .map(|mode| Loaded {
                name: format!("web-{mode}"),
                port: free_port(),
                ok: Arc::default(),
                failures: Arc::default(),
                kills: Vec::new(),
            })
            .collect();
        Self {
            pools,
            stop: Arc::default(),
            threads: Vec::new(),
        }
    }

    /// The pools' configuration: `program` replicas, two each.
    pub fn config(&self, program: &str) -> String {
        self.pools
            .iter()
            .zip(MODES)
            .map(|(pool, mode)| {
                format!(
                    "[[pool]]\nname = {:?}\nprogram = {program:?}\nreplicas = 2\nrestart = \"on-failure\"\nclose_grace = \"5s\"\nready_timeout = \"30s\"\n\n[[pool.socket]]\nname = \"{}-socket\"\nlisten = \"127.0.0.1:{}\"\nmode = {mode:?}\n\n",
                    pool.name, pool.name, pool.port
                )
            })
            .collect()
    }

    /// The pools' names.
    pub fn names(&self) -> Vec<String> {
        self.pools.iter().map(|p| p.name.clone()).collect()
    }

    /// Starts every pool's clients.
    pub fn start(&mut self) {
        for pool in &self.pools {
            let target = Target::Tcp(([127, 0, 0, 1], pool.port).into());
            for _ in 0..CLIENTS {
                let (stop, ok, failures) = (
                    Arc::clone(&self.stop),
                    Arc::clone(&pool.ok),
                    Arc::clone(&pool.failures),
                );
                let target = target.clone();
                self.threads.push(std::thread::spawn(move || {
                    let mut client = Client::new(target);
                    while !stop.load(Ordering::Relaxed) {
                        match client.get() {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(reason) => failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((Instant::now(), reason)),
                        }
                    }
                }));
            }
        }
    }

    /// The soak is about to SIGKILL `pid`, a replica of `pool`.
    pub fn killing(&mut self, pool: &str, pid: u32) {
        if let Some(loaded) = self.pools.iter_mut().find(|p| p.name == pool) {
            loaded.kills.push(Kill::watch(pid));
        }
    }

    /// Stops the clients and explains every failure, or names the first
    /// that nothing explains.
    pub fn stop(mut self, started: Instant) -> Result<Verdict, String> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread
                .join()
                .map_err(|_| "a load client panicked".to_string())?;
        }
        let mut verdict = Verdict::default();
        for pool in &self.pools {
            verdict.ok += pool.ok.load(Ordering::Relaxed);
            let mut failures = pool
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            failures.sort_by_key(|f| f.0);
            // Each kill explains at most one failure per client.
            let mut credit: Vec<(&Kill, usize)> = pool.kills.iter().map(|k| (k, CLIENTS)).collect();
            for (at, reason) in failures {
                let since = |t: Instant| format!("{:.3}s", t.duration_since(started).as_secs_f64());
                // The latest kill before it that has credit left.
                let Some(kill) = credit
                    .iter_mut()
                    .rev()
                    .find(|(k, left)| *left > 0 && k.reaches(at))
                else {
                    let kills: Vec<String> = pool
                        .kills
                        .iter()
                        .map(|k| {
                            let gone = *k.gone.lock().unwrap_or_else(|p| p.into_inner());
                            let gone = gone.map_or("not seen gone".into(), |g| {
                                format!("gone at {}", since(g))
                            });
                            format!("{} ({gone})", since(k.sent))
                        })
                        .collect();
                    return Err(format!(
                        "{}: a request failed at {} with no operation to explain it: {reason} (replicas SIGKILLed at {kills:?})",
                        pool.name,
                        since(at)
                    ));
                };
                kill.1 -= 1;
                verdict.explained.push(format!(
                    "{} at {}: {reason} (replica SIGKILLed at {})",
                    pool.name,
                    since(at),
                    since(kill.0.sent)
                ));
            }
        }
        Ok(verdict)
    }
}

//! Every exit reported exactly once, with its exact (code, signal): a
//! watcher on arbord's typed event stream for the whole run. Per worker,
//! runs and exits must alternate (a `spawned`, then one `exit` with a
//! process record); after arbord's shutdown every run has its exit. Where
//! the soak alone decided how a never-restarted worker ends (SIGKILL, a
//! message that makes it exit or panic, a close), that exit must be the
//! one reported.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arbor_protocol::control::{ControlRequest, ControlResponse, Event, EventKind, Exit};

use super::control::{answer_on, ask_on, connect};

/// How the soak expects a worker's one run to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Exits with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// One worker's runs as the stream told them.
#[derive(Debug, Default)]
struct Runs {
    name: String,
    running: bool,
    runs: u64,
    exits: Vec<Exit>,
}

#[derive(Debug, Default)]
struct Book {
    /// The highest worker id when the watch began: a worker up to it may
    /// have started its first run before (its `spawned` unseen).
    before: u64,
    workers: BTreeMap<u64, Runs>,
    violations: Vec<String>,
    events: u64,
}

impl Book {
    fn take(&mut self, event: Event) {
        self.events += 1;
        let runs = self.workers.entry(event.worker).or_default();
        runs.name = event.name.clone();
        let who = format!("worker {} ({})", event.worker, event.name);
        match event.kind {
            EventKind::Spawned if runs.running => self
                .violations
                .push(format!("{who}: spawned again before its exit was reported")),
            EventKind::Spawned => {
                runs.running = true;
                runs.runs += 1;
            }
            EventKind::Exit(Some(exit)) if runs.runs == 0 && event.worker <= self.before => {
                runs.runs = 1;
                runs.exits.push(exit);
            }
            EventKind::Exit(Some(_)) if !runs.running => self
                .violations
                .push(format!("{who}: an exit reported twice or without a run")),
            EventKind::Exit(Some(exit)) => {
                runs.running = false;
                runs.exits.push(exit);
            }
            EventKind::Exit(None) if runs.running => self
                .violations
                .push(format!("{who}: a run ended without its process record")),
            EventKind::Missed(n) => self.violations.push(format!(
                "the soak's watcher fell behind and missed {n} events"
            )),
            _ => {}
        }
    }
}

/// The watcher: a thread reading arbord's events until arbord closes the
/// stream. (Its default has no thread and an empty book: what stays in the
/// soak once the real one is taken for the verdict.)
#[derive(Default)]
pub struct Exits {
    book: Arc<Mutex<Book>>,
    thread: Option<JoinHandle<Result<(), String>>>,
    expected: BTreeMap<u64, Expected>,
}

impl Exits {
    /// Subscribes to every worker's events on `socket`.
    pub fn watch(socket: &Path, bound: Duration) -> Result<Self, String> {
        let mut channel = connect(socket, bound)?;
        match ask_on(&mut channel, &ControlRequest::Events { id: None })? {
            ControlResponse::Ok => {}
            other => return Err(format!("Events answered {other:?}")),
        }
        // From here on, reads wait as long as arbord lives: the stream ends
        // when arbord exits.
        channel
            .socket()
            .set_read_timeout(None)
            .map_err(|e| format!("read timeout: {e}"))?;
        // Room for bursts (a worker's flood of output), so that arbord's
        // stream never waits on this reader's thread being scheduled.
        socket2::SockRef::from(channel.socket())
            .set_recv_buffer_size(4 << 20)
            .map_err(|e| format!("SO_RCVBUF: {e}"))?;
        // Ids only grow: a worker above the highest one listed now started
        // after the watch began, so its `spawned` is in the stream.
        let before = match ask_on(&mut connect(socket, bound)?, &ControlRequest::List)? {
            ControlResponse::Workers(workers) => workers.iter().map(|w| w.id).max().unwrap_or(0),
            other => return Err(format!("List answered {other:?}")),
        };
        let book = Arc::new(Mutex::new(Book {
            before,
            ..Book::default()
        }));
        let writer = Arc::clone(&book);
        let thread = std::thread::spawn(move || loop {
            match answer_on(&mut channel) {
                Ok(ControlResponse::Notice(event)) => {
                    writer.lock().unwrap_or_else(|p| p.into_inner()).take(event)
                }
                Ok(other) => return Err(format!("the event stream carried {other:?}")),
                Err(_) => return Ok(()), // arbord closed the stream
            }
        });
        Ok(Self {
            book,
            thread: Some(thread),
            expected: BTreeMap::new(),
        })
    }

    /// The soak decided how worker `id` (never restarted) ends, unless it
    /// already had.
    pub fn expect(&mut self, id: u64, how: Expected) {
        self.expected.entry(id).or_insert(how);
    }

    /// The soak no longer knows how worker `id` ends (it stopped it, and
    /// whether a close or the escalation ends it is a race).
    pub fn forget(&mut self, id: u64) {
        self.expected.remove(&id);
    }

    /// The violations seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .violations
            .clone()
    }

    /// After arbord exited: the stream's end, then every run has exactly one
    /// exit, and each expected one is exact. Returns (events, exits).
    pub fn verify_at_end(mut self) -> Result<(u64, u64), String> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => return Err(e),
            _ => return Err("the soak's watcher panicked".into()),
        }
        let book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(first) = book.violations.first() {
            return Err(format!("{first} (and {} more)", book.violations.len() - 1));
        }
        let unreported: Vec<String> = book
            .workers
            .iter()
            .filter(|(_, runs)| runs.running || runs.exits.len() as u64 != runs.runs)
            .map(|(id, runs)| {
                format!(
                    "{id} ({}): {} runs, {} exits",
                    runs.name,
                    runs.runs,
                    runs.exits.len()
                )
            })
            .collect();
        if !unreported.is_empty() {
            return Err(format!(
                "{} of {} workers' exits were not all reported: {}",
                unreported.len(),
                book.workers.len(),
                unreported.join("; ")
            ));
        }
        let exits = book.workers.values().map(|runs| runs.runs).sum();
        for (id, how) in &self.expected {
            let Some(runs) = book.workers.get(id) else {
                return Err(format!("worker {id}: no event at all"));
            };
            let [exit] = runs.exits.as_slice() else {
                continue;
            };
            let exact = match how {
                Expected::Code(code) => exit.code == Some(*code) && exit.signal.is_none(),
                Expected::Signal(number) => {
                    exit.code.is_none() && exit.signal.as_ref().is_some_and(|s| s.number == *number)
                }
            };
            if !exact {
                return Err(format!(
                    "worker {id} ({}): expected {how:?}, reported {exit:?}",
                    runs.name
                ));
            }
        }
        Ok((book.events, exits))
    }
}

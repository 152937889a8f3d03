//! Sub-workers: a worker starting workers of its own (Hop's worker tree,
//! the standard's delegation example).
//!
//! The worker asks its supervisor with a Spawn frame; the supervisor forks
//! the sub-worker (it stays the one reaper of every process), and answers
//! with SpawnResult carrying the sub-worker's channel end. From then on the
//! two talk directly over that channel: [`SubWorker::post_message`] and
//! [`SubWorker::next_event`] never pass through the supervisor. The
//! sub-worker's exit comes from the supervisor as ChildExit, after every
//! message the sub-worker sent is read.
//!
//! The supervisor link is the worker's own channel for a top-level worker,
//! and a second socket (`ARBOR_TREE_FD`) for a sub-worker, whose channel
//! leads to its parent. Either way a task of [`crate::nonblocking`] reads
//! it and hands tree frames to [`TreeState::route`], so a message handler
//! may spawn and wait for its sub-workers without blocking the frames that
//! answer it.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::nonblocking::{AsyncChannel, AsyncReceiver, AsyncSender};
use arbor_protocol::{
    ChildAction, ChildControl, ExitRecord, Frame, Limits, ListenFds, Location, Spawn, SpawnOutcome,
    SpawnRefusal, WorkerSpec,
};
use serde::Serialize;
use tokio::sync::{oneshot, watch, Mutex};

use crate::error::{Error, Result};
use crate::poster::Poster;

type Shared = Arc<Mutex<AsyncSender>>;

/// What a SpawnResult hands to the waiting [`Spawner::spawn`].
type Started = std::result::Result<SubWorker, SpawnRefusal>;

/// The sub-workers of this process and the spawns in flight.
#[derive(Debug)]
pub(crate) struct TreeState {
    /// Where Spawn and ChildControl frames go.
    link: Shared,
    next_request: AtomicU64,
    pending: std::sync::Mutex<HashMap<u64, (String, oneshot::Sender<Started>)>>,
    children: std::sync::Mutex<HashMap<u64, Child>>,
}

#[derive(Debug)]
struct Child {
    /// Weak: the [`SubWorker`] owns the channel, and dropping it closes it.
    sender: std::sync::Weak<Mutex<AsyncSender>>,
    exit: watch::Sender<Option<ExitRecord>>,
}

impl TreeState {
    pub(crate) fn new(link: Shared) -> Arc<Self> {
        Arc::new(Self {
            link,
            next_request: AtomicU64::new(1),
            pending: std::sync::Mutex::new(HashMap::new()),
            children: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Handles a frame from the supervisor link if it belongs to the tree
    /// (SpawnResult, ChildExit, CloseChild); any other frame is given back.
    pub(crate) fn route(
        self: &Arc<Self>,
        frame: Frame,
        mut fds: Vec<OwnedFd>,
    ) -> Option<(Frame, Vec<OwnedFd>)> {
        match frame {
            Frame::SpawnResult(result) => {
                let Some((name, waiter)) = lock(&self.pending).remove(&result.id) else {
                    // Nobody waits (the spawn was cancelled): its channel
                    // closes here, so the sub-worker sees its parent gone.
                    return None;
                };
                let started = match (result.outcome, fds.len()) {
                    (SpawnOutcome::Started { worker_id, pid }, 1) => {
                        self.adopt(worker_id, pid, name, fds.remove(0))
                    }
                    (SpawnOutcome::Started { .. }, count) => Err(SpawnRefusal::Failed {
                        reason: format!("SpawnResult came with {count} fds, not 1"),
                    }),
                    (SpawnOutcome::Refused(refusal), _) => Err(refusal),
                };
                if let Err(Ok(unwanted)) = waiter.send(started) {
                    // Cancelled meanwhile: dropping it closes its channel.
                    lock(&self.children).remove(&unwanted.id);
                }
                None
            }
            Frame::ChildExit(exit) => {
                if let Some(child) = lock(&self.children).remove(&exit.worker_id) {
                    let _ = child.exit.send(Some(exit.record()));
                }
                None
            }
            Frame::CloseChild(id) => {
                let sender = lock(&self.children)
                    .get(&id)
                    .and_then(|c| c.sender.upgrade());
                if let Some(sender) = sender {
                    tokio::spawn(async move {
                        let _ = sender.lock().await.send(&Frame::Close, &[]).await;
                    });
                }
                None
            }
            frame => Some((frame, fds)),
        }
    }

    /// Registers a started sub-worker before anything else is read from the
    /// link, so its ChildExit (which follows) always finds it.
    fn adopt(&self, id: u64, pid: u32, name: String, fd: OwnedFd) -> Started {
        let channel =
            AsyncChannel::from_std(UnixStream::from(fd), Limits::default()).map_err(|e| {
                SpawnRefusal::Failed {
                    reason: format!("its channel: {e}"),
                }
            })?;
        let (sender, receiver) = channel.into_split();
        let sender = Arc::new(Mutex::new(sender));
        let (exit_tx, exit) = watch::channel(None);
        lock(&self.children).insert(
            id,
            Child {
                sender: Arc::downgrade(&sender),
                exit: exit_tx,
            },
        );
        Ok(SubWorker {
            id,
            pid,
            name,
            poster: Poster::new(sender),
            receiver: Some(receiver),
            exit,
            link: Arc::clone(&self.link),
            drain_until: None,
            finished: false,
        })
    }

    /// The link closed: no answer and no exit report will come.
    pub(crate) fn link_closed(&self) {
        lock(&self.pending).clear();
        lock(&self.children).clear();
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts sub-workers; cheap to clone into tasks
/// ([`crate::nonblocking::AsyncWorker::spawner`]).
#[derive(Debug, Clone)]
pub struct Spawner {
    pub(crate) tree: Arc<TreeState>,
}

impl Spawner {
    /// Asks the supervisor to start `spec` as a sub-worker of this worker
    /// and returns it once it runs (messages may be posted at once; they
    /// wait in its channel until it reads them).
    ///
    /// A refusal is [`Error::SpawnRefused`] with the supervisor's reason
    /// (a depth, children or total limit, a bad spec, a program that does
    /// not start, or this worker closing). In a top-level worker the
    /// answer comes over the channel, so [`AsyncWorker::run`] must be
    /// reading it; a sub-worker's link is read from `connect` on.
    ///
    /// [`AsyncWorker::run`]: crate::nonblocking::AsyncWorker::run
    pub async fn spawn(&self, spec: WorkerSpec) -> Result<SubWorker> {
        self.spawn_with_fds(spec, ListenFds::new()).await
    }

    /// As [`Spawner::spawn`], handing the sub-worker the sockets `listen`
    /// (fds from 3, by systemd's convention; at most
    /// [`MAX_SPAWN_FDS`](arbor_protocol::spec::MAX_SPAWN_FDS)).
    pub async fn spawn_with_fds(&self, spec: WorkerSpec, listen: ListenFds) -> Result<SubWorker> {
        let name = spec.display_name();
        let (spec, fds) = spec.to_wire(listen).map_err(Error::Spec)?;
        let id = self.tree.next_request.fetch_add(1, Ordering::Relaxed);
        let (answer, started) = oneshot::channel();
        lock(&self.tree.pending).insert(id, (name, answer));
        // A cancelled spawn leaves no waiter behind.
        let _forget = Forget {
            tree: &self.tree,
            request: id,
        };
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|fd| fd.as_fd()).collect();
        let sent = self
            .tree
            .link
            .lock()
            .await
            .send(&Frame::Spawn(Box::new(Spawn { id, spec })), &borrowed)
            .await;
        sent?;
        match started.await {
            Ok(Ok(sub)) => Ok(sub),
            Ok(Err(refusal)) => Err(Error::SpawnRefused(refusal)),
            Err(_) => Err(Error::SupervisorGone),
        }
    }
}

/// Removes a spawn's waiter when the spawn ends, answered or not.
struct Forget<'a> {
    tree: &'a TreeState,
    request: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.tree.pending).remove(&self.request);
    }
}

/// What a sub-worker did, in order; [`SubWorkerEvent::Exit`] is the last.
#[derive(Debug)]
pub enum SubWorkerEvent {
    /// It sent Ready.
    Ready,
    /// A message, with its fds.
    Message {
        /// The bytes.
        data: Vec<u8>,
        /// Fds that came with it.
        fds: Vec<OwnedFd>,
    },
    /// A failure it reported (a panic), the spec's `onerror`.
    Error {
        /// What went wrong.
        message: String,
        /// Where, when known.
        location: Option<Location>,
    },
    /// Its channel broke (garbage); its exit still follows.
    ChannelError {
        /// The protocol error, as text.
        error: String,
    },
    /// Its exit as the supervisor recorded it: the same [`ExitRecord`] a
    /// top-level worker's parent gets.
    Exit(ExitRecord),
}

/// A sub-worker this worker started: the same model as the parent side's
/// `Worker`, with the same names (`post_message`, `post_value`,
/// `post_transfer`, `next_event`, `close`, `terminate`, `wait`) and the same
/// [`ExitRecord`], over a channel that goes straight to it.
///
/// Dropping the handle closes the channel: a sub-worker built on
/// arbor-worker then ends (its parent is gone), and the supervisor reports
/// nothing more to anyone.
#[derive(Debug)]
pub struct SubWorker {
    id: u64,
    pid: u32,
    name: String,
    poster: Poster,
    receiver: Option<AsyncReceiver>,
    exit: watch::Receiver<Option<ExitRecord>>,
    link: Shared,
    /// Once the exit is known: how long its last messages may still take.
    drain_until: Option<tokio::time::Instant>,
    finished: bool,
}

/// How long after the exit report the channel is still read for messages
/// the sub-worker sent before it died (they are in the socket already; the
/// bound only guards against a process that inherited the channel).
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

impl SubWorker {
    /// Its worker id (`ARBOR_WORKER_ID`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Posts to it, straight into its channel (the same [`Poster`] a
    /// worker posts to its own parent with): `post_message`, `post_value`,
    /// `post_transfer`.
    pub fn poster(&self) -> &Poster {
        &self.poster
    }

    /// Posts a message with fds, straight into its channel.
    pub async fn post_message(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.poster.post_message(data, fds).await
    }

    /// Posts a message with a sealed [`Transfer`](arbor_protocol::Transfer),
    /// which moves (it is consumed) instead of being copied.
    pub async fn post_transfer(
        &self,
        data: &[u8],
        transfer: arbor_protocol::Transfer,
    ) -> Result<()> {
        self.poster.post_transfer(data, transfer).await
    }

    /// Posts `value` encoded with the wire codec.
    pub async fn post_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.poster.post_value(value).await
    }

    /// The next event; `None` after [`SubWorkerEvent::Exit`].
    pub async fn next_event(&mut self) -> Option<SubWorkerEvent> {
        loop {
            if self.finished {
                return None;
            }
            let Some(receiver) = self.receiver.as_mut() else {
                let _ = self.exit.wait_for(Option::is_some).await;
                self.finished = true;
                return (*self.exit.borrow()).map(SubWorkerEvent::Exit);
            };
            let deadline = self.drain_until;
            let frame = tokio::select! {
                frame = receiver.recv() => frame,
                _ = self.exit.wait_for(Option::is_some), if deadline.is_none() => {
                    self.drain_until = Some(tokio::time::Instant::now() + DRAIN_LIMIT);
                    continue;
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    self.receiver = None;
                    continue;
                }
            };
            match frame {
                Ok((Frame::Ready(_), _)) => return Some(SubWorkerEvent::Ready),
                Ok((Frame::Message(message), fds)) => {
                    return Some(SubWorkerEvent::Message {
                        data: message.data,
                        fds,
                    })
                }
                Ok((Frame::Error(report), _)) => {
                    return Some(SubWorkerEvent::Error {
                        message: report.message,
                        location: report.location,
                    })
                }
                Ok((Frame::Ping(nonce), _)) => {
                    let _ = self.poster.send(&Frame::Pong(nonce)).await;
                }
                Ok(_) => {}
                Err(arbor_protocol::Error::Closed) => self.receiver = None,
                Err(error) => {
                    self.receiver = None;
                    return Some(SubWorkerEvent::ChannelError {
                        error: error.to_string(),
                    });
                }
            }
        }
    }

    /// Closes it (and its own sub-workers, leaves first): its onclose runs,
    /// then SIGTERM after `grace`, then SIGKILL. Returns its exit. Events
    /// not yet read stay readable.
    pub async fn close(&self, grace: Duration) -> Result<ExitRecord> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.control(ChildAction::Close { grace_ms }).await?;
        self.wait().await
    }

    /// Kills it and its subtree at once. Returns its exit.
    pub async fn terminate(&self) -> Result<ExitRecord> {
        self.control(ChildAction::Terminate).await?;
        self.wait().await
    }

    /// Waits for its exit (without consuming events).
    pub async fn wait(&self) -> Result<ExitRecord> {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await.map(|exit| *exit) {
            Ok(Some(exit)) => Ok(exit),
            _ => Err(Error::SupervisorGone),
        }
    }

    async fn control(&self, action: ChildAction) -> Result<()> {
        if self.exit.borrow().is_some() {
            return Ok(());
        }
        let control = ChildControl {
            worker_id: self.id,
            action,
        };
        Ok(self
            .link
            .lock()
            .await
            .send(&Frame::ChildControl(control), &[])
            .await?)
    }
}

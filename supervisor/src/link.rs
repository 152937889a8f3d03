//! The two ways into a running worker's tasks from outside them, shared by
//! the worker tree ([`crate::tree`]), the worker's own tasks
//! ([`crate::worker`]) and the supervisor that starts them:
//!
//! - [`Control`], what its driver is asked to do (close, terminate, signal);
//! - [`TreeLink`], the queue of tree frames (SpawnResult, ChildExit,
//!   CloseChild) its writer drains into its socket.
//!
//! Near a leaf (it imports only [`crate::signal`]), so every module that
//! reaches a worker can use it without importing one that imports it back.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::Frame;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::signal::Signal;

/// What a worker's driver is asked to do.
#[derive(Debug)]
pub(crate) enum Control {
    Close(Duration),
    Terminate,
    Signal(Signal, oneshot::Sender<std::io::Result<()>>),
}

/// A frame for a worker's tree link (SpawnResult, ChildExit, CloseChild),
/// with its fds.
pub(crate) type TreeFrame = Box<(Frame, Vec<OwnedFd>)>;

/// Tree frames waiting for one worker's writer beyond which its next Spawn
/// waits (and the worker is not read meanwhile). A worker that reads its
/// answers never gets near it: it has at most `max_children` spawns and
/// sub-workers, each good for a SpawnResult and a ChildExit.
const LINK_FULL: usize = 1024;

/// A worker's tree link, as its writer task drains it: frames go out in the
/// order they were sent (a sub-worker's ChildExit after its SpawnResult),
/// and sending never waits, so no driver or lock holder blocks on a worker
/// that does not read.
#[derive(Debug)]
pub(crate) struct TreeLink {
    frames: mpsc::UnboundedSender<TreeFrame>,
    queued: AtomicUsize,
    drained: Notify,
}

impl TreeLink {
    pub(crate) fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<TreeFrame>) {
        let (frames, receiver) = mpsc::unbounded_channel();
        let link = Self {
            frames,
            queued: AtomicUsize::new(0),
            drained: Notify::new(),
        };
        (Arc::new(link), receiver)
    }

    /// Queues a frame; its fds close with it if the worker is gone.
    pub(crate) fn send(&self, frame: Frame, fds: Vec<OwnedFd>) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.frames.send(Box::new((frame, fds))).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The writer wrote one.
    pub(crate) fn written(&self) {
        if self.queued.fetch_sub(1, Ordering::SeqCst) <= LINK_FULL {
            self.drained.notify_one();
        }
    }

    /// Whether the next Spawn should wait for the worker to read.
    pub(crate) fn is_full(&self) -> bool {
        self.queued.load(Ordering::SeqCst) >= LINK_FULL
    }

    /// Completes once the writer has made room (after [`TreeLink::is_full`]).
    pub(crate) async fn drained(&self) {
        self.drained.notified().await
    }
}

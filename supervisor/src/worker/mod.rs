//! A running worker: the [`Worker`] handle, its [`WorkerEvent`]s, and the
//! tasks behind it, which `launch` (`launch.rs`) starts once the process
//! is forked.
//!
//! Each worker has three kinds of tokio task:
//!
//! - the **driver** (`driver.rs`) owns the channel's receive half, the
//!   pidfd and the close escalation: it turns frames into events
//!   (`frames.rs`), hands replies to the requests waiting for them
//!   (`requests.rs`), sends the frames and signals the escalation's pure
//!   step (`escalation.rs`) decides, passes the worker's Spawn frames up to
//!   the supervisor as requests (`subworkers.rs`), reaps the process when
//!   its pidfd becomes readable and records the exit;
//! - the **writer** (`outbox.rs`) owns the send half: it holds posted
//!   messages until the worker is Ready, then writes them in order, batching
//!   whatever is queued into one flush, and sends Close after every message
//!   posted before it;
//! - one **output** task per captured stream (`output.rs`) splits it into
//!   lines.
//!
//! Reading and writing live in different tasks so that a worker that
//! writes while the supervisor writes to it can never deadlock them both on
//! full socket buffers.
//!
//! A sub-worker (started by another worker's Spawn frame, see
//! [`crate::tree`]) has the same tasks, but the socket they drive is its
//! tree link, not its channel: the channel belongs to the worker that
//! started it, so its handle here can close, terminate and signal it, and
//! sees its Ready, output and exit, but cannot post to it.

mod driver;
mod escalation;
mod frames;
mod launch;
mod outbox;
mod output;
mod requests;
mod subworkers;

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::{Location, Message};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::exit::ExitRecord;
use crate::link::Control;
use crate::signal::Signal;
use crate::spec::WhenFull;
use crate::tree::Tree;
use outbox::{OutFd, OutKind, Outbound, Outbox, PostError};
use requests::Pending;

pub(crate) use launch::{launch, Launch, Wiring};
pub(crate) use subworkers::SpawnRequest;

/// Which output stream a captured line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What a worker did, in the order it did it.
#[derive(Debug)]
pub enum WorkerEvent {
    /// The worker sent Ready (or, for a program that does not speak the
    /// protocol, it was started).
    Ready,
    /// A message, with the fds sent with it.
    Message {
        /// The bytes (see `arbor_protocol::Message::decode` for typed values).
        data: Vec<u8>,
        /// Fds that came with it, close-on-exec.
        fds: Vec<OwnedFd>,
    },
    /// The worker asks something and expects one [`Worker::reply`] with this id.
    Request {
        /// The id to answer.
        id: u64,
        /// The bytes.
        data: Vec<u8>,
        /// Fds that came with it.
        fds: Vec<OwnedFd>,
    },
    /// A worker-side failure (a panic reported by its hook), the spec's `onerror`.
    Error {
        /// What went wrong.
        message: String,
        /// Where, when known.
        location: Option<Location>,
    },
    /// A well-formed frame the worker should not send (a second Ready, a
    /// Close); it is dropped and the channel goes on.
    MessageError {
        /// What was wrong with it.
        reason: String,
    },
    /// The channel broke (garbage, a lying frame, a protocol violation); it
    /// is closed with every fd it carried. The process is still supervised:
    /// its exit follows as usual.
    ChannelError {
        /// The protocol error, as text.
        error: String,
    },
    /// The worker's answer to a connection handed to it (a pool in `handoff` mode).
    ConnectionAck {
        /// The connection's id, as handed off.
        id: u64,
        /// `false`: the worker did not take it; the fd is the caller's to
        /// hand to another worker.
        accepted: bool,
        /// Handed-off connections the worker has open.
        open: u32,
    },
    /// The worker's count of open handed-off connections changed.
    Load {
        /// Handed-off connections the worker has open.
        open: u32,
    },
    /// One line of captured output, without its newline.
    Output {
        /// Which stream.
        stream: Stream,
        /// The line's bytes (a line over 64 KiB is cut into pieces).
        line: Vec<u8>,
    },
    /// The worker started a sub-worker (a Spawn frame): its handle, for its
    /// output, exit, close and terminate (its channel is the worker's).
    /// Dropping the handle leaves the sub-worker running; it ends with its
    /// parent at the latest. Like every event it must be read: a worker
    /// whose events nobody reads is not read either once they pile up, and
    /// its next spawn waits. Boxed: events are rarely this one, and every
    /// slot of every worker's event queue would be as large as a handle.
    SubWorker(Box<Worker>),
    /// The worker's exit; always the last event.
    Exit(ExitRecord),
}

impl WorkerEvent {
    /// Decodes a `Message` event's bytes as a `T`; any other event is `None`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Option<Result<T>> {
        match self {
            WorkerEvent::Message { data, .. } => {
                Some(Message { data: data.clone() }.decode().map_err(Error::from))
            }
            _ => None,
        }
    }
}

/// A worker's events, taken out of its handle with [`Worker::take_events`].
#[derive(Debug)]
pub struct Events {
    receiver: mpsc::Receiver<WorkerEvent>,
}

impl Events {
    /// The next event; `None` after [`WorkerEvent::Exit`].
    pub async fn next(&mut self) -> Option<WorkerEvent> {
        self.receiver.recv().await
    }
}

/// A running worker process, the parent's side of the Web Workers model.
///
/// Dropping the handle terminates the worker (SIGKILL to its process group):
/// call [`Worker::close`] first for a graceful stop.
#[derive(Debug)]
pub struct Worker {
    id: u64,
    pid: u32,
    name: String,
    parent: Option<u64>,
    /// `None` for a sub-worker, whose channel is its parent worker's.
    outbox: Option<Arc<Outbox>>,
    requests: Arc<Pending>,
    control: mpsc::UnboundedSender<Control>,
    events: Option<mpsc::Receiver<WorkerEvent>>,
    exit: watch::Receiver<Option<ExitRecord>>,
    when_full: WhenFull,
    queue_limit: usize,
    limits: arbor_protocol::Limits,
    tree: Arc<Tree>,
}

impl Worker {
    /// The worker's id (`ARBOR_WORKER_ID`), unique within its supervisor.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The worker's name (`ARBOR_WORKER_NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The worker that started this one (by its id), for a sub-worker.
    pub fn parent(&self) -> Option<u64> {
        self.parent
    }

    /// Posts a message with fds. Allowed at once after spawn: messages
    /// posted before the worker is Ready are queued and delivered in order.
    /// At the queue bound it waits or fails, as the spec says.
    pub async fn post_message(&self, data: impl Into<Vec<u8>>, fds: Vec<OwnedFd>) -> Result<()> {
        self.post(OutKind::Message, data.into(), fds).await
    }

    fn post<'a>(
        &'a self,
        kind: OutKind,
        data: Vec<u8>,
        fds: Vec<OwnedFd>,
    ) -> impl std::future::Future<Output = Result<()>> + 'a {
        let fds = fds.into_iter().map(OutFd::Owned).collect();
        let item = Outbound { kind, data, fds };
        self.post_item(item)
    }

    async fn post_item(&self, item: Outbound) -> Result<()> {
        let Some(outbox) = &self.outbox else {
            return Err(match self.parent {
                Some(_) => Error::ChannelHeldByParent { id: self.id },
                None => Error::NoChannel { id: self.id },
            });
        };
        // Refuse what the channel would refuse now, not later in the writer.
        self.limits.check_message(item.data.len(), item.fds.len())?;
        outbox
            .post(item, self.when_full)
            .await
            .map_err(|e| match e {
                PostError::Full => Error::QueueFull {
                    id: self.id,
                    limit: self.queue_limit,
                },
                PostError::Gone => self.gone(),
            })
    }

    /// Posts a message with a [`Transfer`](arbor_protocol::Transfer): a
    /// sealed buffer that moves instead of being copied (the worker takes
    /// it with `Transfer::from_fd` on the message's fd). The transfer is
    /// consumed: nothing of it is left here to touch.
    pub async fn post_transfer(
        &self,
        data: impl Into<Vec<u8>>,
        transfer: arbor_protocol::Transfer,
    ) -> Result<()> {
        self.post_message(data, vec![transfer.into_fd()]).await
    }

    /// Hands an accepted connection to the worker in a Connection frame
    /// (pool `handoff` mode); the answer comes as
    /// [`WorkerEvent::ConnectionAck`] with the same `id`. The caller keeps
    /// its share of the connection until then: a refusal, or the worker's
    /// exit before it answers, leaves the connection with the caller.
    pub(crate) async fn hand_off(
        &self,
        id: u64,
        socket: &str,
        connection: Arc<OwnedFd>,
    ) -> Result<()> {
        let item = Outbound {
            kind: OutKind::Connection(id),
            data: socket.as_bytes().to_vec(),
            fds: vec![OutFd::Shared(connection)],
        };
        self.post_item(item).await
    }

    /// Hands the worker one end of a new port from a client (a shared
    /// worker's `onconnect`); the worker answers on the port itself. Like a
    /// message, it waits until the worker is Ready.
    pub(crate) async fn connect_port(
        &self,
        id: u64,
        origin: &str,
        port: arbor_protocol::MessagePort,
    ) -> Result<()> {
        self.post(
            OutKind::Port(id),
            origin.as_bytes().to_vec(),
            vec![port.into_fd()],
        )
        .await
    }

    /// Posts `value` encoded with the wire codec; the worker decodes it with
    /// `Message::decode`.
    pub async fn post_value<T: Serialize + ?Sized>(
        &self,
        value: &T,
        fds: Vec<OwnedFd>,
    ) -> Result<()> {
        let message = Message::from_value(value)?;
        self.post_message(message.data, fds).await
    }

    /// Sends `data` as a Request and waits up to `timeout` for the worker's
    /// Reply to it. Many requests may be in flight at once: each reply is
    /// matched by its id, never by its order. A worker that exits (or closes
    /// its channel) first ends the wait at once with
    /// [`Error::RequestUnanswered`], its exit in it when known.
    pub async fn request(&self, data: impl Into<Vec<u8>>, timeout: Duration) -> Result<Vec<u8>> {
        let (id, reply) = self.requests.open();
        let outcome = async {
            self.post(OutKind::Request(id), data.into(), Vec::new())
                .await?;
            match tokio::time::timeout(timeout, reply).await {
                Ok(Ok(data)) => Ok(data),
                Ok(Err(_)) => Err(Error::RequestUnanswered {
                    id: self.id,
                    exit: self.try_exit(),
                }),
                Err(_) => Err(Error::RequestTimeout {
                    id: self.id,
                    timeout,
                }),
            }
        }
        .await;
        self.requests.close(id);
        outcome
    }

    /// Answers the worker's request `id` (from a [`WorkerEvent::Request`]).
    pub async fn reply(&self, id: u64, data: impl Into<Vec<u8>>) -> Result<()> {
        self.post(OutKind::Reply(id), data.into(), Vec::new()).await
    }

    /// Starts a close (as [`Worker::close`]) without waiting for the exit.
    /// Outside a tokio runtime only the worker itself is asked (its
    /// sub-workers then go with it, killed, when it exits).
    pub(crate) fn begin_close(&self, grace: Duration) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(Arc::clone(&self.tree).close(self.id, grace));
            }
            Err(_) => {
                let _ = self.control.send(Control::Close(grace));
            }
        }
    }

    /// Starts a terminate (as [`Worker::terminate`]) without waiting for the exit.
    pub(crate) fn begin_terminate(&self) {
        // The tree reaches this worker too (and, once it exited, no one).
        self.tree.terminate(self.id);
    }

    /// The next event; `None` after [`WorkerEvent::Exit`] has been returned
    /// (or once the events were taken with [`Worker::take_events`]).
    pub async fn next_event(&mut self) -> Option<WorkerEvent> {
        self.events.as_mut()?.recv().await
    }

    /// Takes the event stream out of the handle, so that one task can
    /// consume events while others share the handle (in an `Arc`) to post,
    /// request and close.
    pub fn take_events(&mut self) -> Option<Events> {
        self.events.take().map(|receiver| Events { receiver })
    }

    /// Asks the worker to close: a Close frame (its onclose runs, after every
    /// message posted before this call), then SIGTERM after `grace`, then
    /// SIGKILL after another `grace`. Returns the exit.
    ///
    /// Its sub-workers are closed first, leaves first, each the same way.
    pub async fn close(&self, grace: Duration) -> Result<ExitRecord> {
        Arc::clone(&self.tree).close(self.id, grace).await;
        self.wait().await
    }

    /// Kills the worker, its process group and its sub-workers' subtree at
    /// once (SIGKILL). Returns the exit.
    pub async fn terminate(&self) -> Result<ExitRecord> {
        self.tree.terminate(self.id);
        self.wait().await
    }

    /// Sends `signal` to the worker process.
    pub async fn signal(&self, signal: Signal) -> Result<()> {
        let (reply, result) = oneshot::channel();
        self.control
            .send(Control::Signal(signal, reply))
            .map_err(|_| self.gone())?;
        match result.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Error::Signal {
                id: self.id,
                source,
            }),
            Err(_) => Err(self.gone()),
        }
    }

    /// Waits for the worker to exit (without consuming events).
    ///
    /// [`Error::WorkerGone`] only if the worker's tasks were dropped without
    /// recording an exit (the tokio runtime shut down under them).
    pub async fn wait(&self) -> Result<ExitRecord> {
        let mut exit = self.exit.clone();
        let record = exit.wait_for(Option::is_some).await.map(|r| *r);
        match record {
            Ok(Some(record)) => Ok(record),
            _ => Err(self.gone()),
        }
    }

    /// The exit, if the worker has exited.
    pub(crate) fn try_exit(&self) -> Option<ExitRecord> {
        *self.exit.borrow()
    }

    fn gone(&self) -> Error {
        Error::WorkerGone { id: self.id }
    }
}

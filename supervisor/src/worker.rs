//! A running worker: the [`Worker`] handle and the tasks behind it.
//!
//! Each worker has three tokio tasks:
//!
//! - the **driver** owns the channel's receive half, the pidfd and the
//!   close escalation: it turns frames into [`WorkerEvent`]s, sends the
//!   frames and signals the escalation's pure step (`escalation.rs`)
//!   decides, reaps the process when its pidfd becomes readable and
//!   records the exit;
//! - the **writer** owns the send half: it holds posted messages until the
//!   worker is Ready, then writes them in order, batching whatever is queued
//!   into one flush, and sends Close after every message posted before it;
//! - one **output** task per captured stream splits it into lines.
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

mod escalation;
mod outbox;

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::nonblocking::{AsyncReceiver, AsyncSender};

use arbor_protocol::{ChildAction, Frame, Location, Message, SpawnOutcome, SpawnResult};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

use crate::error::{Error, Result};
use crate::exit::ExitRecord;
use crate::link::{Control, TreeFrame, TreeLink};
use crate::signal::Signal;
use crate::spec::{Output, WhenFull, WorkerSpec};
use crate::sys;
use crate::tree::Tree;
use escalation::{Delivery, Effect, Escalation, Input, MAX_GRACE};
use outbox::{write_loop, OutKind, Outbound, Outbox, PostError, WriterCommand};

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
    /// The worker's answer to [`Worker::hand_off`].
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
    /// its next spawn waits.
    SubWorker(Worker),
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

/// What [`launch`] needs from the spawn.
pub(crate) struct Launch {
    pub(crate) id: u64,
    pub(crate) pid: libc::pid_t,
    pub(crate) name: String,
    pub(crate) pidfd: OwnedFd,
    /// The socket the driver and writer use: the channel of a top-level
    /// worker, the tree link of a sub-worker, none for a sub-worker that
    /// does not speak the protocol.
    pub(crate) sender: Option<AsyncSender>,
    pub(crate) receiver: Option<AsyncReceiver>,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
    pub(crate) speaks_protocol: bool,
    pub(crate) queue_limit: usize,
    pub(crate) when_full: WhenFull,
    pub(crate) limits: arbor_protocol::Limits,
    /// The worker that started this one, for a sub-worker.
    pub(crate) parent: Option<u64>,
    /// Where its stdout and stderr go (its sub-workers' `Inherit`).
    pub(crate) outputs: [crate::spec::Output; 2],
    /// Its cgroup, when the supervisor makes them.
    pub(crate) cgroup: Option<crate::cgroup::WorkerCgroup>,
    pub(crate) control: (
        mpsc::UnboundedSender<Control>,
        mpsc::UnboundedReceiver<Control>,
    ),
    pub(crate) exit: (
        watch::Sender<Option<ExitRecord>>,
        watch::Receiver<Option<ExitRecord>>,
    ),
    pub(crate) tree_frames: (Arc<TreeLink>, mpsc::UnboundedReceiver<TreeFrame>),
    pub(crate) tree: Arc<Tree>,
    /// Where the worker's Spawn frames go, as requests to the supervisor.
    pub(crate) spawns: mpsc::UnboundedSender<SpawnRequest>,
}

/// A sub-worker a worker asked for with a Spawn frame, on its way up to the
/// supervisor, which forks it and answers the worker: SpawnResult on its
/// tree link and the handle in its events, or a refusal. Its place in the
/// tree is already taken ([`Tree::reserve`]); the supervisor gives it back
/// ([`Tree::release`]) once the spawn is done.
#[derive(Debug)]
pub(crate) struct SpawnRequest {
    /// What to start.
    pub(crate) spec: WorkerSpec,
    /// The asking worker.
    pub(crate) parent: u64,
    /// The Spawn frame's id, which its SpawnResult carries.
    pub(crate) request: u64,
    /// The asking worker's tree link, where the answer goes.
    pub(crate) frames: Arc<TreeLink>,
    /// The asking worker's stdout and stderr: what `Output::Inherit` means
    /// for a sub-worker.
    pub(crate) outputs: [Output; 2],
    /// The asking worker's cgroup directory, which the sub-worker's nests in.
    pub(crate) cgroup: Option<PathBuf>,
    /// Where the started sub-worker's handle goes (into the asking worker's
    /// events).
    pub(crate) handles: mpsc::UnboundedSender<Worker>,
}

/// Starts the tasks of a freshly spawned worker and returns its handle.
pub(crate) fn launch(launch: Launch) -> Result<Worker> {
    let outbox = launch
        .sender
        .map(|sender| Arc::new(Outbox::new(sender, launch.queue_limit)));
    let requests = Arc::new(Pending::default());
    let (control, control_rx) = launch.control;
    let (events_tx, events) = mpsc::channel(1024);
    let (exit_tx, exit) = launch.exit;
    let (frames, frames_rx) = launch.tree_frames;
    let (subs_tx, subs) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = watch::channel(!launch.speaks_protocol);
    let (writer_tx, writer_rx) = mpsc::channel(WRITER_COMMANDS);

    let pidfd = match sys::async_pidfd(launch.pidfd) {
        Ok(pidfd) => pidfd,
        Err(source) => {
            crate::reap::kill_and_reap(launch.pid);
            return Err(Error::Spawn {
                name: launch.name.clone(),
                source,
            });
        }
    };
    let mut outputs = Vec::new();
    for (fd, stream) in [
        (launch.stdout, Stream::Stdout),
        (launch.stderr, Stream::Stderr),
    ] {
        if let Some(fd) = fd {
            let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(pipe) => pipe,
                Err(source) => {
                    crate::reap::kill_and_reap(launch.pid);
                    return Err(Error::Spawn {
                        name: launch.name.clone(),
                        source,
                    });
                }
            };
            outputs.push(tokio::spawn(capture_lines(pipe, stream, events_tx.clone())));
        }
    }
    if let Some(outbox) = &outbox {
        tokio::spawn(write_loop(
            Arc::clone(outbox),
            writer_rx,
            ready_rx,
            Arc::clone(&frames),
            frames_rx,
        ));
    }
    let mut queued = VecDeque::new();
    if !launch.speaks_protocol {
        queued.push_back(WorkerEvent::Ready);
    }
    let channel_open = launch.receiver.is_some();
    let driver = Driver {
        pidfd,
        receiver: launch.receiver,
        control: control_rx,
        events: events_tx,
        exit: exit_tx,
        outputs,
        subs,
        state: DriverState {
            id: launch.id,
            pid: launch.pid,
            queued,
            ready: ready_tx,
            writer: writer_tx,
            escalation: Escalation::default(),
            escalate_at: None,
            channel_open,
            speaks_protocol: launch.speaks_protocol,
            requests: Arc::clone(&requests),
            frames,
            parked: None,
            subs: subs_tx,
            outputs: launch.outputs,
            cgroup: launch.cgroup,
            tree: Arc::clone(&launch.tree),
            spawns: launch.spawns,
        },
    };
    tokio::spawn(driver.run());
    Ok(Worker {
        id: launch.id,
        pid: launch.pid as u32,
        name: launch.name,
        parent: launch.parent,
        outbox: launch.parent.is_none().then_some(outbox).flatten(),
        requests,
        control,
        events: Some(events),
        exit,
        when_full: launch.when_full,
        queue_limit: launch.queue_limit,
        limits: launch.limits,
        tree: launch.tree,
    })
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
    /// [`WorkerEvent::ConnectionAck`] with the same `id`. Pass a duplicate
    /// and keep the original until then: a refusal, or the worker's exit
    /// before it answers, leaves the connection with the caller.
    pub async fn hand_off(&self, id: u64, socket: &str, connection: OwnedFd) -> Result<()> {
        self.post(
            OutKind::Connection(id),
            socket.as_bytes().to_vec(),
            vec![connection],
        )
        .await
    }

    /// Hands the worker one end of a new port from a client (a shared
    /// worker's `onconnect`); the worker answers on the port itself. Like a
    /// message, it waits until the worker is Ready.
    pub async fn connect_port(
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
    /// matched by its id, never by its order.
    pub async fn request(&self, data: impl Into<Vec<u8>>, timeout: Duration) -> Result<Vec<u8>> {
        let id = self
            .requests
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (answer, reply) = oneshot::channel();
        self.requests.lock().insert(id, answer);
        let outcome = async {
            self.post(OutKind::Request(id), data.into(), Vec::new())
                .await?;
            match tokio::time::timeout(timeout, reply).await {
                Ok(Ok(data)) => Ok(data),
                Ok(Err(_)) => Err(self.gone()),
                Err(_) => Err(Error::RequestTimeout {
                    id: self.id,
                    timeout,
                }),
            }
        }
        .await;
        self.requests.lock().remove(&id);
        outcome
    }

    /// Answers the worker's request `id` (from a [`WorkerEvent::Request`]).
    pub async fn reply(&self, id: u64, data: impl Into<Vec<u8>>) -> Result<()> {
        self.post(OutKind::Reply(id), data.into(), Vec::new()).await
    }

    /// Starts a close (as [`Worker::close`]) without waiting for the exit.
    /// Outside a tokio runtime only the worker itself is asked (its
    /// sub-workers then go with it, killed, when it exits).
    pub fn begin_close(&self, grace: Duration) {
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
    pub fn begin_terminate(&self) {
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
    pub fn try_exit(&self) -> Option<ExitRecord> {
        *self.exit.borrow()
    }

    fn gone(&self) -> Error {
        Error::WorkerGone { id: self.id }
    }
}

struct Driver {
    pidfd: AsyncFd<OwnedFd>,
    receiver: Option<AsyncReceiver>,
    /// Sub-workers this worker started, on their way into its events.
    subs: mpsc::UnboundedReceiver<Worker>,
    control: mpsc::UnboundedReceiver<Control>,
    events: mpsc::Sender<WorkerEvent>,
    exit: watch::Sender<Option<ExitRecord>>,
    outputs: Vec<tokio::task::JoinHandle<()>>,
    state: DriverState,
}

/// The driver's decisions, apart from the I/O objects it waits on.
struct DriverState {
    id: u64,
    pid: libc::pid_t,
    queued: VecDeque<WorkerEvent>,
    ready: watch::Sender<bool>,
    writer: mpsc::Sender<WriterCommand>,
    /// What was asked of the worker, and how far a close has escalated.
    escalation: Escalation,
    /// When the escalation's next step is due.
    escalate_at: Option<Instant>,
    channel_open: bool,
    /// Whether a Close frame means anything to this worker.
    speaks_protocol: bool,
    /// Requests waiting for the worker's reply.
    requests: Arc<Pending>,
    /// The worker's tree link (SpawnResult goes out here).
    frames: Arc<TreeLink>,
    /// A Spawn waiting for room on the tree link.
    parked: Option<(arbor_protocol::Spawn, Vec<OwnedFd>)>,
    /// Where a finished spawn hands its sub-worker's handle.
    subs: mpsc::UnboundedSender<Worker>,
    /// The worker's stdout and stderr, inherited by its sub-workers.
    outputs: [Output; 2],
    /// The worker's cgroup: killed with the worker, removed after it.
    cgroup: Option<crate::cgroup::WorkerCgroup>,
    tree: Arc<Tree>,
    /// Where Spawn frames go up to the supervisor.
    spawns: mpsc::UnboundedSender<SpawnRequest>,
}

/// Requests in flight to one worker, by id.
#[derive(Debug, Default)]
struct Pending {
    next_id: std::sync::atomic::AtomicU64,
    waiting: std::sync::Mutex<std::collections::HashMap<u64, oneshot::Sender<Vec<u8>>>>,
}

impl Pending {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, oneshot::Sender<Vec<u8>>>> {
        // The map stays consistent even if a holder panicked mid-way.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How long after an exit the driver waits for the rest of the worker's
/// messages and output before it reports the exit.
/// Commands (pongs, close) queued for the writer task.
const WRITER_COMMANDS: usize = 16;

const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Events queued in the driver before it stops reading the worker's socket
/// (backpressure: a consumer that does not read events slows the worker,
/// never the other way round, and never loses an event).
const QUEUED_EVENTS: usize = 64;

impl Driver {
    async fn run(self) {
        let Driver {
            pidfd,
            mut receiver,
            mut subs,
            mut control,
            events,
            exit,
            mut outputs,
            mut state,
        } = self;
        let mut control_open = true;
        let frames = state.frames.clone();
        let reaped = loop {
            let escalate_at = state.escalate_at;
            tokio::select! {
                readable = pidfd.readable() => {
                    match readable {
                        Ok(mut guard) => match state.reap() {
                            Some(reaped) => break reaped,
                            None => guard.clear_ready(),
                        },
                        Err(_) => {
                            // Not expected for a pidfd; fall back to polling.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            if let Some(reaped) = state.reap() {
                                break reaped;
                            }
                        }
                    }
                }
                // A Spawn that found the worker's tree link full (it sends
                // Spawn frames and does not read the answers) waits, and
                // the worker is not read meanwhile: backpressure on that
                // worker alone, nothing dropped.
                frame = recv(&mut receiver), if state.channel_open && state.queued.len() < QUEUED_EVENTS && state.parked.is_none() => {
                    state.on_frame(frame);
                    // Hand the event over now when there is room, without
                    // another turn of the loop.
                    while let Some(event) = state.queued.pop_front() {
                        match events.try_reserve() {
                            Ok(permit) => permit.send(event),
                            Err(mpsc::error::TrySendError::Full(())) => {
                                state.queued.push_front(event);
                                break;
                            }
                            Err(mpsc::error::TrySendError::Closed(())) => state.queued.clear(),
                        }
                    }
                }
                _ = frames.drained(), if state.parked.is_some() => {
                    if !frames.is_full() {
                        if let Some((spawn, fds)) = state.parked.take() {
                            state.on_spawn(spawn, fds);
                        }
                    }
                }
                Some(sub) = subs.recv() => state.queued.push_back(WorkerEvent::SubWorker(sub)),
                permit = events.reserve(), if !state.queued.is_empty() => {
                    match (permit, state.queued.pop_front()) {
                        (Ok(permit), Some(event)) => permit.send(event),
                        _ => state.queued.clear(), // nobody listens any more
                    }
                }
                command = control.recv(), if control_open => {
                    control_open = command.is_some();
                    state.on_control(command, pidfd.get_ref().as_fd());
                }
                _ = sleep_until(escalate_at.unwrap_or_else(Instant::now)), if escalate_at.is_some() => {
                    state.escalate(Input::Deadline, None, pidfd.get_ref().as_fd());
                }
            }
        };
        let record = ExitRecord::from_reaped(
            &reaped,
            state.escalation.asked(),
            state.escalation.escalated_to(),
        );
        // Its cgroup goes with it (see WorkerCgroup's Drop).
        drop(state.cgroup.take());
        let _ = exit.send(Some(record));
        // What is left of its subtree goes with it; its parent hears of it.
        state.tree.exited(state.id, &record);
        // Deliver every message the worker sent before it died, then its
        // output, then the exit. Whatever the worker wrote is already in the
        // socket; the deadline only guards against a stray process that
        // inherited the channel and keeps it open.
        let deadline = Instant::now() + DRAIN_LIMIT;
        while state.channel_open {
            match tokio::time::timeout_at(deadline, recv(&mut receiver)).await {
                Ok(frame) => state.on_frame(frame),
                Err(_) => break,
            }
        }
        drop(receiver);
        while let Ok(sub) = subs.try_recv() {
            state.queued.push_back(WorkerEvent::SubWorker(sub));
        }
        for mut output in outputs.drain(..) {
            if tokio::time::timeout_at(deadline + DRAIN_LIMIT, &mut output)
                .await
                .is_err()
            {
                output.abort();
                let _ = output.await;
            }
        }
        state.queued.push_back(WorkerEvent::Exit(record));
        while let Some(event) = state.queued.pop_front() {
            if events.send(event).await.is_err() {
                break;
            }
        }
    }
}

impl DriverState {
    fn reap(&mut self) -> Option<sys::Reaped> {
        // The worker is a zombie: its process group id is still ours, so
        // clean up whatever it left running in its group before reaping,
        // and in its cgroup (what left the group, and its sub-workers).
        let _ = sys::killpg(self.pid, libc::SIGKILL);
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.kill();
        }
        let reaped = match sys::try_reap(self.pid) {
            Ok(reaped) => reaped,
            // ECHILD: someone else reaped it (SIGCHLD ignored by the host
            // program); the pidfd said it exited, its status is lost.
            Err(_) => Some(sys::Reaped::unknown()),
        };
        if reaped.is_some() {
            crate::reap::forget(self.pid);
        }
        reaped
    }

    fn on_frame(&mut self, frame: arbor_protocol::Result<(Frame, Vec<OwnedFd>)>) {
        let event = match frame {
            Ok((Frame::Ready(_), _)) if !*self.ready.borrow() => {
                let _ = self.ready.send(true);
                WorkerEvent::Ready
            }
            Ok((Frame::Message(message), fds)) => WorkerEvent::Message {
                data: message.data,
                fds,
            },
            Ok((Frame::Error(report), _)) => WorkerEvent::Error {
                message: report.message,
                location: report.location,
            },
            Ok((Frame::Ping(nonce), _)) => {
                // A worker that pings without reading its answers gets no
                // more than WRITER_COMMANDS of them queued; the rest are dropped.
                let _ = self.writer.try_send(WriterCommand::Pong(nonce));
                return;
            }
            Ok((Frame::Pong(_), _)) => return,
            Ok((Frame::Reply(reply), _)) => {
                // A reply nobody waits for any more (timed out) is dropped.
                if let Some(waiter) = self.requests.lock().remove(&reply.id) {
                    let _ = waiter.send(reply.data);
                }
                return;
            }
            Ok((Frame::ConnectionAck(ack), _)) => WorkerEvent::ConnectionAck {
                id: ack.id,
                accepted: ack.accepted,
                open: ack.open,
            },
            Ok((Frame::Load(open), _)) => WorkerEvent::Load { open },
            Ok((Frame::Request(request), fds)) => WorkerEvent::Request {
                id: request.id,
                data: request.data,
                fds,
            },
            Ok((Frame::Spawn(spawn), fds)) => {
                if self.frames.is_full() {
                    self.parked = Some((spawn, fds));
                } else {
                    self.on_spawn(spawn, fds);
                }
                return;
            }
            Ok((Frame::ChildControl(control), _)) => {
                let tree = &self.tree;
                if !tree.is_child(self.id, control.worker_id) {
                    // Not (or no longer) its sub-worker: its exit, if it was
                    // one, is already reported.
                    WorkerEvent::MessageError {
                        reason: format!(
                            "ChildControl for worker {}, which is not a running sub-worker of it",
                            control.worker_id
                        ),
                    }
                } else {
                    match control.action {
                        ChildAction::Terminate => tree.terminate(control.worker_id),
                        ChildAction::Close { grace_ms } => {
                            let grace = Duration::from_millis(grace_ms).min(MAX_GRACE);
                            // One close task per sub-worker: a repeated Close
                            // changes nothing (the one under way is bounded
                            // by its own grace).
                            if tree.claim_close(control.worker_id) {
                                tokio::spawn(Arc::clone(tree).close(control.worker_id, grace));
                            }
                        }
                    }
                    return;
                }
            }
            Ok((frame, _)) => WorkerEvent::MessageError {
                reason: format!("worker sent an unexpected {} frame", frame.kind().name()),
            },
            Err(arbor_protocol::Error::Closed) => {
                self.channel_open = false;
                return;
            }
            Err(error) => {
                self.channel_open = false;
                WorkerEvent::ChannelError {
                    error: error.to_string(),
                }
            }
        };
        self.queued.push_back(event);
    }

    /// A Spawn frame: a place in the tree is taken at once (or the refusal
    /// sent), then the request goes up to the supervisor, which forks the
    /// sub-worker in a task of its own and answers.
    fn on_spawn(&mut self, spawn: arbor_protocol::Spawn, fds: Vec<OwnedFd>) {
        let refuse = |frames: &TreeLink, refusal| {
            let result = SpawnResult {
                id: spawn.id,
                outcome: SpawnOutcome::Refused(refusal),
            };
            frames.send(Frame::SpawnResult(result), Vec::new());
        };
        if let Err(refusal) = self.tree.reserve(self.id) {
            refuse(&self.frames, refusal);
            return;
        }
        let spec = match WorkerSpec::from_wire(spawn.spec, fds) {
            Ok(spec) => spec,
            Err(reason) => {
                self.tree.release(self.id);
                refuse(
                    &self.frames,
                    arbor_protocol::SpawnRefusal::BadSpec { reason },
                );
                return;
            }
        };
        let request = SpawnRequest {
            spec,
            parent: self.id,
            request: spawn.id,
            frames: Arc::clone(&self.frames),
            outputs: self.outputs,
            cgroup: self.cgroup.as_ref().map(|c| c.dir().to_path_buf()),
            handles: self.subs.clone(),
        };
        if self.spawns.send(request).is_err() {
            // Only when the supervisor's side went with its runtime.
            self.tree.release(self.id);
            refuse(
                &self.frames,
                arbor_protocol::SpawnRefusal::Failed {
                    reason: "the supervisor takes no more spawns".into(),
                },
            );
        }
    }

    fn on_control(&mut self, command: Option<Control>, pidfd: std::os::fd::BorrowedFd<'_>) {
        match command {
            Some(Control::Close(grace)) => {
                let parent_link = self.tree.parent_frames(self.id);
                let delivery = if !self.speaks_protocol {
                    Delivery::Nobody
                } else if parent_link.is_some() {
                    // A sub-worker: only its parent can write the Close frame.
                    Delivery::Parent
                } else if self.channel_open {
                    Delivery::Channel
                } else {
                    Delivery::Nobody
                };
                let input = Input::Close { grace, delivery };
                self.escalate(input, parent_link.as_deref(), pidfd);
            }
            Some(Control::Terminate) | None => self.escalate(Input::Terminate, None, pidfd),
            Some(Control::Signal(signal, reply)) => {
                self.escalate(Input::Signalled, None, pidfd);
                let _ = reply.send(sys::pidfd_send_signal(pidfd, signal.number()));
            }
        }
    }

    /// Takes the escalation's step for `input` and does what it says;
    /// `parent_link` is where a sub-worker's CloseChild goes.
    fn escalate(
        &mut self,
        input: Input,
        parent_link: Option<&TreeLink>,
        pidfd: std::os::fd::BorrowedFd<'_>,
    ) {
        let now = Instant::now().into_std();
        for effect in escalation::step(&mut self.escalation, input, now) {
            match effect {
                Effect::SendClose => {
                    // The close command must not be lost behind queued pongs.
                    let writer = self.writer.clone();
                    tokio::spawn(async move { writer.send(WriterCommand::Close).await });
                }
                Effect::SendCloseChild => {
                    if let Some(link) = parent_link {
                        link.send(Frame::CloseChild(self.id), Vec::new());
                    }
                }
                Effect::Kill(signal) => self.kill(pidfd, signal.number()),
                Effect::Deadline(at) => self.escalate_at = at.map(Instant::from_std),
            }
        }
    }

    /// Signals the worker's process group, and the worker itself through its
    /// pidfd in case it left the group.
    fn kill(&self, pidfd: std::os::fd::BorrowedFd<'_>, signal: i32) {
        let _ = sys::killpg(self.pid, signal);
        let _ = sys::pidfd_send_signal(pidfd, signal);
        if let (libc::SIGKILL, Some(cgroup)) = (signal, &self.cgroup) {
            let _ = cgroup.kill();
        }
    }
}

/// The next frame, or never when there is no socket to read.
async fn recv(
    receiver: &mut Option<AsyncReceiver>,
) -> arbor_protocol::Result<(Frame, Vec<OwnedFd>)> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Longest line kept whole; longer lines are cut into pieces of this size.
const MAX_LINE: usize = 64 * 1024;

async fn capture_lines(
    pipe: tokio::net::unix::pipe::Receiver,
    stream: Stream,
    events: mpsc::Sender<WorkerEvent>,
) {
    let mut reader = tokio::io::BufReader::new(pipe);
    loop {
        let mut line = Vec::new();
        let done = loop {
            let buf = match reader.fill_buf().await {
                Ok(buf) => buf,
                Err(_) => break true,
            };
            if buf.is_empty() {
                break true;
            }
            let room = MAX_LINE - line.len();
            match buf.iter().take(room).position(|&b| b == b'\n') {
                Some(at) => {
                    line.extend_from_slice(&buf[..at]);
                    reader.consume(at + 1);
                    break false;
                }
                None => {
                    let take = buf.len().min(room);
                    line.extend_from_slice(&buf[..take]);
                    reader.consume(take);
                    if line.len() == MAX_LINE {
                        break false;
                    }
                }
            }
        };
        if (!line.is_empty() || !done)
            && events
                .send(WorkerEvent::Output { stream, line })
                .await
                .is_err()
        {
            return;
        }
        if done {
            return;
        }
    }
}

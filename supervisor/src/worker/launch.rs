//! How a freshly forked worker's tasks are started: [`launch`] takes the
//! process, its socket, its captured output and its [`Wiring`] to the tree,
//! starts its writer, output and driver tasks, and returns its handle.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use arbor_protocol::nonblocking::AsyncChannel;
use tokio::sync::{mpsc, watch};

use super::driver::{Driver, DriverState};
use super::escalation::Escalation;
use super::outbox::{write_loop, Outbox, WriterCommand};
use super::requests::Pending;
use super::subworkers::{SpawnRequest, SubWorkers};
use super::{output, Worker, WorkerEvent};
use crate::cgroup::WorkerCgroup;
use crate::error::{Error, Result};
use crate::exit::ExitRecord;
use crate::link::{Control, TreeFrame, TreeLink};
use crate::spec::{Output, WhenFull};
use crate::sys;
use crate::tree::{NewNode, Tree};

/// Commands (pongs, close) queued for the writer task.
const WRITER_COMMANDS: usize = 16;

/// Events a worker's handle holds before its driver waits.
const EVENTS: usize = 1024;

/// The channels between a worker's tasks and the rest of the library: made
/// before its node goes into the tree ([`Wiring::node`]), so that its exit
/// always finds the node, and handed to its tasks by [`launch`].
#[derive(Debug)]
pub(crate) struct Wiring {
    control: (
        mpsc::UnboundedSender<Control>,
        mpsc::UnboundedReceiver<Control>,
    ),
    exit: (
        watch::Sender<Option<ExitRecord>>,
        watch::Receiver<Option<ExitRecord>>,
    ),
    tree_frames: (Arc<TreeLink>, mpsc::UnboundedReceiver<TreeFrame>),
}

impl Wiring {
    pub(crate) fn new() -> Self {
        Self {
            control: mpsc::unbounded_channel(),
            exit: watch::channel(None),
            tree_frames: TreeLink::new(),
        }
    }

    /// What the tree records of worker `id`: the way to its driver, its
    /// exit, and its tree link when it has a socket for one.
    pub(crate) fn node(&self, id: u64, parent: Option<u64>, has_socket: bool) -> NewNode {
        NewNode {
            id,
            parent,
            control: self.control.0.clone(),
            frames: has_socket.then(|| Arc::clone(&self.tree_frames.0)),
            exit: self.exit.1.clone(),
        }
    }
}

/// A freshly forked worker, for [`launch`].
pub(crate) struct Launch {
    pub(crate) id: u64,
    pub(crate) pid: libc::pid_t,
    pub(crate) name: String,
    pub(crate) pidfd: OwnedFd,
    /// The worker that started this one, for a sub-worker.
    pub(crate) parent: Option<u64>,
    /// The socket the driver and writer use: the channel of a top-level
    /// worker, the tree link of a sub-worker, none for a worker that does
    /// not speak the protocol.
    pub(crate) socket: Option<AsyncChannel>,
    /// The read ends of its stdout's and stderr's pipes, when captured.
    pub(crate) captured: [Option<OwnedFd>; 2],
    /// Where its stdout and stderr go (its sub-workers' `Inherit`).
    pub(crate) outputs: [Output; 2],
    pub(crate) speaks_protocol: bool,
    pub(crate) queue_limit: usize,
    pub(crate) when_full: WhenFull,
    pub(crate) limits: arbor_protocol::Limits,
    /// Its cgroup, when the supervisor makes them.
    pub(crate) cgroup: Option<WorkerCgroup>,
    pub(crate) wiring: Wiring,
    pub(crate) tree: Arc<Tree>,
    /// Where the worker's Spawn frames go, as requests to the supervisor.
    pub(crate) spawns: mpsc::UnboundedSender<Box<SpawnRequest>>,
}

/// Starts the tasks of a freshly spawned worker and returns its handle.
/// On failure the worker is killed (and reaped).
pub(crate) fn launch(launch: Launch) -> Result<Worker> {
    let lost = |source| {
        crate::reap::kill_and_reap(launch.pid);
        Error::Spawn {
            name: launch.name.clone(),
            source,
        }
    };
    let pidfd = sys::async_readable(launch.pidfd).map_err(lost)?;
    let (events_tx, events) = mpsc::channel(EVENTS);
    let captures = output::capture(launch.captured, &events_tx).map_err(lost)?;
    let (sender, receiver) = launch.socket.map(AsyncChannel::into_split).unzip();
    let outbox = sender.map(|sender| Arc::new(Outbox::new(sender, launch.queue_limit)));
    let Wiring {
        control: (control, control_rx),
        exit: (exit_tx, exit),
        tree_frames: (frames, frames_rx),
    } = launch.wiring;
    let (ready, writer) = start_writer(&outbox, launch.speaks_protocol, &frames, frames_rx);
    let (subs_tx, subs) = mpsc::unbounded_channel();
    let requests = Arc::new(Pending::default());
    let subworkers = SubWorkers {
        id: launch.id,
        tree: Arc::clone(&launch.tree),
        frames: Arc::clone(&frames),
        spawns: launch.spawns,
        handles: subs_tx,
        outputs: launch.outputs,
    };
    let state = DriverState {
        id: launch.id,
        pid: launch.pid,
        // A program that does not speak the protocol is Ready once started.
        queued: VecDeque::from_iter((!launch.speaks_protocol).then_some(WorkerEvent::Ready)),
        ready,
        writer,
        escalation: Escalation::default(),
        escalate_at: None,
        channel_open: receiver.is_some(),
        speaks_protocol: launch.speaks_protocol,
        requests: Arc::clone(&requests),
        outbox: outbox.clone(),
        frames,
        parked: None,
        cgroup: launch.cgroup,
        tree: Arc::clone(&launch.tree),
        subworkers,
    };
    let driver = Driver {
        pidfd,
        receiver,
        control: control_rx,
        events: events_tx,
        exit: exit_tx,
        outputs: captures,
        subs,
        state,
    };
    tokio::spawn(driver.run());
    Ok(Worker {
        id: launch.id,
        pid: launch.pid as u32,
        name: launch.name,
        parent: launch.parent,
        // A sub-worker's channel is its parent worker's.
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

/// Starts the writer task when the worker has a socket (it holds posted
/// messages until the worker is Ready, which it is at once when it does
/// not speak the protocol). Returns the driver's ends: Ready, and the
/// writer's commands.
fn start_writer(
    outbox: &Option<Arc<Outbox>>,
    speaks_protocol: bool,
    frames: &Arc<TreeLink>,
    frames_rx: mpsc::UnboundedReceiver<TreeFrame>,
) -> (watch::Sender<bool>, mpsc::Sender<WriterCommand>) {
    let (ready, ready_rx) = watch::channel(!speaks_protocol);
    let (writer, writer_rx) = mpsc::channel(WRITER_COMMANDS);
    if let Some(outbox) = outbox {
        let link = Arc::clone(frames);
        tokio::spawn(write_loop(
            Arc::clone(outbox),
            writer_rx,
            ready_rx,
            link,
            frames_rx,
        ));
    }
    (ready, writer)
}

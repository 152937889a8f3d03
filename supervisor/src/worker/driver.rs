//! A worker's driver: the task that serves it from its start to its exit.
//!
//! The driver owns the receive half of the worker's socket, its pidfd and
//! its close escalation. It turns what the worker sends into events
//! ([`super::frames`]), sends its Spawn frames up to the supervisor
//! ([`super::subworkers`]), acts on [`Control`] (close, terminate, signal)
//! as the pure escalation step says ([`super::escalation`]), and when the
//! pidfd says the process exited, reaps it, records the exit, delivers
//! whatever the worker sent before it died, then the exit.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::nonblocking::AsyncReceiver;
use arbor_protocol::{Frame, Spawn};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

use super::escalation::{self, Delivery, Effect, Escalation, Input};
use super::frames::{self, Received};
use super::outbox::{Outbox, WriterCommand};
use super::requests::Pending;
use super::subworkers::SubWorkers;
use super::{Worker, WorkerEvent};
use crate::cgroup::WorkerCgroup;
use crate::exit::ExitRecord;
use crate::link::{Control, TreeLink};
use crate::sys;
use crate::tree::Tree;

/// How long after an exit the driver waits for the rest of the worker's
/// messages and output before it reports the exit.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Events queued in the driver before it stops reading the worker's socket
/// (backpressure: a consumer that does not read events slows the worker,
/// never the other way round, and never loses an event).
const QUEUED_EVENTS: usize = 64;

/// The driver task: the I/O objects it waits on, and its state.
pub(super) struct Driver {
    pub(super) pidfd: AsyncFd<OwnedFd>,
    pub(super) receiver: Option<AsyncReceiver>,
    /// Sub-workers this worker started, on their way into its events.
    pub(super) subs: mpsc::UnboundedReceiver<Box<Worker>>,
    pub(super) control: mpsc::UnboundedReceiver<Control>,
    pub(super) events: mpsc::Sender<WorkerEvent>,
    pub(super) exit: watch::Sender<Option<ExitRecord>>,
    /// The output capture tasks.
    pub(super) outputs: Vec<tokio::task::JoinHandle<()>>,
    pub(super) state: DriverState,
}

/// The driver's decisions, apart from the I/O objects it waits on.
pub(super) struct DriverState {
    pub(super) id: u64,
    pub(super) pid: libc::pid_t,
    pub(super) queued: VecDeque<WorkerEvent>,
    pub(super) ready: watch::Sender<bool>,
    pub(super) writer: mpsc::Sender<WriterCommand>,
    /// What was asked of the worker, and how far a close has escalated.
    pub(super) escalation: Escalation,
    /// When the escalation's next step is due.
    pub(super) escalate_at: Option<Instant>,
    pub(super) channel_open: bool,
    /// Whether a Close frame means anything to this worker.
    pub(super) speaks_protocol: bool,
    /// Requests waiting for the worker's reply.
    pub(super) requests: Arc<Pending>,
    /// The way posts go to the worker (none for a sub-worker, whose
    /// channel its parent holds), ended once nothing can reach it.
    pub(super) outbox: Option<Arc<Outbox>>,
    /// The worker's tree link (SpawnResult goes out here).
    pub(super) frames: Arc<TreeLink>,
    /// A Spawn waiting for room on the tree link.
    pub(super) parked: Option<(Spawn, Vec<OwnedFd>)>,
    /// The worker's cgroup: killed with the worker, removed after it.
    pub(super) cgroup: Option<WorkerCgroup>,
    pub(super) tree: Arc<Tree>,
    /// The worker as the parent of sub-workers.
    pub(super) subworkers: SubWorkers,
}

impl Driver {
    pub(super) async fn run(mut self) {
        let reaped = self.until_exit().await;
        // Boxed: its state would otherwise sit in every live worker's
        // driver task, which only needs it once the worker is gone.
        Box::pin(self.report(reaped)).await;
    }

    /// Serves the worker until its process has exited, and reaps it.
    async fn until_exit(&mut self) -> sys::Reaped {
        let Driver {
            pidfd,
            receiver,
            subs,
            control,
            events,
            state,
            ..
        } = self;
        let mut control_open = true;
        let frames = Arc::clone(&state.frames);
        loop {
            let escalate_at = state.escalate_at;
            tokio::select! {
                readable = pidfd.readable() => {
                    match readable {
                        Ok(mut guard) => match state.reap() {
                            Some(reaped) => return reaped,
                            None => guard.clear_ready(),
                        },
                        Err(_) => {
                            // Not expected for a pidfd; fall back to polling.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            if let Some(reaped) = state.reap() {
                                return reaped;
                            }
                        }
                    }
                }
                // A Spawn that found the worker's tree link full (it sends
                // Spawn frames and does not read the answers) waits, and
                // the worker is not read meanwhile: backpressure on that
                // worker alone, nothing dropped.
                frame = recv(receiver), if state.channel_open && state.queued.len() < QUEUED_EVENTS && state.parked.is_none() => {
                    state.on_frame(frame);
                    // Hand the event over now when there is room, without
                    // another turn of the loop.
                    state.hand_over(events);
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
        }
    }

    /// Records the exit, then delivers every message the worker sent before
    /// it died, its output, and the exit last.
    async fn report(self, reaped: sys::Reaped) {
        let Driver {
            mut receiver,
            mut subs,
            events,
            exit,
            mut outputs,
            mut state,
            ..
        } = self;
        let record = crate::exit::from_reaped(
            &reaped,
            state.escalation.asked(),
            state.escalation.escalated_to(),
        );
        // Nothing posted from now on can reach it.
        state.end_outbox();
        // Its cgroup goes with it (see WorkerCgroup's Drop).
        drop(state.cgroup.take());
        let _ = exit.send(Some(record));
        // What is left of its subtree goes with it; its parent hears of it.
        state.tree.exited(state.id, &record);
        // Whatever the worker wrote is already in the socket; the deadline
        // only guards against a stray process that inherited the channel
        // and keeps it open.
        let deadline = Instant::now() + DRAIN_LIMIT;
        while state.channel_open {
            match tokio::time::timeout_at(deadline, recv(&mut receiver)).await {
                Ok(frame) => state.on_frame(frame),
                Err(_) => break,
            }
        }
        drop(receiver);
        // Replies sent before the exit were read above; none can come now.
        state.requests.end();
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
    /// The channel closed (or broke): nothing more will be read from it, so
    /// no request can be answered any more.
    fn channel_closed(&mut self) {
        self.channel_open = false;
        self.requests.end();
        self.end_outbox();
    }

    fn end_outbox(&self) {
        if let Some(outbox) = &self.outbox {
            outbox.end();
        }
    }

    fn reap(&mut self) -> Option<sys::Reaped> {
        // The worker is a zombie: its process group id is still ours, so
        // clean up whatever it left running in its group before reaping.
        // What is left in its cgroup (what left the group, its sub-workers)
        // is killed when the cgroup is dropped, right after (`report`).
        let _ = sys::killpg(self.pid, libc::SIGKILL);
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

    /// Hands queued events over while the handle has room for them.
    fn hand_over(&mut self, events: &mpsc::Sender<WorkerEvent>) {
        while let Some(event) = self.queued.pop_front() {
            match events.try_reserve() {
                Ok(permit) => permit.send(event),
                Err(mpsc::error::TrySendError::Full(())) => {
                    self.queued.push_front(event);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(())) => self.queued.clear(),
            }
        }
    }

    fn on_frame(&mut self, frame: arbor_protocol::Result<(Frame, Vec<OwnedFd>)>) {
        // Read apart: a borrow held through the match would block `send`.
        let ready = *self.ready.borrow();
        match frames::receive(frame, ready) {
            Received::Event(event) => self.queued.push_back(event),
            Received::Ready => {
                let _ = self.ready.send(true);
                self.queued.push_back(WorkerEvent::Ready);
            }
            Received::Ping(nonce) => {
                // A worker that pings without reading its answers gets no
                // more than WRITER_COMMANDS of them queued; the rest are dropped.
                let _ = self.writer.try_send(WriterCommand::Pong(nonce));
            }
            Received::Reply(reply) => self.requests.answer(reply.id, reply.data),
            Received::Spawn(spawn, fds) => {
                if self.frames.is_full() {
                    self.parked = Some((spawn, fds));
                } else {
                    self.on_spawn(spawn, fds);
                }
            }
            Received::ChildControl(control) => {
                if let Some(event) = self.subworkers.control(control) {
                    self.queued.push_back(event);
                }
            }
            Received::Nothing => {}
            Received::Closed => self.channel_closed(),
            Received::Broken(error) => {
                self.channel_closed();
                self.queued.push_back(WorkerEvent::ChannelError { error });
            }
        }
    }

    /// A Spawn frame, with room on the tree link for its answer.
    fn on_spawn(&self, spawn: Spawn, fds: Vec<OwnedFd>) {
        let cgroup = self.cgroup.as_ref().map(WorkerCgroup::dir);
        self.subworkers.spawn(spawn, fds, cgroup);
    }

    fn on_control(&mut self, command: Option<Control>, pidfd: BorrowedFd<'_>) {
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
    fn escalate(&mut self, input: Input, parent_link: Option<&TreeLink>, pidfd: BorrowedFd<'_>) {
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
    fn kill(&self, pidfd: BorrowedFd<'_>, signal: i32) {
        let _ = sys::killpg(self.pid, signal);
        let _ = sys::pidfd_send_signal(pidfd, signal);
        if let (libc::SIGKILL, Some(cgroup)) = (signal, &self.cgroup) {
            cgroup.kill_soon();
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

//! A worker as the parent of sub-workers. Its Spawn frames go up to the
//! supervisor as [`SpawnRequest`]s: the driver takes the place in the tree
//! and checks the spec, the supervisor forks the sub-worker and answers
//! (SpawnResult and the handle, or a refusal). Its ChildControl frames close
//! or terminate one of its sub-workers through the tree.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::{
    ChildAction, ChildControl, Frame, Spawn, SpawnOutcome, SpawnRefusal, SpawnResult,
};
use tokio::sync::mpsc;

use super::escalation::MAX_GRACE;
use super::{Worker, WorkerEvent};
use crate::link::TreeLink;
use crate::spec::{ListenFds, Output, WorkerSpec};
use crate::tree::Tree;

/// A sub-worker a worker asked for with a Spawn frame, on its way up to the
/// supervisor, which forks it and answers the worker: SpawnResult on its
/// tree link and the handle in its events, or a refusal. Its place in the
/// tree is already taken ([`Tree::reserve`]); the supervisor gives it back
/// ([`Tree::release`]) once the spawn is done.
#[derive(Debug)]
pub(crate) struct SpawnRequest {
    /// What to start.
    pub(crate) spec: WorkerSpec,
    /// The sockets the Spawn frame handed over for it.
    pub(crate) listen: ListenFds,
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
    pub(crate) handles: mpsc::UnboundedSender<Box<Worker>>,
}

/// What a worker's driver needs to act as the parent of sub-workers.
#[derive(Debug)]
pub(super) struct SubWorkers {
    /// The worker's id.
    pub(super) id: u64,
    pub(super) tree: Arc<Tree>,
    /// The worker's tree link: SpawnResult goes out here.
    pub(super) frames: Arc<TreeLink>,
    /// Where Spawn frames go up to the supervisor.
    pub(super) spawns: mpsc::UnboundedSender<Box<SpawnRequest>>,
    /// Where a finished spawn hands its sub-worker's handle.
    pub(super) handles: mpsc::UnboundedSender<Box<Worker>>,
    /// The worker's stdout and stderr, inherited by its sub-workers.
    pub(super) outputs: [Output; 2],
}

impl SubWorkers {
    /// A Spawn frame: a place in the tree is taken at once (or the refusal
    /// sent), then the request goes up to the supervisor, which forks the
    /// sub-worker in a task of its own and answers. `cgroup` is the
    /// worker's cgroup directory, which the sub-worker's nests in.
    pub(super) fn spawn(&self, spawn: Spawn, fds: Vec<OwnedFd>, cgroup: Option<&Path>) {
        let refuse = |refusal| {
            let result = SpawnResult {
                id: spawn.id,
                outcome: SpawnOutcome::Refused(refusal),
            };
            self.frames.send(Frame::SpawnResult(result), Vec::new());
        };
        if let Err(refusal) = self.tree.reserve(self.id) {
            refuse(refusal);
            return;
        }
        let (spec, listen) = match WorkerSpec::from_wire(spawn.spec, fds) {
            Ok(parts) => parts,
            Err(reason) => {
                self.tree.release(self.id);
                refuse(SpawnRefusal::BadSpec { reason });
                return;
            }
        };
        let request = SpawnRequest {
            spec,
            listen,
            parent: self.id,
            request: spawn.id,
            frames: Arc::clone(&self.frames),
            outputs: self.outputs,
            cgroup: cgroup.map(Path::to_path_buf),
            handles: self.handles.clone(),
        };
        if self.spawns.send(Box::new(request)).is_err() {
            // Only when the supervisor's side went with its runtime.
            self.tree.release(self.id);
            let reason = "the supervisor takes no more spawns".into();
            refuse(SpawnRefusal::Failed { reason });
        }
    }

    /// A ChildControl frame: the worker closes or terminates a sub-worker.
    /// For a worker that is not (or no longer) its running sub-worker, the
    /// event that says so; its exit, if it was one, is already reported.
    pub(super) fn control(&self, control: ChildControl) -> Option<WorkerEvent> {
        let tree = &self.tree;
        if !tree.is_child(self.id, control.worker_id) {
            return Some(WorkerEvent::MessageError {
                reason: format!(
                    "ChildControl for worker {}, which is not a running sub-worker of it",
                    control.worker_id
                ),
            });
        }
        match control.action {
            ChildAction::Terminate => tree.terminate(control.worker_id),
            ChildAction::Close { grace_ms } => {
                let grace = Duration::from_millis(grace_ms).min(MAX_GRACE);
                // One close task per sub-worker: a repeated Close changes
                // nothing (the one under way is bounded by its own grace).
                if tree.claim_close(control.worker_id) {
                    tokio::spawn(Arc::clone(tree).close(control.worker_id, grace));
                }
            }
        }
        None
    }
}

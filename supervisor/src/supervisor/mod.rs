//! [`Supervisor`]: starts workers and owns them.
//!
//! A start is three steps: the [`plan`] (pure: what fds go where, the
//! environment, argv; the spawn contract is documented and tested there),
//! the start (its fds made as the plan says, `fds.rs`, then the fork, in
//! `crate::spawn`), and the registration (the worker's node in the tree,
//! a sub-worker's SpawnResult to the worker that asked for it, its tasks
//! launched). The worker runs in its own process group and dies with the
//! supervisor (`PR_SET_PDEATHSIG`).
//!
//! A worker asks for sub-workers with Spawn frames; its driver sends them
//! up here as requests, and the supervisor forks them the same way.

mod fds;
mod plan;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arbor_protocol::nonblocking::AsyncChannel;
use arbor_protocol::{Frame, Limits, SpawnOutcome, SpawnRefusal, SpawnResult};
use tokio::sync::mpsc;

use crate::cgroup::{Cgroups, WorkerCgroup};
use crate::error::{Error, Result};
use crate::link::TreeLink;
use crate::spawn::{above_targets, Prepared, Spawner, StartError};
use crate::spec::{ListenFds, Output, WorkerSpec};
use crate::tree::{Tree, TreeLimits};
use crate::worker::{launch, Launch, SpawnRequest, Wiring, Worker};
use plan::{Exec, Layout, Plan, Settings};

pub use plan::{channel_fd, FIRST_LISTEN_FD};

/// Starts and owns worker processes. Embeddable in any tokio program.
///
/// Workers die with their supervisor: when the `Supervisor` and every
/// [`Worker`] it made are dropped, or the process dies, the kernel kills
/// them (each is forked with `PR_SET_PDEATHSIG`). Workers may start sub-workers
/// (a Spawn frame); the supervisor forks them too, within its
/// [`TreeLimits`] (see [`crate::tree`]).
#[derive(Debug, Clone)]
pub struct Supervisor {
    spawner: Arc<Spawner>,
    next_id: Arc<AtomicU64>,
    limits: Limits,
    tree: Arc<Tree>,
    cgroups: Option<Arc<Cgroups>>,
}

/// Where a sub-worker's SpawnResult goes: the asking worker's tree link.
struct SpawnFor {
    parent: u64,
    request: u64,
    frames: Arc<TreeLink>,
    /// The parent's stdout and stderr: what `Output::Inherit` means for a
    /// sub-worker (the parent's own streams are not the supervisor's).
    outputs: [Output; 2],
    /// The parent's cgroup directory, which the sub-worker's nests in.
    cgroup: Option<PathBuf>,
    /// Set once SpawnResult went out: a later failure is then reported as
    /// the sub-worker's exit, not as a second answer.
    answered: Arc<AtomicBool>,
}

impl SpawnFor {
    /// Answers the asking worker: sub-worker `id` runs as `pid`, and its
    /// channel is the end that goes with the frame.
    fn started(&self, id: u64, pid: libc::pid_t, channel: UnixStream) {
        let result = Frame::SpawnResult(SpawnResult {
            id: self.request,
            outcome: SpawnOutcome::Started {
                worker_id: id,
                pid: pid as u32,
            },
        });
        self.frames.send(result, vec![OwnedFd::from(channel)]);
        self.answered.store(true, Ordering::SeqCst);
    }
}

impl Supervisor {
    /// A supervisor with default channel limits.
    pub fn new() -> Result<Self> {
        Self::with_limits(Limits::default())
    }

    /// A supervisor whose worker channels enforce `limits`.
    pub fn with_limits(limits: Limits) -> Result<Self> {
        Self::with_tree_limits(limits, TreeLimits::default())
    }

    /// A supervisor whose worker channels enforce `limits` and whose
    /// workers may start sub-workers within `tree`.
    pub fn with_tree_limits(limits: Limits, tree: TreeLimits) -> Result<Self> {
        let spawner = Spawner::start().map_err(|source| Error::Spawn {
            name: "arbor-spawner thread".into(),
            source,
        })?;
        Ok(Self {
            spawner: Arc::new(spawner),
            next_id: Arc::new(AtomicU64::new(1)),
            limits,
            tree: Arc::new(Tree::new(tree)),
            cgroups: None,
        })
    }

    /// This supervisor with a cgroup per worker under `cgroups` (see
    /// [`crate::cgroup`]): a worker's exit or terminate then kills every
    /// process left in its cgroup, descendants that left its process group
    /// included.
    pub fn with_cgroups(mut self, cgroups: Cgroups) -> Self {
        self.cgroups = Some(Arc::new(cgroups));
        self
    }

    /// Where the workers' cgroups are, when there are any.
    pub fn cgroups(&self) -> Option<&Path> {
        self.cgroups.as_deref().map(Cgroups::base)
    }

    /// Starts a worker. Returns as soon as the process has exec'ed; messages
    /// may be posted at once.
    pub async fn spawn(&self, spec: WorkerSpec) -> Result<Worker> {
        self.spawn_node(spec, ListenFds::new(), None).await
    }

    /// Starts a worker handed the sockets `listen` (fds from 3, by
    /// systemd's socket-activation convention; its channel follows them).
    /// Returns as [`Supervisor::spawn`] does.
    pub async fn spawn_with_fds(&self, spec: WorkerSpec, listen: ListenFds) -> Result<Worker> {
        self.spawn_node(spec, listen, None).await
    }

    /// Starts a worker, or a sub-worker `for` another one: then its channel
    /// end goes to the asking worker in SpawnResult, and a second
    /// socketpair, its tree link, stays with us for its own Spawn frames.
    async fn spawn_node(
        &self,
        spec: WorkerSpec,
        listen: ListenFds,
        sub: Option<SpawnFor>,
    ) -> Result<Worker> {
        spec.check().map_err(|reason| Error::BadSpec { reason })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut spec = spec.into_parts();
        if let Some(sub) = &sub {
            plan::inherit_outputs(&mut spec, sub.outputs);
        }
        let plan = Plan::new(&spec, &listen.names(), id, sub.is_some())?;
        let listen = listen.into_fds();
        let parent_cgroup = sub.as_ref().and_then(|s| s.cgroup.as_deref());
        let name = &plan.settings.name;
        let child = self
            .start(id, name, plan.exec, &plan.layout, listen, parent_cgroup)
            .await?;
        self.register(id, plan.settings, child, sub)
    }

    /// Makes the worker's fds as its layout says and its cgroup, then forks
    /// it (on the spawner thread, `crate::spawn`) and waits for its exec.
    async fn start(
        &self,
        id: u64,
        name: &str,
        exec: Exec,
        layout: &Layout,
        listen: Vec<OwnedFd>,
        parent_cgroup: Option<&Path>,
    ) -> Result<Child> {
        let spawn_error = |source| Error::Spawn {
            name: name.to_owned(),
            source,
        };
        let made = fds::make(layout, listen).map_err(spawn_error)?;
        // A cgroup that cannot be made costs the worker its cgroup, not its start.
        let (cgroup, cgroup_dir) = match &self.cgroups {
            Some(cgroups) => match cgroups.create_off_runtime(parent_cgroup, id).await {
                Ok(made) => Some(made),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    tracing::warn!(worker = %name, "started without a cgroup: {e}");
                    None
                }
                Err(e) => {
                    tracing::debug!(worker = %name, "no cgroup: {e}");
                    None
                }
            },
            None => None,
        }
        .unzip();
        let prepared = Prepared {
            path: exec.path,
            argv: exec.argv,
            envp: exec.envp,
            listen_pid: exec.listen_pid,
            cwd: exec.cwd,
            fds: above_targets(made.fds).map_err(spawn_error)?,
            cgroup: cgroup_dir,
        };
        // On any failure from here to the driver's start, `cgroup` is
        // dropped, which removes its (empty) directory.
        let started = self
            .spawner
            .start_child(prepared)
            .await
            .map_err(|e| match e {
                StartError::Parent(source) => spawn_error(source),
                StartError::Child(step, source) => Error::Exec {
                    name: name.to_owned(),
                    step,
                    source,
                },
            })?;
        // A worker that could not be born in its cgroup runs outside it; the
        // empty directory goes.
        let cgroup = match (cgroup, started.cgroup_refused, &self.cgroups) {
            (Some(cgroup), None, _) => Some(cgroup),
            (Some(_), Some(errno), Some(cgroups)) => {
                cgroups.refused(errno);
                None
            }
            _ => None,
        };
        Ok(Child {
            pid: started.pid,
            pidfd: started.pidfd,
            cgroup,
            channel: made.channel,
            link: made.link,
            captured: made.captured,
        })
    }

    /// Records a started worker in the tree, hands a sub-worker's channel to
    /// the worker that asked for it (SpawnResult, sent before the new
    /// worker's driver runs, so its ChildExit can only come after), and
    /// launches its tasks.
    fn register(
        &self,
        id: u64,
        settings: Settings,
        child: Child,
        sub: Option<SpawnFor>,
    ) -> Result<Worker> {
        let Settings { name, .. } = &settings;
        // The socket the driver reads and the writer writes: the channel of
        // a top-level worker, the tree link of a sub-worker (none for a
        // worker that does not speak the protocol).
        let (driven, handed) = match &sub {
            None => (child.channel, None),
            Some(_) => (child.link, child.channel),
        };
        let socket = match driven
            .map(|s| AsyncChannel::from_std(s, self.limits))
            .transpose()
        {
            Ok(socket) => socket,
            Err(source) => {
                crate::reap::kill_and_reap(child.pid);
                let name = name.clone();
                return Err(Error::Spawn { name, source });
            }
        };
        let parent = sub.as_ref().map(|s| s.parent);
        let wiring = Wiring::new();
        if self
            .tree
            .insert(wiring.node(id, parent, socket.is_some()))
            .is_err()
        {
            // The asking worker exited or began closing while this one
            // started: it must not outlive its parent.
            crate::reap::kill_and_reap(child.pid);
            return Err(Error::ParentGone { name: name.clone() });
        }
        if let (Some(sub), Some(ours)) = (&sub, handed) {
            sub.started(id, child.pid, ours);
        }
        let (spawns, spawn_requests) = mpsc::unbounded_channel();
        let launched = launch(Launch {
            id,
            pid: child.pid,
            name: settings.name,
            pidfd: child.pidfd,
            parent,
            socket,
            captured: child.captured,
            outputs: settings.outputs,
            speaks_protocol: settings.speaks_protocol,
            queue_limit: settings.queue_limit,
            when_full: settings.when_full,
            limits: self.limits,
            cgroup: child.cgroup,
            wiring,
            tree: Arc::clone(&self.tree),
            spawns,
        });
        match &launched {
            // Its Spawn frames come up from its driver until the driver ends.
            Ok(_) => self.serve_spawns(spawn_requests),
            Err(_) => {
                // Killed before its driver ran: its node goes, and a parent
                // that got its SpawnResult gets its ChildExit too.
                let lost = crate::exit::from_reaped(
                    &crate::sys::Reaped::unknown(),
                    Some(crate::Initiator::Terminate),
                    None,
                );
                self.tree.exited(id, &lost);
            }
        }
        launched
    }

    /// Serves one worker's spawn requests (its Spawn frames, sent up by its
    /// driver) in a task, until its driver ends; each in a task of its own,
    /// so that one slow start holds up no other.
    fn serve_spawns(&self, mut requests: mpsc::UnboundedReceiver<Box<SpawnRequest>>) {
        // Spawned from plain fns (`register`), never inside `spawn_node`'s
        // body: the task awaits `spawn_node` (through `spawn_sub`), and
        // proving that future Send while checking `spawn_node` itself is a
        // cycle the compiler refuses.
        let supervisor = self.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                tokio::spawn(supervisor.clone().spawn_sub(*request));
            }
        });
    }

    /// Starts the sub-worker a worker asked for and answers it: the handle
    /// goes into the asking worker's events (SpawnResult went out at the
    /// start), a failure goes back as a refusal. Gives back the place in the
    /// tree the driver took for it.
    async fn spawn_sub(self, request: SpawnRequest) {
        let SpawnRequest {
            spec,
            listen,
            parent,
            request,
            frames,
            outputs,
            cgroup,
            handles,
        } = request;
        let answered = Arc::new(AtomicBool::new(false));
        let sub = SpawnFor {
            parent,
            request,
            frames: Arc::clone(&frames),
            outputs,
            cgroup,
            answered: Arc::clone(&answered),
        };
        let started = self.spawn_node(spec, listen, Some(sub)).await;
        self.tree.release(parent);
        match started {
            Ok(worker) => {
                let _ = handles.send(Box::new(worker));
            }
            // Started, then lost: its ChildExit is on its way.
            Err(_) if answered.load(Ordering::SeqCst) => {}
            Err(error) => {
                let result = SpawnResult {
                    id: request,
                    outcome: SpawnOutcome::Refused(refusal(error)),
                };
                frames.send(Frame::SpawnResult(result), Vec::new());
            }
        }
    }
}

/// How a sub-worker's failed start is told to the worker that asked for it.
fn refusal(error: Error) -> SpawnRefusal {
    match error {
        Error::ParentGone { .. } => SpawnRefusal::Closing,
        Error::Nul { .. } | Error::ProgramNotFound { .. } => SpawnRefusal::BadSpec {
            reason: error.to_string(),
        },
        error => SpawnRefusal::Failed {
            reason: error.to_string(),
        },
    }
}

/// A worker just started, with the ends of its fds that stay here.
#[derive(Debug)]
struct Child {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    cgroup: Option<WorkerCgroup>,
    /// Our end of its channel (a sub-worker's goes to its parent worker).
    channel: Option<UnixStream>,
    /// Our end of a sub-worker's tree link.
    link: Option<UnixStream>,
    /// The read ends of its captured stdout and stderr.
    captured: [Option<OwnedFd>; 2],
}

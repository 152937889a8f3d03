//! [`Supervisor`]: starts workers by the spawn contract of DESIGN.md.
//!
//! A worker gets the sockets it was given at fds 3 and up, exactly as
//! systemd's socket activation passes them (`SD_LISTEN_FDS_START`, with
//! `LISTEN_FDS`, `LISTEN_FDNAMES` and its own `LISTEN_PID`), so a server
//! written for systemd runs unchanged; then, when it speaks the protocol,
//! its channel right after them, at the fd `ARBOR_CHANNEL_FD` names (fd 3
//! when it has no sockets), and for a sub-worker its tree link after that
//! (`ARBOR_TREE_FD`); `ARBOR_WORKER_ID` and `ARBOR_WORKER_NAME`; stdin from
//! `/dev/null`; stdout and stderr as its spec says; nothing else (every
//! other fd of the supervisor is close-on-exec). A program that does not
//! speak the protocol gets no channel at all. It runs in its own process
//! group and dies with the supervisor (`PR_SET_PDEATHSIG`).

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arbor_protocol::nonblocking::AsyncChannel;
use arbor_protocol::spec::{SpecParts, SPAWN_VARIABLES};
use arbor_protocol::{Frame, Limits, SpawnOutcome, SpawnRefusal, SpawnResult};
use tokio::sync::mpsc;

use crate::cgroup::Cgroups;
use crate::error::{Error, Result};
use crate::exit::ExitRecord;
use crate::link::TreeLink;
use crate::spawn::{above_targets, Prepared, Spawner, StartError};
use crate::spec::{Output, Program, WorkerSpec};
use crate::tree::{Tree, TreeLimits};
use crate::worker::{launch, Launch, SpawnRequest, Wiring, Worker};

/// The fd number of the first socket handed to a worker: systemd's
/// `SD_LISTEN_FDS_START`.
pub const FIRST_LISTEN_FD: RawFd = 3;

/// The fd number of the channel of a worker handed `listen_count` sockets:
/// right after them (`ARBOR_CHANNEL_FD`).
pub fn channel_fd(listen_count: usize) -> RawFd {
    FIRST_LISTEN_FD + listen_count as RawFd
}

/// Starts and owns worker processes. Embeddable in any tokio program.
///
/// Workers die with their supervisor: when the `Supervisor` and every
/// [`Worker`] it made are dropped, or the process dies, the kernel kills
/// them (see [`crate::spawn`] for why). Workers may start sub-workers
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
        self.spawn_node(spec, None).await
    }

    /// Starts a worker, or a sub-worker `for` another one: then its channel
    /// end goes to the asking worker in SpawnResult (sent before the new
    /// worker's driver runs, so its ChildExit can only come after), and a
    /// second socketpair, its tree link, stays with us for its own Spawn
    /// frames.
    async fn spawn_node(&self, spec: WorkerSpec, sub: Option<SpawnFor>) -> Result<Worker> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut spec = spec.into_parts();
        if let Some(sub) = &sub {
            for (output, parents) in [&mut spec.stdout, &mut spec.stderr]
                .into_iter()
                .zip(sub.outputs)
            {
                if *output == Output::Inherit {
                    *output = parents;
                }
            }
        }
        let outputs = [spec.stdout, spec.stderr];
        let name = spec.name.clone();
        let spawn_error = |source| Error::Spawn {
            name: name.clone(),
            source,
        };
        let listen_names: Vec<&str> = spec.listen_fds.iter().map(|(n, _)| n.as_str()).collect();
        let listen_count = spec.listen_fds.len();
        let listen_fdnames = listen_names.join(":");
        let mut env = environment(&spec, id)?;
        if listen_count > 0 {
            env.push(cstring_pair("LISTEN_FDS", &listen_count.to_string())?);
            env.push(cstring_pair("LISTEN_FDNAMES", &listen_fdnames)?);
        }
        let mut fds: Vec<(OwnedFd, RawFd)> = Vec::new();
        // The channel follows the listen fds. A plain top-level worker gets
        // none; a plain sub-worker's parent still gets its end in
        // SpawnResult (the one fd the frame carries), whose peer is closed
        // here, so the parent reads end-of-channel and then the exit.
        let channel_at = channel_fd(listen_count);
        let pair = match (&sub, spec.speaks_protocol) {
            (None, false) => None,
            _ => Some(UnixStream::pair().map_err(spawn_error)?),
        };
        let ours = match pair {
            Some((ours, theirs)) => {
                if spec.speaks_protocol {
                    env.push(cstring_pair("ARBOR_CHANNEL_FD", &channel_at.to_string())?);
                    fds.push((OwnedFd::from(theirs), channel_at));
                }
                Some(ours)
            }
            None => None,
        };
        // A sub-worker's channel is its parent worker's; its own Spawn
        // frames come over a second socket, right after its channel.
        let link = match (&sub, spec.speaks_protocol) {
            (Some(_), true) => {
                let (link_ours, link_theirs) = UnixStream::pair().map_err(spawn_error)?;
                let at = channel_at + 1;
                env.push(cstring_pair("ARBOR_TREE_FD", &at.to_string())?);
                fds.push((OwnedFd::from(link_theirs), at));
                Some(link_ours)
            }
            _ => None,
        };
        let (program_path, argv0) = resolve(&spec)?;
        let mut argv = vec![argv0];
        for arg in &spec.args {
            argv.push(cstring(arg.as_bytes(), "an argument")?);
        }
        let cwd = spec
            .cwd
            .as_deref()
            .map(|c| cstring(c.as_os_str().as_bytes(), "the working directory"))
            .transpose()?;

        let devnull = || {
            std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(OwnedFd::from)
        };
        fds.push((devnull().map_err(spawn_error)?, 0));
        let mut captured = [None, None];
        for (i, (output, target)) in [(spec.stdout, 1), (spec.stderr, 2)].into_iter().enumerate() {
            match output {
                Output::Inherit => {}
                Output::Null => fds.push((devnull().map_err(spawn_error)?, target)),
                Output::Capture => {
                    let (read, write) = crate::sys::pipe().map_err(spawn_error)?;
                    captured[i] = Some(read);
                    fds.push((write, target));
                }
            }
        }
        // A cgroup that cannot be made costs the worker its cgroup, not its start.
        let parent_dir = sub.as_ref().and_then(|s| s.cgroup.as_deref());
        let (cgroup, cgroup_dir) = self
            .cgroups
            .as_ref()
            .and_then(|cgroups| match cgroups.create(parent_dir, id) {
                Ok(made) => Some(made),
                Err(e) => {
                    tracing::debug!(worker = %name, "no cgroup: {e}");
                    None
                }
            })
            .unzip();
        let speaks_protocol = spec.speaks_protocol;
        let (queue_limit, when_full) = (spec.queue_limit, spec.when_full);
        for (i, (_, fd)) in spec.listen_fds.into_iter().enumerate() {
            fds.push((fd, FIRST_LISTEN_FD + i as RawFd));
        }
        let prepared = Prepared {
            path: program_path,
            argv,
            envp: env,
            listen_pid: listen_count > 0,
            cwd,
            fds: above_targets(fds).map_err(spawn_error)?,
            cgroup: cgroup_dir,
        };
        // On any failure from here to the driver's start, `cgroup` is
        // dropped, which removes its (empty) directory.
        let started = self
            .spawner
            .start_child(prepared)
            .await
            .map_err(|e| match e {
                StartError::Parent(source) => Error::Spawn {
                    name: name.clone(),
                    source,
                },
                StartError::Child(step, source) => Error::Exec {
                    name: name.clone(),
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
        // The socket the driver reads and the writer writes: the channel of
        // a top-level worker, the tree link of a sub-worker (none for a
        // worker that does not speak the protocol).
        let (driven, handed) = match &sub {
            None => (ours, None),
            Some(_) => (link, ours),
        };
        let channel = match driven
            .map(|s| AsyncChannel::from_std(s, self.limits))
            .transpose()
        {
            Ok(channel) => channel,
            Err(source) => {
                crate::reap::kill_and_reap(started.pid);
                return Err(spawn_error(source));
            }
        };
        let wiring = Wiring::new();
        let node = wiring.node(id, sub.as_ref().map(|s| s.parent), channel.is_some());
        if self.tree.insert(node).is_err() {
            // The asking worker exited or began closing while this one
            // started: it must not outlive its parent.
            crate::reap::kill_and_reap(started.pid);
            return Err(Error::ParentGone { name });
        }
        if let (Some(sub), Some(ours)) = (&sub, handed) {
            let result = Frame::SpawnResult(SpawnResult {
                id: sub.request,
                outcome: SpawnOutcome::Started {
                    worker_id: id,
                    pid: started.pid as u32,
                },
            });
            sub.frames.send(result, vec![OwnedFd::from(ours)]);
            sub.answered.store(true, Ordering::SeqCst);
        }
        let (spawns, spawn_requests) = mpsc::unbounded_channel();
        let launched = launch(Launch {
            id,
            pid: started.pid,
            name,
            pidfd: started.pidfd,
            parent: sub.map(|s| s.parent),
            socket: channel,
            captured,
            outputs,
            speaks_protocol,
            queue_limit,
            when_full,
            limits: self.limits,
            cgroup,
            wiring,
            tree: Arc::clone(&self.tree),
            spawns,
        });
        if launched.is_ok() {
            // Its Spawn frames come up from its driver until the driver ends.
            self.serve_spawns(spawn_requests);
        } else {
            // Killed before its driver ran: its node goes, and a parent
            // that got its SpawnResult gets its ChildExit too.
            let lost = ExitRecord::from_reaped(
                &crate::sys::Reaped::unknown(),
                Some(crate::Initiator::Terminate),
                None,
            );
            self.tree.exited(id, &lost);
        }
        launched
    }

    /// Serves one worker's spawn requests (its Spawn frames, sent up by its
    /// driver) in a task, until its driver ends; each in a task of its own,
    /// so that one slow start holds up no other.
    fn serve_spawns(&self, mut requests: mpsc::UnboundedReceiver<SpawnRequest>) {
        // A plain fn, so the task is not spawned inside `spawn_node`'s body:
        // the task awaits `spawn_node` (through `spawn_sub`), and proving
        // that future Send while checking `spawn_node` itself is a cycle
        // the compiler refuses.
        let supervisor = self.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                tokio::spawn(supervisor.clone().spawn_sub(request));
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
        let started = self.spawn_node(spec, Some(sub)).await;
        self.tree.release(parent);
        match started {
            Ok(worker) => {
                let _ = handles.send(worker);
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

fn cstring(bytes: &[u8], what: &'static str) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::Nul { what })
}

fn cstring_pair(key: &str, value: &str) -> Result<CString> {
    cstring(format!("{key}={value}").as_bytes(), "an environment entry")
}

/// The worker's environment, as `KEY=value` strings.
fn environment(spec: &SpecParts, id: u64) -> Result<Vec<CString>> {
    let spawn_variable = |k: &OsStr| SPAWN_VARIABLES.iter().any(|n| OsStr::new(n) == k);
    let mut vars: Vec<(OsString, OsString)> = if spec.clear_env {
        Vec::new()
    } else {
        std::env::vars_os()
            .filter(|(k, _)| !spawn_variable(k))
            .collect()
    };
    // The spawn's own variables come from the spawn alone: a spec cannot
    // move the channel or the listen fds by setting them. ARBOR_ENTRY is
    // the exception: an entry point sent in a Spawn frame travels as it.
    let fd_variable = |k: &OsStr| k != "ARBOR_ENTRY" && spawn_variable(k);
    for (key, value) in spec.env.iter().filter(|(k, _)| !fd_variable(k)) {
        vars.retain(|(k, _)| k != key);
        if let Some(value) = value {
            vars.push((key.clone(), value.clone()));
        }
    }
    vars.push(("ARBOR_WORKER_ID".into(), id.to_string().into()));
    vars.push(("ARBOR_WORKER_NAME".into(), spec.name.clone().into()));
    if let Program::Entry(entry) = &spec.program {
        vars.push(("ARBOR_ENTRY".into(), entry.into()));
    }
    vars.into_iter()
        .map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            cstring(&entry, "an environment entry")
        })
        .collect()
}

/// The path to exec and argv[0].
fn resolve(spec: &SpecParts) -> Result<(CString, CString)> {
    match &spec.program {
        Program::Entry(_) => {
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
            Ok((
                cstring(b"/proc/self/exe", "the program path")?,
                cstring(exe.as_os_str().as_bytes(), "the program path")?,
            ))
        }
        Program::Path(path) => {
            let found = if path.as_os_str().as_bytes().contains(&b'/') {
                path.clone()
            } else {
                search_path(spec, path).ok_or_else(|| Error::ProgramNotFound {
                    program: path.clone(),
                })?
            };
            Ok((
                cstring(found.as_os_str().as_bytes(), "the program path")?,
                cstring(path.as_os_str().as_bytes(), "the program path")?,
            ))
        }
    }
}

/// Looks `name` up in the worker's `PATH` (its spec's, else the supervisor's).
fn search_path(spec: &SpecParts, name: &Path) -> Option<PathBuf> {
    let from_spec = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .and_then(|(_, v)| v.clone());
    let path = from_spec.or_else(|| {
        if spec.clear_env {
            None
        } else {
            std::env::var_os("PATH")
        }
    })?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

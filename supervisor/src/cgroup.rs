//! A cgroup (v2) per worker, where the supervisor has a delegated subtree.
//!
//! A process group does not hold a worker's descendants: one that calls
//! `setsid` or double-forks leaves it, and only the subreaper
//! (the reaper) still sees it, without knowing whose it was. A cgroup
//! does: every process a worker forks stays in the worker's cgroup unless
//! someone with write access to the hierarchy moves it. So when the
//! supervisor may create cgroups below its own (under systemd:
//! `Delegate=yes`; or as root on the host's hierarchy), each worker gets one
//! and `cgroup.kill` (Linux 5.14+) ends the worker's whole subtree at once:
//! escaped descendants with it, and sub-workers, whose cgroups nest inside
//! their parent's.
//!
//! The layout: `<supervisor's cgroup>/arbor-<supervisor pid>/worker-<id>`,
//! a sub-worker's as `worker-<id>` inside its parent's directory. No
//! controller is enabled, so the supervisor's own cgroup may keep its
//! processes (the no-internal-processes rule only binds controllers).
//!
//! The child is born in its cgroup: `clone3` with `CLONE_INTO_CGROUP`
//! (Linux 5.7) and the directory opened before the fork, so it is never
//! outside it and nothing is migrated (moving a process takes a lock that
//! can stall for seconds under load). Where the kernel refuses, the worker
//! is forked outside it and runs without one.
//!
//! Every write to the hierarchy (mkdir, `cgroup.kill`, rmdir) takes the
//! kernel's one cgroup mutex, which anything on the host may hold for
//! seconds (a shared machine stalled arbor's for over 20 s). None of them
//! runs on an async runtime's worker thread: creation is awaited on the
//! blocking pool for at most `CREATE_WAIT`, after which the worker starts
//! without a cgroup (`Cgroups::create_off_runtime`); kills and removals
//! are handed to the pool (`WorkerCgroup::kill_soon`, the drop). A stall
//! costs a worker its cgroup at most, never its start or the runtime.
//!
//! # Caveats
//!
//! Without a writable cgroup v2 hierarchy (cgroup v1 only, or not
//! delegated) [`Cgroups::detect`] finds none and nothing changes: escaped
//! descendants are then killed at the supervisor's shutdown at the latest.
//! A cgroup that cannot be made (a `cgroup.max.descendants` limit), or a
//! hierarchy that makes directories but refuses to move processes, costs
//! the worker its cgroup, never its start; after the first refused move no
//! more cgroups are tried.
//! A worker that has write access to the hierarchy itself (root, with
//! `/sys/fs/cgroup` writable) can still move a process out.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;

/// Where the workers' cgroups live.
#[derive(Debug)]
pub struct Cgroups {
    base: PathBuf,
    /// Cleared when a worker could not be made in its cgroup: the hierarchy
    /// lets us make directories but not put processes in them (or the
    /// kernel has no `CLONE_INTO_CGROUP`), so we stop trying.
    working: AtomicBool,
}

/// One worker's cgroup.
#[derive(Debug)]
pub(crate) struct WorkerCgroup {
    dir: PathBuf,
}

impl Cgroups {
    /// The delegated subtree below this process's own cgroup v2, if there
    /// is one to write to (and the kernel has `cgroup.kill`); `None`
    /// otherwise. Creates the supervisor's directory.
    pub fn detect() -> Option<Self> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mount = cgroup2_mount(&mountinfo)?;
        let own = own_cgroup(&own)?;
        let dir = mount.join(own.trim_start_matches('/'));
        Self::under(&dir).ok()
    }

    /// Workers' cgroups below the cgroup directory `dir` (which must be on
    /// a cgroup v2 hierarchy this process may write).
    pub fn under(dir: &Path) -> io::Result<Self> {
        remove_stale(dir);
        let base = dir.join(format!("arbor-{}", std::process::id()));
        match std::fs::create_dir(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // A root cgroup has no cgroup.kill, a child one has it from 5.14 on.
        if !base.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&base);
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{} has no cgroup.kill (Linux before 5.14?)", base.display()),
            ));
        }
        Ok(Self {
            base,
            working: AtomicBool::new(true),
        })
    }

    /// The directory holding the top-level workers' cgroups.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// [`Cgroups::create`] on the blocking pool, waiting at most
    /// [`CREATE_WAIT`]: a stalled cgroup mutex then costs this worker its
    /// cgroup, not its start (the directory, if it comes later, is removed).
    pub(crate) async fn create_off_runtime(
        self: &Arc<Self>,
        parent: Option<&Path>,
        id: u64,
    ) -> io::Result<(WorkerCgroup, OwnedFd)> {
        let (cgroups, parent) = (Arc::clone(self), parent.map(Path::to_path_buf));
        let creating = tokio::task::spawn_blocking(move || cgroups.create(parent.as_deref(), id));
        match tokio::time::timeout(CREATE_WAIT, creating).await {
            Ok(created) => created.map_err(io::Error::other)?,
            // Dropping the handle leaves the task to finish; what it makes
            // is then dropped, which removes the directory.
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "not made within {CREATE_WAIT:?} (the kernel's cgroup mutex is held elsewhere)"
                ),
            )),
        }
    }

    /// Creates worker `id`'s cgroup, inside its parent's directory for a
    /// sub-worker, and opens the directory for the child to be born in.
    pub(crate) fn create(
        &self,
        parent: Option<&Path>,
        id: u64,
    ) -> io::Result<(WorkerCgroup, OwnedFd)> {
        if !self.working.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "workers cannot join cgroups here",
            ));
        }
        let dir = parent
            .unwrap_or(self.base.as_path())
            .join(format!("worker-{id}"));
        std::fs::create_dir(&dir)?;
        let opened = std::fs::File::open(&dir).inspect_err(|_| {
            let _ = std::fs::remove_dir(&dir);
        })?;
        Ok((WorkerCgroup { dir }, OwnedFd::from(opened)))
    }
}

impl Cgroups {
    /// A worker could not be created in its cgroup (`errno` from `clone3`).
    /// A refusal of permission (the hierarchy lets us make directories but
    /// is not delegated to us) or of the call itself (a kernel before 5.7)
    /// stops all further cgroups; anything else costs only that worker its
    /// cgroup.
    pub(crate) fn refused(&self, errno: i32) {
        let error = io::Error::from_raw_os_error(errno);
        let for_good = matches!(
            Errno::from_raw(errno),
            Errno::EACCES
                | Errno::EPERM
                | Errno::EOPNOTSUPP
                | Errno::EROFS
                | Errno::ENOSYS
                | Errno::E2BIG
                | Errno::EINVAL
        );
        if for_good && self.working.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "workers cannot join cgroups under {} ({error}): no cgroup per worker from now on",
                self.base.display()
            );
        } else if !for_good {
            tracing::debug!("a worker could not be made in its cgroup: {error}");
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        remove_tree(&self.base);
    }
}

impl Drop for WorkerCgroup {
    /// A worker's cgroup ends with it: whatever is still in it is killed (a
    /// start that failed after exec may have forked already), and the
    /// directory is removed once its processes are gone, retried for a few
    /// seconds since the last of them may still be dying; nested sub-worker
    /// cgroups go first. Off the runtime's threads (see the module doc).
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.dir);
        off_runtime(move || {
            let _ = kill_dir(&dir);
            for _ in 0..50 {
                if remove_tree(&dir) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            tracing::warn!("cgroup {} still busy; left in place", dir.display());
        });
    }
}

/// How long a start waits for its cgroup's directory before it goes ahead
/// without one. Making one takes microseconds unless the kernel's cgroup
/// mutex is held elsewhere on the host, which can last tens of seconds.
pub(crate) const CREATE_WAIT: Duration = Duration::from_secs(2);

/// Runs `work`, which writes to the cgroup hierarchy, where a stall of the
/// kernel's cgroup mutex holds up no async task: on the blocking pool of
/// the current tokio runtime, or here outside one.
fn off_runtime(work: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(work)),
        Err(_) => work(),
    }
}

/// SIGKILL to every process in cgroup `dir` and the cgroups below it.
fn kill_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))?
        .write_all(b"1")
}

impl WorkerCgroup {
    /// Its directory (for listings and tests).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILL to every process in the cgroup and the cgroups below it,
    /// sent from the blocking pool (see the module doc): it lands once the
    /// kernel's cgroup mutex is free.
    pub(crate) fn kill_soon(&self) {
        let dir = self.dir.clone();
        off_runtime(move || {
            let _ = kill_dir(&dir);
        });
    }
}

/// Removes what a supervisor that died without cleaning up (SIGKILL) left
/// in `dir`: the `arbor-<pid>` directories of pids that no longer run, once
/// their processes are gone (a populated cgroup cannot be removed).
fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("arbor-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            remove_tree(&entry.path());
        }
    }
}

/// Removes `dir` and every cgroup below it, deepest first; whether it is gone.
fn remove_tree(dir: &Path) -> bool {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`
/// (`... - cgroup2 cgroup2 rw`): `/sys/fs/cgroup` on a unified system,
/// `/sys/fs/cgroup/unified` on a hybrid one.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// This process's cgroup v2 path, from `/proc/self/cgroup` (`0::/path`).
fn own_cgroup(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|line| line.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_mount_on_unified_and_hybrid_systems() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      36 25 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(cgroup2_mount("1 2 0:1 / /proc rw - proc proc rw\n"), None);
    }

    #[test]
    fn reads_its_own_v2_cgroup() {
        let text = "4:memory:/x\n0::/system.slice/arbord.service\n";
        assert_eq!(own_cgroup(text), Some("/system.slice/arbord.service"));
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }
}

//! Helpers for arbor's integration tests: bounded waits and /proc checks.

pub mod arbord;
pub mod control;
pub mod http;
pub mod pools;
pub mod python;
pub mod soak;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// The test worker binary (see `src/bin/test-worker.rs`), next to the
/// running test or binary in cargo's target directory.
pub fn test_worker() -> PathBuf {
    binary("test-worker")
}

/// What a test needs of the machine beyond a Linux with cargo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// To run as root (a client under another uid, a network namespace).
    Root,
    /// A cgroup v2 subtree arbord may write (a cgroup per worker).
    Cgroups,
}

impl Needs {
    fn name(self) -> &'static str {
        match self {
            Needs::Root => "root",
            Needs::Cgroups => "cgroups",
        }
    }
}

/// Whether this machine has what a test needs. Without it the test fails
/// and says why, unless `ARBOR_TESTS_WITHOUT` (a comma-separated list:
/// `root`, `cgroups`; README) names it: then it prints that it does not
/// run and this returns `false`, for the test to return. `.ci/run` prints
/// which of them it runs.
pub fn machine_has(what: Needs) -> bool {
    let has = match what {
        Needs::Root => nix::unistd::geteuid().is_root(),
        Needs::Cgroups => arbor_supervisor::cgroup::Cgroups::detect().is_some(),
    };
    if has {
        return true;
    }
    let opted_out = std::env::var("ARBOR_TESTS_WITHOUT")
        .is_ok_and(|list| list.split(',').any(|n| n.trim() == what.name()));
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    assert!(
        opted_out,
        "{test} needs {} and this machine does not have it; run it where it does, or set ARBOR_TESTS_WITHOUT={} to skip it (README)",
        what.name(),
        what.name()
    );
    eprintln!(
        "NOT RUN: {test} needs {} (ARBOR_TESTS_WITHOUT)",
        what.name()
    );
    false
}

/// A systemd tool (`systemd-analyze`, `systemd-socket-activate`), from the
/// places Debian installs them; fails the test when it is missing.
pub fn system_tool(name: &str) -> String {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/usr/lib/systemd"] {
        let path = format!("{dir}/{name}");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    panic!("{name} is not installed (Debian's systemd package; .ci/run installs it)");
}

/// One of this crate's binaries (`test-worker`, `arbord`, `arborctl`, ...).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the integration-tests binaries",
        path.display()
    );
    path
}

/// A fresh directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates it.
    pub fn new(label: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("arbor-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for `child` up to `limit`; kills it and fails the test after that.
pub fn wait_or_kill(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Awaits `future`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// The next message from `worker` (skipping Ready), within 20 s; any other
/// event fails the test.
pub async fn next_message(
    worker: &mut arbor_supervisor::Worker,
) -> (Vec<u8>, Vec<std::os::fd::OwnedFd>) {
    use arbor_supervisor::WorkerEvent;
    within(
        Duration::from_secs(20),
        "a message from the worker",
        async {
            loop {
                match worker
                    .next_event()
                    .await
                    .expect("the worker's events ended")
                {
                    WorkerEvent::Message { data, fds } => return (data, fds),
                    WorkerEvent::Ready => continue,
                    other => panic!("expected a message, got {other:?}"),
                }
            }
        },
    )
    .await
}

/// Pids of this process's children that are zombies.
pub fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    children_of(me)
        .into_iter()
        .filter(|pid| process_state(*pid) == Some('Z'))
        .collect()
}

/// Pids whose parent is `parent`, from /proc.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// A process's state letter (R, S, Z, ...), if it exists.
pub fn process_state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The parent pid of `pid`, from /proc.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Process `pid`'s environment as it was started (`/proc/PID/environ`):
/// `NAME=value` entries.
pub fn environ_of(pid: u32) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("the environment of process {pid}: {e}"));
    bytes
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

/// Whether a process with this pid exists (a zombie counts as gone).
pub fn is_alive(pid: u32) -> bool {
    matches!(process_state(pid), Some(state) if state != 'Z' && state != 'X')
}

/// Number of fds process `pid` has open; fails the test when the process
/// is gone (a census of a dead process would pass any "no more than
/// before"). A census taken just after a control connection may still
/// count it: compare with "no more than before".
pub fn fd_count_of(pid: u32) -> usize {
    match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(dir) if is_alive(pid) => dir.count(),
        Ok(_) => panic!("fd census of process {pid}: it has exited"),
        Err(e) => panic!("fd census of process {pid}: {e} (is it gone?)"),
    }
}

/// What each of `pid`'s open fds is (`/proc/<pid>/fd/N -> target`), for a
/// failed census's message.
pub fn fd_listing(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return vec![format!("process {pid} is gone")];
    };
    let mut fds: Vec<String> = dir
        .filter_map(|entry| entry.ok())
        .map(|entry| {
            let target = std::fs::read_link(entry.path())
                .map(|t| t.display().to_string())
                .unwrap_or_else(|e| e.to_string());
            format!("{} -> {target}", entry.file_name().to_string_lossy())
        })
        .collect();
    fds.sort();
    fds
}

/// Number of fds this process has open.
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .expect("/proc/self/fd")
}

/// Moves the calling thread (and every thread and process it starts from
/// now on) into a new network namespace of its own, with loopback up and
/// `net.ipv4.tcp_migrate_req=1`: the kernel then moves the connections
/// queued on a closing `SO_REUSEPORT` listener to another listener of its
/// group instead of resetting them, as an operator running plain servers
/// in `reuseport` mode sets it. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN);
/// fails the test with the reason elsewhere.
pub fn own_network_with_request_migration() {
    use nix::sched::{unshare, CloneFlags};
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
        panic!("a network namespace of the test's own: unshare(CLONE_NEWNET): {e} (run the tests as root)");
    }
    let status = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip (Debian's iproute2; .ci/run installs it)");
    assert!(status.success(), "ip link set lo up: {status}");
    // /proc/sys/net is the namespace of the thread that opens it: this one.
    std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1")
        .expect("net.ipv4.tcp_migrate_req=1 in the test's own network namespace");
}

#[cfg(test)]
mod fd_listing_tests {
    #[test]
    fn fd_listing_names_each_open_fd_with_what_it_is() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let listing = super::fd_listing(std::process::id());
        assert!(
            listing.iter().any(|fd| fd.starts_with("0 -> ")),
            "{listing:?}"
        );
        assert!(
            listing.iter().any(|fd| fd.ends_with("/status")),
            "{listing:?}"
        );
        drop(file);
    }
}

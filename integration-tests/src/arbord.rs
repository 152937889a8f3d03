//! A real arbord (the `test-arbord` binary) for tests, and arborctl calls.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{binary, fd_count_of, wait_or_kill, TempDir};

/// The bound on every wait in these helpers.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A running arbord, killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// The arbord process.
    pub child: Child,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its directory (config, socket), removed on drop.
    pub dir: TempDir,
}

impl Daemon {
    /// Starts arbord on `config` and waits until it listens.
    pub fn start(config: &str) -> Self {
        Self::start_with(config, |_| {})
    }

    /// [`Daemon::start`] with a last change to the command.
    pub fn start_with(config: &str, tweak: impl FnOnce(&mut Command)) -> Self {
        let dir = TempDir::new("daemon");
        let socket = dir.0.join("arbord.sock");
        let config_path = dir.0.join("arbord.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut command = Command::new(binary("test-arbord"));
        command
            .arg("--config")
            .arg(&config_path)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        tweak(&mut command);
        let child = command.spawn().unwrap();
        let mut daemon = Self { child, socket, dir };
        let deadline = Instant::now() + LIMIT;
        while UnixStream::connect(&daemon.socket).is_err() {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("arbord exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "arbord did not listen within {LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        daemon
    }

    /// arbord's open fds once it has booted and has nothing in flight: read
    /// after a `status` answer (arbord listens before it boots, and a task of
    /// its boot may open fds after the first connect succeeds), until the
    /// count holds still for 200 ms. For fd censuses' "before".
    pub fn settled_fds(&self) -> usize {
        self.ok(&["status"]);
        let deadline = Instant::now() + LIMIT;
        let mut last = fd_count_of(self.pid());
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = fd_count_of(self.pid());
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= Duration::from_millis(200) {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "arbord's fd count did not hold still within {LIMIT:?} (last {last})"
            );
        }
    }

    /// The workers `arborctl --json ps` lists, as JSON objects.
    pub fn ps_json(&self) -> Vec<serde_json::Value> {
        match serde_json::from_str(&self.ok(&["--json", "ps"])) {
            Ok(serde_json::Value::Array(workers)) => workers,
            other => panic!("ps --json is not a list: {other:?}"),
        }
    }

    /// Runs arborctl against it.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl_at(&self.socket, args)
    }

    /// Runs arborctl and returns its stdout, failing on a non-zero exit.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_within(args, LIMIT)
    }

    /// [`Daemon::ok`] for a command that may take up to `limit` (a rolling
    /// reload waits for each new replica's Ready and each old one's exit).
    pub fn ok_within(&self, args: &[&str], limit: Duration) -> String {
        let output = ctl_within(&self.socket, args, limit);
        assert!(
            output.status.success(),
            "arborctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// arbord's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs arborctl against `socket` (bounded by [`LIMIT`]).
pub fn ctl_at(socket: &Path, args: &[&str]) -> Output {
    ctl_within(socket, args, LIMIT)
}

/// Runs arborctl against `socket`, killing it after `limit`.
pub fn ctl_within(socket: &Path, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(binary("test-arborctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_or_kill(&mut child, limit, "arborctl");
    child.wait_with_output().unwrap()
}

/// Polls `condition` until it holds; fails the test after [`LIMIT`].
pub fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    wait_until_within(what, LIMIT, condition)
}

/// Polls `condition` until it holds; fails the test after `limit`.
pub fn wait_until_within(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

//! SIGHUP reloads under systemd's eyes (a real NOTIFY_SOCKET): `READY=1`
//! follows `RELOADING=1` only once the reload has finished, and a SIGHUP
//! during a reload waits for it instead of running a second reload over
//! the same workers.

use std::os::unix::net::UnixDatagram;

use arbor_integration_tests::arbord::{wait_until, Daemon, LIMIT};
use arbor_integration_tests::{test_worker, TempDir};

fn worker(name: &str, mode: &str) -> String {
    format!(
        "[[worker]]\nname = {name:?}\nprogram = {:?}\nargs = [{mode:?}]\nclose_grace = \"1s\"\n",
        test_worker().display().to_string()
    )
}

/// `(name, state)` of every worker `arborctl ps --json` lists.
fn listed(daemon: &Daemon) -> Vec<(String, String)> {
    daemon
        .ps_json()
        .into_iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_string(),
                w["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The notifications arbord sends, read one by one with a deadline each.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    /// Reads until a notification that starts with `prefix`.
    fn until(&mut self, prefix: &str) {
        let mut buf = [0u8; 512];
        loop {
            let n = self
                .socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{prefix} within {LIMIT:?}: {e}; saw {:?}", self.seen));
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = message.starts_with(prefix);
            self.seen.push(message);
            if done {
                return;
            }
        }
    }
}

/// arbord with a worker that takes 2 s to close (it ignores Close and
/// SIGTERM: 1 s grace each, then SIGKILL) and one that stays, ready.
fn daemon_with_a_slow_worker(dir: &TempDir) -> (Daemon, Notifications) {
    let path = dir.0.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    let daemon = Daemon::start_with(
        &(worker("kept", "echo") + &worker("slow", "stubborn")),
        |command| {
            command.env("NOTIFY_SOCKET", &path);
        },
    );
    let mut notifications = Notifications {
        socket,
        seen: Vec::new(),
    };
    notifications.until("READY=1");
    wait_until("both running", || {
        listed(&daemon).iter().filter(|w| w.1 == "running").count() == 2
    });
    // The new configuration: `slow` goes, `added` comes.
    let config = daemon.socket.with_file_name("arbord.toml");
    std::fs::write(&config, worker("kept", "echo") + &worker("added", "echo")).unwrap();
    (daemon, notifications)
}

fn sighup(daemon: &Daemon) {
    // SAFETY: kill with a pid we started.
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) }, 0);
}

#[test]
fn ready_follows_reloading_only_once_the_reload_has_finished() {
    let dir = TempDir::new("reload-ready");
    let (daemon, mut notifications) = daemon_with_a_slow_worker(&dir);
    sighup(&daemon);
    notifications.until("RELOADING=1");
    notifications.until("READY=1");
    // At READY=1 the reload is done: the removed worker is gone (it took
    // 2 s to close) and the added one is there.
    let now = listed(&daemon);
    assert!(
        !now.iter().any(|w| w.0 == "slow"),
        "READY=1 before the reload ended: {now:?}"
    );
    assert!(now.iter().any(|w| w.0 == "added"), "{now:?}");
}

#[test]
fn a_sighup_during_a_reload_waits_for_it_and_starts_nothing_twice() {
    let dir = TempDir::new("reload-twice");
    let (daemon, mut notifications) = daemon_with_a_slow_worker(&dir);
    sighup(&daemon);
    notifications.until("RELOADING=1");
    // The first reload waits 2 s for `slow` to close; this one comes meanwhile.
    sighup(&daemon);
    notifications.until("READY=1");
    // (Already so at READY=1; waited for so that this test checks the
    // double start on its own, whenever READY=1 comes.)
    wait_until("the reload's end", || {
        let now = listed(&daemon);
        !now.iter().any(|w| w.0 == "slow") && now.iter().any(|w| w.0 == "added")
    });
    let now = listed(&daemon);
    let added = now.iter().filter(|w| w.0 == "added").count();
    assert_eq!(added, 1, "`added` started {added} times: {now:?}");
    assert!(!now.iter().any(|w| w.0 == "slow"), "{now:?}");
    let reloading = notifications
        .seen
        .iter()
        .filter(|m| m.starts_with("RELOADING=1"))
        .count();
    assert_eq!(reloading, 1, "{:?}", notifications.seen);
}

/// `(state, pid)` of every worker named `name` that `arborctl ps --json` lists.
fn runs_of(daemon: &Daemon, name: &str) -> Vec<(String, u64)> {
    daemon
        .ps_json()
        .into_iter()
        .filter(|w| w["name"] == name)
        .map(|w| {
            (
                w["state"].as_str().unwrap().to_string(),
                w["pid"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Two SIGHUPs `apart` from each other, while a changed `[[worker]]` (its
/// old run takes 2 s to close) is replaced: exactly one new run of it.
fn two_sighups_replace_a_changed_worker_once(apart: std::time::Duration) {
    let dir = TempDir::new("reload-changed");
    let path = dir.0.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    let daemon = Daemon::start_with(&worker("changing", "stubborn"), |command| {
        command.env("NOTIFY_SOCKET", &path);
    });
    let mut notifications = Notifications {
        socket,
        seen: Vec::new(),
    };
    notifications.until("READY=1");
    let mut old_pid = 0;
    wait_until("running", || {
        let runs = runs_of(&daemon, "changing");
        old_pid = runs.first().map_or(0, |r| r.1);
        runs.len() == 1 && runs[0].0 == "running"
    });
    let config = daemon.socket.with_file_name("arbord.toml");
    std::fs::write(&config, worker("changing", "echo")).unwrap();
    sighup(&daemon);
    // The stimulus's timing, not a wait for anything.
    std::thread::sleep(apart);
    sighup(&daemon);
    wait_until("the new run running", || {
        let runs = runs_of(&daemon, "changing");
        runs.iter().any(|r| r.0 == "running" && r.1 != old_pid)
    });
    notifications.until("READY=1");
    let runs = runs_of(&daemon, "changing");
    let live: Vec<_> = runs
        .iter()
        .filter(|r| r.0 == "running" || r.0 == "starting")
        .collect();
    assert_eq!(live.len(), 1, "exactly one run of `changing`: {runs:?}");
    assert_ne!(live[0].1, old_pid, "the new one: {runs:?}");
}

#[test]
fn two_sighups_5ms_apart_replace_a_changed_worker_exactly_once() {
    two_sighups_replace_a_changed_worker_once(std::time::Duration::from_millis(5));
}

#[test]
fn two_sighups_1s_apart_replace_a_changed_worker_exactly_once() {
    two_sighups_replace_a_changed_worker_once(std::time::Duration::from_secs(1));
}

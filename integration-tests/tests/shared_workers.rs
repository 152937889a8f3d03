//! Shared workers under the real arbord (the standard's SharedWorker): one
//! worker, many clients, each on a port of its own. The standard's
//! shared-state example is `test-tree counter`.

use std::io::Write;
use std::process::{Command, Stdio};

use arbor_integration_tests::arbord::{wait_until, Daemon, LIMIT};
use arbor_integration_tests::{binary, fd_count_of as fd_count, wait_or_kill};
use arbor_protocol::blocking::Channel;
use arbor_protocol::Frame;

fn counter_config(name: &str) -> String {
    format!(
        "[[shared]]\nname = {name:?}\nprogram = {:?}\nargs = [\"counter\"]\n",
        binary("test-tree").display().to_string()
    )
}

/// A library client's port, every read bounded.
fn client(daemon: &Daemon, name: &str) -> Channel {
    let port = arbor_supervisor::client::connect(&daemon.socket, name).unwrap();
    let channel = port.into_channel().unwrap();
    channel.socket().set_read_timeout(Some(LIMIT)).unwrap();
    channel
}

fn ask(channel: &mut Channel, what: &str) -> String {
    channel.send_bytes(what.as_bytes(), &[]).unwrap();
    match channel.recv().unwrap() {
        (Frame::Message(message), _) => String::from_utf8(message.data).unwrap(),
        (other, _) => panic!("unexpected {other:?}"),
    }
}

/// The pid of worker `name`'s running run.
fn running_pid(daemon: &Daemon, name: &str) -> u32 {
    daemon
        .ps_json()
        .into_iter()
        .find(|w| w["name"] == name && w["state"] == "running")
        .and_then(|w| w["pid"].as_u64())
        .unwrap_or_else(|| panic!("{name} is not running")) as u32
}

fn worker_ids(daemon: &Daemon, name: &str) -> Vec<(u64, String)> {
    daemon
        .ps_json()
        .into_iter()
        .filter(|w| w["name"] == name)
        .map(|w| {
            (
                w["id"].as_u64().unwrap(),
                w["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn three_clients_share_one_counter_and_a_departure_is_a_closed_port() {
    let daemon = Daemon::start(&counter_config("counter"));
    // Started on the first connect, not at boot.
    assert!(worker_ids(&daemon, "counter").is_empty());
    let fds_before = daemon.settled_fds();
    let mut first = client(&daemon, "counter");
    assert_eq!(ask(&mut first, "inc"), "count 1");
    let mut second = client(&daemon, "counter");
    let mut third = client(&daemon, "counter");
    assert_eq!(ask(&mut second, "inc"), "count 2");
    assert_eq!(ask(&mut third, "inc"), "count 3");
    assert_eq!(ask(&mut second, "clients"), "clients 3");
    let started = worker_ids(&daemon, "counter");
    assert_eq!(started.len(), 1, "one worker for every client: {started:?}");
    let id = started[0].0.to_string();

    drop(second);
    wait_until("the worker sees the port close", || {
        daemon.ok(&["logs", &id]).contains("closed, 2 clients left")
    });
    assert_eq!(ask(&mut first, "inc"), "count 4");
    assert_eq!(ask(&mut third, "inc"), "count 5");
    assert_eq!(ask(&mut third, "clients"), "clients 2");
    assert_eq!(ask(&mut first, "get"), "count 5");
    // arbord keeps no fd of any port: they went to the worker and clients.
    daemon.ok(&["terminate", &id]);
    drop((first, third));
    wait_until("arbord's fds back where they were", || {
        fd_count(daemon.pid()) <= fds_before
    });
}

#[test]
fn arborctl_attach_sends_lines_and_prints_replies() {
    let daemon = Daemon::start(&counter_config("counter"));
    let attach = |input: &str, json: bool| {
        let mut command = Command::new(binary("test-arborctl"));
        command.arg("--socket").arg(&daemon.socket);
        if json {
            command.arg("--json");
        }
        let mut child = command
            .args(["attach", "counter"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        wait_or_kill(&mut child, LIMIT, "arborctl attach");
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(
        attach("inc\ninc\nget\n", false),
        "count 1\ncount 2\ncount 2\n"
    );
    assert_eq!(
        attach("inc\nclients\n", true),
        "{\"data\":\"count 3\"}\n{\"data\":\"clients 1\"}\n"
    );
}

#[test]
fn spawn_shared_starts_it_now_and_an_attach_after_its_exit_starts_it_again() {
    let daemon = Daemon::start("");
    let tree = binary("test-tree");
    let spawn_tally = || {
        daemon.ctl(&[
            "spawn",
            "--shared",
            "tally",
            "--",
            tree.to_str().unwrap(),
            "counter",
        ])
    };
    let first = spawn_tally();
    assert!(first.status.success());
    let id = String::from_utf8(first.stdout).unwrap().trim().to_string();
    assert_eq!(worker_ids(&daemon, "tally").len(), 1);
    let mut port = client(&daemon, "tally");
    assert_eq!(ask(&mut port, "inc"), "count 1");
    // The same name twice is refused.
    let again = spawn_tally();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    daemon.ok(&["terminate", &id]);
    // The client sees its port close with the worker.
    assert!(matches!(port.recv(), Err(arbor_protocol::Error::Closed)));
    let mut fresh = client(&daemon, "tally");
    assert_eq!(
        ask(&mut fresh, "inc"),
        "count 1",
        "a new run, a new counter"
    );
    let runs = worker_ids(&daemon, "tally");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().any(|(_, state)| state == "running"), "{runs:?}");
}

#[test]
fn attach_to_an_unknown_name_is_an_error() {
    let daemon = Daemon::start("");
    let output = daemon.ctl(&["attach", "nobody"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no shared worker \"nobody\""),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(matches!(
        arbor_supervisor::client::connect(&daemon.socket, "nobody"),
        Err(arbor_supervisor::Error::Control { .. })
    ));
}

#[test]
fn a_reload_closes_a_removed_shared_worker_and_declares_an_added_one() {
    let daemon = Daemon::start(&counter_config("first"));
    let mut port = client(&daemon, "first");
    assert_eq!(ask(&mut port, "inc"), "count 1");
    std::fs::write(daemon.dir.0.join("arbord.toml"), counter_config("second")).unwrap();
    // SAFETY: kill(2) on the arbord this test started.
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) }, 0);
    wait_until("the removed shared worker closed", || {
        worker_ids(&daemon, "first")
            .iter()
            .all(|(_, state)| state == "exited")
    });
    assert!(matches!(port.recv(), Err(arbor_protocol::Error::Closed)));
    assert!(arbor_supervisor::client::connect(&daemon.socket, "first").is_err());
    let mut second = client(&daemon, "second");
    assert_eq!(ask(&mut second, "inc"), "count 1");
}

#[test]
fn a_reload_replaces_a_changed_shared_worker() {
    let daemon = Daemon::start(&counter_config("counter"));
    let mut port = client(&daemon, "counter");
    assert_eq!(ask(&mut port, "inc"), "count 1");
    let changed = format!(
        "{}env = {{ CHANGED = \"yes\" }}\n",
        counter_config("counter")
    );
    std::fs::write(daemon.dir.0.join("arbord.toml"), changed).unwrap();
    // SAFETY: kill(2) on the arbord this test started.
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) }, 0);
    // The old run closes with its clients' ports; the next attach starts
    // the new recipe.
    assert!(matches!(port.recv(), Err(arbor_protocol::Error::Closed)));
    let mut fresh = client(&daemon, "counter");
    assert_eq!(ask(&mut fresh, "inc"), "count 1");
    assert_eq!(worker_ids(&daemon, "counter").len(), 2);
    // The new run has the changed environment.
    let pid = running_pid(&daemon, "counter");
    let env = arbor_integration_tests::environ_of(pid);
    assert!(env.iter().any(|e| e == "CHANGED=yes"), "{env:?}");
}

#[test]
fn an_attach_while_a_shared_worker_restarts_joins_the_restarted_one() {
    let config = format!("{}restart = \"always\"\n", counter_config("counter"));
    let daemon = Daemon::start(&config);
    let mut port = client(&daemon, "counter");
    assert_eq!(ask(&mut port, "inc"), "count 1");
    let json = daemon.ps_json();
    let pid = json[0]["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) on the worker arbord reported.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(matches!(port.recv(), Err(arbor_protocol::Error::Closed)));
    // As soon as arbord has seen the exit (a port handed to a worker in
    // the instant of its death dies with it, as any connection would), in
    // its restart backoff: the attach waits for the restart.
    wait_until("the exit seen", || {
        let json = daemon.ps_json();
        json[0]["state"] != "running" || json[0]["restarts"] == 1
    });
    let mut again = client(&daemon, "counter");
    assert_eq!(ask(&mut again, "inc"), "count 1");
    let runs = worker_ids(&daemon, "counter");
    assert_eq!(
        runs.len(),
        1,
        "one entry, restarted, not a second worker: {runs:?}"
    );
    let json = daemon.ps_json();
    assert_eq!(json[0]["restarts"], 1);
}

#[test]
fn an_attach_just_after_the_shared_worker_is_killed_is_never_refused() {
    // Found by the chaos soak: an attach between a shared worker's SIGKILL
    // and arbord seeing its exit was refused ("worker is gone"). Each round
    // kills the worker and attaches at once: the attach is answered with a
    // port, which reaches the next run, or (handed to the dying run just
    // before it died) is closed, and then the next attach reaches it.
    let daemon = Daemon::start(&counter_config("counter"));
    for round in 0..10 {
        let mut port = client(&daemon, "counter");
        assert!(ask(&mut port, "inc").starts_with("count "), "round {round}");
        let pid = running_pid(&daemon, "counter") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        drop(port);
        let mut next = client(&daemon, "counter");
        let inc = next.send_bytes(b"inc", &[]).and_then(|()| next.recv());
        let answer = match inc {
            Ok((Frame::Message(message), _)) => String::from_utf8(message.data).unwrap(),
            Ok((other, _)) => panic!("round {round}: {other:?}"),
            // The dying run's port: closed with it.
            Err(_) => ask(&mut client(&daemon, "counter"), "inc"),
        };
        assert_eq!(answer, "count 1", "round {round}: a fresh run");
        wait_until("the round's worker gone", || {
            !arbor_integration_tests::is_alive(pid as u32)
        });
    }
}

//! A server written for systemd's socket activation runs unchanged as an
//! arbor worker: gunicorn (from PyPI, see `arbor_integration_tests::python`),
//! with one command line, serves under `systemd-socket-activate` and as a
//! `[[pool]]` of programs that do not speak arbor's protocol, in `shared` and
//! `reuseport` mode, through rolling reloads under load, and stops cleanly
//! on the SIGTERM of arbord's close.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arbor_integration_tests::arbord::{Daemon, LIMIT};
use arbor_integration_tests::http::{free_port, Client, Load};
use arbor_integration_tests::pools::{
    assert_no_failure_across, load_turn, pool_running, replicas, served_by_all, tcp, wait_running,
    OPERATION_LIMIT,
};
use arbor_integration_tests::{
    is_alive, own_network_with_request_migration, python, system_tool, wait_or_kill,
};

/// gunicorn's whole command line, the same under systemd and under arbord:
/// it finds its listening socket by `LISTEN_FDS` and `LISTEN_PID`.
fn gunicorn_args() -> Vec<String> {
    vec![
        "--workers".into(),
        "1".into(),
        "--chdir".into(),
        python::servers().display().to_string(),
        "hello_wsgi:app".into(),
    ]
}

/// A pool of gunicorn replicas, which do not speak arbor's protocol.
fn gunicorn_pool(mode: &str, listen: &str) -> String {
    pool_running(
        "gunicorn",
        mode,
        listen,
        2,
        &python::gunicorn(),
        &gunicorn_args(),
    )
    .replace("replicas = 2\n", "replicas = 2\nspeaks_protocol = false\n")
}

/// The first answer on `addr`, retried while the server is starting.
fn first_reply(addr: &str) -> u32 {
    let (_, target) = tcp(addr.rsplit(':').next().unwrap().parse().unwrap());
    let deadline = Instant::now() + LIMIT;
    loop {
        match Client::new(target.clone()).get() {
            Ok(reply) => return reply.pid,
            Err(e) => {
                assert!(Instant::now() < deadline, "no answer on {addr}: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn gunicorn_serves_under_systemd_socket_activate_with_the_same_command_line() {
    let gunicorn = python::gunicorn();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut activator = Command::new(system_tool("systemd-socket-activate"))
        .arg("-l")
        .arg(&addr)
        .arg(&gunicorn)
        .args(gunicorn_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // systemd-socket-activate execs gunicorn at the first connection, in
    // its own process: the reply names that pid.
    let pid = first_reply(&addr);
    assert_eq!(pid, activator.id(), "the reply came from another process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_or_kill(&mut activator, LIMIT, "gunicorn after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn gunicorn_as_a_shared_pool_answers_on_every_replica_and_stops_on_sigterm() {
    let (addr, target) = tcp(free_port());
    let daemon = Daemon::start(&gunicorn_pool("shared", &addr));
    let pids = wait_running(&daemon, "gunicorn", 2);
    served_by_all(&target, &pids);
    // Closing a program that does not speak the protocol is SIGTERM, which
    // gunicorn takes as its graceful stop: it exits 0, its own worker with it.
    let (id, pid, _, _) = replicas(&daemon, "gunicorn")[0].clone();
    let out = daemon.ok_within(
        &["close", &id.to_string(), "--grace", "20s"],
        OPERATION_LIMIT,
    );
    assert!(out.contains("exited with code 0"), "{out}");
    assert!(!is_alive(pid), "gunicorn {pid} still runs after its exit");
}

#[test]
fn gunicorn_as_a_reuseport_pool_answers_on_every_replica() {
    let (addr, target) = tcp(free_port());
    let daemon = Daemon::start(&gunicorn_pool("reuseport", &addr));
    let pids = wait_running(&daemon, "gunicorn", 2);
    served_by_all(&target, &pids);
}

/// Rolling reloads of a gunicorn pool under constant load: no request
/// fails, the load is answered from before the first reload to after the
/// last, and every replica is replaced.
fn gunicorn_rolling_reload_under_load(mode: &str) {
    let _turn = load_turn();
    if mode == "reuseport" {
        // gunicorn closes its listener on SIGTERM without draining it:
        // without request migration, what waits in its accept queue is
        // reset (the README's reuseport caveat for plain servers).
        own_network_with_request_migration();
    }
    let (addr, target) = tcp(free_port());
    let daemon = Daemon::start(&gunicorn_pool(mode, &addr));
    let first = wait_running(&daemon, "gunicorn", 2);
    served_by_all(&target, &first);
    let load = Load::start(target.clone(), 4);
    for _ in 0..3 {
        let out = daemon.ok_within(&["reload", "gunicorn"], OPERATION_LIMIT);
        assert!(out.contains("2 replicas replaced"), "{out}");
    }
    // The last replicas serve before the load stops.
    let last = wait_running(&daemon, "gunicorn", 2);
    assert!(first.is_disjoint(&last), "{first:?} still in {last:?}");
    served_by_all(&target, &last);
    let stats = load.stop();
    assert_no_failure_across(
        &stats,
        &format!("gunicorn {mode}: 3 rolling reloads"),
        &first,
        &last,
    );
}

#[test]
fn gunicorn_survives_a_rolling_reload_under_load_shared() {
    gunicorn_rolling_reload_under_load("shared");
}

#[test]
fn gunicorn_survives_a_rolling_reload_under_load_reuseport() {
    gunicorn_rolling_reload_under_load("reuseport");
}

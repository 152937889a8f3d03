//! Pools with the real arbord, arborctl and http-hello: every socket mode
//! serves on every replica, a killed replica takes only its own
//! connections, and rolling reloads and scaling under constant load fail no
//! request. All on loopback, every wait bounded.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arbor_integration_tests::arbord::{wait_until, wait_until_within, Daemon, LIMIT};
use arbor_integration_tests::http::{free_port, Client, Load, Target};
use arbor_integration_tests::pools::{
    assert_no_failure, load_turn, pool_running, replicas, running_pids, served_by_all, tcp,
    wait_running, LOAD_TIME, OPERATION_LIMIT,
};
use arbor_integration_tests::{
    binary, is_alive, own_network_with_request_migration, test_worker, wait_or_kill,
};

/// A `[[pool]]` of http-hello replicas with one socket.
fn pool(name: &str, mode: &str, listen: &str, replicas: u32) -> String {
    pool_running(name, mode, listen, replicas, &binary("http-hello"), &[])
}

#[test]
fn every_mode_serves_on_every_replica() {
    let dir = arbor_integration_tests::TempDir::new("pool-modes");
    let unix = dir.0.join("hello.sock");
    let (shared, shared_target) = tcp(free_port());
    let (reuseport, reuseport_target) = tcp(free_port());
    let (handoff, handoff_target) = tcp(free_port());
    let config = [
        pool("shared", "shared", &shared, 2),
        pool("reuseport", "reuseport", &reuseport, 2),
        pool("handoff", "handoff", &handoff, 2),
        pool("unix", "handoff", &format!("unix:{}", unix.display()), 2),
    ]
    .concat();
    let daemon = Daemon::start(&config);
    for (name, target) in [
        ("shared", shared_target),
        ("reuseport", reuseport_target),
        ("handoff", handoff_target.clone()),
        ("unix", Target::Unix(unix.clone())),
    ] {
        let pids = wait_running(&daemon, name, 2);
        served_by_all(&target, &pids);
    }
    // ps shows the pools with their sockets, and counts a connection held open.
    let mut held = Client::new(handoff_target);
    let holder = held.get().unwrap().pid;
    wait_until("ps counts the held connection", || {
        replicas(&daemon, "handoff")
            .iter()
            .any(|r| r.1 == holder && r.3 >= 1)
    });
    let ps = daemon.ok(&["ps"]);
    for line in [
        "pool shared: 2/2 replicas running",
        &format!("socket handoff-socket {handoff} (handoff round-robin)"),
        &format!("socket reuseport-socket {reuseport} (reuseport)"),
        &format!(
            "socket unix-socket unix:{} (handoff round-robin)",
            unix.display()
        ),
    ] {
        assert!(ps.contains(line), "{line:?} missing from:\n{ps}");
    }
}

#[test]
fn a_killed_replica_takes_only_its_own_connections_and_is_restarted() {
    let ports: Vec<_> = (0..3).map(|_| tcp(free_port())).collect();
    let modes = ["shared", "reuseport", "handoff"];
    let config: String = modes
        .iter()
        .zip(&ports)
        .map(|(mode, (addr, _))| pool(mode, mode, addr, 2))
        .collect();
    let daemon = Daemon::start(&config);
    for (mode, (_, target)) in modes.iter().zip(&ports) {
        let pids = wait_running(&daemon, mode, 2);
        // Keep-alive connections until both replicas hold at least two.
        let mut clients: Vec<(Client, u32)> = Vec::new();
        let deadline = Instant::now() + LIMIT;
        while pids
            .iter()
            .any(|pid| clients.iter().filter(|c| c.1 == *pid).count() < 2)
        {
            assert!(Instant::now() < deadline, "{mode}: connections not spread");
            let mut client = Client::new(target.clone());
            let pid = client.get().unwrap().pid;
            clients.push((client, pid));
        }
        let victim = clients[0].1;
        assert_eq!(kill_process(victim), 0);
        for (client, pid) in clients.iter_mut().filter(|c| c.1 != victim) {
            let reply = client
                .get()
                .unwrap_or_else(|e| panic!("{mode}: a connection to {pid} broke: {e}"));
            assert_eq!(reply.pid, *pid, "{mode}: the connection moved");
        }
        // Once it is gone (its listener with it, in reuseport mode), new
        // connections are served, and the pool is whole again.
        wait_until(&format!("{mode}: replica {victim} gone"), || {
            !is_alive(victim)
        });
        Client::new(target.clone())
            .get()
            .unwrap_or_else(|e| panic!("{mode}: a new connection: {e}"));
        wait_until(&format!("{mode}: the killed replica restarted"), || {
            let now = running_pids(&daemon, mode);
            now.len() == 2 && !now.contains(&victim)
        });
    }
}

/// `kill -KILL pid`; its exit code.
fn kill_process(pid: u32) -> i32 {
    let status = Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status()
        .unwrap();
    status.code().unwrap_or(-1)
}

/// Rolling reloads, back to back for LOAD_TIME under constant load: no
/// request fails and every replica is replaced.
fn rolling_reload_under_load(mode: &str) {
    let _turn = load_turn();
    // In reuseport mode the kernel must move a closing listener's queued
    // connections on (as an operator sets it): then none fails.
    own_network_with_request_migration();
    let (addr, target) = tcp(free_port());
    let daemon = Daemon::start(&pool("web", mode, &addr, 2));
    let first = wait_running(&daemon, "web", 2);
    let load = Load::start(target, 4);
    let started = Instant::now();
    let mut reloads = 0;
    while started.elapsed() < LOAD_TIME {
        let out = daemon.ok_within(&["reload", "web"], OPERATION_LIMIT);
        assert!(out.contains("2 replicas replaced"), "{out}");
        reloads += 1;
    }
    let stats = load.stop();
    assert_no_failure(&stats, &format!("{mode}: {reloads} rolling reloads"));
    let last = wait_running(&daemon, "web", 2);
    assert!(first.is_disjoint(&last), "{first:?} still in {last:?}");
    assert!(
        stats.by_pid.len() >= 4,
        "{mode}: only {:?} served",
        stats.by_pid
    );
}

#[test]
fn a_rolling_reload_under_load_fails_no_request_shared() {
    rolling_reload_under_load("shared");
}

#[test]
fn a_rolling_reload_under_load_fails_no_request_reuseport() {
    rolling_reload_under_load("reuseport");
}

#[test]
fn a_rolling_reload_under_load_fails_no_request_handoff() {
    rolling_reload_under_load("handoff");
}

#[test]
fn scaling_up_and_down_under_load_fails_no_request() {
    let _turn = load_turn();
    own_network_with_request_migration();
    for mode in ["shared", "reuseport", "handoff"] {
        let (addr, target) = tcp(free_port());
        let daemon = Daemon::start(&pool("web", mode, &addr, 2));
        wait_running(&daemon, "web", 2);
        let load = Load::start(target, 4);
        let step = LOAD_TIME / 9;
        for replicas in [4, 1, 3] {
            std::thread::sleep(step);
            let out = daemon.ok_within(&["scale", "web", &replicas.to_string()], OPERATION_LIMIT);
            assert!(out.contains(&format!("→ {replicas} replicas")), "{out}");
            assert_eq!(running_pids(&daemon, "web").len(), replicas, "{mode}");
        }
        std::thread::sleep(step);
        let stats = load.stop();
        assert_no_failure(&stats, &format!("{mode}: scale 2 → 4 → 1 → 3"));
    }
}

#[test]
fn scaling_down_closes_a_replica_in_restart_backoff_before_a_serving_one() {
    // A long restart delay holds the killed replica in its backoff.
    let (addr, target) = tcp(free_port());
    let config = pool("web", "reuseport", &addr, 2).replace(
        "restart = \"on-failure\"\n",
        "restart = \"on-failure\"\nrestart_delay = \"60s\"\n",
    );
    let daemon = Daemon::start(&config);
    wait_running(&daemon, "web", 2);
    // The oldest replica is killed: scaling down by age alone would keep it
    // and close the one that serves.
    let mut both = replicas(&daemon, "web");
    both.sort();
    let (oldest, serving) = (both[0].clone(), both[1].clone());
    assert_eq!(kill_process(oldest.1), 0);
    wait_until("the killed replica waits out its backoff", || {
        replicas(&daemon, "web")
            .iter()
            .any(|r| r.0 == oldest.0 && r.2 == "restarting")
    });
    let out = daemon.ok_within(&["scale", "web", "1"], OPERATION_LIMIT);
    assert!(out.contains("2 → 1 replicas"), "{out}");
    let left = replicas(&daemon, "web");
    assert_eq!(
        left,
        vec![serving.clone()],
        "the serving replica {serving:?} is the one kept"
    );
    assert!(is_alive(serving.1), "the serving replica was closed");
    let reply = Client::new(target).get().expect("the pool still serves");
    assert_eq!(reply.pid, serving.1);
}

/// A handoff pool `mixed` of two replicas on `addr`, alternating by worker
/// id between `test-worker MODE_ARGS` and http-hello.
fn mixed_handoff_pool(addr: &str, mode_args: &[&str]) -> String {
    let script = format!(
        "if [ $((ARBOR_WORKER_ID % 2)) = 0 ]; then exec {:?} {}; else exec {:?}; fi",
        test_worker().display().to_string(),
        mode_args
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(" "),
        binary("http-hello").display().to_string()
    );
    pool_running(
        "mixed",
        "handoff",
        addr,
        2,
        Path::new("/bin/sh"),
        &["-c".into(), script],
    )
}

#[test]
fn a_refused_connection_goes_to_another_replica() {
    // Replicas alternate between http-hello and a worker that refuses every
    // handed-off connection (the blocking worker API has no handler).
    let (addr, target) = tcp(free_port());
    let config = mixed_handoff_pool(&addr, &["echo"]);
    let daemon = Daemon::start(&config);
    wait_running(&daemon, "mixed", 2);
    let load = Load::start(target, 4);
    std::thread::sleep(Duration::from_secs(2));
    let stats = load.stop();
    assert_no_failure(&stats, "a refusing replica in round-robin");
    assert_eq!(stats.by_pid.len(), 1, "{:?}", stats.by_pid);
}

#[test]
fn a_replica_that_never_answers_holds_at_most_eight_connections_and_loses_none_when_killed() {
    // Replicas alternate between http-hello and a worker that takes every
    // handed-off connection and never answers it (no ack, never served).
    let (addr, target) = tcp(free_port());
    let dir = arbor_integration_tests::TempDir::new("pool-hoard");
    let held_file = dir.0.join("held");
    let held_path = held_file.display().to_string();
    // Not restarted: once killed, what it held can only go to http-hello.
    let config = mixed_handoff_pool(&addr, &["hoard", &held_path])
        .replace("restart = \"on-failure\"", "restart = \"never\"");
    let daemon = Daemon::start(&config);
    let pids = wait_running(&daemon, "mixed", 2);
    let _turn = load_turn();
    const CONNECTIONS: usize = 30;
    let (answers, answered) = std::sync::mpsc::channel();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (target, answers) = (target.clone(), answers.clone());
            std::thread::spawn(move || answers.send(Client::new(target).get()))
        })
        .collect();
    // Every connection accounted for: the hoarding replica holds its
    // window's worth, and every other one was served by http-hello.
    let mut replies = Vec::new();
    let held = || std::fs::read_to_string(&held_file).unwrap_or_default();
    wait_until(
        "the hoard's window full and every other connection served",
        || {
            replies.extend(answered.try_iter());
            replies.len() == CONNECTIONS - 8 && held() == "8"
        },
    );
    let served_by: BTreeSet<u32> = replies
        .iter()
        .map(|r| r.as_ref().expect("a request served by http-hello").pid)
        .collect();
    assert_eq!(served_by.len(), 1, "{replies:?}");
    // arbord kept its share of each held connection: killed, the hoard's
    // eight go to http-hello and are served too.
    let hoard = *pids.difference(&served_by).next().expect("the hoard's pid");
    assert_eq!(kill_process(hoard), 0);
    for client in clients {
        client
            .join()
            .expect("a client thread")
            .expect("answers open");
    }
    replies.extend(answered.try_iter());
    assert_eq!(replies.len(), CONNECTIONS);
    for reply in &replies {
        let pid = reply.as_ref().expect("every request served").pid;
        assert!(served_by.contains(&pid), "{replies:?}");
    }
    assert_eq!(held(), "8", "the hoard got more than its window");
}

#[test]
fn socket_activation_serves_the_pool_on_the_passed_socket() {
    let dir = arbor_integration_tests::TempDir::new("pool-activation");
    let (addr, target) = tcp(free_port());
    let config = dir.0.join("arbord.toml");
    // The configured address is the same port: binding it would fail
    // (EADDRINUSE), so an answer proves the passed socket is used.
    std::fs::write(
        &config,
        pool("web", "handoff", &addr, 2).replace("web-socket", "web"),
    )
    .unwrap();
    let socket = dir.0.join("arbord.sock");
    let activate = arbor_integration_tests::system_tool("systemd-socket-activate");
    let mut activator = Command::new(activate)
        .arg("-l")
        .arg(&addr)
        .arg("--fdname=web")
        .arg(binary("test-arbord"))
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // systemd-socket-activate listens first and starts arbord at the first
    // connection, which waits in the backlog meanwhile.
    let deadline = Instant::now() + LIMIT;
    let reply = loop {
        match Client::new(target.clone()).get() {
            Ok(reply) => break reply,
            Err(e) => {
                assert!(Instant::now() < deadline, "no answer on {addr}: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let ctl = |args: &[&str]| arbor_integration_tests::arbord::ctl_at(&socket, args);
    let ps = String::from_utf8(ctl(&["ps"]).stdout).unwrap();
    assert!(
        ps.contains(&format!(
            "socket web {addr} (handoff round-robin, from systemd)"
        )),
        "{ps}"
    );
    assert!(
        ps.contains(&reply.pid.to_string()),
        "{} not in\n{ps}",
        reply.pid
    );
    assert!(ctl(&["shutdown"]).status.success());
    let status = wait_or_kill(
        &mut activator,
        LIMIT,
        "arbord under systemd-socket-activate",
    );
    assert!(status.success(), "{status}");
}

#[test]
fn least_busy_sends_new_connections_to_the_replica_with_fewest_open() {
    let (addr, target) = tcp(free_port());
    let config = pool("web", "handoff", &addr, 2).replace(
        "mode = \"handoff\"\n",
        "mode = \"handoff\"\npolicy = \"least-busy\"\n",
    );
    let daemon = Daemon::start(&config);
    let pids = wait_running(&daemon, "web", 2);
    // What is on its way to a replica counts with what it has open: after
    // each connection, ps's count of it (and the time an arborctl round
    // trip takes) lets the ack arrive first, so the counts are settled.
    let connect = |held: &mut Vec<(Client, u32)>| {
        let mut client = Client::new(target.clone());
        let pid = client.get().unwrap().pid;
        held.push((client, pid));
        let count = held.iter().filter(|c| c.1 == pid).count() as u64;
        wait_until("ps counts the new connection", || {
            replicas(&daemon, "web")
                .iter()
                .any(|r| r.1 == pid && r.3 == count)
        });
        pid
    };
    // Four held connections: two on each replica.
    let mut held = Vec::new();
    for _ in 0..4 {
        connect(&mut held);
    }
    for pid in &pids {
        assert_eq!(held.iter().filter(|c| c.1 == *pid).count(), 2, "{held:?}");
    }
    // One replica's two close; once it reports them gone (ps sees it
    // first), the next two new connections both go to it.
    let idle = *pids.first().unwrap();
    held.retain(|c| c.1 != idle);
    wait_until("the idle replica's connections closed", || {
        replicas(&daemon, "web")
            .iter()
            .any(|r| r.1 == idle && r.3 == 0)
    });
    let next: Vec<u32> = (0..2).map(|_| connect(&mut held)).collect();
    assert_eq!(next, [idle, idle], "least-busy chose {next:?}");
}

#[test]
fn sighup_rolls_a_changed_pool_under_load() {
    let _turn = load_turn();
    let (addr, target) = tcp(free_port());
    let daemon = Daemon::start(&pool("web", "shared", &addr, 2));
    let first = wait_running(&daemon, "web", 2);
    let load = Load::start(target, 4);
    // New settings (an environment variable) and one more replica.
    let changed = pool("web", "shared", &addr, 3).replace(
        "replicas = 3\n",
        "replicas = 3\nenv = { GREETING = \"changed\" }\n",
    );
    std::fs::write(daemon.dir.0.join("arbord.toml"), changed).unwrap();
    assert!(Command::new("kill")
        .arg("-HUP")
        .arg(daemon.pid().to_string())
        .status()
        .unwrap()
        .success());
    wait_until_within("three new replicas", OPERATION_LIMIT, || {
        let now = running_pids(&daemon, "web");
        now.len() == 3 && now.is_disjoint(&first)
    });
    let stats = load.stop();
    assert_no_failure(&stats, "SIGHUP with a changed pool");
    // Each new replica runs with the changed environment.
    for pid in running_pids(&daemon, "web") {
        let env = arbor_integration_tests::environ_of(pid);
        assert!(
            env.iter().any(|e| e == "GREETING=changed"),
            "{pid}: {env:?}"
        );
    }
}

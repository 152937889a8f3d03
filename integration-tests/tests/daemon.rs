//! The real arbord and arborctl binaries against each other: every command,
//! and the failures an operator meets (bad config, second daemon, no daemon,
//! garbage on the control socket, signals), plus sd_notify on a real
//! NOTIFY_SOCKET.

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arbor_integration_tests::arbord::{ctl_at, wait_until, Daemon, LIMIT};
use arbor_integration_tests::{binary, test_worker, wait_or_kill, TempDir};

fn echo_config() -> String {
    format!(
        "[[worker]]\nname = \"echo\"\nprogram = {:?}\nargs = [\"echo\"]\nrestart = \"on-failure\"\n",
        test_worker().display().to_string()
    )
}

fn workers(daemon: &Daemon) -> Vec<(u64, String, u32, String, u32)> {
    let json = daemon.ok(&["--json", "ps"]);
    // A tiny reader for the fields the tests need, to stay off a JSON dependency.
    json.trim_matches(|c| c == '[' || c == ']' || c == '\n')
        .split("},{")
        .filter(|o| !o.is_empty())
        .map(|object| {
            let field = |name: &str| {
                let start = object.find(&format!("\"{name}\":")).expect(name) + name.len() + 3;
                let rest = &object[start..];
                let end = rest.find([',', '}']).unwrap_or(rest.len());
                rest[..end].trim_matches('"').to_string()
            };
            (
                field("id").parse().unwrap(),
                field("name"),
                field("pid").parse().unwrap(),
                field("state"),
                field("restarts").parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_command_works_against_a_real_daemon() {
    let daemon = Daemon::start(&echo_config());
    wait_until("echo running", || {
        workers(&daemon).iter().any(|w| w.3 == "running")
    });
    let listed = workers(&daemon);
    let [(echo, ref name, pid, _, 0)] = listed[..] else {
        panic!("{listed:?}")
    };
    assert_eq!(name, "echo");
    assert!(pid > 0);

    assert_eq!(daemon.ok(&["request", &echo.to_string(), "hi"]), "hi\n");
    // send prints nothing; the echo worker posts the message back, which
    // a watcher of its events sees.
    let mut watcher = arbor_integration_tests::control::client(&daemon);
    let events = arbor_protocol::control::ControlRequest::Events { id: Some(echo) };
    let subscribed = arbor_integration_tests::control::ask(&mut watcher, &events);
    assert_eq!(subscribed, arbor_protocol::control::ControlResponse::Ok);
    assert_eq!(daemon.ok(&["send", &echo.to_string(), "posted"]), "");
    loop {
        use arbor_protocol::control::{ControlResponse, EventKind};
        match arbor_integration_tests::control::next(&mut watcher) {
            ControlResponse::Notice(event) if event.kind == EventKind::Message("posted".into()) => {
                break
            }
            ControlResponse::Notice(_) => {}
            other => panic!("the watcher got {other:?}"),
        }
    }
    drop(watcher);

    // Any program is a worker; its output is captured.
    let spawned = daemon.ok(&[
        "spawn",
        "--name",
        "shell",
        "--plain",
        "--",
        "/bin/sh",
        "-c",
        "echo hello from sh; exec sleep 600",
    ]);
    let shell: u64 = spawned.trim().parse().expect("spawn prints the id alone");
    wait_until("the shell's line in its log", || {
        daemon
            .ok(&["logs", &shell.to_string()])
            .contains("hello from sh")
    });
    assert_eq!(
        daemon.ok(&["close", &shell.to_string(), "--grace", "200ms"]),
        "killed by SIGTERM\n"
    );

    // Restart on failure: kill echo, it comes back with another pid.
    assert_eq!(daemon.ok(&["signal", &echo.to_string(), "KILL"]), "");
    wait_until("echo restarted", || {
        workers(&daemon)
            .iter()
            .any(|w| w.0 == echo && w.4 == 1 && w.3 == "running" && w.2 != pid)
    });
    assert_eq!(
        daemon.ok(&["request", &echo.to_string(), "again"]),
        "again\n"
    );

    let status = daemon.ok(&["status"]);
    assert!(
        status.contains(&format!("arbord pid {}", daemon.pid())),
        "{status}"
    );
    assert_eq!(
        daemon.ok(&["terminate", &echo.to_string()]),
        "killed by SIGKILL\n"
    );

    // Errors: exit 1 with a one-line message.
    let output = daemon.ctl(&["request", "999", "x"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no worker 999"));
    // Usage errors: exit 2.
    assert_eq!(daemon.ctl(&["spawn"]).status.code(), Some(2));

    assert_eq!(daemon.ok(&["shutdown"]), "");
    let mut daemon = daemon;
    let status = wait_or_kill(&mut daemon.child, LIMIT, "arbord after shutdown");
    assert!(status.success(), "{status}");
    assert!(!daemon.socket.exists(), "the socket file is removed");
}

#[test]
fn a_bad_config_names_file_line_and_key_and_exits_2() {
    let dir = TempDir::new("badconfig");
    let config = dir.0.join("arbord.toml");
    std::fs::write(
        &config,
        "[[worker]]\nname = \"a\"\nprogram = \"x\"\nrestart = \"sometimes\"\n",
    )
    .unwrap();
    let mut child = Command::new(binary("test-arbord"))
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(dir.0.join("s.sock"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut child, LIMIT, "arbord with a bad config");
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:4:", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains("worker[0].restart"), "{stderr}");
    assert!(!dir.0.join("s.sock").exists(), "nothing started");
}

#[test]
fn a_second_daemon_on_the_same_socket_exits_1_and_a_stale_socket_is_replaced() {
    let daemon = Daemon::start("");
    let mut second = Command::new(binary("test-arbord"))
        .arg("--socket")
        .arg(&daemon.socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut second, LIMIT, "the second arbord");
    let stderr = std::io::read_to_string(second.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("already running"), "{stderr}");

    // A socket file left by a daemon that died (bound, then closed without
    // unlinking, as SIGKILL leaves it) is replaced by the next one.
    drop(daemon);
    let dir = TempDir::new("stale");
    let stale = dir.0.join("arbord.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists() && UnixStream::connect(&stale).is_err());
    let mut third = Command::new(binary("test-arbord"))
        .arg("--socket")
        .arg(&stale)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the third arbord to listen", || {
        UnixStream::connect(&stale).is_ok()
    });
    let _ = third.kill();
    let _ = third.wait();
}

#[test]
fn arborctl_without_a_daemon_exits_1_naming_the_socket() {
    let dir = TempDir::new("nodaemon");
    let socket = dir.0.join("nobody.sock");
    let output = ctl_at(&socket, &["ps"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn garbage_and_stalled_clients_do_not_hurt_the_daemon() {
    let daemon = Daemon::start(&echo_config());
    wait_until("echo running", || {
        workers(&daemon).iter().any(|w| w.3 == "running")
    });
    let fds_before = daemon.settled_fds();

    // Garbage: the connection is closed.
    let mut garbage = UnixStream::connect(&daemon.socket).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    garbage.set_read_timeout(Some(LIMIT)).unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut garbage, &mut rest).expect("closed, not hung");
    // An oversized frame header: closed too.
    let mut huge = UnixStream::connect(&daemon.socket).unwrap();
    huge.write_all(b"ARBR\x01\x02\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00")
        .unwrap();
    huge.set_read_timeout(Some(LIMIT)).unwrap();
    std::io::Read::read_to_end(&mut huge, &mut rest).expect("closed, not hung");
    // Half a frame, and many clients that connect and stall.
    let mut half = UnixStream::connect(&daemon.socket).unwrap();
    half.write_all(b"ARBR\x01").unwrap();
    let stalled: Vec<UnixStream> = (0..200)
        .filter_map(|_| UnixStream::connect(&daemon.socket).ok())
        .collect();
    assert!(stalled.len() > 100);

    // Meanwhile everything works.
    assert_eq!(daemon.ok(&["request", "1", "still fine"]), "still fine\n");
    drop((stalled, half, garbage, huge));
    wait_until("arbord's fds back to where they were", || {
        std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
            .unwrap()
            .count()
            <= fds_before
    });
    assert_eq!(daemon.ok(&["request", "1", "after"]), "after\n");
}

#[test]
fn sigterm_closes_every_worker_and_exits_0_with_sd_notify_in_order() {
    let dir = TempDir::new("notify");
    let notify_path = dir.0.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(LIMIT)).unwrap();
    let mut daemon = Daemon::start_with(&echo_config(), |command| {
        command.env("NOTIFY_SOCKET", &notify_path);
    });
    // READY=1 comes once the boot workers are Ready.
    let mut messages = Vec::new();
    let mut buf = [0u8; 512];
    while messages.last().map(String::as_str) != Some("READY=1") {
        let n = notify.recv(&mut buf).expect("READY=1 within the limit");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        workers(&daemon).iter().all(|w| w.3 == "running"),
        "READY before the boot workers were"
    );
    let echo_pid = workers(&daemon)[0].2;
    // SAFETY: kill with a pid we started.
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGTERM) }, 0);
    let status = wait_or_kill(&mut daemon.child, LIMIT, "arbord after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        !arbor_integration_tests::is_alive(echo_pid),
        "the worker is gone"
    );

    while let Ok(n) = notify.recv(&mut buf) {
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        let stopping = message == "STOPPING=1";
        messages.push(message);
        if stopping {
            break;
        }
    }
    let ready = messages
        .iter()
        .position(|m| m == "READY=1")
        .expect("READY=1");
    let status_line = messages
        .iter()
        .position(|m| m.starts_with("STATUS="))
        .expect("STATUS=");
    let stopping = messages
        .iter()
        .position(|m| m == "STOPPING=1")
        .expect("STOPPING=1");
    assert!(ready < stopping && status_line < stopping, "{messages:?}");
}

/// Lines a child prints, read on a thread so that a test can wait with a deadline.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line containing every one of `needles`.
fn next_line_with(lines: &std::sync::mpsc::Receiver<String>, needles: &[&str]) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if needles.iter().all(|n| line.contains(n)) => return line,
            Ok(_) => continue,
            Err(_) => panic!("no line with {needles:?} within {LIMIT:?}"),
        }
    }
}

fn next_line_containing(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    next_line_with(lines, &[needle])
}

/// Starts `arborctl ARGS` that streams, and waits until it is following.
fn follower(daemon: &Daemon, args: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(binary("test-arborctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = std::io::BufReader::new(stderr).read_line(&mut line);
        let _ = tx.send(line);
    });
    let announced = rx.recv_timeout(LIMIT).expect("arborctl said it follows");
    assert!(announced.contains("following"), "{announced}");
    let lines = lines_of(&mut child);
    (child, lines)
}

#[test]
fn watch_streams_events_as_json_with_exit_codes_and_signals() {
    let daemon = Daemon::start(&echo_config());
    wait_until("echo running", || {
        workers(&daemon).iter().any(|w| w.3 == "running")
    });
    let (mut watcher, lines) = follower(&daemon, &["--json", "watch"]);
    let shell = daemon.ok(&[
        "spawn",
        "--name",
        "sh",
        "--plain",
        "--",
        "/bin/sh",
        "-c",
        "echo out; exit 3",
    ]);
    let shell = shell.trim();
    let exit = next_line_with(
        &lines,
        &["\"event\":\"exit\"", &format!("\"worker\":{shell}")],
    );
    assert!(
        exit.contains("\"code\":3") && exit.contains("\"signal\":null"),
        "{exit}"
    );
    daemon.ok(&["signal", "1", "KILL"]);
    let killed = next_line_with(&lines, &["\"event\":\"exit\"", "\"worker\":1"]);
    assert!(
        killed.contains("\"code\":null") && killed.contains("\"signal\":\"SIGKILL\""),
        "{killed}"
    );
    next_line_with(&lines, &["\"event\":\"restarting\"", "\"worker\":1"]);
    next_line_containing(&lines, "\"event\":\"ready\"");
    let _ = watcher.kill();
    let _ = watcher.wait();
}

#[test]
fn logs_follow_prints_the_tail_then_each_new_line_exactly_once() {
    let daemon = Daemon::start("");
    let dir = TempDir::new("follow");
    let gate = dir.0.join("gate");
    // "second" comes only once the follower follows (the gate opens), and
    // "third" after it, so that a second "second" would come before it.
    let script = format!(
        "echo first; while [ ! -e {} ]; do sleep 0.01; done; echo second; echo third; sleep 600",
        gate.display()
    );
    let id = daemon.ok(&[
        "spawn", "--name", "ticker", "--plain", "--", "/bin/sh", "-c", &script,
    ]);
    let id = id.trim().to_string();
    wait_until("the first line", || {
        daemon.ok(&["logs", &id]).contains("first")
    });
    let (mut follower, lines) = follower(&daemon, &["logs", "-f", &id]);
    assert_eq!(next_line_containing(&lines, "first"), "first");
    std::fs::write(&gate, b"").unwrap();
    let mut after_first = Vec::new();
    loop {
        let line = lines.recv_timeout(LIMIT).expect("a line within the limit");
        let third = line == "third";
        after_first.push(line);
        if third {
            break;
        }
    }
    assert_eq!(after_first, ["second", "third"]);
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn sighup_reloads_the_configuration() {
    let worker = |name: &str, mode: &str| {
        format!(
            "[[worker]]\nname = {name:?}\nprogram = {:?}\nargs = [{mode:?}]\n",
            test_worker().display().to_string()
        )
    };
    let daemon = Daemon::start(&(worker("kept", "echo") + &worker("removed", "echo")));
    wait_until("both running", || {
        workers(&daemon).iter().filter(|w| w.3 == "running").count() == 2
    });
    let kept_pid = workers(&daemon).iter().find(|w| w.1 == "kept").unwrap().2;
    let config = daemon.socket.with_file_name("arbord.toml");
    std::fs::write(&config, worker("kept", "echo") + &worker("added", "echo")).unwrap();
    // SAFETY: kill with a pid we started.
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) }, 0);
    wait_until("the reload", || {
        let listed = workers(&daemon);
        listed.iter().any(|w| w.1 == "added" && w.3 == "running")
            && !listed.iter().any(|w| w.1 == "removed")
    });
    let kept = workers(&daemon)
        .into_iter()
        .find(|w| w.1 == "kept")
        .unwrap();
    assert_eq!(kept.2, kept_pid, "an unchanged worker keeps running");
}

#[test]
fn a_client_whose_uid_is_not_allowed_gets_an_error_and_is_disconnected() {
    use std::os::unix::process::CommandExt;
    // A client under another uid.
    if !arbor_integration_tests::machine_has(arbor_integration_tests::Needs::Root) {
        return;
    }
    // World-writable socket, so that only the uid check can refuse.
    let daemon = Daemon::start("[daemon]\nmode = \"0666\"\n");
    let mut child = Command::new(binary("test-arborctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("status")
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut child, LIMIT, "arborctl as nobody");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("uid 65534 is not allowed"), "{stderr}");
    // And the daemon goes on.
    assert!(daemon.ok(&["status"]).contains("arbord pid"));
}

#[test]
fn arborctl_prints_shell_completions_and_help_with_examples() {
    let output = ctl_at(Path::new("/nonexistent"), &["completions", "bash"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("arborctl"));
    let help = ctl_at(Path::new("/nonexistent"), &["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("arborctl spawn --name echo"));
}

#[test]
fn send_passes_files_as_fds_to_the_worker() {
    let config = format!(
        "[[worker]]\nname = \"writer\"\nprogram = {:?}\nargs = [\"write-fds\"]\n",
        test_worker().display().to_string()
    );
    let daemon = Daemon::start(&config);
    wait_until("writer running", || {
        workers(&daemon).iter().any(|w| w.3 == "running")
    });
    let dir = TempDir::new("sendfd");
    let target = dir.0.join("target.txt");
    std::fs::write(&target, b"").unwrap();
    daemon.ok(&[
        "send",
        "1",
        "through the fd",
        "--fd",
        target.to_str().unwrap(),
    ]);
    wait_until("the worker wrote through the fd", || {
        std::fs::read(&target).unwrap() == b"through the fd"
    });
    let output = daemon.ctl(&["send", "1", "x", "--fd", "/no/such/file"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/file"));
}

#[test]
fn a_second_sigterm_terminates_workers_that_ignore_the_first() {
    let config = format!(
        "[daemon]\nshutdown_grace = \"60s\"\n[[worker]]\nname = \"stubborn\"\nprogram = {:?}\nargs = [\"stubborn\"]\n",
        test_worker().display().to_string()
    );
    let dir = TempDir::new("twice");
    let notify_path = dir.0.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(LIMIT)).unwrap();
    let mut daemon = Daemon::start_with(&config, |command| {
        command.env("NOTIFY_SOCKET", &notify_path);
    });
    wait_until("stubborn running", || {
        workers(&daemon).iter().any(|w| w.3 == "running")
    });
    let pid = daemon.pid() as i32;
    // SAFETY: kill with a pid we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // The first SIGTERM starts a 60 s close the worker ignores (it is
    // stopping once STOPPING=1 arrives); the second must not wait for it.
    let mut buf = [0u8; 512];
    loop {
        let n = notify.recv(&mut buf).expect("STOPPING=1 within the limit");
        if &buf[..n] == b"STOPPING=1" {
            break;
        }
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = Instant::now();
    let status = wait_or_kill(&mut daemon.child, LIMIT, "arbord after two SIGTERMs");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_watcher_that_falls_behind_is_told_how_many_events_it_missed() {
    use arbor_protocol::blocking::Channel;
    use arbor_protocol::control::{ControlRequest, ControlResponse};
    let daemon = Daemon::start("");
    let mut watcher = Channel::new(UnixStream::connect(&daemon.socket).unwrap()).unwrap();
    watcher.socket().set_read_timeout(Some(LIMIT)).unwrap();
    watcher
        .send_value(&ControlRequest::Watch { id: None }, &[])
        .unwrap();
    let (arbor_protocol::Frame::Message(first), _) = watcher.recv().unwrap() else {
        panic!("no answer")
    };
    assert_eq!(
        first.decode::<ControlResponse>().unwrap(),
        ControlResponse::Ok
    );
    // Far more output events than the watcher's socket and buffer hold,
    // while the watcher reads nothing.
    let id = daemon.ok(&[
        "spawn",
        "--plain",
        "--name",
        "flood",
        "--",
        "/bin/sh",
        "-c",
        "seq 1 30000; sleep 600",
    ]);
    let id = id.trim().to_string();
    wait_until("the flood to be logged", || {
        daemon.ok(&["logs", "-n", "1", &id]).trim() == "30000"
    });
    // Other clients are unaffected meanwhile.
    assert!(daemon.ok(&["status"]).contains("arbord pid"));
    // Read to the flood's last line (the newest event, never the one
    // dropped): what came plus what was missed is every event, exactly
    // (its spawn, its ready: a plain program is ready once started, and
    // 30,000 lines).
    let deadline = Instant::now() + LIMIT;
    let (mut received, mut missed) = (0u64, 0u64);
    loop {
        assert!(
            Instant::now() < deadline,
            "the flood's last line never came"
        );
        let (arbor_protocol::Frame::Message(message), _) = watcher.recv().unwrap() else {
            continue;
        };
        let ControlResponse::Event(event) = message.decode::<ControlResponse>().unwrap() else {
            panic!("not an event")
        };
        if event.event == "missed" {
            missed += event.missed.unwrap();
            continue;
        }
        received += 1;
        if event.event == "output" && event.text.as_deref() == Some("30000") {
            break;
        }
    }
    assert!(missed > 0, "the watcher did not fall behind");
    assert_eq!(
        received + missed,
        2 + 30_000,
        "{received} received, {missed} missed"
    );
}

#[test]
fn a_worker_that_keeps_failing_is_marked_failed_not_restarted_forever() {
    let config = "[[worker]]\nname = \"crasher\"\nprogram = \"/bin/false\"\nspeaks_protocol = false\n\
                  restart = \"always\"\nrestart_delay = \"10ms\"\nmax_restarts = 3\nrestart_window = \"60s\"\n";
    let daemon = Daemon::start(config);
    wait_until("crasher failed", || {
        workers(&daemon).iter().any(|w| w.3 == "failed")
    });
    let crasher = workers(&daemon)
        .into_iter()
        .find(|w| w.1 == "crasher")
        .unwrap();
    assert_eq!(crasher.4, 3, "three restarts, then failed");
    assert_eq!(crasher.2, 0, "no process left");
}

#[test]
fn a_worker_closed_while_waiting_for_its_restart_stays_stopped() {
    let config =
        "[[worker]]\nname = \"crasher\"\nprogram = \"/bin/false\"\nspeaks_protocol = false\n\
                  restart = \"always\"\nrestart_delay = \"300ms\"\nmax_restarts = 100\n";
    let daemon = Daemon::start(config);
    wait_until("crasher waiting for a restart", || {
        workers(&daemon).iter().any(|w| w.3 == "restarting")
    });
    assert!(daemon.ctl(&["close", "1"]).status.success());
    // Watch it for well past the backoff: it must never run again.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let listed = workers(&daemon);
        assert!(
            listed.iter().all(|w| w.3 != "running" && w.3 != "starting"),
            "restarted after close: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(workers(&daemon)[0].3, "exited");
}

#[test]
fn watch_into_a_closed_pipe_ends_quietly() {
    let daemon = Daemon::start(&echo_config());
    let (mut watcher, lines) = follower(&daemon, &["watch"]);
    daemon.ok(&["spawn", "--plain", "--", "/bin/true"]);
    let _first = lines.recv_timeout(LIMIT).expect("an event");
    drop(lines); // the reading end of arborctl's stdout goes away
                 // More events: arborctl's next write hits a closed pipe.
    for _ in 0..3 {
        daemon.ok(&["spawn", "--plain", "--", "/bin/true"]);
    }
    let status = wait_or_kill(&mut watcher, LIMIT, "arborctl watch with a closed stdout");
    assert!(status.success(), "{status}");
}

#[test]
fn the_registry_forgets_the_oldest_exits_beyond_a_bound() {
    use arbor_protocol::blocking::Channel;
    use arbor_protocol::control::{ControlRequest, ControlResponse, SpawnRequest};
    let daemon = Daemon::start("");
    let mut client = Channel::new(UnixStream::connect(&daemon.socket).unwrap()).unwrap();
    client.socket().set_read_timeout(Some(LIMIT)).unwrap();
    let mut ask = |request: &ControlRequest| -> ControlResponse {
        client.send_value(request, &[]).unwrap();
        let (arbor_protocol::Frame::Message(message), _) = client.recv().unwrap() else {
            panic!("no answer")
        };
        message.decode().unwrap()
    };
    for _ in 0..300 {
        let spawn = ControlRequest::Spawn(SpawnRequest {
            name: Some("brief".into()),
            program: "/bin/true".into(),
            args: vec![],
            env: vec![],
            cwd: None,
            restart: "never".into(),
            close_grace_ms: 1000,
            speaks_protocol: false,
            shared: false,
        });
        assert!(matches!(ask(&spawn), ControlResponse::Spawned { .. }));
    }
    let deadline = Instant::now() + LIMIT;
    loop {
        let ControlResponse::Workers(listed) = ask(&ControlRequest::List) else {
            panic!("no list")
        };
        if listed.iter().all(|w| w.state == "exited") {
            // The bound (KEEP_EXITED), checked at every exit: exactly
            // the 256 most recent of the 300.
            assert_eq!(listed.len(), 256, "entries kept");
            let ids: Vec<u64> = listed.iter().map(|w| w.id).collect();
            let newest = *ids.iter().max().unwrap();
            assert!(
                ids.iter().all(|id| *id > newest - 256),
                "not the newest kept: {ids:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the brief workers did not all exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn what_a_worker_leaves_behind_is_reaped_and_killed_at_shutdown_at_the_latest() {
    use arbor_integration_tests::{is_alive, parent_of, process_state};
    // Without a cgroup per worker: the process group and the subreaper only.
    let mut daemon = leaver("[daemon]\ncgroups = false\n");
    let [exited, escaped, grouped] = leave_behind(&daemon);
    // The one that exited and the one killed with the worker's group were
    // re-parented to arbord (its subreaper) and reaped: no zombie, no trace.
    wait_until("the leftovers reaped", || {
        process_state(exited).is_none() && process_state(grouped).is_none()
    });
    // The one that left the group lives on, arbord's child now...
    assert!(is_alive(escaped));
    assert_eq!(parent_of(escaped), Some(daemon.pid()));
    // ...until arbord shuts down.
    daemon.ok(&["shutdown"]);
    let status = wait_or_kill(&mut daemon.child, LIMIT, "arbord");
    assert!(status.success(), "{status}");
    assert!(
        process_state(escaped).is_none(),
        "{escaped} outlived arbord"
    );
}

/// Where arbord can make a cgroup per worker, an escaped descendant dies
/// with its worker. (Where it cannot, the worker runs in arbord's own
/// cgroup and the escaped one lives until shutdown, as above.)
#[test]
fn with_a_cgroup_per_worker_an_escaped_descendant_dies_with_its_worker() {
    use arbor_integration_tests::{machine_has, process_state, Needs};
    if !machine_has(Needs::Cgroups) {
        return;
    }
    let mut daemon = leaver("");
    let worker_pid = workers(&daemon)[0].2;
    let cgroup = std::fs::read_to_string(format!("/proc/{worker_pid}/cgroup")).unwrap();
    let own = format!("/arbor-{}/worker-", daemon.pid());
    assert!(
        cgroup.contains(&own),
        "not in a cgroup of its own: {cgroup}"
    );
    let [_, escaped, _] = leave_behind(&daemon);
    wait_until("the escaped descendant killed with its worker", || {
        process_state(escaped).is_none()
    });
    daemon.ok(&["shutdown"]);
    let status = wait_or_kill(&mut daemon.child, LIMIT, "arbord");
    assert!(status.success(), "{status}");
    // arbord removed the cgroups it made.
    {
        let base = cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .and_then(|p| p.split("/worker-").next())
            .unwrap()
            .to_string();
        let mount = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.contains(" - cgroup2 "))
            .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
            .unwrap();
        let dir = format!("{mount}{base}");
        wait_until("arbord's cgroup directory removed", || {
            !std::path::Path::new(&dir).exists()
        });
    }
}

/// arbord with `daemon_section` and one `orphans` test worker, running.
fn leaver(daemon_section: &str) -> Daemon {
    let config = format!(
        "{daemon_section}\n[[worker]]\nname = \"leaver\"\nprogram = {:?}\nargs = [\"orphans\"]\n",
        test_worker().display().to_string()
    );
    let daemon = Daemon::start(&config);
    wait_until("the worker running", || {
        workers(&daemon).iter().any(|w| w.3 == "running")
    });
    daemon
}

/// Asks the `orphans` test worker (id 1) to leave its three processes
/// behind and waits for its exit: the pids of the one that exited, the one
/// that escaped its group and the one that stayed in it.
fn leave_behind(daemon: &Daemon) -> [u32; 3] {
    let reply = daemon.ok(&["request", "1", "go"]);
    let pids: Vec<u32> = reply
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let pids: [u32; 3] = pids.try_into().unwrap_or_else(|_| panic!("{reply:?}"));
    wait_until("the worker exited", || {
        workers(daemon).iter().any(|w| w.3 == "exited")
    });
    pids
}

//! The control socket's doors against clients that never finish or break
//! the rules: one that connects and says nothing, and one that announces a
//! 16 MiB request and stalls, are answered `timeout` and disconnected after
//! arbord's `control_idle_timeout` (the announced lengths cost arbord about
//! 1 MiB each, not 16); a watch of an unknown id, and spawn requests with bad
//! names or environments, are refused with their kind and field; a boot
//! worker that never sends Ready does not keep clients waiting; a watcher
//! that never reads, and a client that pings and never reads its pongs,
//! are dropped after the answer deadline.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use arbor_integration_tests::arbord::{wait_until, wait_until_within, Daemon, LIMIT};
use arbor_integration_tests::control::{ask, client, refusal, spawn_request};
use arbor_integration_tests::{fd_count_of, fd_listing};
use arbor_protocol::blocking::Channel;
use arbor_protocol::control::{ControlRequest, ControlResponse, ErrorKind, SpawnRequest};
use arbor_protocol::frame::{FrameKind, Header, DEFAULT_MAX_PAYLOAD};
use arbor_protocol::Frame;

const IDLE: &str = "[daemon]\ncontrol_idle_timeout = \"1s\"\n";

/// The one answer a stalled client gets: a typed timeout, then the end.
fn expect_idle_answer(stream: UnixStream) {
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut channel = Channel::new(stream).unwrap();
    let (Frame::Message(message), _) = channel.recv().expect("an answer within the limit") else {
        panic!("not a Message frame")
    };
    match message.decode::<ControlResponse>().unwrap() {
        ControlResponse::Failed { kind, message } => {
            assert_eq!(kind, ErrorKind::Timeout, "{message}")
        }
        other => panic!("expected a typed timeout, got {other:?}"),
    }
    assert!(
        matches!(channel.recv(), Err(arbor_protocol::Error::Closed)),
        "then the connection ends"
    );
}

#[test]
fn a_client_that_says_nothing_is_answered_timeout_and_disconnected() {
    let daemon = Daemon::start(IDLE);
    let started = Instant::now();
    let stream = UnixStream::connect(&daemon.socket).unwrap();
    expect_idle_answer(stream);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "not before the timeout: {waited:?}"
    );
    // arbord serves the next client as usual.
    daemon.ok(&["status"]);
}

/// Peak resident memory of process `pid` in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("arbord's status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn clients_that_announce_16_mib_and_stall_cost_about_1_mib_each_and_are_cut_off() {
    let daemon = Daemon::start(IDLE);
    daemon.ok(&["status"]);
    let peak_before = peak_rss_kib(daemon.pid());
    let header = Header {
        kind: FrameKind::Message as u8,
        payload_len: DEFAULT_MAX_PAYLOAD,
        fd_count: 0,
    }
    .encode();
    let stalled: Vec<UnixStream> = (0..10)
        .map(|_| {
            let mut stream = UnixStream::connect(&daemon.socket).unwrap();
            stream.write_all(&header).unwrap();
            stream.write_all(&[0u8; 100]).unwrap();
            stream
        })
        .collect();
    for stream in stalled {
        expect_idle_answer(stream);
    }
    let grew = peak_rss_kib(daemon.pid()).saturating_sub(peak_before);
    // 10 x 16 MiB announced; about 1 MiB of room each is what may be spent.
    assert!(grew < 40 * 1024, "arbord's peak RSS grew by {grew} KiB");
    daemon.ok(&["status"]);
}

#[test]
fn watching_an_id_that_never_existed_is_answered_no_such_worker() {
    let daemon = Daemon::start("");
    for request in [
        ControlRequest::Watch { id: Some(4242) },
        ControlRequest::Events { id: Some(4242) },
    ] {
        let (kind, message) = refusal(ask(&mut client(&daemon), &request));
        assert_eq!(kind, ErrorKind::NoSuchWorker, "{message}");
    }
}

#[test]
fn spawn_requests_with_bad_names_or_environments_are_refused_naming_the_field() {
    let daemon = Daemon::start("");
    let spawn = |name: &str, env: Vec<(String, String)>| {
        ControlRequest::Spawn(SpawnRequest {
            name: Some(name.into()),
            env,
            ..spawn_request("/bin/sleep", &["600"], true)
        })
    };
    let env = |key: &str| vec![(key.to_string(), "v".to_string())];
    let cases = [
        (spawn("two\nlines", vec![]), "control character"),
        (spawn("nul\0name", vec![]), "control character"),
        (spawn(&"x".repeat(100_000), vec![]), "at most 255"),
        (spawn("", vec![]), "empty"),
        (spawn("ok", env("A=B")), "environment name"),
        (spawn("ok", env("")), "environment name"),
    ];
    let mut control = client(&daemon);
    for (request, says) in cases {
        let (kind, message) = refusal(ask(&mut control, &request));
        assert_eq!(kind, ErrorKind::BadRequest, "{message}");
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
    let ControlResponse::Workers(listed) = ask(&mut control, &ControlRequest::List) else {
        panic!("no list")
    };
    assert!(listed.is_empty(), "nothing was started: {listed:?}");
}

#[test]
fn a_boot_worker_that_never_sends_ready_does_not_hold_up_the_control_socket() {
    // A protocol worker that never speaks: arbord's boot waits up to 30 s
    // for its Ready before READY=1, but serves clients meanwhile.
    let started = Instant::now();
    let daemon =
        Daemon::start("[[worker]]\nname = \"mute\"\nprogram = \"/bin/sleep\"\nargs = [\"600\"]\n");
    let status = daemon.ok_within(&["status"], Duration::from_secs(10));
    assert!(
        status.contains("1 workers") || status.contains("workers"),
        "{status}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_watcher_that_never_reads_is_dropped_after_the_answer_deadline() {
    // About 500 KiB of output events a second.
    let daemon = Daemon::start(
        "[[worker]]\nname = \"flood\"\nprogram = \"/bin/sh\"\n\
         args = [\"-c\", \"x=$(printf '%01000d' 0); while :; do echo $x; sleep 0.001; done\"]\n\
         speaks_protocol = false\n",
    );
    wait_until("the flood running", || {
        daemon.ok(&["ps"]).contains("running")
    });
    let fds_before = daemon.settled_fds();
    let mut watcher = client(&daemon);
    watcher
        .send_value(&ControlRequest::Watch { id: None }, &[])
        .unwrap();
    wait_until("arbord holding the watcher's connection", || {
        fd_count_of(daemon.pid()) > fds_before
    });
    // It never reads. arbord's sends to it stall once its socket is full,
    // and after the 10 s deadline arbord lets go of it.
    wait_until_within(
        "arbord's fds back where they were",
        Duration::from_secs(40),
        || fd_count_of(daemon.pid()) <= fds_before,
    );
    // Reading now drains what was sent, then finds the end.
    let deadline = Instant::now() + LIMIT;
    let mut events = 0;
    while watcher.recv().is_ok() {
        events += 1;
        assert!(Instant::now() < deadline, "still streaming after the drop");
    }
    assert!(events > 0, "events were sent before the drop");
    daemon.ok(&["status"]);
}

#[test]
fn a_client_that_pings_and_never_reads_its_pongs_is_dropped_after_the_answer_deadline() {
    let daemon = Daemon::start("");
    let fds_before = daemon.settled_fds();
    let stream = UnixStream::connect(&daemon.socket).unwrap();
    let mut pinger = Channel::new(stream.try_clone().unwrap()).unwrap();
    // Pings until arbord lets go: its pongs fill this socket, which is
    // never read, its send of the next one stalls, and after the 10 s
    // deadline it drops the connection (this side's send then fails). A
    // send that waits 30 s means arbord neither read nor let go.
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0u64;
    loop {
        match pinger.send(&Frame::Ping(sent), &[]) {
            Ok(()) => sent += 1,
            Err(e) if e.is_fatal() => break,
            Err(e) => panic!("ping {sent}: arbord neither read nor let go: {e}"),
        }
        assert!(Instant::now() < deadline, "{sent} pings, still taken");
    }
    // The connection's fd goes with it.
    let gone = Instant::now() + LIMIT;
    while fd_count_of(daemon.pid()) > fds_before {
        assert!(
            Instant::now() < gone,
            "arbord's fds not back to {fds_before} after {sent} pings: {:#?}",
            fd_listing(daemon.pid())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("{sent} pings sent before arbord let go");
    daemon.ok(&["status"]);
}

#[test]
fn absurd_graces_timeouts_and_a_directory_as_program_are_refused_naming_the_field() {
    let daemon = Daemon::start("");
    let mut control = client(&daemon);
    let spawn = |program: &str, close_grace_ms: u64| {
        ControlRequest::Spawn(SpawnRequest {
            name: Some("w".into()),
            close_grace_ms,
            ..spawn_request(program, &["600"], true)
        })
    };
    for (request, says) in [
        (spawn("/bin/sleep", u64::MAX), "close_grace_ms"),
        (spawn("/tmp", 1000), "is a directory"),
    ] {
        let (kind, message) = refusal(ask(&mut control, &request));
        assert_eq!(kind, ErrorKind::BadRequest, "{message}");
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
    let ControlResponse::Spawned { id } = ask(&mut control, &spawn("/bin/sleep", 1000)) else {
        panic!("no spawn")
    };
    for (request, says) in [
        (
            ControlRequest::Close {
                id,
                grace_ms: Some(u64::MAX),
            },
            "grace_ms",
        ),
        (
            ControlRequest::Request {
                id,
                data: vec![],
                timeout_ms: u64::MAX,
            },
            "timeout_ms",
        ),
    ] {
        let (kind, message) = refusal(ask(&mut control, &request));
        assert_eq!(kind, ErrorKind::BadRequest, "{message}");
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
    // The worker was left alone by the refused close.
    assert!(daemon.ok(&["ps"]).contains("running"));
}

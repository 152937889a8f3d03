//! The control socket's doors against clients that never finish: one that
//! connects and says nothing, and one that announces a 16 MiB request and
//! stalls, are answered `timeout` and disconnected after arbord's
//! `control_idle_timeout`, and the announced lengths cost arbord about
//! 1 MiB each, not 16.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use arbor_integration_tests::arbord::{Daemon, LIMIT};
use arbor_protocol::blocking::Channel;
use arbor_protocol::control::{ControlResponse, ErrorKind};
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

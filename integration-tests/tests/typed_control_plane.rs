//! The control socket's typed answers against the real arbord: every
//! failure names its kind (`Failed { kind, message }`), a close or
//! terminate answers with the signal's number and name and the core-dump
//! flag (`Ended`), and the typed event stream (`Events`) names a
//! sub-worker's parent. arborctl prints the same.

use std::time::Instant;

use arbor_integration_tests::arbord::{wait_until, Daemon, LIMIT};
use arbor_integration_tests::control::{ask, client, next, spawn_request};
use arbor_integration_tests::{binary, TempDir};
use arbor_protocol::control::{
    ControlRequest, ControlResponse, ErrorKind, EventKind, Exit, SignalInfo, SpawnRequest,
};

fn kind_of(answer: ControlResponse) -> ErrorKind {
    match answer {
        ControlResponse::Failed { kind, .. } => kind,
        other => panic!("expected a typed failure, got {other:?}"),
    }
}

#[test]
fn every_failure_names_its_kind_and_keeps_the_connection() {
    let daemon = Daemon::start("");
    let mut client = client(&daemon);
    let kinds = [
        ask(
            &mut client,
            &ControlRequest::Close {
                id: 999,
                grace_ms: None,
            },
        ),
        ask(
            &mut client,
            &ControlRequest::Signal {
                id: 999,
                signal: "TERM".into(),
            },
        ),
        ask(
            &mut client,
            &ControlRequest::Scale {
                pool: "none".into(),
                replicas: 1,
            },
        ),
        ask(
            &mut client,
            &ControlRequest::Scale {
                pool: "none".into(),
                replicas: 5000,
            },
        ),
        ask(
            &mut client,
            &ControlRequest::Spawn(SpawnRequest {
                restart: "sometimes".into(),
                ..spawn_request("/bin/sleep", &["600"], true)
            }),
        ),
    ]
    .map(kind_of);
    assert_eq!(
        kinds,
        [
            ErrorKind::NoSuchWorker,
            ErrorKind::NoSuchWorker,
            ErrorKind::NoSuchPool,
            ErrorKind::Limit,
            ErrorKind::BadRequest,
        ]
    );
    // A program that does not speak the protocol has no channel to post to.
    let ControlResponse::Spawned { id } = ask(
        &mut client,
        &ControlRequest::Spawn(spawn_request("/bin/sleep", &["600"], true)),
    ) else {
        panic!("no spawn")
    };
    let posted = ask(
        &mut client,
        &ControlRequest::Post {
            id,
            data: b"hello".to_vec(),
        },
    );
    assert_eq!(kind_of(posted), ErrorKind::Unsupported);
    let signal = ask(
        &mut client,
        &ControlRequest::Signal {
            id,
            signal: "NOPE".into(),
        },
    );
    assert_eq!(kind_of(signal), ErrorKind::BadRequest);
    // The connection still answers, and the worker is still there.
    assert!(matches!(
        ask(&mut client, &ControlRequest::Status),
        ControlResponse::Status { running: 1, .. }
    ));
}

#[test]
fn an_unknown_shared_worker_ends_the_attach_with_a_typed_failure() {
    let daemon = Daemon::start("");
    let mut client = client(&daemon);
    let answer = ask(
        &mut client,
        &ControlRequest::Attach {
            name: "nobody".into(),
        },
    );
    assert_eq!(kind_of(answer), ErrorKind::NoSuchSharedWorker);
}

#[test]
fn terminate_answers_with_the_signal_number_and_name_and_no_core() {
    let daemon = Daemon::start("");
    let mut client = client(&daemon);
    let ControlResponse::Spawned { id } = ask(
        &mut client,
        &ControlRequest::Spawn(spawn_request("/bin/sleep", &["600"], true)),
    ) else {
        panic!("no spawn")
    };
    let ended = ask(&mut client, &ControlRequest::Terminate { id });
    assert_eq!(
        ended,
        ControlResponse::Ended(Exit {
            code: None,
            signal: Some(SignalInfo {
                number: 9,
                name: "SIGKILL".into(),
            }),
            core_dumped: false,
        })
    );
    let printed = daemon.ok(&["--json", "close", &id.to_string()]);
    assert!(printed.contains("\"core_dumped\":false"), "{printed}");
}

#[test]
fn the_typed_event_stream_names_a_sub_workers_parent() {
    let daemon = Daemon::start("");
    let dir = TempDir::new("typed-events");
    let mut watcher = client(&daemon);
    assert_eq!(
        ask(&mut watcher, &ControlRequest::Events { id: None }),
        ControlResponse::Ok
    );
    let tree = binary("test-tree");
    let root: u64 = daemon
        .ok(&[
            "spawn",
            "--name",
            "root",
            "--",
            tree.to_str().unwrap(),
            "tree",
            "1",
            "1",
            dir.0.to_str().unwrap(),
        ])
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    let child = loop {
        assert!(Instant::now() < deadline, "no event of the sub-worker");
        if let ControlResponse::Notice(event) = next(&mut watcher) {
            if event.kind == EventKind::Spawned && event.worker != root {
                break event;
            }
        }
    };
    assert_eq!(child.parent, Some(root), "{child:?}");
    // ps lists it under its parent too.
    wait_until("the sub-worker listed", || {
        daemon
            .ok(&["--json", "ps"])
            .contains(&format!("\"parent\":{root}"))
    });
}

#[test]
fn a_watcher_hears_every_workers_exit_at_shutdown() {
    // Found by the chaos soak: arbord exited as soon as its workers were
    // gone, before their monitors' exit events reached watchers, so a
    // watcher missed some of the last exits.
    let worker = arbor_integration_tests::test_worker().display().to_string();
    let config: String = (0..12)
        .map(|i| {
            format!("[[worker]]\nname = \"w{i}\"\nprogram = {worker:?}\nargs = [\"echo\"]\n\n")
        })
        .collect();
    let daemon = Daemon::start(&config);
    let mut watcher = client(&daemon);
    assert_eq!(
        ask(&mut watcher, &ControlRequest::Events { id: None }),
        ControlResponse::Ok
    );
    wait_until("twelve workers running", || {
        daemon
            .ps_json()
            .iter()
            .filter(|w| w["state"] == "running")
            .count()
            == 12
    });
    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // Read to the stream's end (arbord's exit), within the read limit.
    let mut exits = std::collections::BTreeMap::new();
    loop {
        match watcher.recv() {
            Ok((arbor_protocol::Frame::Message(message), _)) => {
                if let ControlResponse::Notice(event) = message.decode().unwrap() {
                    if let EventKind::Exit(exit) = event.kind {
                        assert!(
                            exits.insert(event.name, exit).is_none(),
                            "an exit told twice"
                        );
                    }
                }
            }
            Ok(_) => {}
            Err(arbor_protocol::Error::Closed) => break,
            Err(e) => panic!("the stream did not end with arbord: {e}"),
        }
    }
    assert_eq!(exits.len(), 12, "exits heard: {exits:?}");
    let closed = Exit {
        code: Some(0),
        signal: None,
        core_dumped: false,
    };
    assert!(
        exits.values().all(|exit| exit.as_ref() == Some(&closed)),
        "{exits:?}"
    );
}

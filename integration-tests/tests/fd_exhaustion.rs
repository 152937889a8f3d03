//! arbord at its fd limit: spawns that need fds it cannot have fail with a
//! typed error, nothing crashes, an open control connection keeps being
//! served, and spawns work again once fds are freed.

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;

use arbor_integration_tests::arbord::{Daemon, LIMIT};
use arbor_integration_tests::control::{ask, spawn_request};
use arbor_protocol::blocking::Channel;
use arbor_protocol::control::{ControlRequest, ControlResponse, ErrorKind, SpawnRequest};

fn sleeper() -> ControlRequest {
    ControlRequest::Spawn(SpawnRequest {
        name: Some("sleeper".into()),
        ..spawn_request("/bin/sleep", &["600"], true)
    })
}

#[test]
fn at_its_fd_limit_arbord_refuses_spawns_with_a_typed_error_and_recovers() {
    let daemon = Daemon::start_with("", |command| {
        // SAFETY: setrlimit is async-signal-safe; it only lowers the child's
        // own limits (soft and hard, so arbord cannot raise them again).
        unsafe {
            command.pre_exec(|| {
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 64, 64)
                    .map_err(std::io::Error::from)
            });
        }
    });
    let stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut control = Channel::new(stream).unwrap();
    let mut started = Vec::new();
    let refused = loop {
        assert!(
            started.len() < 64,
            "64 workers with 64 fds: the limit did not hold"
        );
        match ask(&mut control, &sleeper()) {
            ControlResponse::Spawned { id } => started.push(id),
            ControlResponse::Failed { kind, message } => break (kind, message),
            other => panic!("unexpected {other:?}"),
        }
    };
    eprintln!("DBG {} {refused:?}", started.len());
    assert!(!started.is_empty(), "some workers fit: {refused:?}");
    assert_ne!(
        refused.0,
        ErrorKind::Internal,
        "a typed refusal: {refused:?}"
    );
    // Still served on the open connection.
    assert!(matches!(
        ask(&mut control, &ControlRequest::Status),
        ControlResponse::Status { .. }
    ));
    // Free some fds: spawns work again.
    for id in started.drain(..3) {
        assert!(matches!(
            ask(&mut control, &ControlRequest::Terminate { id }),
            ControlResponse::Ended(_)
        ));
    }
    assert!(
        matches!(
            ask(&mut control, &sleeper()),
            ControlResponse::Spawned { .. }
        ),
        "a spawn after fds were freed"
    );
}

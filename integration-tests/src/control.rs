//! A control-socket client for the tests: a connection with a deadline on
//! every answer, one request and its answer, a spawn request, a refusal.

use std::os::unix::net::UnixStream;

use arbor_protocol::blocking::Channel;
use arbor_protocol::control::{ControlRequest, ControlResponse, ErrorKind, SpawnRequest};
use arbor_protocol::Frame;

use crate::arbord::{Daemon, LIMIT};

/// A control connection to `daemon` with a deadline on every answer.
pub fn client(daemon: &Daemon) -> Channel {
    let stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    Channel::new(stream).unwrap()
}

/// Sends `request` and returns its answer.
pub fn ask(client: &mut Channel, request: &ControlRequest) -> ControlResponse {
    client.send_value(request, &[]).unwrap();
    next(client)
}

/// The next answer on `client`, within the deadline.
pub fn next(client: &mut Channel) -> ControlResponse {
    let (Frame::Message(message), _) = client.recv().expect("an answer within the limit") else {
        panic!("not a Message frame")
    };
    message.decode().unwrap()
}

/// A spawn of `program ARGS`, never restarted, 1 s of close grace;
/// `plain` for a program that does not speak the protocol.
pub fn spawn_request(program: &str, args: &[&str], plain: bool) -> SpawnRequest {
    SpawnRequest {
        name: None,
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![],
        cwd: None,
        restart: "never".into(),
        close_grace_ms: 1000,
        speaks_protocol: !plain,
        shared: false,
    }
}

/// The kind and message of a typed failure; any other answer fails the test.
pub fn refusal(answer: ControlResponse) -> (ErrorKind, String) {
    match answer {
        ControlResponse::Failed { kind, message } => (kind, message),
        other => panic!("expected a typed failure, got {other:?}"),
    }
}

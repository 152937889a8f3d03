//! What a frame from a worker means to its driver. Most frames become a
//! [`WorkerEvent`]; the rest are answers the driver gives or takes (Ping,
//! Reply), sub-worker business (Spawn, ChildControl) or the end of the
//! socket. Pure: no I/O and no state but whether the worker is already
//! Ready, so every kind of frame is unit-tested here.

use std::os::fd::OwnedFd;

use arbor_protocol::{ChildControl, Frame, Request, Spawn};

use super::WorkerEvent;

/// What the driver does with one thing read from the worker's socket.
#[derive(Debug)]
pub(super) enum Received {
    /// Deliver this event.
    Event(WorkerEvent),
    /// The worker's first Ready: open the way for posted messages, then
    /// deliver [`WorkerEvent::Ready`].
    Ready,
    /// Answer with a Pong.
    Ping(u64),
    /// The worker's answer to one of the requests in flight.
    Reply(Request),
    /// The worker asks for a sub-worker, with the spec's fds.
    Spawn(Spawn, Vec<OwnedFd>),
    /// The worker closes or terminates one of its sub-workers.
    ChildControl(ChildControl),
    /// Nothing to do (a Pong).
    Nothing,
    /// The worker closed the socket, on a frame boundary.
    Closed,
    /// The socket broke (garbage, a lying frame, a protocol violation): the
    /// error, as text. Nothing more is read from it.
    Broken(String),
}

/// What `frame` means, for a worker that is `ready` or not yet.
pub(super) fn receive(
    frame: arbor_protocol::Result<(Frame, Vec<OwnedFd>)>,
    ready: bool,
) -> Received {
    let event = match frame {
        Ok((Frame::Ready(_), _)) if !ready => return Received::Ready,
        Ok((Frame::Message(message), fds)) => WorkerEvent::Message {
            data: message.data,
            fds,
        },
        Ok((Frame::Error(report), _)) => WorkerEvent::Error {
            message: report.message,
            location: report.location,
        },
        Ok((Frame::Ping(nonce), _)) => return Received::Ping(nonce),
        Ok((Frame::Pong(_), _)) => return Received::Nothing,
        Ok((Frame::Reply(reply), _)) => return Received::Reply(reply),
        Ok((Frame::ConnectionAck(ack), _)) => WorkerEvent::ConnectionAck {
            id: ack.id,
            accepted: ack.accepted,
            open: ack.open,
        },
        Ok((Frame::Load(open), _)) => WorkerEvent::Load { open },
        Ok((Frame::Request(request), fds)) => WorkerEvent::Request {
            id: request.id,
            data: request.data,
            fds,
        },
        Ok((Frame::Spawn(spawn), fds)) => return Received::Spawn(*spawn, fds),
        Ok((Frame::ChildControl(control), _)) => return Received::ChildControl(control),
        Ok((frame, _)) => WorkerEvent::MessageError {
            reason: format!("worker sent an unexpected {} frame", frame.kind().name()),
        },
        Err(arbor_protocol::Error::Closed) => return Received::Closed,
        Err(error) => return Received::Broken(error.to_string()),
    };
    Received::Event(event)
}

#[cfg(test)]
mod tests {
    use arbor_protocol::{ChildAction, Message, Ready};

    use super::*;

    fn frame(frame: Frame) -> arbor_protocol::Result<(Frame, Vec<OwnedFd>)> {
        Ok((frame, Vec::new()))
    }

    fn ready() -> Frame {
        Frame::Ready(Ready::new(1, "w", 42))
    }

    #[test]
    fn the_first_ready_readies_and_a_second_one_is_a_message_error() {
        assert!(matches!(receive(frame(ready()), false), Received::Ready));
        match receive(frame(ready()), true) {
            Received::Event(WorkerEvent::MessageError { reason }) => {
                assert!(reason.contains("unexpected"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_and_requests_are_events_with_their_fds() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let message = Frame::Message(Message {
            data: b"hi".to_vec(),
        });
        match receive(Ok((message, vec![a.into()])), true) {
            Received::Event(WorkerEvent::Message { data, fds }) => {
                assert_eq!(data, b"hi");
                assert_eq!(fds.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        let request = Frame::Request(Request {
            id: 7,
            data: b"q".to_vec(),
        });
        assert!(matches!(
            receive(frame(request), true),
            Received::Event(WorkerEvent::Request { id: 7, .. })
        ));
    }

    #[test]
    fn pings_replies_spawns_and_child_controls_are_for_the_driver() {
        assert!(matches!(
            receive(frame(Frame::Ping(9)), true),
            Received::Ping(9)
        ));
        assert!(matches!(
            receive(frame(Frame::Pong(9)), true),
            Received::Nothing
        ));
        let reply = Frame::Reply(Request {
            id: 3,
            data: b"a".to_vec(),
        });
        assert!(matches!(
            receive(frame(reply), true),
            Received::Reply(Request { id: 3, .. })
        ));
        let control = ChildControl {
            worker_id: 5,
            action: ChildAction::Terminate,
        };
        assert!(matches!(
            receive(frame(Frame::ChildControl(control)), true),
            Received::ChildControl(ChildControl { worker_id: 5, .. })
        ));
    }

    #[test]
    fn a_frame_only_the_supervisor_sends_is_a_message_error() {
        match receive(frame(Frame::Close), true) {
            Received::Event(WorkerEvent::MessageError { reason }) => {
                assert!(reason.contains("Close"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_clean_end_closes_and_anything_else_breaks_the_socket() {
        assert!(matches!(
            receive(Err(arbor_protocol::Error::Closed), true),
            Received::Closed
        ));
        let broken = arbor_protocol::Error::BadMagic { found: *b"HTTP" };
        match receive(Err(broken), true) {
            Received::Broken(error) => assert!(error.contains("magic"), "{error}"),
            other => panic!("{other:?}"),
        }
    }
}

//! The tokio transport stops asking the socket once a read has emptied it
//! (a short read with no fds), and waits for the reactor instead. These
//! check the cases where a short read does not mean an empty socket: the
//! kernel ends a read at a message's fds, so whatever was queued behind
//! them must still be received, with no more bytes arriving to wake the
//! receiver. Every wait has a deadline.

use std::os::fd::AsFd;
use std::time::Duration;

use arbor_protocol::blocking::Channel;
use arbor_protocol::nonblocking::AsyncChannel;
use arbor_protocol::FrameRef;

const DEADLINE: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// `count` messages, each with or without an fd as `with_fd` says, all
/// written before the receiver reads; the sender keeps its end open (so no
/// hang-up wakes the receiver) until the receiver is done.
fn receive_all_queued(with_fd: impl Fn(usize) -> bool, count: usize) -> Vec<(Vec<u8>, usize)> {
    let (stream, peer_stream) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let mut sender = Channel::new(peer_stream).expect("the sender");
    let file = std::fs::File::open("/dev/null").expect("an fd to pass");
    for i in 0..count {
        let fds = if with_fd(i) {
            vec![file.as_fd()]
        } else {
            vec![]
        };
        sender
            .send_bytes(format!("message {i}").as_bytes(), &fds)
            .expect("send");
    }
    let received = runtime().block_on(async move {
        stream.set_nonblocking(true).expect("nonblocking");
        let mut receiver =
            AsyncChannel::from_std(stream, Default::default()).expect("the async channel");
        let mut received = Vec::new();
        for _ in 0..count {
            let next = tokio::time::timeout(DEADLINE, receiver.recv_ref()).await;
            match next {
                Ok(Ok((FrameRef::Message(data), fds))) => received.push((data.to_vec(), fds.len())),
                Ok(Ok((other, _))) => panic!("not a message: {other:?}"),
                Ok(Err(e)) => panic!("receive failed: {e}"),
                Err(_) => panic!(
                    "message {} of {count} was queued but not received within {DEADLINE:?}",
                    received.len()
                ),
            }
        }
        received
    });
    drop(sender);
    received
}

fn expected(with_fd: impl Fn(usize) -> bool, count: usize) -> Vec<(Vec<u8>, usize)> {
    (0..count)
        .map(|i| (format!("message {i}").into_bytes(), usize::from(with_fd(i))))
        .collect()
}

#[test]
fn messages_queued_behind_a_message_with_an_fd_are_received_without_more_bytes_arriving() {
    let with_fd = |i: usize| i == 0;
    assert_eq!(receive_all_queued(with_fd, 3), expected(with_fd, 3));
}

#[test]
fn messages_alternating_with_and_without_fds_are_all_received_from_one_queued_burst() {
    let with_fd = |i: usize| i % 2 == 1;
    assert_eq!(receive_all_queued(with_fd, 40), expected(with_fd, 40));
}

#[test]
fn a_message_with_an_fd_last_in_a_queued_burst_is_received() {
    let with_fd = |i: usize| i == 9;
    assert_eq!(receive_all_queued(with_fd, 10), expected(with_fd, 10));
}

#[test]
fn a_hang_up_after_a_read_that_emptied_the_socket_ends_the_receive() {
    let (stream, peer_stream) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let mut sender = Channel::new(peer_stream).expect("the sender");
    sender.send_bytes(b"last", &[]).expect("send");
    let outcome = runtime().block_on(async move {
        stream.set_nonblocking(true).expect("nonblocking");
        let mut receiver =
            AsyncChannel::from_std(stream, Default::default()).expect("the async channel");
        match tokio::time::timeout(DEADLINE, receiver.recv_ref()).await {
            Ok(Ok((FrameRef::Message(b"last"), _))) => {}
            other => panic!("not the message: {other:?}"),
        }
        // The read above emptied the socket and cleared its readiness; the
        // hang-up that comes now must still wake this receive.
        drop(sender);
        tokio::time::timeout(DEADLINE, receiver.recv_ref())
            .await
            .map(|r| r.map(|_| ()))
    });
    match outcome {
        Ok(Err(arbor_protocol::Error::Closed)) => {}
        other => panic!("expected Closed after the hang-up, got {other:?}"),
    }
}

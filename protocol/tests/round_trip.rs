//! Every frame kind crosses a real socketpair intact, blocking and async,
//! with its fds; the fds arrive open, working and close-on-exec.

mod support;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use arbor_protocol::blocking::Channel;
use arbor_protocol::nonblocking::AsyncChannel;
use arbor_protocol::{is_cloexec, Error, ErrorReport, Frame, FrameRef, Location, Message, Ready};

fn every_frame() -> Vec<Frame> {
    vec![
        Frame::Ready(Ready::new(42, "echo", 1234)),
        Frame::Message(Message::new(b"hello".to_vec())),
        Frame::Message(Message::default()),
        Frame::Close,
        Frame::Error(ErrorReport {
            message: "worker panicked".into(),
            location: Some(Location {
                file: "src/main.rs".into(),
                line: 10,
                column: 5,
            }),
        }),
        Frame::Ping(7),
        Frame::Pong(7),
        Frame::Request(arbor_protocol::Request {
            id: 1,
            data: b"ask".to_vec(),
        }),
        Frame::Reply(arbor_protocol::Request {
            id: 1,
            data: b"answer".to_vec(),
        }),
        Frame::Connection(arbor_protocol::Connection {
            id: 3,
            socket: "http".into(),
        }),
        Frame::ConnectionAck(arbor_protocol::ConnectionAck {
            id: 3,
            accepted: true,
            open: 1,
        }),
        Frame::Load(0),
    ]
}

/// A current-thread runtime for the async ends.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn blocking_pair() -> (Channel, Channel) {
    let (a, b) = Channel::pair().unwrap();
    for c in [&a, &b] {
        c.socket()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
    (a, b)
}

/// Writes through the received write end of a pipe and reads it at the other.
fn assert_pipe_works(read_end: &OwnedFd, received_write_end: OwnedFd, text: &[u8]) {
    assert!(
        is_cloexec(received_write_end.as_fd()).unwrap(),
        "received fd lacks FD_CLOEXEC"
    );
    let mut writer = std::fs::File::from(received_write_end);
    writer.write_all(text).unwrap();
    drop(writer);
    let mut got = vec![0u8; text.len()];
    std::fs::File::from(read_end.try_clone().unwrap())
        .read_exact(&mut got)
        .unwrap();
    assert_eq!(got, text);
}

#[test]
fn every_frame_kind_round_trips_blocking_with_and_without_fds() {
    let (mut a, mut b) = blocking_pair();
    for frame in every_frame() {
        a.send(&frame, &[]).unwrap();
        let (got, fds) = b.recv().unwrap();
        assert_eq!(got, frame);
        assert!(fds.is_empty());

        let (read_end, write_end) = support::pipe();
        b.send(&frame, &[write_end.as_fd()]).unwrap();
        drop(write_end); // the peer holds its own copy now
        let (got, mut fds) = a.recv().unwrap();
        assert_eq!(got, frame);
        assert_eq!(fds.len(), 1);
        assert_pipe_works(&read_end, fds.pop().unwrap(), b"through the pipe");
    }
}

/// What a borrowed receive must give for `sent`: a Message's bytes as
/// `FrameRef::Message`, any other frame decoded as `FrameRef::Other`.
fn assert_borrowed_is(got: FrameRef<'_>, sent: &Frame) {
    match (&got, sent) {
        (FrameRef::Message(data), Frame::Message(message)) => assert_eq!(*data, &message.data[..]),
        (FrameRef::Other(frame), _) => assert_eq!(frame, sent),
        _ => panic!("{got:?} for {sent:?}"),
    }
    assert_eq!(&got.into_owned(), sent);
}

#[test]
fn every_frame_kind_received_borrowed_is_the_frame_sent_with_its_fds_blocking_and_async() {
    let (mut a, mut b) = blocking_pair();
    for frame in every_frame() {
        let (read_end, write_end) = support::pipe();
        a.send(&frame, &[write_end.as_fd()]).unwrap();
        drop(write_end);
        let (got, mut fds) = b.recv_ref().unwrap();
        assert_borrowed_is(got, &frame);
        assert_eq!(fds.len(), 1);
        assert_pipe_works(&read_end, fds.pop().unwrap(), b"borrowed");
    }
    let runtime = runtime();
    runtime.block_on(async {
        let (mut a, mut b) = AsyncChannel::pair().unwrap();
        for frame in every_frame() {
            a.send(&frame, &[]).await.unwrap();
            let (got, fds) = tokio::time::timeout(Duration::from_secs(10), b.recv_ref())
                .await
                .unwrap()
                .unwrap();
            assert_borrowed_is(got, &frame);
            assert!(fds.is_empty());
        }
    });
}

#[test]
fn every_frame_kind_round_trips_async_with_and_without_fds() {
    let runtime = runtime();
    runtime.block_on(async {
        let (mut a, mut b) = AsyncChannel::pair().unwrap();
        for frame in every_frame() {
            a.send(&frame, &[]).await.unwrap();
            let (got, fds) = tokio::time::timeout(Duration::from_secs(10), b.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, frame);
            assert!(fds.is_empty());

            let (read_end, write_end) = support::pipe();
            let (_r2, w2) = support::pipe();
            b.send(&frame, &[write_end.as_fd(), w2.as_fd()])
                .await
                .unwrap();
            drop(write_end);
            let (got, mut fds) = tokio::time::timeout(Duration::from_secs(10), a.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, frame);
            assert_eq!(fds.len(), 2);
            fds.pop();
            assert_pipe_works(&read_end, fds.pop().unwrap(), b"async pipe");
        }
    });
}

#[test]
fn blocking_and_async_ends_talk_to_each_other() {
    let runtime = runtime();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut blocking = Channel::new(a).unwrap();
    blocking
        .socket()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let worker = std::thread::spawn(move || {
        for _ in 0..100 {
            let (frame, fds) = blocking.recv().unwrap();
            let fds: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
            blocking.send(&frame, &fds).unwrap();
        }
    });
    runtime.block_on(async {
        let mut channel = AsyncChannel::from_std(b, Default::default()).unwrap();
        for i in 0..100u32 {
            let (_r, w) = support::pipe();
            let fds = if i % 3 == 0 { vec![w.as_fd()] } else { vec![] };
            channel
                .send_value(&(i, format!("n{i}")), &fds)
                .await
                .unwrap();
            let (frame, got) = tokio::time::timeout(Duration::from_secs(10), channel.recv())
                .await
                .unwrap()
                .unwrap();
            let Frame::Message(message) = frame else {
                panic!("not a message")
            };
            assert_eq!(
                message.decode::<(u32, String)>().unwrap(),
                (i, format!("n{i}"))
            );
            assert_eq!(got.len(), fds.len());
        }
    });
    worker.join().unwrap();
}

#[test]
fn large_messages_cross_intact_both_ways() {
    let (a, mut b) = blocking_pair();
    let sizes = [64 * 1024 - 1, 64 * 1024, 1 << 20, (16 << 20) - 8];
    let sender = std::thread::spawn(move || {
        let mut a = a;
        for (i, size) in sizes.into_iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|j| (j * 31 + i) as u8).collect();
            let (_r, w) = support::pipe();
            a.send_bytes(&data, &[w.as_fd()]).unwrap();
        }
        a
    });
    for (i, size) in sizes.into_iter().enumerate() {
        let (frame, fds) = b.recv().unwrap();
        let Frame::Message(message) = frame else {
            panic!("not a message")
        };
        assert_eq!(message.data.len(), size);
        assert!(message
            .data
            .iter()
            .enumerate()
            .all(|(j, &x)| x == (j * 31 + i) as u8));
        assert_eq!(fds.len(), 1);
    }
    let mut a = sender.join().unwrap();
    let err = a.send_bytes(&vec![0u8; 16 << 20], &[]).unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");
    // The refused frame left the channel usable.
    a.send_bytes(b"still here", &[]).unwrap();
    assert_eq!(
        b.recv().unwrap().0,
        Frame::Message(Message::new(b"still here".to_vec()))
    );
}

#[test]
fn a_burst_of_fed_messages_arrives_in_order_after_one_flush() {
    let (mut a, mut b) = blocking_pair();
    let reader = std::thread::spawn(move || {
        for i in 0..10_000u32 {
            let (frame, _) = b.recv().unwrap();
            assert_eq!(
                frame,
                Frame::Message(Message::new(i.to_le_bytes().to_vec()))
            );
        }
    });
    for i in 0..10_000u32 {
        a.feed_bytes(&i.to_le_bytes(), &[]).unwrap();
    }
    a.flush().unwrap();
    reader.join().unwrap();
}

#[test]
fn a_message_that_does_not_decode_leaves_the_channel_usable() {
    let (mut a, mut b) = blocking_pair();
    a.send_value(&"a string", &[]).unwrap();
    a.send_value(&99u64, &[]).unwrap();
    let (Frame::Message(first), _) = b.recv().unwrap() else {
        panic!("not a message")
    };
    let err = first.decode::<Vec<u64>>().unwrap_err();
    assert!(
        matches!(err, Error::MessageDecode { .. }) && !err.is_fatal(),
        "{err}"
    );
    let (Frame::Message(second), _) = b.recv().unwrap() else {
        panic!("not a message")
    };
    assert_eq!(second.decode::<u64>().unwrap(), 99);
}

#[test]
fn a_clean_close_is_closed_and_then_poisoned() {
    let (a, mut b) = blocking_pair();
    drop(a);
    assert!(matches!(b.recv(), Err(Error::Closed)));
    assert!(matches!(b.recv(), Err(Error::Poisoned)));
}

//! Hostile or broken peers: each bad input gives its own error variant,
//! closes the channel (the peer sees end of stream), closes every fd that
//! came with the broken frame, and leaves this process's fd count where it
//! was.

mod support;

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use arbor_protocol::blocking::Channel;
use arbor_protocol::frame::{Header, HEADER_LEN};
use arbor_protocol::{Error, Frame, Limits, Message};
use support::{fd_census_lock, frame_bytes, open_fd_count, raw_send};

/// Runs `attack` against a fresh channel and returns the receiver's error,
/// checking that the channel closed, that no fd of the attack is still open
/// while the broken channel lives on, and that nothing leaks after.
fn receive_attack(limits: Limits, attack: impl FnOnce(&UnixStream)) -> Error {
    let _census = fd_census_lock();
    let before = open_fd_count();
    let error = {
        let (peer, ours) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut channel = Channel::with_limits(ours, limits).unwrap();
        attack(&peer);
        let error = loop {
            match channel.recv() {
                Ok(_) => continue, // well-formed frames before the bad one
                Err(e) => break e,
            }
        };
        assert!(error.is_fatal(), "{error}");
        assert_eq!(
            open_fd_count(),
            before + 2,
            "fds received with the broken frame are still open after {error}"
        );
        let mut rest = Vec::new();
        (&peer)
            .read_to_end(&mut rest)
            .expect("peer should see end of stream");
        assert!(matches!(channel.recv(), Err(Error::Poisoned)));
        error
    };
    assert_eq!(open_fd_count(), before, "fd leak after {error}");
    error
}

fn devnull() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

fn raw_header(kind: u8, payload_len: u32, fd_count: u16) -> [u8; HEADER_LEN] {
    Header {
        kind,
        payload_len,
        fd_count,
    }
    .encode()
}

#[test]
fn garbage_bytes_are_bad_magic() {
    let err = receive_attack(Limits::default(), |peer| {
        raw_send(peer, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &[]);
    });
    assert!(
        matches!(err, Error::BadMagic { found } if &found == b"GET "),
        "{err}"
    );
}

#[test]
fn garbage_after_good_frames_is_bad_magic() {
    let err = receive_attack(Limits::default(), |peer| {
        raw_send(peer, &frame_bytes(&Frame::Ping(1), 0), &[]);
        raw_send(peer, &[0xff; 64], &[]);
    });
    assert!(matches!(err, Error::BadMagic { .. }), "{err}");
}

#[test]
fn another_version_is_refused() {
    let err = receive_attack(Limits::default(), |peer| {
        let mut header = raw_header(2, 0, 0);
        header[4] = 2;
        raw_send(peer, &header, &[]);
    });
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        ),
        "{err}"
    );
}

#[test]
fn undefined_flag_bits_are_refused() {
    let err = receive_attack(Limits::default(), |peer| {
        let mut header = raw_header(2, 0, 0);
        header[7] = 0x80;
        raw_send(peer, &header, &[]);
    });
    assert!(
        matches!(err, Error::ReservedBits { flags: 0x8000, .. }),
        "{err}"
    );
}

#[test]
fn a_huge_length_is_refused_before_its_payload() {
    let err = receive_attack(Limits::default(), |peer| {
        raw_send(peer, &raw_header(2, u32::MAX, 0), &[]);
    });
    assert!(
        matches!(err, Error::PayloadTooLarge { len, .. } if len == u64::from(u32::MAX)),
        "{err}"
    );
}

#[test]
fn a_configured_payload_limit_is_enforced() {
    let err = receive_attack(Limits::default().with_max_payload(1024), |peer| {
        raw_send(
            peer,
            &frame_bytes(&Frame::Message(Message::new(vec![0; 2000])), 0),
            &[],
        );
    });
    assert!(
        matches!(err, Error::PayloadTooLarge { limit: 1024, .. }),
        "{err}"
    );
}

#[test]
fn more_fds_in_a_header_than_the_limit_is_refused() {
    let err = receive_attack(Limits::default().with_max_fds(4), |peer| {
        raw_send(peer, &raw_header(2, 0, 5), &[]);
    });
    assert!(
        matches!(err, Error::TooManyFds { count: 5, limit: 4 }),
        "{err}"
    );
}

#[test]
fn a_header_naming_more_fds_than_sent_is_a_mismatch() {
    let err = receive_attack(Limits::default(), |peer| {
        let fd = devnull();
        raw_send(
            peer,
            &frame_bytes(&Frame::Message(Message::new(b"x".to_vec())), 2),
            &[fd.as_fd()],
        );
    });
    assert!(
        matches!(
            err,
            Error::FdCountMismatch {
                declared: 2,
                received: 1
            }
        ),
        "{err}"
    );
}

#[test]
fn a_header_naming_fds_none_of_which_came_is_a_mismatch() {
    let err = receive_attack(Limits::default(), |peer| {
        raw_send(
            peer,
            &frame_bytes(&Frame::Message(Message::new(b"x".to_vec())), 1),
            &[],
        );
    });
    assert!(
        matches!(
            err,
            Error::FdCountMismatch {
                declared: 1,
                received: 0
            }
        ),
        "{err}"
    );
}

#[test]
fn fds_sent_with_a_frame_that_names_none_are_stray() {
    let err = receive_attack(Limits::default(), |peer| {
        let (a, b) = (devnull(), devnull());
        raw_send(
            peer,
            &frame_bytes(&Frame::Ping(1), 0),
            &[a.as_fd(), b.as_fd()],
        );
        raw_send(peer, &frame_bytes(&Frame::Ping(2), 0), &[]);
    });
    assert!(matches!(err, Error::StrayFds { count: 2 }), "{err}");
}

#[test]
fn more_fds_than_the_receiver_takes_is_control_truncation() {
    let err = receive_attack(Limits::default().with_max_fds(2), |peer| {
        let fds: Vec<OwnedFd> = (0..3).map(|_| devnull()).collect();
        let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        raw_send(peer, &frame_bytes(&Frame::Ping(1), 3), &borrowed);
    });
    assert!(matches!(err, Error::ControlTruncated), "{err}");
}

#[test]
fn an_unknown_kind_is_refused() {
    let err = receive_attack(Limits::default(), |peer| {
        raw_send(peer, &raw_header(12, 0, 0), &[]);
    });
    assert!(matches!(err, Error::UnknownKind { kind: 12 }), "{err}");
}

#[test]
fn a_payload_that_does_not_fit_its_kind_is_malformed_and_its_fds_are_closed() {
    let err = receive_attack(Limits::default(), |peer| {
        let mut bytes = raw_header(5, 3, 1).to_vec(); // a Ping with a 3-byte nonce
        bytes.extend_from_slice(&[1, 2, 3]);
        let fd = devnull();
        raw_send(peer, &bytes, &[fd.as_fd()]);
    });
    assert!(
        matches!(err, Error::MalformedPayload { kind: "Ping", .. }),
        "{err}"
    );
}

#[test]
fn a_message_claiming_a_huge_inner_length_is_malformed_not_an_allocation() {
    let err = receive_attack(Limits::default(), |peer| {
        let mut bytes = raw_header(2, 12, 0).to_vec();
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        bytes.extend_from_slice(b"tiny");
        raw_send(peer, &bytes, &[]);
    });
    assert!(
        matches!(
            err,
            Error::MalformedPayload {
                kind: "Message",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn end_of_stream_in_the_middle_of_a_frame_is_truncation() {
    let err = receive_attack(Limits::default(), |peer| {
        let bytes = frame_bytes(&Frame::Message(Message::new(vec![7; 100])), 1);
        let fd = devnull();
        raw_send(peer, &bytes[..50], &[fd.as_fd()]);
        peer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    assert!(matches!(err, Error::Truncated { buffered: 50 }), "{err}");
}

#[test]
fn end_of_stream_inside_a_header_is_truncation() {
    let err = receive_attack(Limits::default(), |peer| {
        raw_send(peer, &raw_header(2, 10, 0)[..5], &[]);
        peer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    assert!(matches!(err, Error::Truncated { buffered: 5 }), "{err}");
}

#[test]
fn a_peer_process_killed_in_the_middle_of_a_frame_is_truncation() {
    let _census = fd_census_lock();
    let before = open_fd_count();
    let (peer, ours) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut channel = Channel::new(ours).unwrap();
    // A real process writes a header and 3 of its 10 payload bytes, then
    // dies by SIGKILL. The socket is its stdout and nobody else holds that
    // end: its death alone ends the stream.
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(r"printf 'ARBR\001\002\000\000\012\000\000\000\000\000\000\000abc'; kill -KILL $$")
        .stdin(Stdio::null())
        .stdout(Stdio::from(OwnedFd::from(peer)))
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let err = channel.recv().unwrap_err();
    assert!(matches!(err, Error::Truncated { buffered: 19 }), "{err}");
    drop(channel);
    assert_eq!(open_fd_count(), before, "an fd outlived the channel");
}

#[test]
fn a_refused_send_changes_nothing() {
    let _census = fd_census_lock();
    let (mut a, mut b) = Channel::pair().unwrap();
    b.socket()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let fds: Vec<OwnedFd> = (0..254).map(|_| devnull()).collect();
    let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
    let before = open_fd_count();
    let err = a.send_bytes(b"x", &borrowed).unwrap_err();
    // Nothing opened or closed, nothing sent: the peer's first frame is the
    // next send's.
    assert_eq!(open_fd_count(), before, "the refusal changed our fds");
    assert!(
        matches!(
            err,
            Error::TooManyFds {
                count: 254,
                limit: 253
            }
        ),
        "{err}"
    );
    a.send_bytes(b"after", &borrowed[..253]).unwrap();
    let (frame, got) = b.recv().unwrap();
    assert_eq!(frame, Frame::Message(Message::new(b"after".to_vec())));
    assert_eq!(got.len(), 253);
}

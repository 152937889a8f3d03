//! Property: any sequence of frames with any fds, written with any split
//! points and read with any read sizes, arrives identical, each frame with
//! exactly its own fds, all close-on-exec and working.

mod support;

use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use arbor_protocol::blocking::Channel;
use arbor_protocol::decoder::FrameDecoder;
use arbor_protocol::{is_cloexec, Frame, Limits, Message};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Spec {
    payload: Vec<u8>,
    fd_count: usize,
}

fn spec() -> impl Strategy<Value = Spec> {
    let payload = prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => proptest::collection::vec(any::<u8>(), 60_000..140_000),
    ];
    (payload, prop_oneof![3 => Just(0usize), 1 => 1usize..5])
        .prop_map(|(payload, fd_count)| Spec { payload, fd_count })
}

/// Per frame, the read ends of the pipes whose write ends it carries.
type ReadEnds = Vec<Vec<OwnedFd>>;

fn make_pipes(specs: &[Spec]) -> (ReadEnds, Vec<Vec<OwnedFd>>) {
    specs
        .iter()
        .map(|s| {
            (0..s.fd_count)
                .map(|_| support::pipe())
                .unzip::<_, _, Vec<_>, Vec<_>>()
        })
        .unzip()
}

/// Each received fd must be the write end of its own frame's pipe: write a
/// marker through it and find the marker at the read end kept by the sender.
fn check_fds(read_ends: ReadEnds, received: Vec<Vec<OwnedFd>>) -> Result<(), TestCaseError> {
    prop_assert_eq!(read_ends.len(), received.len());
    for (i, (ends, fds)) in read_ends.into_iter().zip(received).enumerate() {
        prop_assert_eq!(ends.len(), fds.len(), "frame {} fd count", i);
        for (j, (end, fd)) in ends.into_iter().zip(fds).enumerate() {
            prop_assert!(is_cloexec(fd.as_fd()).unwrap());
            let marker = [i as u8, (i >> 8) as u8, j as u8];
            std::fs::File::from(fd).write_all(&marker).unwrap();
            let mut got = [0u8; 3];
            std::fs::File::from(end).read_exact(&mut got).unwrap();
            prop_assert_eq!(got, marker, "frame {} fd {} is not its own", i, j);
        }
    }
    Ok(())
}

fn socketpair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    b.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (a, b)
}

/// The sender's side of the raw property: the wire bytes cut at `cuts` and
/// at every frame that carries fds, each such frame's fds attached to the
/// sendmsg that begins with it (WIRE.md's rule).
fn send_split(
    socket: UnixStream,
    specs: Vec<Spec>,
    write_ends: Vec<Vec<OwnedFd>>,
    cuts: Vec<usize>,
) {
    let mut wire = Vec::new();
    let mut fd_starts = Vec::new();
    for (spec, fds) in specs.iter().zip(&write_ends) {
        if !fds.is_empty() {
            fd_starts.push((wire.len(), fds));
        }
        wire.extend(support::frame_bytes(
            &Frame::Message(Message::new(spec.payload.clone())),
            fds.len(),
        ));
    }
    let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
    points.extend(fd_starts.iter().map(|(at, _)| *at));
    points.push(0);
    points.push(wire.len());
    points.sort_unstable();
    points.dedup();
    for window in points.windows(2) {
        let (from, to) = (window[0], window[1]);
        let fds: Vec<_> = fd_starts
            .iter()
            .find(|(at, _)| *at == from)
            .map(|(_, fds)| fds.iter().map(|fd| fd.as_fd()).collect())
            .unwrap_or_default();
        support::raw_send(&socket, &wire[from..to], &fds);
    }
}

/// The receiver's side of the raw property: recvmsg with the given read
/// sizes into the sans-IO decoder.
fn recv_with_sizes(
    socket: &UnixStream,
    frames: usize,
    sizes: &[usize],
) -> (Vec<Vec<u8>>, Vec<Vec<OwnedFd>>) {
    let mut decoder = FrameDecoder::new(Limits::default());
    let mut control = nix::cmsg_space!([RawFd; 253]);
    let (mut payloads, mut fds) = (Vec::new(), Vec::new());
    let mut reads = sizes.iter().cycle();
    while payloads.len() < frames {
        while let Some(raw) = decoder.next_frame().expect("decoder error") {
            let Frame::Message(m) = Frame::decode(raw.header.kind, raw.payload).unwrap() else {
                panic!("not a message")
            };
            payloads.push(m.data);
            fds.push(raw.fds);
        }
        if payloads.len() == frames {
            break;
        }
        let spare = decoder.spare();
        let want = (*reads.next().unwrap()).clamp(1, spare.len());
        let mut iov = [IoSliceMut::new(&mut spare[..want])];
        let msg = recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("recvmsg");
        let mut got = Vec::new();
        for cmsg in msg.cmsgs().expect("control message truncated") {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: SCM_RIGHTS installed these fds in this process just now.
                got.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = msg.bytes;
        assert!(n > 0, "peer closed before all frames arrived");
        decoder.commit(n, got);
    }
    assert!(!decoder.is_mid_frame());
    (payloads, fds)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn split_writes_and_reads_keep_frames_and_fds(
        specs in proptest::collection::vec(spec(), 1..30),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        sizes in proptest::collection::vec(1usize..70_000, 1..20),
    ) {
        let (read_ends, write_ends) = make_pipes(&specs);
        let (a, b) = socketpair();
        let writer = {
            let specs = specs.clone();
            std::thread::spawn(move || send_split(a, specs, write_ends, cuts))
        };
        let (payloads, fds) = recv_with_sizes(&b, specs.len(), &sizes);
        writer.join().unwrap();
        for (spec, payload) in specs.iter().zip(&payloads) {
            prop_assert_eq!(&spec.payload, payload);
        }
        check_fds(read_ends, fds)?;
    }

    #[test]
    fn the_channel_api_keeps_frames_and_fds_whatever_the_mix_of_feed_and_send(
        specs in proptest::collection::vec(spec(), 1..30),
        flushes in proptest::collection::vec(any::<bool>(), 30),
    ) {
        let (read_ends, write_ends) = make_pipes(&specs);
        let (a, b) = socketpair();
        let writer = {
            let specs = specs.clone();
            std::thread::spawn(move || {
                let mut channel = Channel::new(a).unwrap();
                for ((spec, fds), flush) in specs.iter().zip(&write_ends).zip(flushes) {
                    let fds: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
                    if flush {
                        channel.send_bytes(&spec.payload, &fds).unwrap();
                    } else {
                        channel.feed_bytes(&spec.payload, &fds).unwrap();
                    }
                }
                channel.flush().unwrap();
            })
        };
        let mut channel = Channel::new(b).unwrap();
        let (mut payloads, mut fds) = (Vec::new(), Vec::new());
        for _ in 0..specs.len() {
            let (frame, got) = channel.recv().unwrap();
            let Frame::Message(m) = frame else { panic!("not a message") };
            payloads.push(m.data);
            fds.push(got);
        }
        writer.join().unwrap();
        for (spec, payload) in specs.iter().zip(&payloads) {
            prop_assert_eq!(&spec.payload, payload);
        }
        check_fds(read_ends, fds)?;
    }
}

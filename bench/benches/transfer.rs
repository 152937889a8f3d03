//! A large buffer to another process: copied through the channel against
//! moved as a sealed memfd (`Transfer`), end to end, and both against the
//! same copy over a plain socket with no framing library.
//!
//! Each iteration, on both sides: the sender writes every byte of a
//! `size`-byte buffer, sends it, and waits for the receiver (a real
//! `bench-peer` process) to read every byte and answer with their sum.
//! Ids, for `size` 1, 4, 16 and 64 MiB:
//! - `transfer/copy/{size}`: the bytes in one Message on arbor's channel,
//!   from a reused `Vec`, to `bench-peer sum-reader`;
//! - `transfer/raw_copy/{size}`: the raw baseline for the copy: an 8-byte
//!   little-endian length and the bytes over a socketpair, written from one
//!   reused buffer, read by `bench-peer raw-sum-reader` into one reused
//!   buffer (`arbor_bench::raw_send_blob`, `raw_recv_blob`);
//! - `transfer/memfd_from_bytes/{size}`: the reused `Vec` written into a
//!   fresh memfd (`Transfer::from_bytes`), sealed, its fd sent;
//! - `transfer/memfd/{size}`: a fresh memfd filled in place
//!   (`TransferBuffer`), sealed, its fd sent.
//!
//! bench/report.py compares each of `copy`, `memfd_from_bytes` and `memfd`
//! with `raw_copy` of the same size.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::time::Duration;

use arbor_bench::{byte_sum, raw_send_blob, spawn_peer};
use arbor_protocol::blocking::Channel;
use arbor_protocol::{Frame, Limits, Transfer, TransferBuffer};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const PEER: &str = env!("CARGO_BIN_EXE_bench-peer");

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn group_name(name: &str) -> String {
    match std::env::var("ARBOR_BENCH_LABEL") {
        Ok(label) if !label.is_empty() => format!("{label}_{name}"),
        _ => name.to_string(),
    }
}

fn reader() -> (Peer, Channel) {
    let (child, socket) = spawn_peer(PEER, "sum-reader").expect("spawn peer");
    let limits = Limits {
        max_payload: 128 << 20,
        ..Limits::default()
    };
    (
        Peer(child),
        Channel::with_limits(socket, limits).expect("channel"),
    )
}

fn sum_reply(channel: &mut Channel) -> u64 {
    match channel.recv().expect("the sum") {
        (Frame::Message(m), _) => u64::from_le_bytes(m.data[..8].try_into().expect("8 bytes")),
        (other, _) => panic!("unexpected {other:?}"),
    }
}

fn raw_reader() -> (Peer, UnixStream) {
    let (child, socket) = spawn_peer(PEER, "raw-sum-reader").expect("spawn raw peer");
    (Peer(child), socket)
}

fn raw_sum_reply(mut socket: &UnixStream) -> u64 {
    let mut sum = [0u8; 8];
    socket.read_exact(&mut sum).expect("the raw sum");
    u64::from_le_bytes(sum)
}

fn transfer(c: &mut Criterion) {
    let mut group = c.benchmark_group(group_name("transfer"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for size in [1usize << 20, 4 << 20, 16 << 20, 64 << 20] {
        group.throughput(Throughput::Bytes(size as u64));
        let (_peer, mut channel) = reader();
        let mut data = vec![0u8; size];
        let mut round = 0u8;
        // Once, outside the measurement: the receiver really reads every
        // byte (its sum is the sender's). The same for the raw receiver below.
        data.fill(0xa5);
        channel.send_bytes(&data, &[]).expect("send");
        assert_eq!(sum_reply(&mut channel), byte_sum(&data), "sum");
        group.bench_with_input(BenchmarkId::new("copy", size), &size, |b, _| {
            b.iter(|| {
                round = round.wrapping_add(1);
                data.fill(round);
                channel.send_bytes(&data, &[]).expect("send");
                sum_reply(&mut channel)
            })
        });
        {
            let (_raw_peer, socket) = raw_reader();
            data.fill(0xa5);
            raw_send_blob(&socket, &data).expect("raw send");
            assert_eq!(raw_sum_reply(&socket), byte_sum(&data), "raw sum");
            group.bench_with_input(BenchmarkId::new("raw_copy", size), &size, |b, _| {
                b.iter(|| {
                    round = round.wrapping_add(1);
                    data.fill(round);
                    raw_send_blob(&socket, &data).expect("raw send");
                    raw_sum_reply(&socket)
                })
            });
        }
        group.bench_with_input(BenchmarkId::new("memfd_from_bytes", size), &size, |b, _| {
            b.iter(|| {
                round = round.wrapping_add(1);
                data.fill(round);
                let fd = Transfer::from_bytes(&data).expect("memfd").into_fd();
                channel
                    .send_bytes(&[], &[std::os::fd::AsFd::as_fd(&fd)])
                    .expect("send");
                drop(fd);
                sum_reply(&mut channel)
            })
        });
        drop(data);
        group.bench_with_input(BenchmarkId::new("memfd", size), &size, |b, &size| {
            b.iter(|| {
                round = round.wrapping_add(1);
                let mut buffer = TransferBuffer::new(size).expect("memfd");
                buffer.as_mut_slice().fill(round);
                let fd = buffer.seal().expect("seal").into_fd();
                channel
                    .send_bytes(&[], &[std::os::fd::AsFd::as_fd(&fd)])
                    .expect("send");
                drop(fd);
                sum_reply(&mut channel)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, transfer);
criterion_main!(benches);

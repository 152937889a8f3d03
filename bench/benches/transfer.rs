//! A large buffer to another process: copied through the channel against
//! moved as a sealed memfd (`Transfer`), end to end.
//!
//! Each iteration, on both sides: the sender writes every byte of a
//! `size`-byte buffer (into a reused `Vec` for the copy, into a fresh memfd
//! for the transfer, which then seals it), sends it, and waits for the
//! receiver (`bench-peer sum-reader`, a real process) to read every byte
//! and answer with their sum. Ids: `transfer/copy/{size}` and
//! `transfer/memfd/{size}` for 1, 16 and 64 MiB.

use std::process::Child;
use std::time::Duration;

use arbor_bench::spawn_peer;
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
        group.bench_with_input(BenchmarkId::new("copy", size), &size, |b, _| {
            b.iter(|| {
                round = round.wrapping_add(1);
                data.fill(round);
                channel.send_bytes(&data, &[]).expect("send");
                sum_reply(&mut channel)
            })
        });
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

//! arbor's channel against the raw baseline, between two processes, in one run.
//!
//! Groups (ids are `arbor/...` and `raw/...` side by side; arbor receives
//! with `recv_ref`, a message's bytes borrowed from the receive buffer, as
//! the raw side reads into one reused buffer):
//! - `round_trip/{64,4096,1048576}`: one message there and back.
//! - `throughput_64B`: 10,000 messages one way, then an acknowledgement;
//!   `arbor_owned` receives them with `recv` (a `Frame` and a `Vec` each).
//! - `throughput_1MiB`: 64 messages of 1 MiB one way, then an
//!   acknowledgement (and `arbor_owned` likewise).
//! - `fd_passing`: 1,000 messages each carrying one fd, then an acknowledgement.
//!
//! `ARBOR_BENCH_LABEL` prefixes the group names (bench/run.sh sets `pinned`
//! when the whole run is under `taskset -c 0`). `bench/report.py` turns
//! criterion's medians into the table in bench/README.md.

use std::hint::black_box;
use std::os::fd::AsFd;
use std::process::Child;
use std::time::{Duration, Instant};

use arbor_bench::{raw_send_with_fd, spawn_peer, RawChannel};
use arbor_protocol::blocking::Channel;
use arbor_protocol::Frame;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const PEER: &str = env!("CARGO_BIN_EXE_bench-peer");

fn group_name(name: &str) -> String {
    match std::env::var("ARBOR_BENCH_LABEL") {
        Ok(label) if !label.is_empty() => format!("{label}_{name}"),
        _ => name.to_string(),
    }
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn arbor_peer(mode: &str) -> (Peer, Channel) {
    let (child, socket) = spawn_peer(PEER, mode).expect("spawn peer");
    (Peer(child), Channel::new(socket).expect("channel"))
}

fn raw_peer(mode: &str) -> (Peer, RawChannel, std::os::unix::net::UnixStream) {
    let (child, socket) = spawn_peer(PEER, mode).expect("spawn peer");
    let clone = socket.try_clone().expect("clone");
    (
        Peer(child),
        RawChannel::new(socket).expect("raw channel"),
        clone,
    )
}

fn arbor_ack(channel: &mut Channel) {
    channel.send(&Frame::Ping(1), &[]).expect("ping");
    loop {
        if let (Frame::Pong(_), _) = channel.recv().expect("pong") {
            return;
        }
    }
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group(group_name("round_trip"));
    for size in [64usize, 4096, 1 << 20] {
        let payload = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64 * 2));
        {
            let (_peer, mut channel) = arbor_peer("arbor-echo");
            group.bench_with_input(BenchmarkId::new("arbor", size), &payload, |b, payload| {
                b.iter(|| {
                    channel.send_bytes(payload, &[]).expect("send");
                    black_box(channel.recv_ref().expect("recv"));
                })
            });
        }
        {
            let (_peer, mut channel, _) = raw_peer("raw-echo");
            let mut buf = Vec::new();
            group.bench_with_input(BenchmarkId::new("raw", size), &payload, |b, payload| {
                b.iter(|| {
                    channel.send(payload).expect("send");
                    channel.recv(&mut buf).expect("recv");
                    black_box(&buf);
                })
            });
        }
    }
    group.finish();
}

fn one_way(c: &mut Criterion, name: &str, size: usize, count: u64) {
    let mut group = c.benchmark_group(group_name(name));
    if size >= 1 << 20 {
        group.throughput(Throughput::Bytes(size as u64 * count));
    } else {
        group.throughput(Throughput::Elements(count));
    }
    let payload = vec![0xa5u8; size];
    for (function, peer) in [("arbor", "arbor-sink"), ("arbor_owned", "arbor-sink-owned")] {
        let (_peer, mut channel) = arbor_peer(peer);
        group.bench_function(function, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..count {
                        channel.feed_bytes(&payload, &[]).expect("feed");
                    }
                    arbor_ack(&mut channel);
                }
                start.elapsed()
            })
        });
    }
    {
        let (_peer, mut channel, _) = raw_peer("raw-sink");
        group.bench_function("raw", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..count {
                        channel.feed(&payload).expect("feed");
                    }
                    channel.flush().expect("flush");
                    channel.send_ack_request().expect("ack request");
                    channel.wait_ack().expect("ack");
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn throughput_64b(c: &mut Criterion) {
    one_way(c, "throughput_64B", 64, 10_000);
}

fn throughput_1mib(c: &mut Criterion) {
    one_way(c, "throughput_1MiB", 1 << 20, 64);
}

fn fd_passing(c: &mut Criterion) {
    const COUNT: u64 = 1000;
    let mut group = c.benchmark_group(group_name("fd_passing"));
    group.throughput(Throughput::Elements(COUNT));
    let (_r, passed) = std::io::pipe().expect("pipe");
    let payload = [7u8; 16];
    {
        let (_peer, mut channel) = arbor_peer("arbor-sink");
        group.bench_function("arbor", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..COUNT {
                        channel
                            .feed_bytes(&payload, &[passed.as_fd()])
                            .expect("send fd");
                    }
                    arbor_ack(&mut channel);
                }
                start.elapsed()
            })
        });
    }
    {
        let (_peer, mut channel, socket) = raw_peer("raw-fd-sink");
        group.bench_function("raw", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..COUNT {
                        raw_send_with_fd(&socket, &payload, passed.as_fd()).expect("send fd");
                    }
                    channel.send_ack_request().expect("ack request");
                    channel.wait_ack().expect("ack");
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = round_trip, throughput_64b, throughput_1mib, fd_passing
}
criterion_main!(benches);

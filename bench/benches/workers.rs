//! Workers through the libraries against the raw limit, in one run:
//!
//! - `spawn_to_ready`: arbor's `Supervisor::spawn` of an echo worker until
//!   its Ready event, against `std::process::Command` starting the same
//!   binary, which writes one byte to an inherited socket.
//! - `spawn_100`, `spawn_1000`: the same for 100 and 1000 workers started
//!   at once (the process's fd limit is raised to its hard limit for them).
//! - `worker_round_trip/{64,4096}`: `post_message` to an echo worker and its
//!   reply event, against the raw length-prefix ping-pong over a socketpair.
//! - `daemon_request`: a 64 B request through arbord's control socket,
//!   against the library's `Worker::request` (`raw`) and against a raw
//!   relay process between the client and a raw echo (`relay`), the floor
//!   of any hop through a third process.
//!
//! node's `child_process.fork` rows come from `bench/node/fork_ipc.js`,
//! run by bench/run.sh beside this.

use std::hint::black_box;
use std::io::Read;
use std::time::{Duration, Instant};

use arbor_bench::{spawn_peer, RawChannel};
use arbor_supervisor::{Supervisor, Worker, WorkerEvent, WorkerSpec};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const PEER: &str = env!("CARGO_BIN_EXE_bench-peer");
const ARBORD: &str = env!("CARGO_BIN_EXE_bench-arbord");

fn group_name(name: &str) -> String {
    match std::env::var("ARBOR_BENCH_LABEL") {
        Ok(label) if !label.is_empty() => format!("{label}_{name}"),
        _ => name.to_string(),
    }
}

/// The supervisor's runtime: `ARBOR_BENCH_RUNTIME=current_thread` for one
/// thread (every task hop is a plain task switch), else tokio's
/// multi-threaded runtime with two workers (a hop may wake another thread).
fn runtime() -> tokio::runtime::Runtime {
    if std::env::var("ARBOR_BENCH_RUNTIME").as_deref() == Ok("current_thread") {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn ready(supervisor: &Supervisor) -> Worker {
    let mut worker = supervisor
        .spawn(WorkerSpec::program(PEER).arg("worker-echo"))
        .await
        .expect("spawn");
    match worker.next_event().await {
        Some(WorkerEvent::Ready) => worker,
        other => panic!("expected Ready, got {other:?}"),
    }
}

fn raw_spawn() -> (std::process::Child, std::os::unix::net::UnixStream) {
    let (child, socket) = spawn_peer(PEER, "raw-ready").expect("spawn");
    let mut byte = [0u8; 1];
    (&socket).read_exact(&mut byte).expect("ready byte");
    (child, socket)
}

fn spawn_to_ready(c: &mut Criterion) {
    // A thousand workers need a few thousand fds (each one's channel, pidfd
    // and output pipes), and the raw side a thousand sockets.
    arbor_bench::raise_fd_limit(u64::MAX).expect("raising the fd limit");
    let rt = runtime();
    let supervisor = rt
        .block_on(async { Supervisor::new() })
        .expect("supervisor");
    let mut group = c.benchmark_group(group_name("spawn_to_ready"));
    group.bench_function("arbor", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let worker = ready(&supervisor).await;
                    total += start.elapsed();
                    worker.terminate().await.expect("terminate");
                }
                total
            })
        })
    });
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let (mut child, socket) = raw_spawn();
                total += start.elapsed();
                drop(socket);
                child.wait().expect("wait");
            }
            total
        })
    });
    group.finish();

    for count in [100, 1000] {
        spawn_many(c, &rt, &supervisor, count);
    }
}

/// `spawn_<count>`: `count` workers started at once until all are Ready,
/// against `count` raw `Command` starts until each wrote its byte.
fn spawn_many(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    supervisor: &Supervisor,
    count: usize,
) {
    let mut group = c.benchmark_group(group_name(&format!("spawn_{count}")));
    group.sample_size(10);
    group.bench_function("arbor", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let spawns: Vec<_> = (0..count)
                        .map(|_| {
                            let supervisor = supervisor.clone();
                            tokio::spawn(async move { ready(&supervisor).await })
                        })
                        .collect();
                    let mut workers = Vec::new();
                    for spawn in spawns {
                        workers.push(spawn.await.expect("join"));
                    }
                    total += start.elapsed();
                    for worker in &workers {
                        worker.terminate().await.expect("terminate");
                    }
                }
                total
            })
        })
    });
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let children: Vec<_> = (0..count)
                    .map(|_| spawn_peer(PEER, "raw-ready").expect("spawn"))
                    .collect();
                for (_, socket) in &children {
                    let mut byte = [0u8; 1];
                    (&*socket).read_exact(&mut byte).expect("ready byte");
                }
                total += start.elapsed();
                for (mut child, socket) in children {
                    drop(socket);
                    child.wait().expect("wait");
                }
            }
            total
        })
    });
    group.finish();
}

fn worker_round_trip(c: &mut Criterion) {
    let rt = runtime();
    let supervisor = rt
        .block_on(async { Supervisor::new() })
        .expect("supervisor");
    // The worker lives in a task of the runtime, as in a real parent: the
    // measured loop runs there too, not on the thread blocked in block_on.
    let worker = std::sync::Arc::new(tokio::sync::Mutex::new(rt.block_on(ready(&supervisor))));
    let mut group = c.benchmark_group(group_name("worker_round_trip"));
    for size in [64usize, 4096] {
        let payload = vec![0x5au8; size];
        group.bench_with_input(BenchmarkId::new("arbor", size), &payload, |b, payload| {
            b.iter_custom(|iters| {
                let (worker, payload) = (worker.clone(), payload.clone());
                rt.block_on(rt.spawn(async move {
                    let mut worker = worker.lock().await;
                    let start = Instant::now();
                    for _ in 0..iters {
                        worker
                            .post_message(payload.clone(), vec![])
                            .await
                            .expect("post");
                        match worker.next_event().await {
                            Some(WorkerEvent::Message { data, .. }) => {
                                black_box(data);
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    start.elapsed()
                }))
                .expect("join")
            })
        });
        let (mut child, socket) = spawn_peer(PEER, "raw-echo").expect("spawn");
        let mut raw = RawChannel::new(socket).expect("raw");
        let mut buf = Vec::new();
        group.bench_with_input(BenchmarkId::new("raw", size), &payload, |b, payload| {
            b.iter(|| {
                raw.send(payload).expect("send");
                raw.recv(&mut buf).expect("recv");
                black_box(&buf);
            })
        });
        drop(raw);
        let _ = child.wait();
    }
    group.finish();
    rt.block_on(async {
        worker
            .lock()
            .await
            .close(Duration::from_secs(5))
            .await
            .expect("close")
    });
}

/// A request through arbord (a client on its control socket, arbord asking
/// the worker) against the same request through the library, and against
/// the floor of any hop through a third process: a raw relay.
fn daemon_request(c: &mut Criterion) {
    use arbor_protocol::blocking::Channel;
    use arbor_protocol::control::{ControlRequest, ControlResponse};

    let rt = runtime();
    let dir = std::env::temp_dir().join(format!("arbor-bench-daemon-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("arbord.sock");
    let config = dir.join("arbord.toml");
    std::fs::write(
        &config,
        format!("[[worker]]\nname = \"echo\"\nprogram = {PEER:?}\nargs = [\"worker-echo\"]\n"),
    )
    .expect("config");
    // arbord as operators run it: its own process (the same code as the
    // arbord binary), told to stop with SIGTERM at the end.
    let mut daemon = std::process::Command::new(ARBORD)
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .spawn()
        .expect("start bench-arbord");
    let ask = |channel: &mut Channel, request: &ControlRequest| -> ControlResponse {
        channel.send_value(request, &[]).expect("send");
        match channel.recv().expect("recv") {
            (arbor_protocol::Frame::Message(message), _) => message.decode().expect("decode"),
            other => panic!("unexpected {other:?}"),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        if let Ok(stream) = std::os::unix::net::UnixStream::connect(&socket) {
            let mut channel = Channel::new(stream).expect("channel");
            if let ControlResponse::Workers(workers) = ask(&mut channel, &ControlRequest::List) {
                if workers.iter().any(|w| w.state == "running") {
                    break channel;
                }
            }
        }
        if Instant::now() >= deadline {
            let _ = daemon.kill();
            let _ = daemon.wait();
            panic!("arbord's worker did not start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let supervisor = rt
        .block_on(async { Supervisor::new() })
        .expect("supervisor");
    let worker = std::sync::Arc::new(rt.block_on(ready(&supervisor)));
    let mut group = c.benchmark_group(group_name("daemon_request"));
    let payload = vec![0x5au8; 64];
    group.bench_function("arbor", |b| {
        b.iter(|| {
            let request = ControlRequest::Request {
                id: 1,
                data: payload.clone(),
                timeout_ms: 5000,
            };
            black_box(ask(&mut client, &request));
        })
    });
    // The library's own request, the baseline for this row.
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            let (worker, payload) = (worker.clone(), payload.clone());
            rt.block_on(rt.spawn(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(
                        worker
                            .request(payload.clone(), Duration::from_secs(5))
                            .await
                            .expect("request"),
                    );
                }
                start.elapsed()
            }))
            .expect("join")
        })
    });
    // The floor of any hop: the same 64 B relayed by a third process that
    // does nothing but read and write (raw framing, blocking calls).
    let (mut relay, relay_socket) = spawn_peer(PEER, "raw-relay").expect("spawn the relay");
    let mut relayed = RawChannel::new(relay_socket).expect("raw");
    let mut echoed = Vec::new();
    group.bench_function("relay", |b| {
        b.iter(|| {
            relayed.send(&payload).expect("send");
            relayed.recv(&mut echoed).expect("recv");
            black_box(&echoed);
        })
    });
    group.finish();
    drop(relayed);
    let _ = relay.wait();
    stop_daemon(&mut daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM, then up to 10 s for arbord to close its workers and exit, then
/// SIGKILL.
fn stop_daemon(daemon: &mut std::process::Child) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(daemon.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = daemon.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = spawn_to_ready, worker_round_trip, daemon_request
}
criterion_main!(benches);

//! Worker trees, side by side with the same work done without one:
//!
//! - `tree_spawn/{top-level,sub-worker}`: start an echo worker, wait for its
//!   Ready, terminate it. Top-level: this process's `Supervisor`. Sub-worker:
//!   a worker asks for it with a Spawn frame (the supervisor forks, hands
//!   the channel over), waits for its Ready on their direct channel and
//!   terminates it with ChildControl; timed from this process's request to
//!   that worker until its answer (one request round trip more).
//! - `tree_round_trip/{supervisor,direct}/64`: a 64-byte message and its
//!   echo. Supervisor: this process and a top-level worker, through
//!   `post_message` and events. Direct: a worker and its sub-worker over the
//!   channel the supervisor handed over, timed inside the worker (the
//!   supervisor carries none of it).

use std::time::{Duration, Instant};

use arbor_supervisor::{Supervisor, Worker, WorkerEvent, WorkerSpec};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const PEER: &str = env!("CARGO_BIN_EXE_bench-peer");
const SIZE: usize = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn ready(supervisor: &Supervisor, mode: &str) -> Worker {
    let mut worker = supervisor
        .spawn(WorkerSpec::program(PEER).arg(mode))
        .await
        .expect("spawn");
    match worker.next_event().await {
        Some(WorkerEvent::Ready) => worker,
        other => panic!("expected Ready, got {other:?}"),
    }
}

async fn ask(worker: &Worker, what: &str) -> String {
    let reply = worker
        .request(what.as_bytes().to_vec(), Duration::from_secs(20))
        .await
        .expect("reply");
    let reply = String::from_utf8(reply).expect("text");
    assert!(!reply.starts_with("error"), "{reply}");
    reply
}

fn tree(c: &mut Criterion) {
    let rt = runtime();
    let supervisor = rt
        .block_on(async { Supervisor::new() })
        .expect("supervisor");
    let mut parent = rt.block_on(ready(&supervisor, "tree-parent"));
    // Its events (a SubWorker handle per spawn) are read, as an owner must:
    // unread, they would stop the supervisor reading the worker.
    let mut events = parent.take_events().expect("events");
    rt.spawn(async move { while events.next().await.is_some() {} });

    let mut group = c.benchmark_group("tree_spawn");
    group.bench_function("top-level", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let worker = ready(&supervisor, "worker-echo").await;
                    worker.terminate().await.expect("terminate");
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("sub-worker", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    ask(&parent, "spawn").await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("tree_round_trip");
    let mut echo = rt.block_on(ready(&supervisor, "worker-echo"));
    let data = vec![7u8; SIZE];
    group.bench_function(BenchmarkId::new("supervisor", SIZE), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    echo.post_message(data.clone(), vec![]).await.expect("post");
                    match echo.next_event().await {
                        Some(WorkerEvent::Message { .. }) => {}
                        other => panic!("expected the echo, got {other:?}"),
                    }
                }
                start.elapsed()
            })
        })
    });
    group.bench_function(BenchmarkId::new("direct", SIZE), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let nanos: u64 = ask(&parent, &format!("echo {iters} {SIZE}"))
                    .await
                    .parse()
                    .expect("nanoseconds");
                Duration::from_nanos(nanos)
            })
        })
    });
    group.finish();
    rt.block_on(async {
        let _ = echo.terminate().await;
        let _ = parent.terminate().await;
    });
}

criterion_group!(benches, tree);
criterion_main!(benches);

//! The Web Workers standard's multicore example, made real: a worker that
//! splits a job over sub-workers, one OS process each.
//!
//! `delegate [N]` is a worker. Each message (or request) it gets is a
//! number `LIMIT` as text; it counts the primes below `LIMIT` by giving each
//! of `N` sub-workers (default: the number of cores) one slice of the range.
//! The sub-workers are this same executable run with `--part`: each takes
//! one `(lo, hi)` value, posts its count and closes itself. The worker then
//! answers with one line:
//!
//! ```text
//! total=78498 parts=4 pids=2201,2202,2203,2204 exits=0,0,0,0
//! ```
//!
//! Under arbord: `arborctl spawn --name delegate -- target/release/examples/delegate 4`,
//! then `arborctl request ID 1000000`; `arborctl ps` shows the parts under
//! their parent while they run.

use std::time::Duration;

use arbor_worker::nonblocking::AsyncWorker;
use arbor_worker::{Spawner, SubWorkerEvent, WorkerSpec};

#[tokio::main(flavor = "current_thread")]
async fn main() -> arbor_worker::Result<()> {
    if std::env::args().any(|a| a == "--part") {
        return part().await;
    }
    let parts: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u64))
        .max(1);
    let mut worker = AsyncWorker::connect()?;
    let (poster, spawner) = (worker.poster(), worker.spawner());
    worker.on_message(move |incoming| {
        let (poster, spawner) = (poster.clone(), spawner.clone());
        async move {
            let text = String::from_utf8_lossy(&incoming.message.data).into_owned();
            let answer = match text.trim().parse::<u64>() {
                Ok(limit) => match delegate(&spawner, limit, parts).await {
                    Ok(report) => report,
                    Err(e) => format!("error: {e}"),
                },
                Err(_) => format!("error: {text:?} is not a number"),
            };
            match incoming.request_id {
                Some(id) => poster.reply(id, answer.as_bytes()).await,
                None => poster.post_message(answer.as_bytes(), &[]).await,
            }
        }
    });
    worker.run().await
}

/// Counts the primes below `limit` over `parts` sub-workers.
async fn delegate(spawner: &Spawner, limit: u64, parts: u64) -> arbor_worker::Result<String> {
    let exe = std::env::current_exe().map_err(arbor_worker::Error::Spec)?;
    let span = limit.div_ceil(parts).max(1);
    let mut subs = Vec::new();
    for i in 0..parts {
        let (lo, hi) = ((i * span).min(limit), ((i + 1) * span).min(limit));
        let spec = WorkerSpec::program(&exe)
            .arg("--part")
            .name(format!("delegate-part-{i}"))
            .close_grace(Duration::from_secs(2));
        let sub = spawner.spawn(spec).await?;
        sub.post_value(&(lo, hi)).await?;
        subs.push(sub);
    }
    let (mut total, mut pids, mut exits) = (0u64, Vec::new(), Vec::new());
    for mut sub in subs {
        pids.push(sub.pid().to_string());
        while let Some(event) = sub.next_event().await {
            match event {
                SubWorkerEvent::Message { data, .. } => {
                    let count: u64 = arbor_worker::Message::new(data).decode()?;
                    total += count;
                }
                SubWorkerEvent::Exit(exit) => exits.push(match (exit.code, exit.signal) {
                    (Some(code), _) => code.to_string(),
                    (None, Some(signal)) => signal.to_string(),
                    _ => "?".into(),
                }),
                SubWorkerEvent::Ready => {}
                SubWorkerEvent::Error { message, .. }
                | SubWorkerEvent::ChannelError { error: message } => {
                    return Ok(format!("error: part {} failed: {message}", sub.name()))
                }
            }
        }
    }
    Ok(format!(
        "total={total} parts={parts} pids={} exits={}",
        pids.join(","),
        exits.join(",")
    ))
}

/// A sub-worker: counts the primes in one `(lo, hi)` slice, posts the
/// count and closes itself.
async fn part() -> arbor_worker::Result<()> {
    let mut worker = AsyncWorker::connect()?;
    let (poster, closer) = (worker.poster(), worker.closer());
    worker.on_message(move |incoming| {
        let (poster, closer) = (poster.clone(), closer.clone());
        async move {
            let (lo, hi): (u64, u64) = incoming.message.decode()?;
            let count = (lo..hi).filter(|&n| is_prime(n)).count() as u64;
            poster.post_value(&count).await?;
            closer.close();
            Ok(())
        }
    });
    worker.run().await
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

//! Memory of supervision: the supervisor's RSS growth per idle worker (with
//! 100 idle echo workers, all Ready) and one echo worker's own RSS. Prints
//! one JSON object. Run by bench/run.sh.

use std::time::Duration;

use arbor_supervisor::{Supervisor, WorkerEvent, WorkerSpec};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let peer = std::env::current_exe()?.with_file_name("bench-peer");
    let supervisor = Supervisor::new()?;
    // One worker first, so that the runtime, the spawner thread and the
    // allocator's arenas are warm before the baseline.
    let mut warm = supervisor
        .spawn(WorkerSpec::program(&peer).arg("worker-echo"))
        .await?;
    assert!(matches!(warm.next_event().await, Some(WorkerEvent::Ready)));
    let before = arbor_bench::rss_kib("self");
    let mut workers = Vec::new();
    for _ in 0..100 {
        let mut worker = supervisor
            .spawn(WorkerSpec::program(&peer).arg("worker-echo"))
            .await?;
        assert!(matches!(
            worker.next_event().await,
            Some(WorkerEvent::Ready)
        ));
        workers.push(worker);
    }
    let after = arbor_bench::rss_kib("self");
    let worker_rss = arbor_bench::rss_kib(workers[0].pid());
    println!(
        "{{\"supervisor_kib_per_idle_worker\": {:.1}, \"echo_worker_rss_kib\": {worker_rss}}}",
        (after.saturating_sub(before)) as f64 / 100.0
    );
    for worker in &workers {
        worker.close(Duration::from_secs(5)).await?;
    }
    warm.close(Duration::from_secs(5)).await?;
    Ok(())
}

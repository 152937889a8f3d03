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
    let before = own_rss()?;
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
    let after = own_rss()?;
    let worker_pid = workers[0].pid();
    let worker_rss = arbor_bench::rss_kib(worker_pid)
        .map_err(|e| format!("the echo worker's RSS (pid {worker_pid}): {e}"))?;
    // Signed: if the supervisor shrank, the figure says so rather than 0.
    println!(
        "{{\"supervisor_kib_per_idle_worker\": {:.1}, \"echo_worker_rss_kib\": {worker_rss}}}",
        (after as f64 - before as f64) / 100.0
    );
    for worker in &workers {
        worker.close(Duration::from_secs(5)).await?;
    }
    warm.close(Duration::from_secs(5)).await?;
    Ok(())
}

/// This process's RSS in KiB; an error names the pid, so that an unreadable
/// /proc stops the probe instead of reporting a growth of 0.
fn own_rss() -> Result<u64, String> {
    arbor_bench::rss_kib("self")
        .map_err(|e| format!("the supervisor's own RSS (pid {}): {e}", std::process::id()))
}

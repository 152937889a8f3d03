//! A supervisor process for the tests: starts N echo workers, prints their
//! pids on one line once all are Ready, then waits to be killed.

use std::io::Write;

use arbor_integration_tests::test_worker;
use arbor_supervisor::{Supervisor, WorkerEvent, WorkerSpec};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let supervisor = Supervisor::new()?;
    let mut workers = Vec::new();
    for _ in 0..count {
        let mut worker = supervisor
            .spawn(WorkerSpec::program(test_worker()).arg("echo"))
            .await?;
        match worker.next_event().await {
            Some(WorkerEvent::Ready) => {}
            other => return Err(format!("expected Ready, got {other:?}").into()),
        }
        workers.push(worker);
    }
    let pids: Vec<String> = workers.iter().map(|w| w.pid().to_string()).collect();
    println!("{}", pids.join(" "));
    std::io::stdout().flush()?;
    std::future::pending::<()>().await;
    Ok(())
}

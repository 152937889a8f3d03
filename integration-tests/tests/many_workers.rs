//! 200 workers spawned at once all become Ready and are all reaped: no
//! zombie is left behind.

use std::time::Duration;

use arbor_integration_tests::{test_worker, within, zombie_children};
use arbor_supervisor::{Supervisor, WorkerEvent, WorkerSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_workers_start_and_are_all_reaped() {
    let supervisor = Supervisor::new().unwrap();
    let spawns = (0..200).map(|_| {
        let supervisor = supervisor.clone();
        tokio::spawn(async move {
            let mut worker = supervisor
                .spawn(WorkerSpec::program(test_worker()).arg("echo"))
                .await
                .unwrap();
            match worker.next_event().await {
                Some(WorkerEvent::Ready) => worker,
                other => panic!("expected Ready, got {other:?}"),
            }
        })
    });
    let workers = within(Duration::from_secs(60), "200 workers Ready", async {
        let mut workers = Vec::new();
        for spawn in spawns.collect::<Vec<_>>() {
            workers.push(spawn.await.unwrap());
        }
        workers
    })
    .await;
    let mut pids: Vec<u32> = workers.iter().map(|w| w.pid()).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 200);

    let closes = workers.into_iter().map(|worker| {
        tokio::spawn(async move { worker.close(Duration::from_secs(5)).await.unwrap() })
    });
    within(Duration::from_secs(60), "200 closes", async {
        for close in closes.collect::<Vec<_>>() {
            assert_eq!(close.await.unwrap().code, Some(0));
        }
    })
    .await;
    assert_eq!(zombie_children(), Vec::<u32>::new());
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} still exists"
        );
    }
}

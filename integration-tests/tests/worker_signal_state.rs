//! A worker starts with no signal blocked and none ignored, whatever the
//! supervisor does with signals: the spawner blocks every signal around
//! each start, the runtime handles some (SIGHUP, SIGCHLD and SIGUSR1 here),
//! Rust ignores SIGPIPE, and a supervisor may have been started ignoring
//! others (as `nohup` ignores SIGHUP; SIGUSR2 here); none of it may reach
//! the worker. Many starts are asked for at once.

use std::time::Duration;

use arbor_integration_tests::within;
use arbor_supervisor::{Signal, Supervisor, WorkerSpec};
use tokio::signal::unix::{signal, SignalKind};

const LIMIT: Duration = Duration::from_secs(20);
const STARTS: usize = 24;

/// The `Sig*` masks of /proc/<pid>/status once `pid` runs `sleep`.
async fn signal_masks_once_exec_ed(pid: u32) -> Vec<String> {
    within(LIMIT, "the worker's exec of sleep", async {
        loop {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("the status of worker {pid}: {e}"));
    status
        .lines()
        .filter(|line| line.starts_with("SigBlk:") || line.starts_with("SigIgn:"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_started_at_once_have_no_signal_blocked_or_ignored() {
    // Handlers in the supervisor's process, as arbord has.
    let _hangup = signal(SignalKind::hangup()).unwrap();
    let _child = signal(SignalKind::child()).unwrap();
    let _user = signal(SignalKind::user_defined1()).unwrap();
    // SAFETY: ignoring a signal installs no handler.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGUSR2,
            nix::sys::signal::SigHandler::SigIgn,
        )
    }
    .unwrap();
    let supervisor = Supervisor::new().unwrap();
    // All asked for at once: each clone blocks every signal on the spawner
    // thread while the requests behind it queue up.
    let mut starts = tokio::task::JoinSet::new();
    for _ in 0..STARTS {
        let supervisor = supervisor.clone();
        starts.spawn(async move {
            supervisor
                .spawn(
                    WorkerSpec::program("/bin/sleep")
                        .arg("30")
                        .speaks_protocol(false),
                )
                .await
        });
    }
    let workers = within(LIMIT, "the starts", starts.join_all()).await;
    for worker in &workers {
        let worker = worker.as_ref().expect("a start");
        assert_eq!(
            signal_masks_once_exec_ed(worker.pid()).await,
            ["SigBlk: 0000000000000000", "SigIgn: 0000000000000000"],
            "worker {}",
            worker.pid()
        );
    }
    for worker in workers.into_iter().flatten() {
        let exit = within(LIMIT, "the worker's end", worker.terminate())
            .await
            .unwrap();
        assert_eq!(exit.signal, Some(Signal::KILL), "{exit}");
    }
}

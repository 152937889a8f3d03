//! The worker examples, run for real under the supervisor library: `primes`
//! posts each prime and closes itself, `echo` returns bytes and fds.
//! `cargo test` builds a package's examples before running its tests; they
//! sit in `target/<profile>/examples/`.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use arbor_supervisor::{Initiator, Supervisor, WorkerEvent, WorkerSpec};

const LIMIT: Duration = Duration::from_secs(20);

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run through cargo test",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primes_posts_each_prime_then_closes_itself() {
    let supervisor = Supervisor::new().unwrap();
    let mut worker = supervisor
        .spawn(WorkerSpec::program(example("primes")).arg("30"))
        .await
        .unwrap();
    let mut primes = Vec::new();
    let exit = tokio::time::timeout(LIMIT, async {
        loop {
            match worker.next_event().await.expect("event") {
                WorkerEvent::Ready => {}
                event @ WorkerEvent::Message { .. } => {
                    primes.push(event.decode::<u64>().unwrap().unwrap())
                }
                WorkerEvent::Exit(exit) => return exit,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("primes finished in time");
    assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    assert_eq!((exit.code, exit.initiated_by), (Some(0), Initiator::Worker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primes_without_a_limit_runs_until_closed() {
    let supervisor = Supervisor::new().unwrap();
    let mut worker = supervisor
        .spawn(WorkerSpec::program(example("primes")))
        .await
        .unwrap();
    let mut found = 0;
    tokio::time::timeout(LIMIT, async {
        while found < 100 {
            if let WorkerEvent::Message { .. } = worker.next_event().await.expect("event") {
                found += 1;
            }
        }
    })
    .await
    .expect("100 primes in time");
    let exit = tokio::time::timeout(LIMIT, worker.close(Duration::from_secs(5)))
        .await
        .expect("closed in time")
        .unwrap();
    assert_eq!((exit.code, exit.escalated_to), (Some(0), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_returns_bytes_and_fds() {
    let supervisor = Supervisor::new().unwrap();
    let mut worker = supervisor
        .spawn(WorkerSpec::program(example("echo")))
        .await
        .unwrap();
    let (mut read_end, write_end) = std::io::pipe().unwrap();
    worker
        .post_message(b"ping".to_vec(), vec![OwnedFd::from(write_end)])
        .await
        .unwrap();
    let (data, fds) = tokio::time::timeout(LIMIT, async {
        loop {
            if let WorkerEvent::Message { data, fds } = worker.next_event().await.expect("event") {
                return (data, fds);
            }
        }
    })
    .await
    .expect("echo in time");
    assert_eq!(data, b"ping");
    std::fs::File::from(fds.into_iter().next().expect("the fd came back"))
        .write_all(b"pong")
        .unwrap();
    let mut got = [0u8; 4];
    read_end.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    worker.close(Duration::from_secs(5)).await.unwrap();
}

#[test]
fn a_worker_started_outside_a_supervisor_gets_a_clear_error() {
    let output = std::process::Command::new(example("echo"))
        .env_remove("ARBOR_CHANNEL_FD")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("NotUnderSupervisor") && stderr.contains("ARBOR_CHANNEL_FD is not set"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The standard's multicore example: `delegate 4` counts the primes below a
/// million over four sub-workers, each its own process, and none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_splits_the_work_over_sub_workers_and_leaves_none() {
    let supervisor = Supervisor::new().unwrap();
    let mut worker = supervisor
        .spawn(WorkerSpec::program(example("delegate")).arg("4"))
        .await
        .unwrap();
    worker
        .post_message(b"1000000".to_vec(), vec![])
        .await
        .unwrap();
    // The report and the four sub-workers' handles, in whatever order they
    // come (a handle may still be on its way when the report is posted).
    let mut subs = Vec::new();
    let mut report = None;
    tokio::time::timeout(Duration::from_secs(60), async {
        while report.is_none() || subs.len() < 4 {
            match worker.next_event().await.expect("event") {
                WorkerEvent::Ready => {}
                WorkerEvent::SubWorker(sub) => subs.push(*sub),
                WorkerEvent::Message { data, .. } if report.is_none() => {
                    report = Some(String::from_utf8(data).unwrap());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("delegate answered in time, and its four sub-workers were seen");
    let report = report.unwrap_or_default();
    let field = |key: &str| {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {report:?}"))
            .to_string()
    };
    assert_eq!(field("total"), "78498", "{report}");
    assert_eq!(field("exits"), "0,0,0,0", "{report}");
    let pids: Vec<u32> = field("pids")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 4, "{report}");
    assert!(!distinct.contains(&worker.pid()), "{report}");
    // The supervisor saw the same four processes, as sub-workers of this one.
    let mut seen: Vec<u32> = subs.iter().map(|s| s.pid()).collect();
    seen.sort_unstable();
    assert_eq!(seen, distinct.iter().copied().collect::<Vec<_>>());
    assert!(subs.iter().all(|s| s.parent() == Some(worker.id())));
    for sub in &subs {
        let exit = tokio::time::timeout(LIMIT, sub.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit.code, Some(0));
    }
    // Each was reaped before its exit reached the parent: no process, no zombie.
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "sub-worker {pid} is still there"
        );
    }
    let exit = tokio::time::timeout(LIMIT, worker.close(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code, Some(0));
}

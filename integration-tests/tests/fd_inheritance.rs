//! A worker inherits stdio, the sockets it was given from fd 3 exactly as
//! systemd's socket activation passes them (with a correct LISTEN_PID), its
//! channel right after them at `ARBOR_CHANNEL_FD` when it speaks the
//! protocol, and nothing else, even while the supervisor is receiving fds
//! on other channels during the spawns.

use std::os::fd::OwnedFd;
use std::time::Duration;

use arbor_integration_tests::{binary, next_message, test_worker, within};
use arbor_supervisor::{ListenFds, Output, Supervisor, Worker, WorkerEvent, WorkerSpec};

const LIMIT: Duration = Duration::from_secs(30);

async fn report(worker: &mut Worker) -> String {
    worker
        .post_message(b"report".to_vec(), vec![])
        .await
        .unwrap();
    String::from_utf8(next_message(worker).await.0).unwrap()
}

/// Starts a `list-fds` worker, takes its report and closes it.
async fn plain_worker_report(supervisor: &Supervisor) -> String {
    let mut worker = supervisor
        .spawn(WorkerSpec::program(test_worker()).arg("list-fds"))
        .await
        .unwrap();
    let report = report(&mut worker).await;
    worker.close(Duration::from_secs(5)).await.unwrap();
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_sockets_has_stdio_and_its_channel_at_fd_3_only() {
    let supervisor = Supervisor::new().unwrap();
    let report = plain_worker_report(&supervisor).await;
    assert!(
        report.starts_with(
            "fds=0 1 2 3;listening=;ARBOR_CHANNEL_FD=3;ARBOR_TREE_FD=;LISTEN_FDS=;LISTEN_FDNAMES=;LISTEN_PID=;"
        ),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_does_not_speak_the_protocol_gets_stdio_only() {
    let supervisor = Supervisor::new().unwrap();
    let mut worker = supervisor
        .spawn(
            WorkerSpec::program(test_worker())
                .arg("plain-list-fds")
                .speaks_protocol(false)
                .stdout(Output::Capture),
        )
        .await
        .unwrap();
    let mut lines = Vec::new();
    let exit = within(LIMIT, "the plain program's report and exit", async {
        loop {
            match worker.next_event().await.expect("an event") {
                WorkerEvent::Output { line, .. } => {
                    lines.push(String::from_utf8_lossy(&line).into_owned())
                }
                WorkerEvent::Exit(exit) => break exit,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(exit.code, Some(0), "{exit:?}");
    assert_eq!(
        lines,
        vec![
            "fds=0 1 2;listening=;ARBOR_CHANNEL_FD=;ARBOR_TREE_FD=;LISTEN_FDS=;LISTEN_FDNAMES=;LISTEN_PID=;pid="
                .to_string()
                + &worker.pid().to_string()
        ]
    );
    let posted = worker.post_message(b"hello".to_vec(), vec![]).await;
    assert!(
        matches!(posted, Err(arbor_supervisor::Error::NoChannel { .. })),
        "{posted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_program_gets_its_sockets_from_fd_3_and_no_channel() {
    let supervisor = Supervisor::new().unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut worker = supervisor
        .spawn_with_fds(
            WorkerSpec::program(test_worker())
                .arg("plain-list-fds")
                .speaks_protocol(false)
                .stdout(Output::Capture),
            ListenFds::new().with("web", OwnedFd::from(web)),
        )
        .await
        .unwrap();
    let pid = worker.pid();
    let line = within(LIMIT, "the plain program's report", async {
        loop {
            match worker.next_event().await.expect("an event") {
                WorkerEvent::Output { line, .. } => {
                    break String::from_utf8_lossy(&line).into_owned()
                }
                WorkerEvent::Exit(exit) => panic!("exited without a report: {exit:?}"),
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(
        line,
        format!("fds=0 1 2 3;listening=3;ARBOR_CHANNEL_FD=;ARBOR_TREE_FD=;LISTEN_FDS=1;LISTEN_FDNAMES=web;LISTEN_PID={pid};pid={pid}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sockets_follow_the_socket_activation_convention() {
    let supervisor = Supervisor::new().unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let mut worker = supervisor
        .spawn_with_fds(
            WorkerSpec::program(test_worker()).arg("list-fds"),
            ListenFds::new()
                .with("web", OwnedFd::from(web))
                .with("admin", OwnedFd::from(admin)),
        )
        .await
        .unwrap();
    let report = report(&mut worker).await;
    let pid = worker.pid();
    assert_eq!(
        report,
        format!("fds=0 1 2 3 4 5;listening=3;ARBOR_CHANNEL_FD=5;ARBOR_TREE_FD=;LISTEN_FDS=2;LISTEN_FDNAMES=web:admin;LISTEN_PID={pid};pid={pid}")
    );
    worker.close(Duration::from_secs(5)).await.unwrap();
}

/// The first message a `test-tree` relay posts (its sub-worker's answer),
/// and the handles of the `subs` sub-workers it started (kept, and read,
/// until the end). A handle may come before or after the answer: the
/// relay hears from its sub-worker as soon as it starts, while its handle
/// is still on its way to this process.
async fn relayed(parent: &mut Worker, subs: usize) -> (String, Vec<Worker>) {
    let mut handles = Vec::new();
    let mut answer = None;
    within(
        LIMIT,
        "the sub-worker's answer, relayed, and its handle",
        async {
            while answer.is_none() || handles.len() < subs {
                match parent.next_event().await.expect("the parent's events") {
                    WorkerEvent::Message { data, .. } if answer.is_none() => {
                        answer = Some(String::from_utf8(data).unwrap());
                    }
                    WorkerEvent::SubWorker(sub) => handles.push(*sub),
                    WorkerEvent::Ready => {}
                    other => panic!("expected the relayed answer, got {other:?}"),
                }
            }
        },
    )
    .await;
    (answer.unwrap_or_default(), handles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_worker_gets_its_sockets_from_fd_3_then_its_channel_then_its_tree_link() {
    let supervisor = Supervisor::new().unwrap();
    let mut parent = supervisor
        .spawn(
            WorkerSpec::program(binary("test-tree"))
                .args(["sub-fds", &test_worker().display().to_string()]),
        )
        .await
        .unwrap();
    let (report, _subs) = relayed(&mut parent, 1).await;
    let pid = report.rsplit("pid=").next().unwrap();
    assert_eq!(
        report,
        format!("fds=0 1 2 3 4 5;listening=3;ARBOR_CHANNEL_FD=4;ARBOR_TREE_FD=5;LISTEN_FDS=1;LISTEN_FDNAMES=web;LISTEN_PID={pid};pid={pid}")
    );
    parent.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_worker_started_from_an_entry_point_runs_that_entry() {
    let supervisor = Supervisor::new().unwrap();
    let mut parent = supervisor
        .spawn(WorkerSpec::program(binary("test-tree")).arg("entry-sub"))
        .await
        .unwrap();
    let (answer, subs) = relayed(&mut parent, 1).await;
    let leaf = subs.first().expect("the sub-worker's handle");
    assert_eq!(answer, format!("leaf {}", leaf.pid()));
    parent.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fds_received_during_spawns_do_not_leak_into_new_workers() {
    let supervisor = Supervisor::new().unwrap();
    let mut echo = supervisor
        .spawn(WorkerSpec::program(test_worker()).arg("echo"))
        .await
        .unwrap();
    // Keep fds flowing into the supervisor through echo while spawning.
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let crossed = std::sync::Arc::new(AtomicU32::new(0));
    let bouncer = {
        let (stop, crossed) = (stop.clone(), crossed.clone());
        tokio::spawn(async move {
            let (_r, w) = std::io::pipe().unwrap();
            let w = OwnedFd::from(w);
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..8 {
                    echo.post_message(
                        b"fd".to_vec(),
                        vec![w.try_clone().unwrap(), w.try_clone().unwrap()],
                    )
                    .await
                    .unwrap();
                }
                for _ in 0..8 {
                    loop {
                        match echo.next_event().await.expect("echo event") {
                            WorkerEvent::Message { fds, .. } => {
                                assert_eq!(fds.len(), 2);
                                crossed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            _ => continue,
                        }
                    }
                }
            }
            echo.close(Duration::from_secs(5)).await.unwrap();
        })
    };
    // The first fds cross before the spawns begin, so that they overlap.
    within(LIMIT, "the first bounced fds", async {
        while crossed.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let before = crossed.load(Ordering::Relaxed);
    for _ in 0..20 {
        let report = plain_worker_report(&supervisor).await;
        assert!(
            report.starts_with("fds=0 1 2 3;"),
            "a worker inherited extra fds: {report}"
        );
    }
    let during = crossed.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    within(LIMIT, "bouncer", bouncer).await.unwrap();
    assert!(during > 0, "no fds crossed while spawning");
}

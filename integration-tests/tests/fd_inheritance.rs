//! A worker inherits stdio, its channel at fd 3 and the sockets it was given
//! from fd 4 (with a correct LISTEN_PID), and nothing else, even while the
//! supervisor is receiving fds on other channels during the spawns.

use std::os::fd::OwnedFd;
use std::time::Duration;

use arbor_integration_tests::{next_message, test_worker, within};
use arbor_supervisor::{Supervisor, Worker, WorkerEvent, WorkerSpec};

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
async fn a_plain_worker_has_stdio_and_its_channel_only() {
    let supervisor = Supervisor::new().unwrap();
    let report = plain_worker_report(&supervisor).await;
    assert!(
        report.starts_with("fds=0 1 2 3;LISTEN_FDS=;LISTEN_FDNAMES=;LISTEN_PID=;"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sockets_follow_the_socket_activation_convention() {
    let supervisor = Supervisor::new().unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let mut worker = supervisor
        .spawn(
            WorkerSpec::program(test_worker())
                .arg("list-fds")
                .listen_fd("web", OwnedFd::from(web))
                .listen_fd("admin", OwnedFd::from(admin)),
        )
        .await
        .unwrap();
    let report = report(&mut worker).await;
    let pid = worker.pid();
    assert_eq!(
        report,
        format!("fds=0 1 2 3 4 5;LISTEN_FDS=2;LISTEN_FDNAMES=web:admin;LISTEN_PID={pid};pid={pid}")
    );
    worker.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fds_received_during_spawns_do_not_leak_into_new_workers() {
    let supervisor = Supervisor::new().unwrap();
    let mut echo = supervisor
        .spawn(WorkerSpec::program(test_worker()).arg("echo"))
        .await
        .unwrap();
    // Keep fds flowing into the supervisor through echo while spawning.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bouncer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (_r, w) = std::io::pipe().unwrap();
            let w = OwnedFd::from(w);
            let mut bounced = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
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
                                bounced += 1;
                                break;
                            }
                            _ => continue,
                        }
                    }
                }
            }
            echo.close(Duration::from_secs(5)).await.unwrap();
            bounced
        })
    };
    for _ in 0..20 {
        let report = plain_worker_report(&supervisor).await;
        assert!(
            report.starts_with("fds=0 1 2 3;"),
            "a worker inherited extra fds: {report}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let bounced = within(LIMIT, "bouncer", bouncer).await.unwrap();
    assert!(bounced > 0, "no fds crossed while spawning");
}

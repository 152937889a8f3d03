//! A worker that writes garbage or a lying frame loses its channel, with an
//! event that says why; the other workers go on, and the supervisor leaks no fd.

use std::time::{Duration, Instant};

use arbor_integration_tests::{next_message, open_fd_count, test_worker, within};
use arbor_supervisor::{Supervisor, Worker, WorkerEvent, WorkerSpec};

const LIMIT: Duration = Duration::from_secs(20);

async fn channel_error(worker: &mut Worker) -> String {
    within(LIMIT, "channel error", async {
        loop {
            match worker.next_event().await.expect("event") {
                WorkerEvent::ChannelError { error } => return error,
                WorkerEvent::Ready | WorkerEvent::Output { .. } => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
}

async fn echo_once(worker: &mut Worker, text: &[u8]) {
    worker.post_message(text.to_vec(), vec![]).await.unwrap();
    assert_eq!(next_message(worker).await.0, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_lies_close_one_channel_and_nothing_else() {
    let supervisor = Supervisor::new().unwrap();
    // Warm up: the runtime and the spawner have their fds before the census.
    let mut neighbour = supervisor
        .spawn(WorkerSpec::program(test_worker()).arg("echo"))
        .await
        .unwrap();
    echo_once(&mut neighbour, b"before").await;
    let baseline = open_fd_count();

    let mut garbage = supervisor
        .spawn(WorkerSpec::program(test_worker()).arg("garbage"))
        .await
        .unwrap();
    let mut liar = supervisor
        .spawn(WorkerSpec::program(test_worker()).arg("lying"))
        .await
        .unwrap();
    let garbage_error = channel_error(&mut garbage).await;
    assert!(garbage_error.contains("bad frame magic"), "{garbage_error}");
    let liar_error = channel_error(&mut liar).await;
    assert!(
        liar_error.contains("names 1 fds but 0 arrived"),
        "{liar_error}"
    );

    echo_once(&mut neighbour, b"after").await;

    // The processes are still supervised: terminate them and check the exits.
    let garbage_exit = within(LIMIT, "terminate", garbage.terminate())
        .await
        .unwrap();
    let liar_exit = within(LIMIT, "terminate", liar.terminate()).await.unwrap();
    assert!(garbage_exit.signal.is_some() && liar_exit.signal.is_some());
    drop((garbage, liar));

    // Every fd of those two workers (socket, pidfd, pipes) is closed again.
    let deadline = Instant::now() + LIMIT;
    while open_fd_count() != baseline {
        assert!(
            Instant::now() < deadline,
            "fd leak: {} open, {baseline} before",
            open_fd_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    echo_once(&mut neighbour, b"still fine").await;
    neighbour.close(Duration::from_secs(5)).await.unwrap();
}

//! Request/reply: many callers ask one worker at once and each gets its own
//! answer; a worker that does not answer times the caller out.

use std::sync::Arc;
use std::time::Duration;

use arbor_integration_tests::{test_worker, within};
use arbor_supervisor::{Error, Supervisor, WorkerSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_reply() {
    let supervisor = Supervisor::new().unwrap();
    let worker = Arc::new(
        supervisor
            .spawn(WorkerSpec::program(test_worker()).arg("echo"))
            .await
            .unwrap(),
    );
    let callers: Vec<_> = (0..200u32)
        .map(|i| {
            let worker = Arc::clone(&worker);
            tokio::spawn(async move {
                let question = format!("question {i}").into_bytes();
                let answer = worker
                    .request(question.clone(), Duration::from_secs(10))
                    .await
                    .unwrap();
                assert_eq!(answer, question, "caller {i} got someone else's answer");
            })
        })
        .collect();
    within(Duration::from_secs(30), "200 requests", async {
        for caller in callers {
            caller.await.unwrap();
        }
    })
    .await;
    worker.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_answers_times_out() {
    let supervisor = Supervisor::new().unwrap();
    // The env worker posts a message back but never sends a Reply.
    let worker = supervisor
        .spawn(WorkerSpec::program(test_worker()).args(["env", "x"]))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let asked = worker.request(b"anyone?".to_vec(), Duration::from_millis(300));
    // Bounded: a request that ignored its timeout fails here, not hangs.
    let err = within(Duration::from_secs(10), "the request's timeout", asked)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::RequestTimeout { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "a 300 ms timeout took {took:?}"
    );
    worker.close(Duration::from_secs(5)).await.unwrap();
}

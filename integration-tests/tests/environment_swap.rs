//! The Web Workers articles' "environment" pattern (the `environment`
//! example of arbor-worker, run here against real worker processes): while
//! requests keep coming, the environment's worker is replaced, and no reply
//! from an old worker ever reaches a caller of a new one.

#[path = "../../worker-host/examples/environment.rs"]
mod environment;

use std::sync::Arc;
use std::time::Duration;

use arbor_integration_tests::{test_worker, within};
use arbor_supervisor::{Supervisor, WorkerSpec};
use environment::{EnvironmentClient, RequestError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_never_cross_environments() {
    let client = Arc::new(EnvironmentClient::new(Supervisor::new().unwrap(), |env| {
        WorkerSpec::program(test_worker()).args(["env", env])
    }));
    client.set_environment("env-0").await.unwrap();
    let mut callers = Vec::new();
    for i in 0..300 {
        let caller = client.clone();
        callers.push(tokio::spawn(async move {
            // The environment a request goes to is fixed when it is sent,
            // somewhere between these two readings.
            let before = caller.environment().unwrap();
            let answer = caller.request(&format!("r{i}")).await;
            let after = caller.environment().unwrap();
            (i, before, after, answer)
        }));
        // Replaced every 50 requests, but not after the last 50: those go
        // to an environment nobody replaces, so they must all be answered
        // (however slow the machine, and however many earlier ones found
        // their worker replaced).
        if i % 50 == 49 && i < 250 {
            client
                .set_environment(&format!("env-{}", i / 50 + 1))
                .await
                .unwrap();
        }
    }
    let (mut answered, mut replaced) = (0, 0);
    for caller in callers {
        let (i, before, after, answer) = within(Duration::from_secs(30), "a request", caller)
            .await
            .unwrap();
        match answer {
            Ok(reply) => {
                let parts: Vec<&str> = reply.splitn(3, ':').collect();
                assert_eq!(
                    parts[2],
                    format!("r{i}"),
                    "reply {reply:?} answers another request"
                );
                let env_num = |e: &str| e.trim_start_matches("env-").parse::<u32>().unwrap();
                let from = env_num(parts[0]);
                assert!(
                    env_num(&before) <= from && from <= env_num(&after),
                    "request {i} sent under {before}..{after} was answered by {}",
                    parts[0]
                );
                answered += 1;
            }
            Err(RequestError::Replaced) if i < 250 => replaced += 1,
            Err(other) => panic!("request {i}: {other:?}"),
        }
    }
    assert_eq!(answered + replaced, 300);
    assert!(answered >= 50, "{answered} answered");
}

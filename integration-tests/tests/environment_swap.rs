//! The Web Workers articles' "environment" pattern (the `environment`
//! example of arbor-worker, run here against real worker processes): while
//! requests keep coming, the environment's worker is replaced, and no reply
//! from an old worker ever reaches a caller of a new one. Each environment
//! answers before it is replaced, so every one of the six is checked with
//! requests still in flight around its replacement.

#[path = "../../worker-host/examples/environment.rs"]
mod environment;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
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
    // The environments that answered a request so far.
    let answering = Arc::new(Mutex::new(BTreeSet::new()));
    let mut callers = Vec::new();
    for i in 0..300 {
        let caller = client.clone();
        let heard = Arc::clone(&answering);
        callers.push(tokio::spawn(async move {
            // The environment a request goes to is fixed when it is sent,
            // somewhere between these two readings.
            let before = caller.environment().unwrap();
            let answer = caller.request(&format!("r{i}")).await;
            let after = caller.environment().unwrap();
            if let Ok(reply) = &answer {
                let env = reply.split(':').next().unwrap_or_default().to_string();
                heard.lock().unwrap().insert(env);
            }
            (i, before, after, answer)
        }));
        // Replaced every 50 requests, once the current environment has
        // answered one of them (the rest are still in flight), but not
        // after the last 50: those go to an environment nobody replaces,
        // so they must all be answered (however slow the machine, and
        // however many earlier ones found their worker replaced).
        if i % 50 == 49 && i < 250 {
            let current = format!("env-{}", i / 50);
            within(
                Duration::from_secs(30),
                &format!("an answer from {current}"),
                async {
                    while !answering.lock().unwrap().contains(&current) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                },
            )
            .await;
            client
                .set_environment(&format!("env-{}", i / 50 + 1))
                .await
                .unwrap();
        }
    }
    let (mut answered, mut replaced, mut last_answered) = (0, 0, 0);
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
                if i >= 250 {
                    last_answered += 1;
                }
            }
            Err(RequestError::Replaced) if i < 250 => replaced += 1,
            Err(other) => panic!("request {i}: {other:?}"),
        }
    }
    assert_eq!(answered + replaced, 300);
    assert_eq!(
        last_answered, 50,
        "the last environment answers every request"
    );
    let every: BTreeSet<String> = (0..6).map(|k| format!("env-{k}")).collect();
    assert_eq!(
        *answering.lock().unwrap(),
        every,
        "each environment answered"
    );
    eprintln!("{answered} answered, {replaced} found their worker replaced");
}

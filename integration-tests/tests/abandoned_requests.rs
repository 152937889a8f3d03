//! A request no reply can come to ends at once: in the library when its
//! worker exits first (a typed "worker gone" error with the exit, not a
//! wait for the whole timeout), and in arbord when the client that asked
//! hangs up (its connection, task and permit go with it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbor_integration_tests::arbord::{wait_until, Daemon, LIMIT};
use arbor_integration_tests::control::{ask, client, spawn_request};
use arbor_integration_tests::{fd_count_of, test_worker, within};
use arbor_protocol::blocking::Channel;
use arbor_protocol::control::{
    ControlRequest, ControlResponse, ErrorKind, Event, EventKind, SpawnRequest,
};
use arbor_protocol::Frame;
use arbor_supervisor::{Error, Signal, Supervisor, WhenFull, WorkerEvent, WorkerSpec};

/// Longer than any test may run: a request that waited for it would hang.
const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_when_its_worker_is_killed_fails_at_once_as_unanswered() {
    let supervisor = Supervisor::new().unwrap();
    // The env worker posts a message for each request and never replies.
    let mut worker = supervisor
        .spawn(WorkerSpec::program(test_worker()).args(["env", "x"]))
        .await
        .unwrap();
    let mut events = worker.take_events().unwrap();
    let worker = Arc::new(worker);
    let asking = {
        let worker = Arc::clone(&worker);
        tokio::spawn(async move { worker.request(b"anyone?".to_vec(), HOUR).await })
    };
    // Its message says the request reached it: the request is in flight.
    within(LIMIT, "the worker's message", async {
        while !matches!(events.next().await, Some(WorkerEvent::Message { .. })) {}
    })
    .await;
    let started = Instant::now();
    worker.terminate().await.unwrap();
    let err = within(LIMIT, "the request's end", asking)
        .await
        .unwrap()
        .unwrap_err();
    assert!(started.elapsed() < LIMIT, "{:?}", started.elapsed());
    match err {
        Error::RequestUnanswered { id, exit } => {
            assert_eq!(id, worker.id());
            // Known when the reap came before the channel's end was read.
            if let Some(exit) = exit {
                assert_eq!(exit.signal, Some(Signal::KILL), "{exit}");
            }
        }
        other => panic!("expected RequestUnanswered, got {other}"),
    }
    // A request to the gone worker fails at once too.
    let late = within(
        LIMIT,
        "a request after the exit",
        worker.request(b"?".to_vec(), HOUR),
    )
    .await;
    assert!(late.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_and_requests_waiting_on_a_full_queue_fail_at_once_when_the_worker_is_killed() {
    let supervisor = Supervisor::new().unwrap();
    let dir = arbor_integration_tests::TempDir::new("full-queue");
    // The gate never opens: the worker never sends Ready, so what is posted
    // stays queued, and the queue holds one.
    let spec = WorkerSpec::program(test_worker())
        .arg("gated-echo")
        .arg(dir.0.join("never"))
        .queue_limit(1, WhenFull::Wait);
    let worker = Arc::new(supervisor.spawn(spec).await.unwrap());
    worker
        .post_message(b"fills the queue".to_vec(), vec![])
        .await
        .unwrap();
    let asking = {
        let worker = Arc::clone(&worker);
        tokio::spawn(async move { worker.request(b"?".to_vec(), HOUR).await })
    };
    let posting = {
        let worker = Arc::clone(&worker);
        tokio::spawn(async move { worker.post_message(b"waits".to_vec(), vec![]).await })
    };
    let exit = within(LIMIT, "the kill", worker.terminate()).await.unwrap();
    assert_eq!(exit.signal, Some(Signal::KILL), "{exit}");
    let asked = within(LIMIT, "the request's end", asking).await.unwrap();
    assert!(
        matches!(asked, Err(Error::WorkerGone { id }) if id == worker.id()),
        "{asked:?}"
    );
    let posted = within(LIMIT, "the post's end", posting).await.unwrap();
    assert!(
        matches!(posted, Err(Error::WorkerGone { id }) if id == worker.id()),
        "{posted:?}"
    );
}

/// Worker `id`'s typed event stream.
fn events(daemon: &Daemon, id: u64) -> Channel {
    let mut events = client(daemon);
    assert_eq!(
        ask(&mut events, &ControlRequest::Events { id: Some(id) }),
        ControlResponse::Ok
    );
    events
}

/// Waits on `events` for `count` messages from the worker that say
/// `text`, within the limit each.
fn wait_for_messages(events: &mut Channel, text: &str, count: usize) {
    let mut seen = 0;
    while seen < count {
        let (Frame::Message(message), _) = events.recv().expect("an event within the limit") else {
            panic!("not a Message frame")
        };
        if let ControlResponse::Notice(Event {
            kind: EventKind::Message(said),
            ..
        }) = message.decode().unwrap()
        {
            if said == text {
                seen += 1;
            }
        }
    }
}

/// Spawns the env worker (a message for each request, never a reply) and
/// waits until it runs.
fn spawn_silent_worker(daemon: &Daemon, client: &mut Channel) -> u64 {
    let program = test_worker().to_string_lossy().into_owned();
    let request = ControlRequest::Spawn(SpawnRequest {
        name: Some("silent".into()),
        ..spawn_request(&program, &["env", "x"], false)
    });
    let ControlResponse::Spawned { id } = ask(client, &request) else {
        panic!("no spawn")
    };
    wait_until("the worker running", || {
        daemon
            .ok(&["ps"])
            .lines()
            .any(|l| l.contains("silent") && l.contains("running"))
    });
    id
}

#[test]
fn a_control_request_whose_worker_is_terminated_fails_at_once_as_not_running() {
    let daemon = Daemon::start("");
    let mut control = client(&daemon);
    let id = spawn_silent_worker(&daemon, &mut control);
    let mut events = events(&daemon, id);
    let mut asker = client(&daemon);
    let request = ControlRequest::Request {
        id,
        data: b"anyone?".to_vec(),
        timeout_ms: HOUR.as_millis() as u64,
    };
    asker.send_value(&request, &[]).unwrap();
    // The worker's message says the request arrived.
    wait_for_messages(&mut events, "x:anyone?", 1);
    ask(&mut control, &ControlRequest::Terminate { id });
    let (Frame::Message(message), _) = asker.recv().expect("an answer within the limit") else {
        panic!("not a Message frame")
    };
    match message.decode::<ControlResponse>().unwrap() {
        ControlResponse::Failed { kind, message } => {
            assert_eq!(kind, ErrorKind::NotRunning, "{message}");
        }
        other => panic!("expected a typed failure, got {other:?}"),
    }
}

#[test]
fn control_requests_whose_clients_hung_up_give_back_their_fds_at_once() {
    let daemon = Daemon::start("");
    let mut control = client(&daemon);
    let id = spawn_silent_worker(&daemon, &mut control);
    let mut events = events(&daemon, id);
    let fds_before = daemon.settled_fds();
    assert!(fds_before > 0, "arbord's fds are readable");
    let request = ControlRequest::Request {
        id,
        data: b"anyone?".to_vec(),
        timeout_ms: HOUR.as_millis() as u64,
    };
    for _ in 0..50 {
        let mut asker = client(&daemon);
        asker.send_value(&request, &[]).unwrap();
        // The request reached the worker (its message says so); then the
        // client hangs up without waiting for the answer.
        wait_for_messages(&mut events, "x:anyone?", 1);
    }
    // None holds its connection while the worker keeps running.
    wait_until("arbord's fds back where they were", || {
        fd_count_of(daemon.pid()) <= fds_before
    });
    let listed = daemon.ok(&["ps"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains("silent") && l.contains("running")),
        "{listed}"
    );
}

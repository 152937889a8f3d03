//! Messages posted before Ready all arrive, in order; messages with fds go
//! both ways and every fd works; typed values round-trip.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use arbor_integration_tests::{test_worker, within};
use arbor_supervisor::{Initiator, Supervisor, WhenFull, WorkerEvent, WorkerSpec};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_posted_before_ready_arrive_in_order() {
    let supervisor = Supervisor::new().unwrap();
    let dir = arbor_integration_tests::TempDir::new("gate");
    let gate = dir.0.join("open");
    let spec = WorkerSpec::program(test_worker())
        .arg("gated-echo")
        .arg(&gate);
    let mut worker = supervisor.spawn(spec).await.unwrap();
    // The worker sends Ready only once the gate opens: every one of these
    // is posted before it, every time.
    for i in 0..500u32 {
        worker
            .post_message(i.to_le_bytes().to_vec(), vec![])
            .await
            .unwrap();
    }
    std::fs::write(&gate, b"").unwrap();
    let mut got = Vec::new();
    let mut saw_ready_first = None;
    within(LIMIT, "500 echoes", async {
        while got.len() < 500 {
            match worker.next_event().await.expect("event") {
                WorkerEvent::Ready => saw_ready_first = Some(got.is_empty()),
                WorkerEvent::Message { data, .. } => {
                    got.push(u32::from_le_bytes(data.try_into().unwrap()))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(saw_ready_first, Some(true), "Ready comes before any reply");
    assert_eq!(got, (0..500).collect::<Vec<_>>());
    let exit = within(LIMIT, "close", worker.close(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        (exit.code, exit.signal, exit.initiated_by),
        (Some(0), None, Initiator::Close)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_with_fds_both_ways_every_fd_working() {
    let supervisor = Supervisor::new().unwrap();
    let mut worker = supervisor
        .spawn(WorkerSpec::program(test_worker()).arg("echo"))
        .await
        .unwrap();
    let (mut read_end, write_end) = std::io::pipe().unwrap();
    let write_end = OwnedFd::from(write_end);
    let poster = async {
        for i in 0..1000u32 {
            // Each message carries its own duplicate of the pipe's write end.
            let fd = write_end.try_clone().unwrap();
            worker
                .post_message(i.to_le_bytes().to_vec(), vec![fd])
                .await
                .unwrap();
        }
    };
    let mut received = 0u32;
    let mut events = Vec::new();
    within(LIMIT, "posting 1000 messages with fds", poster).await;
    drop(write_end);
    within(LIMIT, "1000 echoes with fds", async {
        while received < 1000 {
            match worker.next_event().await.expect("event") {
                WorkerEvent::Ready => {}
                WorkerEvent::Message { data, fds } => {
                    assert_eq!(fds.len(), 1, "message {received} lost its fd");
                    assert_eq!(
                        u32::from_le_bytes(data.clone().try_into().unwrap()),
                        received
                    );
                    let mut pipe = std::fs::File::from(fds.into_iter().next().unwrap());
                    pipe.write_all(&data).unwrap();
                    received += 1;
                }
                other => events.push(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(events.is_empty(), "{events:?}");
    let mut all = vec![0u8; 4000];
    read_end.read_exact(&mut all).unwrap();
    let numbers: Vec<u32> = all
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(numbers, (0..1000).collect::<Vec<_>>());
    within(LIMIT, "close", worker.close(Duration::from_secs(5)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_values_round_trip_and_a_mismatch_is_a_message_error() {
    let supervisor = Supervisor::new().unwrap();
    let mut worker = supervisor
        .spawn(WorkerSpec::program(test_worker()).arg("echo"))
        .await
        .unwrap();
    worker
        .post_value(&(7u32, "seven".to_string()), vec![])
        .await
        .unwrap();
    let event = within(LIMIT, "echo", async {
        loop {
            match worker.next_event().await.expect("event") {
                WorkerEvent::Ready => continue,
                event => break event,
            }
        }
    })
    .await;
    assert_eq!(
        event.decode::<(u32, String)>().unwrap().unwrap(),
        (7, "seven".to_string())
    );
    let mismatch = event.decode::<Vec<u64>>().unwrap().unwrap_err();
    assert!(
        mismatch.to_string().contains("does not decode"),
        "{mismatch}"
    );
    within(LIMIT, "close", worker.close(Duration::from_secs(5)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_an_error_when_the_spec_says_so() {
    let supervisor = Supervisor::new().unwrap();
    // A program that never reads its channel, never becomes Ready, and
    // never closes the channel either (so that no post fails for that).
    let worker = supervisor
        .spawn(
            WorkerSpec::program("/bin/sleep")
                .arg("60")
                .queue_limit(4, WhenFull::Error),
        )
        .await
        .unwrap();
    for _ in 0..4 {
        worker.post_message(b"x".to_vec(), vec![]).await.unwrap();
    }
    let err = worker
        .post_message(b"x".to_vec(), vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(err, arbor_supervisor::Error::QueueFull { limit: 4, .. }),
        "{err}"
    );
    within(LIMIT, "terminate", worker.terminate())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_output_arrives_line_by_line_before_the_exit() {
    let supervisor = Supervisor::new().unwrap();
    let mut worker = supervisor
        .spawn(
            WorkerSpec::program(test_worker())
                .arg("chatty")
                .stdout(arbor_supervisor::Output::Capture)
                .stderr(arbor_supervisor::Output::Capture),
        )
        .await
        .unwrap();
    let exit = within(LIMIT, "close", worker.close(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(exit.code, Some(0));
    let mut lines = Vec::new();
    within(LIMIT, "events", async {
        while let Some(event) = worker.next_event().await {
            match event {
                WorkerEvent::Output { stream, line } => {
                    lines.push((stream, String::from_utf8(line).unwrap()))
                }
                WorkerEvent::Exit(_) => break,
                _ => {}
            }
        }
    })
    .await;
    use arbor_supervisor::Stream::{Stderr, Stdout};
    assert!(lines.contains(&(Stderr, "to stderr".into())), "{lines:?}");
    let stdout: Vec<_> = lines
        .iter()
        .filter(|(s, _)| *s == Stdout)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(stdout, ["line 1", "line 2", "line 3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posters_each_keep_their_order() {
    let supervisor = Supervisor::new().unwrap();
    let mut worker = supervisor
        .spawn(
            WorkerSpec::program(test_worker())
                .arg("echo")
                .queue_limit(16, WhenFull::Wait),
        )
        .await
        .unwrap();
    // Four posters at once, some messages before Ready (queued), most after
    // (fast path or queue, whichever is free).
    within(LIMIT, "posting", async {
        tokio::join!(
            post_numbered(0, &worker),
            post_numbered(1, &worker),
            post_numbered(2, &worker),
            post_numbered(3, &worker)
        );
    })
    .await;
    let mut next = [0u16; 4];
    within(LIMIT, "2000 echoes", async {
        while next.iter().map(|&n| u32::from(n)).sum::<u32>() < 2000 {
            match worker.next_event().await.expect("event") {
                WorkerEvent::Message { data, .. } => {
                    let (task, i) = (data[0] as usize, u16::from_le_bytes([data[1], data[2]]));
                    assert_eq!(i, next[task], "poster {task} out of order");
                    next[task] += 1;
                }
                WorkerEvent::Ready => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    within(LIMIT, "close", worker.close(Duration::from_secs(5)))
        .await
        .unwrap();
}

/// Posts 500 messages `[task, i as u16 LE]` in order.
async fn post_numbered(task: u8, worker: &arbor_supervisor::Worker) {
    for i in 0..500u16 {
        let mut data = vec![task];
        data.extend_from_slice(&i.to_le_bytes());
        worker.post_message(data, vec![]).await.unwrap();
    }
}

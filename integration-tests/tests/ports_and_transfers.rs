//! Ports (the standard's MessageChannel) and Transfers (sealed memfds that
//! move instead of being copied), between real worker processes: the
//! "direct channels" example, hostile port and transfer fds, and no fd
//! leaked in the supervisor.

use std::os::fd::OwnedFd;
use std::time::Duration;

use arbor_integration_tests::{next_message, open_fd_count, test_worker, within};
use arbor_protocol::transfer::TransferError;
use arbor_protocol::{MessagePort, Transfer, TransferBuffer};
use arbor_supervisor::{Supervisor, Worker, WorkerEvent, WorkerSpec};

const LIMIT: Duration = Duration::from_secs(20);

/// The fd census needs the process to itself: these tests take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn spawn(supervisor: &Supervisor, mode: &str) -> Worker {
    supervisor
        .spawn(WorkerSpec::program(test_worker()).arg(mode))
        .await
        .unwrap()
}

/// Every Message event until one starts with `prefix` (which is returned
/// with how many came before it).
async fn messages_until(worker: &mut Worker, prefix: &str) -> (String, usize) {
    within(LIMIT, prefix, async {
        let mut before = 0;
        loop {
            match worker.next_event().await.expect("event") {
                WorkerEvent::Message { data, .. } => {
                    let text = String::from_utf8_lossy(&data).into_owned();
                    if text.starts_with(prefix) {
                        return (text, before);
                    }
                    before += 1;
                }
                WorkerEvent::Ready | WorkerEvent::Output { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_talk_through_a_port_without_the_parent() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let supervisor = Supervisor::new().unwrap();
    let mut ping = spawn(&supervisor, "port-ping").await;
    let mut echo = spawn(&supervisor, "port-echo").await;
    let (a, b) = MessagePort::pair().unwrap();
    // One end goes to the pinger first: its first messages (a window of 64)
    // wait in the socket until the echo worker takes the other end.
    ping.post_message(b"10000".to_vec(), vec![a.into_fd()])
        .await
        .unwrap();
    echo.post_message(b"port".to_vec(), vec![b.into_fd()])
        .await
        .unwrap();
    // The parent's channels carry nothing meanwhile: the first message from
    // either worker is its final report.
    let (done, before) = messages_until(&mut ping, "done").await;
    assert_eq!((done.as_str(), before), ("done 10000", 0));
    let (echoed, before) = messages_until(&mut echo, "echoed").await;
    assert_eq!((echoed.as_str(), before), ("echoed 10000", 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bogus_port_is_refused_and_the_worker_goes_on() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let supervisor = Supervisor::new().unwrap();
    let mut ping = spawn(&supervisor, "port-ping").await;
    let echo = spawn(&supervisor, "port-echo").await;
    let (reader, _writer) = std::io::pipe().unwrap();
    ping.post_message(b"1".to_vec(), vec![OwnedFd::from(reader)])
        .await
        .unwrap();
    let (reply, _) = messages_until(&mut ping, "error").await;
    assert!(reply.contains("not a port"), "{reply}");
    // The same worker still takes a real port.
    let (a, b) = MessagePort::pair().unwrap();
    ping.post_message(b"3".to_vec(), vec![a.into_fd()])
        .await
        .unwrap();
    echo.post_message(b"port".to_vec(), vec![b.into_fd()])
        .await
        .unwrap();
    assert_eq!(messages_until(&mut ping, "done").await.0, "done 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_moves_a_sealed_buffer_and_leaks_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let supervisor = Supervisor::new().unwrap();
    let mut summer = spawn(&supervisor, "transfer-sum").await;
    let warm = Transfer::from_bytes(&[1, 2, 3]).unwrap();
    summer.post_transfer(b"warm".to_vec(), warm).await.unwrap();
    assert_eq!(messages_until(&mut summer, "sum").await.0, "sum 6 len 3");
    let baseline = open_fd_count();

    let mut buffer = TransferBuffer::new(1 << 20).unwrap();
    for (i, byte) in buffer.as_mut_slice().iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let expected: u64 = (0..1u64 << 20).map(|i| i % 251).sum();
    let transfer = buffer.seal().unwrap();
    // post_transfer takes the Transfer by value: it is gone from here.
    summer
        .post_transfer(b"mib".to_vec(), transfer)
        .await
        .unwrap();
    let (reply, _) = messages_until(&mut summer, "sum").await;
    assert_eq!(reply, format!("sum {expected} len {}", 1 << 20));
    assert_eq!(open_fd_count(), baseline, "the supervisor kept an fd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsealed_memfd_from_a_worker_is_refused_and_only_that_is_lost() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let supervisor = Supervisor::new().unwrap();
    let mut hostile = spawn(&supervisor, "unsealed").await;
    hostile
        .post_message(b"unsealed".to_vec(), vec![])
        .await
        .unwrap();
    let mut fds = within(LIMIT, "the hostile memfd", async {
        loop {
            match hostile.next_event().await.expect("event") {
                WorkerEvent::Message { fds, .. } => return fds,
                WorkerEvent::Ready => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(fds.len(), 1);
    match Transfer::from_fd(fds.remove(0)) {
        Err(TransferError::NotSealed { .. }) => {}
        other => panic!("an unsealed memfd was accepted: {other:?}"),
    }
    // The channel and the worker go on.
    hostile
        .post_message(b"still here".to_vec(), vec![])
        .await
        .unwrap();
    assert_eq!(next_message(&mut hostile).await.0, b"still here");
}

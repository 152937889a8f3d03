use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arbor_protocol::nonblocking::AsyncChannel;
use arbor_protocol::Message;

use super::*;

/// Every wait in these tests ends by then, or the test fails.
const LIMIT: Duration = Duration::from_secs(5);

/// An outbox and its writer task over a socketpair; the other end
/// stands for the worker.
struct Harness {
    outbox: Arc<Outbox>,
    commands: mpsc::Sender<WriterCommand>,
    ready: watch::Sender<bool>,
    link: Arc<TreeLink>,
    worker: AsyncChannel,
}

fn harness(queue_limit: usize) -> Harness {
    let (ours, worker) = AsyncChannel::pair().expect("socketpair");
    let (sender, _) = ours.into_split();
    let outbox = Arc::new(Outbox::new(sender, queue_limit));
    let (commands, commands_rx) = mpsc::channel(16);
    let (ready, ready_rx) = watch::channel(false);
    let (link, frames) = TreeLink::new();
    tokio::spawn(write_loop(
        Arc::clone(&outbox),
        commands_rx,
        ready_rx,
        Arc::clone(&link),
        frames,
    ));
    Harness {
        outbox,
        commands,
        ready,
        link,
        worker,
    }
}

fn message(data: &str) -> Outbound {
    Outbound {
        kind: OutKind::Message,
        data: data.as_bytes().to_vec(),
        fds: Vec::new(),
    }
}

impl Harness {
    async fn post(&self, data: &str, when_full: WhenFull) -> Result<(), PostError> {
        self.outbox.post(message(data), when_full).await
    }

    /// The next frame the worker reads.
    async fn next(&mut self) -> (Frame, Vec<OwnedFd>) {
        tokio::time::timeout(LIMIT, self.worker.recv())
            .await
            .expect("a frame within the limit")
            .expect("a well-formed frame")
    }

    /// The next frame the worker reads, which must be a Message: its text.
    async fn next_message(&mut self) -> String {
        match self.next().await {
            (Frame::Message(Message { data }), _) => String::from_utf8(data).expect("text"),
            (other, _) => panic!("expected a Message, got {other:?}"),
        }
    }

    /// Lets the writer task run, then checks that the worker has nothing to read.
    async fn nothing_sent(&self) {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let mut byte = [0u8; 1];
        let read = self.worker.socket().try_read(&mut byte);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the worker could read: {read:?}"
        );
    }

    /// Marks the worker Ready and waits until the writer has written what
    /// was queued and opened the fast path.
    async fn make_ready(&self) {
        self.ready.send(true).expect("the writer task runs");
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !self.outbox.open.load(Ordering::Acquire) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fast path never opened"
            );
            tokio::task::yield_now().await;
        }
    }
}

/// Whether `future` is still pending after one poll.
async fn still_pending<F: Future + Unpin>(future: &mut F) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx).is_pending())).await
}

#[tokio::test]
async fn posts_before_ready_wait_then_go_out_in_order() {
    let mut h = harness(8);
    for text in ["a", "b", "c"] {
        h.post(text, WhenFull::Wait).await.expect("queued");
    }
    h.nothing_sent().await;
    h.ready.send(true).expect("the writer task runs");
    for text in ["a", "b", "c"] {
        assert_eq!(h.next_message().await, text);
    }
}

#[tokio::test]
async fn posts_before_and_right_after_ready_arrive_in_posting_order() {
    let mut h = harness(64);
    for n in 0..20 {
        h.post(&n.to_string(), WhenFull::Wait)
            .await
            .expect("queued");
    }
    // Posted while the writer may still be writing the first ones.
    h.ready.send(true).expect("the writer task runs");
    for n in 20..40 {
        h.post(&n.to_string(), WhenFull::Wait)
            .await
            .expect("posted");
    }
    h.make_ready().await;
    // And on the fast path, once it is open.
    for n in 40..60 {
        h.post(&n.to_string(), WhenFull::Wait)
            .await
            .expect("posted");
    }
    for n in 0..60 {
        assert_eq!(h.next_message().await, n.to_string());
    }
}

#[tokio::test]
async fn a_message_goes_out_with_its_fds_and_its_kind() {
    let mut h = harness(8);
    h.make_ready().await;
    let fd = OwnedFd::from(std::fs::File::open("/dev/null").expect("open /dev/null"));
    let posts = [
        (OutKind::Message, vec![OutFd::Owned(fd)]),
        (OutKind::Request(7), Vec::new()),
        (OutKind::Reply(8), Vec::new()),
    ];
    for (kind, fds) in posts {
        let item = Outbound {
            kind,
            data: b"x".to_vec(),
            fds,
        };
        h.outbox.post(item, WhenFull::Wait).await.expect("posted");
    }
    let (frame, fds) = h.next().await;
    assert_eq!(
        frame,
        Frame::Message(Message {
            data: b"x".to_vec()
        })
    );
    assert_eq!(fds.len(), 1);
    let request = Request {
        id: 7,
        data: b"x".to_vec(),
    };
    assert_eq!(h.next().await.0, Frame::Request(request));
    let reply = Request {
        id: 8,
        data: b"x".to_vec(),
    };
    assert_eq!(h.next().await.0, Frame::Reply(reply));
}

#[tokio::test]
async fn when_full_error_fails_at_the_queue_bound() {
    let mut h = harness(2);
    h.post("a", WhenFull::Error).await.expect("queued");
    h.post("b", WhenFull::Error).await.expect("queued");
    assert!(matches!(
        h.post("c", WhenFull::Error).await,
        Err(PostError::Full)
    ));
    // The refused post is not sent; the queue drains and takes posts again.
    h.make_ready().await;
    assert_eq!(h.next_message().await, "a");
    assert_eq!(h.next_message().await, "b");
    h.post("d", WhenFull::Error).await.expect("room again");
    assert_eq!(h.next_message().await, "d");
}

#[tokio::test]
async fn when_full_wait_waits_for_room_at_the_queue_bound() {
    let mut h = harness(1);
    h.post("a", WhenFull::Wait).await.expect("queued");
    let outbox = Arc::clone(&h.outbox);
    let second = outbox.post(message("b"), WhenFull::Wait);
    tokio::pin!(second);
    assert!(still_pending(&mut second).await);
    assert!(still_pending(&mut second).await);
    h.ready.send(true).expect("the writer task runs");
    tokio::time::timeout(LIMIT, second)
        .await
        .expect("room within the limit")
        .expect("queued");
    assert_eq!(h.next_message().await, "a");
    assert_eq!(h.next_message().await, "b");
}

#[tokio::test]
async fn close_goes_out_after_every_message_posted_before_it_and_then_posts_are_gone() {
    let mut h = harness(8);
    h.post("a", WhenFull::Wait).await.expect("queued");
    h.post("b", WhenFull::Wait).await.expect("queued");
    // Before Ready, Close waits for Ready too.
    h.commands
        .send(WriterCommand::Close)
        .await
        .expect("the writer task runs");
    h.nothing_sent().await;
    h.ready.send(true).expect("the writer task runs");
    assert_eq!(h.next_message().await, "a");
    assert_eq!(h.next_message().await, "b");
    assert_eq!(h.next().await.0, Frame::Close);
    assert!(matches!(
        h.post("c", WhenFull::Wait).await,
        Err(PostError::Gone)
    ));
    // A second Close sends nothing more.
    h.commands
        .send(WriterCommand::Close)
        .await
        .expect("the writer task runs");
    h.nothing_sent().await;
}

#[tokio::test]
async fn a_post_to_a_worker_whose_socket_closed_is_gone() {
    let h = harness(8);
    h.make_ready().await;
    drop(h.worker);
    for text in ["a", "b"] {
        assert!(matches!(
            h.outbox.post(message(text), WhenFull::Wait).await,
            Err(PostError::Gone)
        ));
    }
}

#[tokio::test]
async fn pongs_and_tree_frames_go_out_before_ready_while_messages_wait() {
    let mut h = harness(8);
    h.post("a", WhenFull::Wait).await.expect("queued");
    h.commands
        .send(WriterCommand::Pong(5))
        .await
        .expect("the writer task runs");
    assert_eq!(h.next().await.0, Frame::Pong(5));
    h.link.send(Frame::CloseChild(9), Vec::new());
    assert_eq!(h.next().await.0, Frame::CloseChild(9));
    h.nothing_sent().await;
    h.ready.send(true).expect("the writer task runs");
    assert_eq!(h.next_message().await, "a");
}

#[tokio::test]
async fn a_post_waiting_for_room_fails_as_gone_once_the_outbox_ends() {
    let h = harness(1);
    h.post("a", WhenFull::Wait).await.expect("queued");
    let outbox = Arc::clone(&h.outbox);
    let waiting = outbox.post(message("b"), WhenFull::Wait);
    tokio::pin!(waiting);
    assert!(still_pending(&mut waiting).await);
    h.outbox.end();
    let waited = tokio::time::timeout(LIMIT, waiting)
        .await
        .expect("the waiting post ends within the limit");
    assert!(matches!(waited, Err(PostError::Gone)), "{waited:?}");
    for when_full in [WhenFull::Wait, WhenFull::Error] {
        assert!(matches!(h.post("c", when_full).await, Err(PostError::Gone)));
    }
}

#[tokio::test]
async fn the_end_drops_what_was_queued_and_closes_its_fds() {
    let h = harness(8);
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let item = Outbound {
        kind: OutKind::Message,
        data: b"never sent".to_vec(),
        fds: vec![OutFd::Owned(OwnedFd::from(writer))],
    };
    h.outbox.post(item, WhenFull::Wait).await.expect("queued");
    h.outbox.end();
    // The pipe's read end sees EOF once the queued write end is closed.
    let eof = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        std::io::Read::read(&mut reader, &mut [0u8; 1])
    });
    let read = tokio::time::timeout(LIMIT, eof)
        .await
        .expect("the queued fd closed within the limit")
        .expect("the reading task");
    assert_eq!(read.expect("a read"), 0, "EOF: the queued fd was closed");
    h.nothing_sent().await;
}

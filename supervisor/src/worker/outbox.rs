//! The way from `post_message` to a worker's socket.
//!
//! A post takes the fast path when it can: the worker is Ready, nothing is
//! queued, and nobody else is writing; then the caller's own task writes the
//! frame, with no hand-off to another task (a hand-off can mean waking
//! another thread, which costs more than the write). Otherwise the post is
//! queued (bounded, waiting or failing at the bound as the spec says) and
//! the writer task sends it.
//!
//! Order is kept because the queue is only ever drained by someone holding
//! the writer lock, and the fast path is taken only under that lock with the
//! queue empty. Messages posted before Ready wait in the queue; the writer
//! task flushes them when Ready arrives and only then opens the fast path.
//! Close goes out after every message posted before it.
//!
//! Once nothing can reach the worker (its channel broke or closed, or it
//! exited) the outbox **ends**: a post waiting for room in the queue, and
//! any later post, fails as gone at once, and what was queued is dropped
//! with its fds. Without that, a post waiting on the full queue of a
//! stopped worker that was then killed would wait forever.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arbor_protocol::nonblocking::AsyncSender;
use arbor_protocol::{Connection, Frame, PortOpen, Request};
use tokio::sync::{mpsc, watch, Mutex, Notify};

use crate::link::{TreeFrame, TreeLink};
use crate::spec::WhenFull;

/// What a posted item becomes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutKind {
    Message,
    Request(u64),
    Reply(u64),
    /// A Connection frame with this id; the data is the socket's name.
    Connection(u64),
    /// A Port frame with this id; the data is the origin.
    Port(u64),
}

/// An fd a post sends: given to the post, or shared with a caller that
/// keeps it open after the send (a handed-off connection, which arbord holds
/// until the worker's ack: shared, not duplicated, it costs no `dup` and no
/// second `close`).
#[derive(Debug)]
pub(crate) enum OutFd {
    Owned(OwnedFd),
    Shared(Arc<OwnedFd>),
}

impl AsFd for OutFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            OutFd::Owned(fd) => fd.as_fd(),
            OutFd::Shared(fd) => fd.as_fd(),
        }
    }
}

/// One posted message.
pub(crate) struct Outbound {
    pub(crate) kind: OutKind,
    pub(crate) data: Vec<u8>,
    pub(crate) fds: Vec<OutFd>,
}

impl Outbound {
    /// Queues (or, with fds or a large body, writes) this item on `sender`.
    async fn feed(self, sender: &mut AsyncSender) -> arbor_protocol::Result<()> {
        let fds: Vec<_> = self.fds.iter().map(|fd| fd.as_fd()).collect();
        match self.kind {
            OutKind::Message => sender.feed_bytes(&self.data, &fds).await,
            OutKind::Request(id) => {
                sender
                    .feed(
                        &Frame::Request(Request {
                            id,
                            data: self.data,
                        }),
                        &fds,
                    )
                    .await
            }
            OutKind::Reply(id) => {
                sender
                    .feed(
                        &Frame::Reply(Request {
                            id,
                            data: self.data,
                        }),
                        &fds,
                    )
                    .await
            }
            OutKind::Connection(id) => {
                let socket = String::from_utf8_lossy(&self.data).into_owned();
                sender
                    .feed(&Frame::Connection(Connection { id, socket }), &fds)
                    .await
            }
            OutKind::Port(id) => {
                let origin = String::from_utf8_lossy(&self.data).into_owned();
                sender
                    .feed(&Frame::Port(PortOpen { id, origin }), &fds)
                    .await
            }
        }
    }
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Outbound({} bytes, {} fds)",
            self.data.len(),
            self.fds.len()
        )
    }
}

/// What the driver asks the writer task to send.
#[derive(Debug)]
pub(crate) enum WriterCommand {
    Pong(u64),
    Close,
}

/// Why a post was not accepted.
#[derive(Debug)]
pub(crate) enum PostError {
    Full,
    Gone,
}

#[derive(Debug)]
struct Writer {
    sender: AsyncSender,
    queue: mpsc::Receiver<Outbound>,
    /// The Close frame went out: nothing more is sent.
    closed: bool,
    /// The channel broke: nothing more can be sent.
    failed: bool,
    /// The outbox's end, set here when the channel breaks.
    ended: Arc<watch::Sender<bool>>,
}

impl Writer {
    /// Writes every queued message, then flushes.
    async fn drain(&mut self) {
        while !self.failed {
            let Ok(post) = self.queue.try_recv() else {
                break;
            };
            let fed = post.feed(&mut self.sender).await;
            self.check(fed);
        }
        if !self.failed {
            let flushed = self.sender.flush().await;
            self.check(flushed);
        }
    }

    async fn send(&mut self, frame: &Frame) {
        self.send_with_fds(frame, &[]).await
    }

    async fn send_with_fds(&mut self, frame: &Frame, fds: &[OwnedFd]) {
        if !self.failed {
            let fds: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
            let sent = self.sender.send(frame, &fds).await;
            self.check(sent);
        }
    }

    fn check(&mut self, result: arbor_protocol::Result<()>) {
        match result {
            Ok(()) => {}
            // A frame refused by a limit changes nothing on the channel
            // (post_message checks the limits first, so this is rare).
            Err(
                arbor_protocol::Error::PayloadTooLarge { .. }
                | arbor_protocol::Error::TooManyFds { .. },
            ) => {}
            Err(e) if !e.is_fatal() => {}
            // The worker is gone or its channel broke; the driver reports it.
            Err(_) => {
                self.failed = true;
                self.ended.send_replace(true);
            }
        }
    }

    /// Nothing more goes out: the queue takes no more posts, and what it
    /// holds is dropped (its fds closed).
    fn discard(&mut self) {
        self.failed = true;
        self.queue.close();
        while self.queue.try_recv().is_ok() {}
    }
}

/// The shared half of a worker's outgoing path.
#[derive(Debug)]
pub(crate) struct Outbox {
    writer: Mutex<Writer>,
    queue: mpsc::Sender<Outbound>,
    queue_limit: usize,
    wake: Notify,
    /// Set once the messages queued before Ready are written.
    open: AtomicBool,
    /// Set once nothing can reach the worker any more.
    ended: Arc<watch::Sender<bool>>,
}

impl Outbox {
    pub(crate) fn new(sender: AsyncSender, queue_limit: usize) -> Self {
        let (queue, receiver) = mpsc::channel(queue_limit);
        let ended = Arc::new(watch::Sender::new(false));
        Self {
            writer: Mutex::new(Writer {
                sender,
                queue: receiver,
                closed: false,
                failed: false,
                ended: Arc::clone(&ended),
            }),
            queue,
            queue_limit,
            wake: Notify::new(),
            open: AtomicBool::new(false),
            ended,
        }
    }

    /// Nothing can reach the worker any more (its channel closed, or it
    /// exited): every post waiting for room fails as gone now, and so does
    /// every later one; the writer drops what was queued.
    pub(crate) fn end(&self) {
        self.ended.send_replace(true);
    }

    /// Posts one message: written at once on the fast path, else queued.
    pub(crate) async fn post(&self, item: Outbound, when_full: WhenFull) -> Result<(), PostError> {
        if *self.ended.borrow() {
            return Err(PostError::Gone);
        }
        if self.open.load(Ordering::Acquire) && self.queue.capacity() == self.queue_limit {
            if let Ok(mut writer) = self.writer.try_lock() {
                if writer.queue.is_empty() {
                    if writer.closed || writer.failed {
                        return Err(PostError::Gone);
                    }
                    let mut sent = item.feed(&mut writer.sender).await;
                    if sent.is_ok() {
                        sent = writer.sender.flush().await;
                    }
                    writer.check(sent);
                    return if writer.failed {
                        Err(PostError::Gone)
                    } else {
                        Ok(())
                    };
                }
            }
        }
        match when_full {
            WhenFull::Wait => {
                let mut ended = self.ended.subscribe();
                tokio::select! {
                    sent = self.queue.send(item) => sent.map_err(|_| PostError::Gone)?,
                    () = until_ended(&mut ended) => return Err(PostError::Gone),
                }
            }
            WhenFull::Error => self.queue.try_send(item).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => PostError::Full,
                mpsc::error::TrySendError::Closed(_) => PostError::Gone,
            })?,
        }
        self.wake.notify_one();
        Ok(())
    }
}

/// The writer task: flushes the queue when the worker is Ready and whenever
/// a post is queued, answers pings, sends Close after everything posted
/// before it, and sends the worker tree's frames (SpawnResult, ChildExit,
/// CloseChild) as they come, Ready or not. Once the outbox ends (or the
/// driver is gone) it drops what is still queued and returns.
pub(crate) async fn write_loop(
    outbox: Arc<Outbox>,
    mut commands: mpsc::Receiver<WriterCommand>,
    mut ready: watch::Receiver<bool>,
    link: Arc<TreeLink>,
    mut tree_frames: mpsc::UnboundedReceiver<TreeFrame>,
) {
    let mut tree_open = true;
    let mut ended = outbox.ended.subscribe();
    let mut is_ready = *ready.borrow();
    let mut close_pending = false;
    if is_ready {
        outbox.open.store(true, Ordering::Release);
    }
    loop {
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(WriterCommand::Pong(nonce)) => outbox.writer.lock().await.send(&Frame::Pong(nonce)).await,
                Some(WriterCommand::Close) if is_ready => close(&outbox).await,
                Some(WriterCommand::Close) => close_pending = true,
                None => break,
            },
            () = until_ended(&mut ended) => break,
            item = tree_frames.recv(), if tree_open => match item {
                Some(item) => {
                    let (frame, fds) = &*item;
                    outbox.writer.lock().await.send_with_fds(frame, fds).await;
                    link.written();
                }
                None => tree_open = false,
            },
            changed = ready.changed(), if !is_ready => {
                if changed.is_err() {
                    break;
                }
                is_ready = *ready.borrow();
                if is_ready {
                    let mut writer = outbox.writer.lock().await;
                    writer.drain().await;
                    // Open the fast path only now, under the lock, with the
                    // messages posted before Ready already written.
                    outbox.open.store(true, Ordering::Release);
                    drop(writer);
                    if close_pending {
                        close(&outbox).await;
                    }
                }
            }
            _ = outbox.wake.notified(), if is_ready => {
                let mut writer = outbox.writer.lock().await;
                if !writer.closed {
                    writer.drain().await;
                }
            }
        }
    }
    outbox.writer.lock().await.discard();
}

/// Returns once the outbox has ended (or can no longer: its sender gone).
async fn until_ended(ended: &mut watch::Receiver<bool>) {
    // wait_for's guard is not Send: it is dropped here, never held across
    // an await of the caller.
    let _ = ended.wait_for(|ended| *ended).await;
}

async fn close(outbox: &Outbox) {
    let mut writer = outbox.writer.lock().await;
    if writer.closed {
        return;
    }
    writer.drain().await;
    writer.send(&Frame::Close).await;
    writer.closed = true;
}

#[cfg(test)]
mod tests;

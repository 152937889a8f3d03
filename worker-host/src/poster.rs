//! [`Poster`]: the sending half of one channel, shared by the tasks that
//! post on it (a worker to its parent, a worker to its sub-worker).
//!
//! Its own module so that both the worker API ([`crate::nonblocking`]) and
//! the sub-worker handles ([`crate::tree`]) can use it without importing
//! each other.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use arbor_protocol::nonblocking::AsyncSender;
use arbor_protocol::{Frame, Request};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::error::Result;

/// Posts messages on one channel (to the parent, or from
/// [`SubWorker::poster`](crate::SubWorker::poster) to a sub-worker); cheap to
/// clone into tasks.
#[derive(Debug, Clone)]
pub struct Poster {
    sender: Arc<Mutex<AsyncSender>>,
}

impl Poster {
    pub(crate) fn new(sender: Arc<Mutex<AsyncSender>>) -> Self {
        Self { sender }
    }

    /// Posts a message with fds to the parent.
    pub async fn post_message(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        Ok(self.sender.lock().await.send_bytes(data, fds).await?)
    }

    /// Posts a message with a sealed [`Transfer`](arbor_protocol::Transfer),
    /// which moves (it is consumed) instead of being copied.
    pub async fn post_transfer(
        &self,
        data: &[u8],
        transfer: arbor_protocol::Transfer,
    ) -> Result<()> {
        let fd = transfer.into_fd();
        self.post_message(data, &[fd.as_fd()]).await
    }

    /// Posts `value` encoded with the wire codec.
    pub async fn post_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        Ok(self.sender.lock().await.send_value(value, &[]).await?)
    }

    /// Answers the parent's request `id` (see
    /// [`Incoming::request_id`](crate::nonblocking::Incoming::request_id)).
    pub async fn reply(&self, id: u64, data: &[u8]) -> Result<()> {
        self.send(&Frame::Reply(Request {
            id,
            data: data.to_vec(),
        }))
        .await
    }

    pub(crate) async fn send(&self, frame: &Frame) -> Result<()> {
        Ok(self.sender.lock().await.send(frame, &[]).await?)
    }

    /// Queues `frame` to go out with the next send or flush.
    pub(crate) async fn feed(&self, frame: &Frame) -> Result<()> {
        Ok(self.sender.lock().await.feed(frame, &[]).await?)
    }

    /// Writes out whatever is buffered.
    pub(crate) async fn flush(&self) -> Result<()> {
        Ok(self.sender.lock().await.flush().await?)
    }
}

//! Requests in flight to one worker. [`Worker::request`](super::Worker::request)
//! opens one and waits for the reply with its id; the driver hands each
//! Reply frame to the request it answers, so many can be in flight at once
//! and replies may come in any order.
//!
//! Once no reply can come (the worker's channel closed, or the worker
//! exited and what it sent before was read), the driver ends every request
//! still waiting, and any opened later ends at once: none waits out its
//! timeout for a worker that is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The requests waiting, by id; `ended` once no reply can come.
#[derive(Debug, Default)]
struct Waiting {
    map: HashMap<u64, oneshot::Sender<Vec<u8>>>,
    ended: bool,
}

/// Requests in flight to one worker, by id.
#[derive(Debug, Default)]
pub(super) struct Pending {
    next_id: AtomicU64,
    waiting: Mutex<Waiting>,
}

impl Pending {
    /// A new request: its id, and where its reply will come. After
    /// [`Pending::end`] the receiver is closed at once (its sender dropped).
    pub(super) fn open(&self) -> (u64, oneshot::Receiver<Vec<u8>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, reply) = oneshot::channel();
        let mut waiting = self.lock();
        if !waiting.ended {
            waiting.map.insert(id, answer);
        }
        (id, reply)
    }

    /// No reply can come any more: every request waiting ends now (its
    /// receiver sees its sender dropped), and so does any opened later.
    pub(super) fn end(&self) {
        let mut waiting = self.lock();
        waiting.ended = true;
        waiting.map.clear();
    }

    /// Request `id` is over, answered or not.
    pub(super) fn close(&self, id: u64) {
        self.lock().map.remove(&id);
    }

    /// The worker's reply to request `id`. A reply nobody waits for any
    /// more (timed out) is dropped.
    pub(super) fn answer(&self, id: u64, data: Vec<u8>) {
        if let Some(waiter) = self.lock().map.remove(&id) {
            let _ = waiter.send(data);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // The map stays consistent even if a holder panicked mid-way.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reply_reaches_the_request_with_its_id_whatever_the_order() {
        let pending = Pending::default();
        let (first, mut first_reply) = pending.open();
        let (second, mut second_reply) = pending.open();
        assert_ne!(first, second);
        pending.answer(second, b"two".to_vec());
        pending.answer(first, b"one".to_vec());
        assert_eq!(first_reply.try_recv().unwrap(), b"one");
        assert_eq!(second_reply.try_recv().unwrap(), b"two");
    }

    #[test]
    fn a_reply_to_a_closed_request_is_dropped() {
        let pending = Pending::default();
        let (id, mut reply) = pending.open();
        pending.close(id);
        pending.answer(id, b"late".to_vec());
        assert!(reply.try_recv().is_err());
        assert!(pending.lock().map.is_empty());
    }

    #[test]
    fn end_fails_every_waiting_request_and_every_later_one_at_once() {
        use tokio::sync::oneshot::error::TryRecvError;
        let pending = Pending::default();
        let (_, mut waiting) = pending.open();
        pending.end();
        assert_eq!(waiting.try_recv(), Err(TryRecvError::Closed));
        let (late, mut later) = pending.open();
        assert_eq!(later.try_recv(), Err(TryRecvError::Closed));
        pending.answer(late, b"never".to_vec());
        assert!(pending.lock().map.is_empty());
    }
}

//! Requests in flight to one worker. [`Worker::request`](super::Worker::request)
//! opens one and waits for the reply with its id; the driver hands each
//! Reply frame to the request it answers, so many can be in flight at once
//! and replies may come in any order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

type Waiting = HashMap<u64, oneshot::Sender<Vec<u8>>>;

/// Requests in flight to one worker, by id.
#[derive(Debug, Default)]
pub(super) struct Pending {
    next_id: AtomicU64,
    waiting: Mutex<Waiting>,
}

impl Pending {
    /// A new request: its id, and where its reply will come.
    pub(super) fn open(&self) -> (u64, oneshot::Receiver<Vec<u8>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, reply) = oneshot::channel();
        self.lock().insert(id, answer);
        (id, reply)
    }

    /// Request `id` is over, answered or not.
    pub(super) fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The worker's reply to request `id`. A reply nobody waits for any
    /// more (timed out) is dropped.
    pub(super) fn answer(&self, id: u64, data: Vec<u8>) {
        if let Some(waiter) = self.lock().remove(&id) {
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
        assert!(pending.lock().is_empty());
    }
}

//! The event hub: every worker event goes out to every watcher (`watch`,
//! `events`, `logs -f`), and at shutdown each watcher hears the last of
//! them before arbord exits.
//!
//! A watcher is a [`Subscription`]: a bounded receiver (one that falls
//! behind is told how many it missed) and a place in the count of open
//! streams. [`EventHub::close`] says no event will follow; each stream
//! then sends what it still holds and ends, and [`EventHub::drained`]
//! waits for that, so the exits of a shutdown reach watchers instead of
//! dying with the process.

use std::time::Duration;

use arbor_protocol::control::Event;
use tokio::sync::{broadcast, watch};

/// Events a watcher may fall behind by before it is told it missed some.
const WATCH_BUFFER: usize = 1024;

/// Every watcher's source of events.
#[derive(Debug)]
pub(super) struct EventHub {
    events: broadcast::Sender<Event>,
    closed: watch::Sender<bool>,
    /// Streams still open.
    streams: watch::Sender<usize>,
}

impl EventHub {
    pub(super) fn new() -> Self {
        Self {
            events: broadcast::channel(WATCH_BUFFER).0,
            closed: watch::channel(false).0,
            streams: watch::channel(0).0,
        }
    }

    /// Tells watchers; nobody watching is fine.
    pub(super) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Every event from now on, until [`EventHub::close`].
    pub(super) fn subscribe(&self) -> Subscription {
        self.streams.send_modify(|n| *n += 1);
        Subscription {
            events: self.events.subscribe(),
            closed: self.closed.subscribe(),
            streams: self.streams.clone(),
        }
    }

    /// No event follows (every worker is gone): each stream sends what it
    /// holds and ends.
    pub(super) fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Waits, at most `limit`, until every stream has ended; `false` if
    /// some were still sending then (a watcher that does not read).
    pub(super) async fn drained(&self, limit: Duration) -> bool {
        let mut streams = self.streams.subscribe();
        let drained = tokio::time::timeout(limit, streams.wait_for(|n| *n == 0)).await;
        drained.is_ok()
    }
}

/// One watcher's events.
#[derive(Debug)]
pub(super) struct Subscription {
    events: broadcast::Receiver<Event>,
    closed: watch::Receiver<bool>,
    streams: watch::Sender<usize>,
}

/// What a watcher gets next.
pub(super) enum Next {
    Event(Event),
    /// It fell behind: this many events were dropped for it.
    Missed(u64),
    /// No event follows.
    End,
}

impl Subscription {
    /// The next event; after [`EventHub::close`], those still held, then
    /// [`Next::End`].
    pub(super) async fn next(&mut self) -> Next {
        loop {
            if *self.closed.borrow() {
                return match self.events.try_recv() {
                    Ok(event) => Next::Event(event),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => Next::Missed(n),
                    Err(_) => Next::End,
                };
            }
            tokio::select! {
                received = self.events.recv() => return match received {
                    Ok(event) => Next::Event(event),
                    Err(broadcast::error::RecvError::Lagged(n)) => Next::Missed(n),
                    Err(broadcast::error::RecvError::Closed) => Next::End,
                },
                // Closed (or the hub gone): drain what is held, above.
                _ = self.closed.changed() => {
                    if !*self.closed.borrow() {
                        return Next::End;
                    }
                }
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.streams.send_modify(|n| *n -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_protocol::control::EventKind;

    fn event(worker: u64) -> Event {
        Event {
            worker,
            name: "w".into(),
            parent: None,
            kind: EventKind::Ready,
        }
    }

    #[tokio::test]
    async fn a_closed_hub_still_delivers_what_each_stream_holds_then_ends() {
        let hub = EventHub::new();
        let mut subscription = hub.subscribe();
        hub.emit(event(1));
        hub.emit(event(2));
        hub.close();
        for id in [1, 2] {
            assert!(matches!(subscription.next().await, Next::Event(e) if e.worker == id));
        }
        assert!(matches!(subscription.next().await, Next::End));
        assert!(
            !hub.drained(Duration::from_millis(10)).await,
            "one stream is still open"
        );
        drop(subscription);
        assert!(hub.drained(Duration::from_millis(10)).await);
    }
}

//! Handoff: arbord accepts on a pool socket and hands each connection to a
//! replica in a Connection frame, as node's cluster module does in its
//! round-robin mode.
//!
//! The rules (WIRE.md §3):
//! - at most [`WINDOW`] handoffs in flight per replica: the next waits for
//!   one of the replica's ConnectionAcks (pipelined, so a burst of short
//!   connections does not wait an ack round trip each);
//! - arbord keeps its own copy of each connection until the ack, so a
//!   refusal, or the replica's death before it answered, sends the same
//!   connection to another replica instead of losing it;
//! - only ready replicas that are not being retired get connections; with
//!   none, arbord stops accepting and connections wait in the kernel's
//!   backlog (never refused);
//! - the accept loop is its own task: it never holds up the control plane;
//!   it accepts in batches, until the listener would block or the free
//!   room in the replicas' windows is taken, so a burst of connections
//!   costs one wake-up, not one each.
//!
//! The rules are `State`'s, bookkeeping with no I/O (unit-tested below);
//! [`Dispatcher`] is the I/O around it: the accept loop, the posts, the
//! wake-ups.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use std::os::fd::AsFd;

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::HandoffPolicy;
use crate::Worker;

/// How long a connection every replica refused waits before it is offered again.
const RETRY_REFUSED: Duration = Duration::from_millis(50);
/// Offers of one connection to every replica before it is given up (closed):
/// about 5 s of refusals (replicas without a connection handler).
const MAX_OFFERS: u32 = 100;

/// Connections handed to one replica and not yet answered. One would make
/// every connection wait for the last one's ack (an ack round trip per
/// connection, half the rate of the kernel's own spreading with a new
/// connection per request); a few keep the replica fed while its acks come
/// back. A replica that stops reading holds at most this many (they go to
/// another replica if it dies, as before).
pub(crate) const WINDOW: usize = 8;

/// Connection ids, unique in the process (acks are routed by them).
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Accepts on one pool socket and hands the connections out.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    socket: String,
    state: Mutex<State>,
    changed: Notify,
}

/// The dispatch policy: which replica gets which connection, what waits,
/// what is out. No I/O and no clock here (time is passed in), so every rule
/// is unit-tested; `W` is a replica's handle (the worker to post to).
#[derive(Debug)]
struct State<W = Arc<Worker>> {
    policy: HandoffPolicy,
    replicas: BTreeMap<u64, Replica<W>>,
    /// Accepted, not yet handed out (or refused and waiting for another replica).
    queue: VecDeque<Pending>,
    /// Handed out, waiting for the ack: connection id → (replica, connection).
    in_flight: HashMap<u64, (u64, Pending)>,
    /// The replica that got the last connection (round-robin).
    last: u64,
    /// Stopped: a connection that comes back is closed, not queued.
    stopped: bool,
}

#[derive(Debug)]
struct Replica<W> {
    worker: W,
    /// Connections handed to it and not yet answered (at most [`WINDOW`]).
    in_flight: usize,
    /// Its last reported count of open connections.
    open: u32,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    /// The connection, shared with its post until the post is written:
    /// arbord's own hold on it until the ack (closed when both let go).
    fd: Arc<OwnedFd>,
    refused_by: Vec<u64>,
    /// When every replica refused it: when it is offered again.
    retry_at: Option<Instant>,
    /// How many times every replica refused it.
    rounds: u32,
}

impl Pending {
    fn new(id: u64, fd: OwnedFd) -> Self {
        Self {
            id,
            fd: Arc::new(fd),
            refused_by: Vec::new(),
            retry_at: None,
            rounds: 0,
        }
    }
}

/// What the accept loop waits for when no queued connection can go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// A replica has room and nothing is queued: accept up to this many
    /// connections (the room in the replicas' windows).
    Accept(usize),
    /// Every free replica refused the connection at the head of the queue:
    /// offer it again at this instant.
    RetryAt(Instant),
    /// No replica is free (or none is there): wait for a change, and leave
    /// new connections in the kernel's backlog.
    Wait,
}

impl<W> State<W> {
    fn new(policy: HandoffPolicy) -> Self {
        Self {
            policy,
            replicas: BTreeMap::new(),
            queue: VecDeque::new(),
            in_flight: HashMap::new(),
            last: 0,
            stopped: false,
        }
    }

    fn add(&mut self, id: u64, worker: W) {
        self.replicas.insert(
            id,
            Replica {
                worker,
                in_flight: 0,
                open: 0,
            },
        );
    }

    fn retire(&mut self, id: u64) {
        self.replicas.remove(&id);
    }

    fn gone(&mut self, id: u64) {
        self.replicas.remove(&id);
        let orphans: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (replica, _))| *replica == id)
            .map(|(connection, _)| *connection)
            .collect();
        for connection in orphans {
            if let Some((_, pending)) = self.in_flight.remove(&connection) {
                self.requeue(pending);
            }
        }
    }

    /// Puts a connection back at the head of the queue; after a stop there
    /// is nobody to give it to, and it is closed.
    fn requeue(&mut self, pending: Pending) {
        if !self.stopped {
            self.queue.push_front(pending);
        }
    }

    fn post_failed(&mut self, replica: u64, connection: u64) {
        match self.in_flight.remove(&connection) {
            Some((owner, mut pending)) if owner == replica => {
                pending.refused_by.push(replica);
                self.requeue(pending);
                self.answered(replica);
            }
            Some(other) => {
                self.in_flight.insert(connection, other);
            }
            None => {}
        }
    }

    /// One of `replica`'s connections was answered (or its post failed):
    /// room in its window.
    fn answered(&mut self, replica: u64) {
        if let Some(r) = self.replicas.get_mut(&replica) {
            r.in_flight = r.in_flight.saturating_sub(1);
        }
    }

    /// `None` for an ack of a connection that replica was not given
    /// (ignored); else whether the ack may let the accept loop go on where
    /// it waits: a queued connection may go out now, or the replica's
    /// window was full. (While some replica has room and nothing is queued
    /// the loop waits in accept, not for acks: waking it for each would
    /// cost a task wake-up per connection for nothing.)
    fn ack(&mut self, replica: u64, connection: u64, accepted: bool, open: u32) -> Option<bool> {
        match self.in_flight.remove(&connection) {
            Some((owner, mut pending)) if owner == replica => {
                if !accepted {
                    pending.refused_by.push(replica);
                    self.requeue(pending);
                }
                // Accepted: arbord's copy of the fd closes here.
            }
            Some(other) => {
                self.in_flight.insert(connection, other);
                return None;
            }
            None => return None,
        }
        let was_full = self
            .replicas
            .get(&replica)
            .is_some_and(|r| r.in_flight >= WINDOW);
        self.answered(replica);
        if let Some(r) = self.replicas.get_mut(&replica) {
            r.open = open;
        }
        Some(was_full || !self.queue.is_empty())
    }

    fn load(&mut self, replica: u64, open: u32) {
        if let Some(r) = self.replicas.get_mut(&replica) {
            r.open = open;
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.queue.clear();
    }

    /// A replica with room in its window for a connection `refused_by`
    /// these (or for any connection), by the policy.
    fn choose(&self, refused_by: &[u64]) -> Option<u64> {
        let free = self
            .replicas
            .iter()
            .filter(|(id, r)| r.in_flight < WINDOW && !refused_by.contains(id));
        match self.policy {
            HandoffPolicy::RoundRobin => {
                let mut free = free.map(|(id, _)| *id).peekable();
                let first = *free.peek()?;
                Some(free.find(|id| *id > self.last).unwrap_or(first))
            }
            // What it has open plus what is on its way to it; ties go
            // round-robin too: the first after the last one served.
            HandoffPolicy::LeastBusy => free
                .min_by_key(|(id, r)| (r.open as usize + r.in_flight, **id <= self.last, **id))
                .map(|(id, _)| *id),
        }
    }

    /// How many more connections the replicas' windows have room for,
    /// beyond those already queued: how many to accept now.
    fn room(&self) -> usize {
        let free: usize = self
            .replicas
            .values()
            .map(|r| WINDOW.saturating_sub(r.in_flight))
            .sum();
        free.saturating_sub(self.queue.len())
    }

    /// The connection at the head of the queue and a replica for it, if
    /// there is one.
    fn next_job(&mut self) -> Option<(u64, Pending)> {
        let replica = self
            .queue
            .front()
            .and_then(|pending| self.choose(&pending.refused_by))?;
        self.queue.pop_front().map(|pending| (replica, pending))
    }

    /// `pending` goes to `replica`, in its window until it answers; the
    /// replica's handle to post to, or `None` (and the connection back in
    /// the queue) if the replica is no longer there.
    fn hand(&mut self, replica: u64, pending: Pending) -> Option<&W> {
        if !self.replicas.contains_key(&replica) {
            self.requeue(pending);
            return None;
        }
        let id = pending.id;
        self.last = replica;
        self.in_flight.insert(id, (replica, pending));
        let r = self.replicas.get_mut(&replica)?;
        r.in_flight += 1;
        Some(&r.worker)
    }

    /// What to wait for when [`State::next_job`] found nothing to do.
    fn idle(&mut self, now: Instant) -> Idle {
        let retry_at = self
            .queue
            .front_mut()
            .map(|p| *p.retry_at.get_or_insert(now + RETRY_REFUSED));
        let free = self.choose(&[]).is_some();
        let refused = self.queue.front().is_some_and(|p| !p.refused_by.is_empty());
        match retry_at {
            None if free => Idle::Accept(self.room()),
            Some(at) if refused && free => Idle::RetryAt(at),
            _ => Idle::Wait,
        }
    }

    /// The retry time of the connection every replica refused came: it is
    /// offered to every replica again, or given up (`true`) after
    /// [`MAX_OFFERS`] rounds.
    fn offer_again(&mut self) -> bool {
        let given_up = self.queue.front_mut().is_some_and(|front| {
            front.refused_by.clear();
            front.retry_at = None;
            front.rounds += 1;
            front.rounds >= MAX_OFFERS
        });
        if given_up {
            self.queue.pop_front();
        }
        given_up
    }
}

/// The listening socket the dispatcher accepts on (TCP or Unix alike).
///
/// Accepted sockets are never registered with arbord's reactor (they only
/// pass through on their way to a replica), which a tokio listener would do
/// and undo for each: two `epoll_ctl` calls a connection saved.
#[derive(Debug)]
struct Listener(AsyncFd<OwnedFd>);

impl Listener {
    fn new(fd: OwnedFd) -> std::io::Result<Self> {
        let socket = socket2::Socket::from(fd);
        socket.set_nonblocking(true)?;
        Ok(Listener(crate::sys::async_readable(OwnedFd::from(socket))?))
    }

    /// Waits for a connection, then takes it and every other one already
    /// waiting, up to `max` (at least one): a burst costs one wake-up.
    /// An error with nothing taken is returned; after one taken, it is left
    /// for the next call to meet again.
    async fn accept_batch(&self, max: usize) -> std::io::Result<Vec<OwnedFd>> {
        let mut batch = Vec::new();
        loop {
            let mut guard = self.0.readable().await?;
            while batch.len() < max.max(1) {
                match guard.try_io(|fd| crate::sys::accept_nonblocking(fd.as_fd())) {
                    Ok(Ok(fd)) => batch.push(fd),
                    Ok(Err(e)) if batch.is_empty() => return Err(e),
                    Ok(Err(_)) => break,
                    // Would block: readiness cleared; nothing more waiting.
                    Err(_would_block) => break,
                }
            }
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }
}

impl Dispatcher {
    /// Starts accepting on `listener` (a listening socket) for pool socket
    /// `socket`; stops at [`Dispatcher::stop`].
    pub(crate) fn start(
        socket: &str,
        policy: HandoffPolicy,
        listener: OwnedFd,
    ) -> std::io::Result<Arc<Self>> {
        let listener = Listener::new(listener)?;
        let dispatcher = Arc::new(Dispatcher {
            socket: socket.to_string(),
            state: Mutex::new(State::new(policy)),
            changed: Notify::new(),
        });
        tokio::spawn(Arc::clone(&dispatcher).run(listener));
        Ok(dispatcher)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replica `id` is Ready: it may be given connections.
    pub(crate) fn add_replica(&self, id: u64, worker: Arc<Worker>) {
        self.state().add(id, worker);
        self.changed.notify_one();
    }

    /// Replica `id` is about to be closed: no more connections for it. One
    /// already handed to it is answered or comes back as usual.
    pub(crate) fn retire(&self, id: u64) {
        self.state().retire(id);
        self.changed.notify_one();
    }

    /// Replica `id` exited: what it had not acknowledged goes to another.
    pub(crate) fn replica_gone(&self, id: u64) {
        self.state().gone(id);
        self.changed.notify_one();
    }

    /// Posting the Connection frame to `replica` failed (it is gone): the
    /// connection goes to another.
    fn post_failed(&self, replica: u64, connection: u64) {
        self.state().post_failed(replica, connection);
        self.changed.notify_one();
    }

    /// Replica `replica` answered connection `connection`. An ack for a
    /// connection that replica was not given is ignored.
    pub(crate) fn ack(&self, replica: u64, connection: u64, accepted: bool, open: u32) {
        let wake = self.state().ack(replica, connection, accepted, open);
        if wake == Some(true) {
            self.changed.notify_one();
        }
    }

    /// Replica `replica` reports `open` connections. Nothing waits for
    /// this (it only orders the replicas that have room), so the accept
    /// loop is not woken.
    pub(crate) fn load(&self, replica: u64, open: u32) {
        self.state().load(replica, open);
    }

    /// Stops accepting; connections not yet handed out are closed (and so
    /// is one that comes back later, refused or from a replica that died).
    pub(crate) fn stop(&self) {
        self.state().stop();
        self.changed.notify_one();
    }

    async fn run(self: Arc<Self>, listener: Listener) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let idle = match self.next_step() {
                // The listener closes here; what is still queued was closed by stop().
                Step::Stop => return,
                Step::Hand(handed) => {
                    self.post(handed).await;
                    continue;
                }
                Step::Idle(idle) => idle,
            };
            match idle {
                Idle::Accept(room) => tokio::select! {
                    accepted = listener.accept_batch(room) => match accepted {
                        Ok(fds) => {
                            let mut state = self.state();
                            for fd in fds {
                                let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
                                state.queue.push_back(Pending::new(id, fd));
                            }
                        }
                        Err(e) => {
                            // EMFILE and the like: pause rather than spin.
                            tracing::warn!(socket = %self.socket, "accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    _ = &mut changed => {}
                },
                // Every free replica refused it (closing, or no handler):
                // offer it again when its retry time comes (a new replica
                // may take it sooner); given up after MAX_OFFERS rounds.
                Idle::RetryAt(retry_at) => tokio::select! {
                    _ = tokio::time::sleep_until(retry_at) => {
                        let given_up = self.state().offer_again();
                        if given_up {
                            tracing::warn!(socket = %self.socket, "every replica refused a connection {MAX_OFFERS} times: closed");
                        }
                    }
                    _ = &mut changed => {}
                },
                Idle::Wait => changed.await,
            }
        }
    }

    /// What the accept loop does next, decided under one lock: stop, hand
    /// the connection at the head of the queue to a replica (recorded as
    /// in flight to it), or wait as [`State::idle`] says.
    fn next_step(&self) -> Step {
        let mut state = self.state();
        if state.stopped {
            return Step::Stop;
        }
        if let Some((replica, pending)) = state.next_job() {
            let (id, connection) = (pending.id, Arc::clone(&pending.fd));
            // The replica was just chosen under this lock: it is there.
            if let Some(worker) = state.hand(replica, pending) {
                return Step::Hand(Handed {
                    replica,
                    id,
                    connection,
                    worker: Arc::clone(worker),
                });
            }
        }
        Step::Idle(state.idle(Instant::now()))
    }

    /// Sends a handed connection to its replica (arbord keeps its share of
    /// the fd until the ack). The post is tried here once: it is usually
    /// written at once (the worker's fast path, one `sendmsg`). One that
    /// would wait goes on in a task of its own: a replica slow to read its
    /// channel holds up only itself (its window fills), and a post is never
    /// cut off half-written. No task per connection, so no wake-up of
    /// another runtime thread for each, which cost more than the send.
    async fn post(self: &Arc<Self>, handed: Handed) {
        let Handed {
            replica,
            id,
            connection,
            worker,
        } = handed;
        let dispatcher = Arc::clone(self);
        let mut post = Box::pin(async move {
            if worker
                .hand_off(id, &dispatcher.socket, connection)
                .await
                .is_err()
            {
                dispatcher.post_failed(replica, id);
            }
        });
        let tried = std::future::poll_fn(|cx| Poll::Ready(post.as_mut().poll(cx))).await;
        if tried.is_pending() {
            tokio::spawn(post);
        }
    }
}

/// The accept loop's next step ([`Dispatcher::next_step`]).
enum Step {
    Stop,
    Hand(Handed),
    Idle(Idle),
}

/// A connection on its way to a replica.
struct Handed {
    replica: u64,
    id: u64,
    connection: Arc<OwnedFd>,
    worker: Arc<Worker>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dispatcher's state with replicas `ids`, all Ready and free.
    fn state(policy: HandoffPolicy, ids: &[u64]) -> State<()> {
        let mut state = State::new(policy);
        for &id in ids {
            state.add(id, ());
        }
        state
    }

    /// An accepted connection (any fd does: nothing is sent on it here).
    fn connection(id: u64) -> Pending {
        let fd = std::fs::File::open("/dev/null").expect("open /dev/null");
        Pending::new(id, OwnedFd::from(fd))
    }

    /// Queues connection `id` and hands it out; the replica it went to.
    fn dispatch(state: &mut State<()>, id: u64) -> Option<u64> {
        state.queue.push_back(connection(id));
        let (replica, pending) = state.next_job()?;
        assert!(state.hand(replica, pending).is_some());
        Some(replica)
    }

    /// Hands `replica` connections (ids from `first`) until its window is full.
    fn fill_window(state: &mut State<()>, replica: u64, first: u64) {
        for id in first..first + WINDOW as u64 {
            assert!(state.hand(replica, connection(id)).is_some());
        }
    }

    /// The next queued connection goes out; the replica it went to.
    fn redispatch(state: &mut State<()>) -> Option<u64> {
        let (replica, pending) = state.next_job()?;
        assert!(state.hand(replica, pending).is_some());
        Some(replica)
    }

    #[test]
    fn round_robin_serves_the_replicas_in_turn_and_wraps_around() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2, 3]);
        let mut served = Vec::new();
        for id in 10..17 {
            let replica = dispatch(&mut s, id).expect("a free replica");
            assert!(s.ack(replica, id, true, 1).is_some());
            served.push(replica);
        }
        assert_eq!(served, [1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn a_replica_gets_connections_without_waiting_for_acks_until_its_window_is_full() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1]);
        for id in 0..WINDOW as u64 {
            assert_eq!(dispatch(&mut s, 100 + id), Some(1));
        }
        assert_eq!(dispatch(&mut s, 200), None);
        // Any one ack makes room for the next.
        assert!(s.ack(1, 103, true, 1).is_some());
        assert_eq!(redispatch(&mut s), Some(1));
    }

    #[test]
    fn an_ack_wakes_the_accept_loop_only_when_it_may_be_waiting_for_one() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        // Room elsewhere and nothing queued: the loop waits in accept.
        assert_eq!(s.ack(1, 10, true, 1), Some(false));
        // A full window made room: the loop may be waiting for it.
        fill_window(&mut s, 1, 100);
        assert_eq!(s.ack(1, 100, true, 1), Some(true));
        // Something queued can go out now.
        s.queue.push_back(connection(20));
        assert_eq!(s.ack(1, 101, true, 1), Some(true));
        // Not that replica's connection: ignored.
        assert_eq!(s.ack(2, 102, true, 1), None);
    }

    #[test]
    fn round_robin_skips_a_replica_whose_window_is_full() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2, 3]);
        fill_window(&mut s, 1, 100);
        s.last = 3;
        // 1 has not answered any: after 3 comes 2, then 3, not 1.
        assert_eq!(dispatch(&mut s, 10), Some(2));
        assert_eq!(dispatch(&mut s, 11), Some(3));
        assert_eq!(dispatch(&mut s, 12), Some(2));
        assert!(s.ack(1, 100, true, 1).is_some());
        assert_eq!(dispatch(&mut s, 13), Some(3));
        assert_eq!(dispatch(&mut s, 14), Some(1));
    }

    #[test]
    fn with_every_window_full_a_connection_waits_in_the_queue() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        fill_window(&mut s, 1, 100);
        fill_window(&mut s, 2, 200);
        assert_eq!(dispatch(&mut s, 12), None);
        assert_eq!(s.queue.len(), 1);
        // No room: no accepting either, the kernel's backlog holds the rest.
        assert_eq!(s.idle(Instant::now()), Idle::Wait);
        // The first ack makes room for it.
        assert!(s.ack(2, 205, true, 1).is_some());
        assert_eq!(redispatch(&mut s), Some(2));
        assert!(s.queue.is_empty());
    }

    #[test]
    fn least_busy_picks_the_replica_with_the_fewest_open_connections() {
        let mut s = state(HandoffPolicy::LeastBusy, &[1, 2, 3]);
        s.load(1, 5);
        s.load(2, 1);
        s.load(3, 3);
        assert_eq!(dispatch(&mut s, 10), Some(2));
        // What is on its way to 2 counts: 1 open + 1 in flight, still the
        // fewest; then 1 + 2 ties with 3's 3, and the tie goes to the
        // next after 2.
        assert_eq!(dispatch(&mut s, 11), Some(2));
        assert_eq!(dispatch(&mut s, 12), Some(3));
        // 2 answers both with its new count, 1 open: the least busy again.
        assert!(s.ack(2, 10, true, 2).is_some());
        assert!(s.ack(2, 11, true, 1).is_some());
        assert_eq!(dispatch(&mut s, 13), Some(2));
    }

    #[test]
    fn least_busy_breaks_ties_round_robin() {
        let mut s = state(HandoffPolicy::LeastBusy, &[1, 2, 3]);
        let mut served = Vec::new();
        for id in 10..14 {
            let replica = dispatch(&mut s, id).expect("a free replica");
            // Every connection closes at once: all stay at 0 open.
            assert!(s.ack(replica, id, true, 0).is_some());
            served.push(replica);
        }
        assert_eq!(served, [1, 2, 3, 1]);
    }

    #[test]
    fn a_retired_replica_is_never_chosen() {
        for policy in [HandoffPolicy::RoundRobin, HandoffPolicy::LeastBusy] {
            let mut s = state(policy, &[1, 2]);
            s.retire(1);
            for id in 10..13 {
                assert_eq!(dispatch(&mut s, id), Some(2));
                assert!(s.ack(2, id, true, 0).is_some());
            }
            s.retire(2);
            assert_eq!(dispatch(&mut s, 13), None);
            assert_eq!(s.idle(Instant::now()), Idle::Wait);
        }
    }

    #[test]
    fn a_replica_retired_while_its_connection_is_out_still_answers_for_it() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        s.retire(1);
        // It refuses: the connection goes to the other replica.
        assert!(s.ack(1, 10, false, 0).is_some());
        assert_eq!(redispatch(&mut s), Some(2));
    }

    #[test]
    fn a_connection_that_lost_its_replica_before_the_hand_off_goes_back_to_the_queue() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        s.queue.push_back(connection(10));
        let (replica, pending) = s.next_job().expect("a free replica");
        assert_eq!(replica, 1);
        s.gone(1);
        assert!(s.hand(replica, pending).is_none());
        assert_eq!(redispatch(&mut s), Some(2));
    }

    #[test]
    fn a_refused_connection_goes_to_another_replica() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2, 3]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        assert!(s.ack(1, 10, false, 0).is_some());
        // Back at the head of the queue, refused by 1 only.
        assert_eq!(s.queue.front().map(|p| p.refused_by.clone()), Some(vec![1]));
        assert_eq!(redispatch(&mut s), Some(2));
        assert!(s.ack(2, 10, false, 0).is_some());
        assert_eq!(redispatch(&mut s), Some(3));
        assert!(s.ack(3, 10, true, 1).is_some());
        assert!(s.queue.is_empty() && s.in_flight.is_empty());
    }

    #[test]
    fn a_refused_connection_goes_ahead_of_newer_ones() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        s.queue.push_back(connection(11));
        assert!(s.ack(1, 10, false, 0).is_some());
        let (replica, pending) = s.next_job().expect("a free replica");
        assert_eq!((replica, pending.id), (2, 10));
    }

    #[test]
    fn a_connection_every_replica_refused_is_offered_again_after_a_pause() {
        let t0 = Instant::now();
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        assert!(s.ack(1, 10, false, 0).is_some());
        assert_eq!(redispatch(&mut s), Some(2));
        assert!(s.ack(2, 10, false, 0).is_some());
        // Both free, both refused it: no job, no accepting, a retry.
        assert!(s.next_job().is_none());
        assert_eq!(s.idle(t0), Idle::RetryAt(t0 + RETRY_REFUSED));
        // Its retry time does not move while it waits.
        assert_eq!(
            s.idle(t0 + Duration::from_millis(10)),
            Idle::RetryAt(t0 + RETRY_REFUSED)
        );
        assert!(!s.offer_again());
        assert_eq!(redispatch(&mut s), Some(1));
    }

    #[test]
    fn a_connection_refused_max_offers_times_is_given_up() {
        let t0 = Instant::now();
        let mut s = state(HandoffPolicy::RoundRobin, &[1]);
        s.queue.push_back(connection(10));
        for round in 1..=MAX_OFFERS {
            let replica = redispatch(&mut s).expect("the replica is free");
            assert!(s.ack(replica, 10, false, 0).is_some());
            assert!(matches!(s.idle(t0), Idle::RetryAt(_)));
            assert_eq!(s.offer_again(), round == MAX_OFFERS);
        }
        assert!(s.queue.is_empty());
        assert_eq!(s.idle(t0), Idle::Accept(WINDOW));
    }

    #[test]
    fn a_replica_that_dies_before_answering_has_its_connection_sent_to_another() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        s.gone(1);
        assert!(s.in_flight.is_empty());
        assert_eq!(redispatch(&mut s), Some(2));
    }

    #[test]
    fn a_failed_post_sends_the_connection_to_another_replica() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        s.post_failed(1, 10);
        assert_eq!(redispatch(&mut s), Some(2));
    }

    #[test]
    fn an_ack_from_a_replica_that_was_not_given_the_connection_is_ignored() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        assert!(s.ack(2, 10, false, 7).is_none());
        assert!(s.ack(1, 99, true, 7).is_none());
        assert_eq!(s.in_flight.get(&10).map(|(owner, _)| *owner), Some(1));
        assert_eq!(s.replicas[&1].in_flight, 1);
        assert_eq!(s.replicas[&2].open, 0);
    }

    #[test]
    fn accepting_takes_only_as_many_as_the_windows_have_room_for() {
        let t0 = Instant::now();
        let mut s = state(HandoffPolicy::RoundRobin, &[]);
        assert_eq!(s.idle(t0), Idle::Wait);
        s.add(1, ());
        assert_eq!(s.idle(t0), Idle::Accept(WINDOW));
        s.add(2, ());
        assert_eq!(s.idle(t0), Idle::Accept(2 * WINDOW));
        assert_eq!(dispatch(&mut s, 10), Some(1));
        assert_eq!(s.idle(t0), Idle::Accept(2 * WINDOW - 1));
        fill_window(&mut s, 2, 200);
        assert_eq!(s.idle(t0), Idle::Accept(WINDOW - 1));
        for id in 11..11 + WINDOW as u64 - 1 {
            assert_eq!(dispatch(&mut s, id), Some(1));
        }
        assert_eq!(s.idle(t0), Idle::Wait);
        assert!(s.ack(1, 10, true, 1).is_some());
        assert_eq!(s.idle(t0), Idle::Accept(1));
    }

    #[test]
    fn after_a_stop_nothing_is_queued_and_a_connection_that_comes_back_is_closed() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        s.queue.push_back(connection(11));
        s.stop();
        assert!(s.queue.is_empty());
        assert!(s.ack(1, 10, false, 0).is_some());
        assert!(s.queue.is_empty() && s.in_flight.is_empty());
    }
}

//! Handoff: arbord accepts on a pool socket and hands each connection to a
//! replica in a Connection frame, as node's cluster module does in its
//! round-robin mode.
//!
//! The rules (WIRE.md §3):
//! - at most one handoff in flight per replica: the next waits for the
//!   replica's ConnectionAck;
//! - arbord keeps its own copy of each connection until the ack, so a
//!   refusal, or the replica's death before it answered, sends the same
//!   connection to another replica instead of losing it;
//! - only ready replicas that are not being retired get connections; with
//!   none, arbord stops accepting and connections wait in the kernel's
//!   backlog (never refused);
//! - the accept loop is its own task: it never holds up the control plane.
//!
//! The rules are `State`'s, bookkeeping with no I/O (unit-tested below);
//! [`Dispatcher`] is the I/O around it: the accept loop, the posts, the
//! wake-ups.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::HandoffPolicy;
use crate::Worker;

/// How long a connection every replica refused waits before it is offered again.
const RETRY_REFUSED: Duration = Duration::from_millis(50);
/// Offers of one connection to every replica before it is given up (closed):
/// about 5 s of refusals (replicas without a connection handler).
const MAX_OFFERS: u32 = 100;

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
    /// The connection handed to it and not yet answered.
    busy: Option<u64>,
    /// Its last reported count of open connections.
    open: u32,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    fd: OwnedFd,
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
            fd,
            refused_by: Vec::new(),
            retry_at: None,
            rounds: 0,
        }
    }
}

/// What the accept loop waits for when no queued connection can go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// A replica is free and nothing is queued: accept the next connection.
    Accept,
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
                busy: None,
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
        if let Some((owner, mut pending)) = self.in_flight.remove(&connection) {
            if owner == replica {
                pending.refused_by.push(replica);
                self.requeue(pending);
            } else {
                self.in_flight.insert(connection, (owner, pending));
            }
        }
        if let Some(r) = self.replicas.get_mut(&replica) {
            r.busy = None;
        }
    }

    /// Whether the ack changed anything (it was for a connection that
    /// replica was given).
    fn ack(&mut self, replica: u64, connection: u64, accepted: bool, open: u32) -> bool {
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
                return false;
            }
            None => return false,
        }
        if let Some(r) = self.replicas.get_mut(&replica) {
            r.busy = None;
            r.open = open;
        }
        true
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

    /// A free replica for a connection `refused_by` these (or for any
    /// connection), by the policy.
    fn choose(&self, refused_by: &[u64]) -> Option<u64> {
        let free = self
            .replicas
            .iter()
            .filter(|(id, r)| r.busy.is_none() && !refused_by.contains(id));
        match self.policy {
            HandoffPolicy::RoundRobin => {
                let mut free = free.map(|(id, _)| *id).peekable();
                let first = *free.peek()?;
                Some(free.find(|id| *id > self.last).unwrap_or(first))
            }
            // Ties go round-robin too: the first after the last one served.
            HandoffPolicy::LeastBusy => free
                .min_by_key(|(id, r)| (r.open, **id <= self.last, **id))
                .map(|(id, _)| *id),
        }
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

    /// `pending` goes to `replica`, which is busy until it answers; the
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
        r.busy = Some(id);
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
            None if free => Idle::Accept,
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

/// A listening socket the dispatcher accepts on.
#[derive(Debug)]
enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    fn new(fd: OwnedFd) -> std::io::Result<Self> {
        let socket = socket2::Socket::from(fd);
        socket.set_nonblocking(true)?;
        let is_unix = socket.local_addr()?.is_unix();
        let fd = OwnedFd::from(socket);
        Ok(if is_unix {
            Listener::Unix(tokio::net::UnixListener::from_std(fd.into())?)
        } else {
            Listener::Tcp(tokio::net::TcpListener::from_std(fd.into())?)
        })
    }

    async fn accept(&self) -> std::io::Result<OwnedFd> {
        Ok(match self {
            Listener::Tcp(listener) => OwnedFd::from(listener.accept().await?.0.into_std()?),
            Listener::Unix(listener) => OwnedFd::from(listener.accept().await?.0.into_std()?),
        })
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
        let changed = self.state().ack(replica, connection, accepted, open);
        if changed {
            self.changed.notify_one();
        }
    }

    /// Replica `replica` reports `open` connections.
    pub(crate) fn load(&self, replica: u64, open: u32) {
        self.state().load(replica, open);
        self.changed.notify_one();
    }

    /// Stops accepting; connections not yet handed out are closed (and so
    /// is one that comes back later, refused or from a replica that died).
    pub(crate) fn stop(&self) {
        self.state().stop();
        self.changed.notify_one();
    }

    async fn run(self: Arc<Self>, listener: Listener) {
        loop {
            if self.state().stopped {
                // The listener closes here; what is still queued was closed by stop().
                return;
            }
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // A queued connection and a replica for it?
            let job = self.state().next_job();
            if let Some((replica, pending)) = job {
                self.hand_off(replica, pending).await;
                continue;
            }
            let idle = self.state().idle(Instant::now());
            match idle {
                Idle::Accept => tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(fd) => {
                            let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
                            self.state().queue.push_back(Pending::new(id, fd));
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

    /// Sends `pending` to `replica`, keeping arbord's copy until the ack.
    /// The post runs in a task of its own: a replica slow to read its
    /// channel holds up only itself (it is busy until it answers), and a
    /// post is never cut off half-written.
    async fn hand_off(self: &Arc<Self>, replica: u64, pending: Pending) {
        let copy = match pending.fd.try_clone() {
            Ok(copy) => copy,
            Err(e) => {
                // Out of fds: back to the queue, and a pause.
                tracing::warn!(socket = %self.socket, "cannot duplicate a connection: {e}");
                self.state().requeue(pending);
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        };
        let id = pending.id;
        let worker = match self.state().hand(replica, pending) {
            Some(worker) => Arc::clone(worker),
            None => return,
        };
        let dispatcher = Arc::clone(self);
        tokio::spawn(async move {
            if worker.hand_off(id, &dispatcher.socket, copy).await.is_err() {
                dispatcher.post_failed(replica, id);
            }
        });
    }
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
            assert!(s.ack(replica, id, true, 1));
            served.push(replica);
        }
        assert_eq!(served, [1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn round_robin_skips_a_busy_replica() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2, 3]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        assert_eq!(dispatch(&mut s, 11), Some(2));
        assert!(s.ack(2, 11, true, 1));
        // 1 has not answered: after 2 comes 3, then 2 again, not 1.
        assert_eq!(dispatch(&mut s, 12), Some(3));
        assert_eq!(dispatch(&mut s, 13), Some(2));
    }

    #[test]
    fn with_every_replica_busy_a_connection_waits_in_the_queue() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        assert_eq!(dispatch(&mut s, 11), Some(2));
        assert_eq!(dispatch(&mut s, 12), None);
        assert_eq!(s.queue.len(), 1);
        // Nobody free: no accepting either, the kernel's backlog holds the rest.
        assert_eq!(s.idle(Instant::now()), Idle::Wait);
        // The first ack frees a replica for it.
        assert!(s.ack(1, 10, true, 1));
        assert_eq!(redispatch(&mut s), Some(1));
        assert!(s.queue.is_empty());
    }

    #[test]
    fn least_busy_picks_the_replica_with_the_fewest_open_connections() {
        let mut s = state(HandoffPolicy::LeastBusy, &[1, 2, 3]);
        s.load(1, 5);
        s.load(2, 1);
        s.load(3, 3);
        assert_eq!(dispatch(&mut s, 10), Some(2));
        // 2 is busy until it answers: the next fewest is 3.
        assert_eq!(dispatch(&mut s, 11), Some(3));
        // 2 answers with its new count, 2 open: it is the least busy again.
        assert!(s.ack(2, 10, true, 2));
        assert!(s.ack(3, 11, true, 4));
        assert_eq!(dispatch(&mut s, 12), Some(2));
    }

    #[test]
    fn least_busy_breaks_ties_round_robin() {
        let mut s = state(HandoffPolicy::LeastBusy, &[1, 2, 3]);
        let mut served = Vec::new();
        for id in 10..14 {
            let replica = dispatch(&mut s, id).expect("a free replica");
            // Every connection closes at once: all stay at 0 open.
            assert!(s.ack(replica, id, true, 0));
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
                assert!(s.ack(2, id, true, 0));
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
        assert!(s.ack(1, 10, false, 0));
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
        assert!(s.ack(1, 10, false, 0));
        // Back at the head of the queue, refused by 1 only.
        assert_eq!(s.queue.front().map(|p| p.refused_by.clone()), Some(vec![1]));
        assert_eq!(redispatch(&mut s), Some(2));
        assert!(s.ack(2, 10, false, 0));
        assert_eq!(redispatch(&mut s), Some(3));
        assert!(s.ack(3, 10, true, 1));
        assert!(s.queue.is_empty() && s.in_flight.is_empty());
    }

    #[test]
    fn a_refused_connection_goes_ahead_of_newer_ones() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        s.queue.push_back(connection(11));
        assert!(s.ack(1, 10, false, 0));
        let (replica, pending) = s.next_job().expect("a free replica");
        assert_eq!((replica, pending.id), (2, 10));
    }

    #[test]
    fn a_connection_every_replica_refused_is_offered_again_after_a_pause() {
        let t0 = Instant::now();
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        assert!(s.ack(1, 10, false, 0));
        assert_eq!(redispatch(&mut s), Some(2));
        assert!(s.ack(2, 10, false, 0));
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
            assert!(s.ack(replica, 10, false, 0));
            assert!(matches!(s.idle(t0), Idle::RetryAt(_)));
            assert_eq!(s.offer_again(), round == MAX_OFFERS);
        }
        assert!(s.queue.is_empty());
        assert_eq!(s.idle(t0), Idle::Accept);
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
        assert!(!s.ack(2, 10, false, 7));
        assert!(!s.ack(1, 99, true, 7));
        assert_eq!(s.in_flight.get(&10).map(|(owner, _)| *owner), Some(1));
        assert_eq!(s.replicas[&1].busy, Some(10));
        assert_eq!(s.replicas[&2].open, 0);
    }

    #[test]
    fn accepting_happens_only_with_a_free_replica_and_nothing_queued() {
        let t0 = Instant::now();
        let mut s = state(HandoffPolicy::RoundRobin, &[]);
        assert_eq!(s.idle(t0), Idle::Wait);
        s.add(1, ());
        assert_eq!(s.idle(t0), Idle::Accept);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        assert_eq!(s.idle(t0), Idle::Wait);
        assert!(s.ack(1, 10, true, 1));
        assert_eq!(s.idle(t0), Idle::Accept);
    }

    #[test]
    fn after_a_stop_nothing_is_queued_and_a_connection_that_comes_back_is_closed() {
        let mut s = state(HandoffPolicy::RoundRobin, &[1, 2]);
        assert_eq!(dispatch(&mut s, 10), Some(1));
        s.queue.push_back(connection(11));
        s.stop();
        assert!(s.queue.is_empty());
        assert!(s.ack(1, 10, false, 0));
        assert!(s.queue.is_empty() && s.in_flight.is_empty());
    }
}

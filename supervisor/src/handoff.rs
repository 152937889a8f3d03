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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

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
    policy: HandoffPolicy,
    state: Mutex<State>,
    changed: Notify,
    stopped: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    replicas: BTreeMap<u64, Replica>,
    /// Accepted, not yet handed out (or refused and waiting for another replica).
    queue: VecDeque<Pending>,
    /// Handed out, waiting for the ack: connection id → (replica, connection).
    in_flight: HashMap<u64, (u64, Pending)>,
    /// The replica that got the last connection (round-robin).
    last: u64,
}

#[derive(Debug)]
struct Replica {
    worker: Arc<Worker>,
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
    retry_at: Option<tokio::time::Instant>,
    /// How many times every replica refused it.
    rounds: u32,
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
            policy,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            stopped: AtomicBool::new(false),
        });
        tokio::spawn(Arc::clone(&dispatcher).run(listener));
        Ok(dispatcher)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replica `id` is Ready: it may be given connections.
    pub(crate) fn add_replica(&self, id: u64, worker: Arc<Worker>) {
        self.state().replicas.insert(
            id,
            Replica {
                worker,
                busy: None,
                open: 0,
            },
        );
        self.changed.notify_one();
    }

    /// Replica `id` is about to be closed: no more connections for it. One
    /// already handed to it is answered or comes back as usual.
    pub(crate) fn retire(&self, id: u64) {
        self.state().replicas.remove(&id);
        self.changed.notify_one();
    }

    /// Replica `id` exited: what it had not acknowledged goes to another.
    pub(crate) fn replica_gone(&self, id: u64) {
        let mut state = self.state();
        state.replicas.remove(&id);
        let orphans: Vec<u64> = state
            .in_flight
            .iter()
            .filter(|(_, (replica, _))| *replica == id)
            .map(|(connection, _)| *connection)
            .collect();
        for connection in orphans {
            if let Some((_, pending)) = state.in_flight.remove(&connection) {
                self.requeue(&mut state, pending);
            }
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Puts a connection back at the head of the queue; after a stop there
    /// is nobody to give it to, and it is closed.
    fn requeue(&self, state: &mut State, pending: Pending) {
        if !self.stopped.load(Ordering::SeqCst) {
            state.queue.push_front(pending);
        }
    }

    /// Posting the Connection frame to `replica` failed (it is gone): the
    /// connection goes to another.
    fn post_failed(&self, replica: u64, connection: u64) {
        let mut state = self.state();
        if let Some((owner, mut pending)) = state.in_flight.remove(&connection) {
            if owner == replica {
                pending.refused_by.push(replica);
                self.requeue(&mut state, pending);
            } else {
                state.in_flight.insert(connection, (owner, pending));
            }
        }
        if let Some(r) = state.replicas.get_mut(&replica) {
            r.busy = None;
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Replica `replica` answered connection `connection`. An ack for a
    /// connection that replica was not given is ignored.
    pub(crate) fn ack(&self, replica: u64, connection: u64, accepted: bool, open: u32) {
        let mut state = self.state();
        match state.in_flight.remove(&connection) {
            Some((owner, mut pending)) if owner == replica => {
                if !accepted {
                    pending.refused_by.push(replica);
                    self.requeue(&mut state, pending);
                }
                // Accepted: arbord's copy of the fd closes here.
            }
            Some(other) => {
                state.in_flight.insert(connection, other);
                return;
            }
            None => return,
        }
        if let Some(r) = state.replicas.get_mut(&replica) {
            r.busy = None;
            r.open = open;
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Replica `replica` reports `open` connections.
    pub(crate) fn load(&self, replica: u64, open: u32) {
        if let Some(r) = self.state().replicas.get_mut(&replica) {
            r.open = open;
        }
        self.changed.notify_one();
    }

    /// Stops accepting; connections not yet handed out are closed (and so
    /// is one that comes back later, refused or from a replica that died).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.state().queue.clear();
        self.changed.notify_one();
    }

    /// A free replica for `pending` (or for any connection), by the policy.
    fn choose(&self, state: &State, refused_by: &[u64]) -> Option<u64> {
        let free = state
            .replicas
            .iter()
            .filter(|(id, r)| r.busy.is_none() && !refused_by.contains(id));
        match self.policy {
            HandoffPolicy::RoundRobin => {
                let mut free = free.map(|(id, _)| *id).peekable();
                let first = *free.peek()?;
                Some(free.find(|id| *id > state.last).unwrap_or(first))
            }
            // Ties go round-robin too: the first after the last one served.
            HandoffPolicy::LeastBusy => free
                .min_by_key(|(id, r)| (r.open, **id <= state.last, **id))
                .map(|(id, _)| *id),
        }
    }

    async fn run(self: Arc<Self>, listener: Listener) {
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                // The listener closes here; what is still queued was closed by stop().
                return;
            }
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // A queued connection and a replica for it?
            let job = {
                let mut state = self.state();
                let target = state
                    .queue
                    .front()
                    .and_then(|pending| self.choose(&state, &pending.refused_by));
                match target {
                    Some(replica) => state.queue.pop_front().map(|pending| (replica, pending)),
                    None => None,
                }
            };
            if let Some((replica, pending)) = job {
                self.hand_off(replica, pending).await;
                continue;
            }
            let retry_at = {
                let mut state = self.state();
                let front = state.queue.front_mut();
                front.map(|p| {
                    *p.retry_at
                        .get_or_insert(tokio::time::Instant::now() + RETRY_REFUSED)
                })
            };
            let (queued, can_accept, every_replica_refused) = {
                let state = self.state();
                let free = self.choose(&state, &[]).is_some();
                let refused = state
                    .queue
                    .front()
                    .is_some_and(|p| !p.refused_by.is_empty());
                (
                    !state.queue.is_empty(),
                    free && state.queue.is_empty(),
                    refused && free,
                )
            };
            if can_accept {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(fd) => {
                            let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
                            self.state().queue.push_back(Pending {
                                id, fd, refused_by: Vec::new(), retry_at: None, rounds: 0,
                            });
                        }
                        Err(e) => {
                            // EMFILE and the like: pause rather than spin.
                            tracing::warn!(socket = %self.socket, "accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    _ = &mut changed => {}
                }
            } else if queued && every_replica_refused {
                // Every free replica refused it (closing, or no handler):
                // offer it again when its retry time comes (a new replica
                // may take it sooner); given up after MAX_OFFERS rounds.
                let Some(retry_at) = retry_at else { continue };
                tokio::select! {
                    _ = tokio::time::sleep_until(retry_at) => {
                        let mut state = self.state();
                        let given_up = state.queue.front_mut().is_some_and(|front| {
                            front.refused_by.clear();
                            front.retry_at = None;
                            front.rounds += 1;
                            front.rounds >= MAX_OFFERS
                        });
                        if given_up {
                            state.queue.pop_front();
                            tracing::warn!(socket = %self.socket, "every replica refused a connection {MAX_OFFERS} times: closed");
                        }
                    }
                    _ = &mut changed => {}
                }
            } else {
                changed.await;
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
                self.requeue(&mut self.state(), pending);
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        };
        let id = pending.id;
        let worker = {
            let mut state = self.state();
            let Some(r) = state.replicas.get_mut(&replica) else {
                self.requeue(&mut state, pending);
                return;
            };
            r.busy = Some(id);
            let worker = Arc::clone(&r.worker);
            state.last = replica;
            state.in_flight.insert(id, (replica, pending));
            worker
        };
        let dispatcher = Arc::clone(self);
        tokio::spawn(async move {
            if worker.hand_off(id, &dispatcher.socket, copy).await.is_err() {
                dispatcher.post_failed(replica, id);
            }
        });
    }
}

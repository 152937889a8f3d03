//! The async (tokio) worker API, over the same channel and panic hook as
//! [`crate::blocking`].
//!
//! ```no_run
//! use arbor_worker::nonblocking::AsyncWorker;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> arbor_worker::Result<()> {
//!     let mut worker = AsyncWorker::connect()?;
//!     let poster = worker.poster();
//!     worker
//!         .on_message(move |incoming| {
//!             let poster = poster.clone();
//!             async move {
//!                 match incoming.request_id {
//!                     Some(id) => poster.reply(id, &incoming.message.data).await,
//!                     None => poster.post_message(&incoming.message.data, &[]).await,
//!                 }
//!             }
//!         })
//!         .on_close(|| async { Ok(()) });
//!     worker.run().await
//! }
//! ```

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arbor_protocol::nonblocking::{AsyncChannel, AsyncReceiver, AsyncSender};
use arbor_protocol::{ConnectionAck, Frame, Limits, Message, Ready};
use tokio::sync::{mpsc, Mutex, Notify};

use crate::env::{take_channel, take_tree_link, Identity};
use crate::error::{Error, Result};
pub use crate::poster::Poster;
use crate::tree::{Spawner, TreeState};

/// The worker's side of its channel, for tokio programs.
pub struct AsyncWorker {
    poster: Poster,
    receiver: AsyncReceiver,
    identity: Identity,
    closer: Closer,
    on_message: Option<MessageHandler>,
    on_close: Option<CloseHandler>,
    on_connection: Option<ConnectionHandler>,
    on_connect: Option<PortHandler>,
    tree: Arc<TreeState>,
    /// A sub-worker's own link to the supervisor (its channel leads to its
    /// parent worker; a task reads the link from `connect` on); `None` for
    /// a top-level worker, whose channel is it.
    tree_link: Option<Arc<Mutex<AsyncSender>>>,
}

impl std::fmt::Debug for AsyncWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncWorker")
            .field("identity", &self.identity)
            .field("on_message", &self.on_message.is_some())
            .field("on_close", &self.on_close.is_some())
            .field("on_connection", &self.on_connection.is_some())
            .field("on_connect", &self.on_connect.is_some())
            .finish_non_exhaustive()
    }
}

/// What a handler's future is boxed as, so that handlers of every type fit
/// one field (one allocation per call, small beside the frame's syscalls).
type HandlerFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

type MessageHandler = Box<dyn FnMut(Incoming) -> HandlerFuture<Result<()>> + Send>;

type CloseHandler = Box<dyn FnOnce() -> HandlerFuture<Result<()>> + Send>;

type ConnectionHandler =
    Arc<dyn Fn(Connection) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

type PortHandler =
    Arc<dyn Fn(ConnectedPort) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A client connected to this worker (a shared worker's `onconnect`), as
/// [`AsyncWorker::on_connect`]'s handler gets it: a port of its own, so
/// every client's messages and replies stay apart.
#[derive(Debug)]
pub struct ConnectedPort {
    /// Chosen by the supervisor, unique among this worker's ports.
    pub id: u64,
    /// Who connected, in words (for logs).
    pub origin: String,
    /// The port: `recv` gives the client's messages; `Closed` means the
    /// client went away.
    pub port: AsyncChannel,
}

/// A connection the supervisor accepted and handed to this worker (a pool
/// in `handoff` mode), as [`AsyncWorker::on_connection`]'s handler gets it.
#[derive(Debug)]
pub struct Connection {
    /// The accepted socket (TCP or Unix, as the pool socket is),
    /// close-on-exec and non-blocking (it shares the open file description
    /// with the supervisor's accept).
    pub stream: OwnedFd,
    /// The name of the pool socket it was accepted on.
    pub socket: String,
    /// Counts the connection as open while it lives (for the supervisor's
    /// `least-busy` policy); keep it as long as the connection is served.
    pub guard: OpenGuard,
}

/// Counts one handed-off connection as open until dropped.
#[derive(Debug)]
pub struct OpenGuard {
    load: Arc<LoadCounter>,
}

#[derive(Debug, Default)]
struct LoadCounter {
    open: AtomicU32,
    changed: Notify,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.load.open.fetch_sub(1, Ordering::SeqCst);
        self.load.changed.notify_one();
    }
}

/// A message from the parent, as [`AsyncWorker::on_message`]'s handler gets it.
#[derive(Debug)]
pub struct Incoming {
    /// The message.
    pub message: Message,
    /// The fds that came with it.
    pub fds: Vec<OwnedFd>,
    /// Set when the parent sent it as a request: answer with [`Poster::reply`].
    pub request_id: Option<u64>,
}

/// Closes the worker from inside (the spec's `close()`); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Closer {
    notify: Arc<Notify>,
}

impl Closer {
    /// Asks [`AsyncWorker::run`] to run onclose, flush and return.
    pub fn close(&self) {
        self.notify.notify_one();
    }
}

impl AsyncWorker {
    /// Connects to the channel at `ARBOR_CHANNEL_FD` and installs the panic
    /// hook. Call inside a tokio runtime.
    pub fn connect() -> Result<Self> {
        let (socket, identity) = take_channel()?;
        crate::panic::install(&socket);
        let channel = AsyncChannel::from_std(socket, Limits::default())
            .map_err(arbor_protocol::Error::from)?;
        let (sender, receiver) = channel.into_split();
        let sender = Arc::new(Mutex::new(sender));
        let (tree, tree_link) = match take_tree_link() {
            Some(link) => {
                let link = AsyncChannel::from_std(link, Limits::default())
                    .map_err(arbor_protocol::Error::from)?;
                let (link_sender, link_receiver) = link.into_split();
                let link_sender = Arc::new(Mutex::new(link_sender));
                let tree = TreeState::new(Arc::clone(&link_sender));
                // Read from now on, so a spawn before `run` gets its answer.
                tokio::spawn(read_link(link_receiver, Arc::clone(&tree)));
                (tree, Some(link_sender))
            }
            None => (TreeState::new(Arc::clone(&sender)), None),
        };
        Ok(Self {
            poster: Poster::new(sender),
            receiver,
            identity,
            closer: Closer::default(),
            on_message: None,
            on_close: None,
            on_connection: None,
            on_connect: None,
            tree,
            tree_link,
        })
    }

    /// Starts sub-workers of this worker (see [`crate::tree`]): the
    /// supervisor forks them, the channel to each is this worker's.
    ///
    /// # Caveats
    ///
    /// A top-level worker's answers come over its channel, in order with
    /// the parent's messages, and [`AsyncWorker::run`] reads ahead of its
    /// message handler by at most 1024 messages: a handler that waits for a
    /// spawn while more than that queue behind it waits forever. Spawn from
    /// a task of its own when the parent may flood the worker.
    pub fn spawner(&self) -> Spawner {
        Spawner {
            tree: Arc::clone(&self.tree),
        }
    }

    /// Sets the message handler (the spec's `onmessage`): `run` calls it for
    /// each message and request from the parent, one at a time, in order. An
    /// `Err` ends `run` with that error. Without one, messages are dropped
    /// unread.
    pub fn on_message<F, Fut>(&mut self, mut handler: F) -> &mut Self
    where
        F: FnMut(Incoming) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.on_message = Some(Box::new(move |incoming| Box::pin(handler(incoming))));
        self
    }

    /// Sets the close handler (the spec's `onclose`), run to completion
    /// before `run` returns, whoever asked for the close.
    pub fn on_close<F, Fut>(&mut self, handler: F) -> &mut Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.on_close = Some(Box::new(move || Box::pin(handler())));
        self
    }

    /// Takes connections handed over by the supervisor (the node cluster
    /// model: the supervisor accepts, the worker serves). Each one is served
    /// by `handler` in a task of its own. Without a handler, or once the
    /// worker is closing, connections are refused and the supervisor hands
    /// them to another worker.
    pub fn on_connection<F, Fut>(&mut self, handler: F) -> &mut Self
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connection = Some(Arc::new(move |connection| Box::pin(handler(connection))));
        self
    }

    /// Takes clients that connect to this worker (a shared worker: `arborctl
    /// attach NAME`, or `arbor_supervisor::client::connect`). Each client's
    /// port is served by `handler` in a task of its own; without a handler,
    /// ports are closed at once (the client sees its port close).
    pub fn on_connect<F, Fut>(&mut self, handler: F) -> &mut Self
    where
        F: Fn(ConnectedPort) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connect = Some(Arc::new(move |port| Box::pin(handler(port))));
        self
    }

    /// A handle for posting messages.
    pub fn poster(&self) -> Poster {
        self.poster.clone()
    }

    /// A handle for closing from inside.
    pub fn closer(&self) -> Closer {
        self.closer.clone()
    }

    /// This worker's id.
    pub fn id(&self) -> u64 {
        self.identity.id
    }

    /// This worker's name.
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    /// Sends Ready, then runs the [`on_message`](Self::on_message) handler
    /// for each message (one at a time, in order) until the parent's Close
    /// or [`Closer::close`]; then runs the [`on_close`](Self::on_close)
    /// handler to completion and returns `Ok`. While onclose runs, the
    /// channel is still read: connections handed over meanwhile are
    /// refused (so they go to another worker) and pings answered.
    pub async fn run(self) -> Result<()> {
        let AsyncWorker {
            poster,
            receiver: channel,
            identity,
            closer,
            mut on_message,
            on_close,
            on_connection,
            on_connect,
            tree,
            tree_link,
        } = self;
        let load = Arc::new(LoadCounter::default());
        let ready = Ready::new(identity.id, identity.name.clone(), std::process::id());
        poster.send(&Frame::Ready(ready.clone())).await?;
        // Frames are read by a task of their own, so that the tree's
        // answers reach a handler that waits for them.
        let (forward, mut receiver) = mpsc::channel(READ_AHEAD);
        let top_level = tree_link.is_none();
        tokio::spawn(read_channel(channel, Arc::clone(&tree), forward, top_level));
        if let Some(link_sender) = tree_link {
            // The supervisor sees a sub-worker's Ready on its link.
            link_sender
                .lock()
                .await
                .send(&Frame::Ready(ready), &[])
                .await?;
        }
        // Acks fed while more frames were already waiting, written with the
        // last of them: one sendmsg for a burst of handed-off connections.
        let mut unflushed = false;
        loop {
            if unflushed && receiver.is_empty() {
                poster.flush().await?;
                unflushed = false;
            }
            let received = tokio::select! {
                received = next(&mut receiver) => received,
                _ = closer.notify.notified() => break,
                _ = load.changed.notified() => {
                    poster.send(&Frame::Load(load.open.load(Ordering::SeqCst))).await?;
                    continue;
                }
            };
            match received {
                Ok((Frame::Message(message), fds)) => {
                    if let Some(handler) = on_message.as_mut() {
                        handler(Incoming {
                            message,
                            fds,
                            request_id: None,
                        })
                        .await?
                    }
                }
                Ok((Frame::Request(request), fds)) => {
                    if let Some(handler) = on_message.as_mut() {
                        handler(Incoming {
                            message: Message::new(request.data),
                            fds,
                            request_id: Some(request.id),
                        })
                        .await?
                    }
                }
                Ok((Frame::Connection(connection), fds)) => {
                    let id = connection.id;
                    let taken = serve_connection(on_connection.as_ref(), connection, fds, &load);
                    let more = !receiver.is_empty();
                    acknowledge(&poster, id, taken, &load, more).await?;
                    unflushed = more;
                }
                Ok((Frame::Port(open), fds)) => serve_port(on_connect.as_ref(), open, fds),
                Ok((Frame::Close, _)) => break,
                Ok((Frame::Ping(nonce), _)) => poster.send(&Frame::Pong(nonce)).await?,
                Ok(_) => {}
                Err(arbor_protocol::Error::Closed) => return Err(Error::ParentGone),
                Err(e) => return Err(e.into()),
            }
        }
        let closing: HandlerFuture<Result<()>> = match on_close {
            Some(handler) => handler(),
            None => Box::pin(async { Ok(()) }),
        };
        run_on_close(closing, &mut receiver, &poster, &load).await?;
        poster.flush().await?;
        Ok(())
    }
}

/// Hands a Connection frame's socket to the `on_connection` handler, in a
/// task of its own, counted open until its guard drops; whether it was taken
/// (not without a handler, or without exactly one fd).
fn serve_connection(
    handler: Option<&ConnectionHandler>,
    connection: arbor_protocol::Connection,
    mut fds: Vec<OwnedFd>,
    load: &Arc<LoadCounter>,
) -> bool {
    let (Some(handler), 1) = (handler, fds.len()) else {
        return false;
    };
    load.open.fetch_add(1, Ordering::SeqCst);
    let connection = Connection {
        stream: fds.remove(0),
        socket: connection.socket,
        guard: OpenGuard {
            load: Arc::clone(load),
        },
    };
    tokio::spawn(handler(connection));
    true
}

/// Hands a Port frame's port to the `on_connect` handler, in a task of its
/// own; without a handler the port is closed (the client sees it close). A
/// peer's fd that is not a port is dropped with the frame.
fn serve_port(
    handler: Option<&PortHandler>,
    open: arbor_protocol::PortOpen,
    mut fds: Vec<OwnedFd>,
) {
    let (Some(handler), 1) = (handler, fds.len()) else {
        return;
    };
    let port = arbor_protocol::MessagePort::from_fd(fds.remove(0))
        .ok()
        .and_then(|port| port.into_async(Limits::default()).ok());
    if let Some(port) = port {
        tokio::spawn(handler(ConnectedPort {
            id: open.id,
            origin: open.origin,
            port,
        }));
    }
}

/// Runs onclose to completion while the channel is still read: a
/// connection handed over meanwhile goes back at once instead of waiting
/// for the exit, and pings are answered.
async fn run_on_close(
    mut closing: HandlerFuture<Result<()>>,
    receiver: &mut mpsc::Receiver<Received>,
    poster: &Poster,
    load: &LoadCounter,
) -> Result<()> {
    let mut reading = true;
    loop {
        tokio::select! {
            done = &mut closing => return done,
            received = next(receiver), if reading => match received {
                Ok((Frame::Connection(connection), _fds)) => {
                    acknowledge(poster, connection.id, false, load, false).await?;
                }
                Ok((Frame::Ping(nonce), _)) => poster.send(&Frame::Pong(nonce)).await?,
                Ok(_) => {}
                Err(_) => reading = false,
            },
            _ = load.changed.notified(), if reading => {
                poster.send(&Frame::Load(load.open.load(Ordering::SeqCst))).await?;
            }
        }
    }
}

/// Messages read ahead of the message handler.
const READ_AHEAD: usize = 1024;

type Received = arbor_protocol::Result<(Frame, Vec<OwnedFd>)>;

async fn next(receiver: &mut mpsc::Receiver<Received>) -> Received {
    receiver
        .recv()
        .await
        .unwrap_or(Err(arbor_protocol::Error::Closed))
}

/// Reads the worker's channel: tree frames are handled at once (when the
/// channel is the supervisor link), everything else goes to `run`'s loop.
async fn read_channel(
    mut channel: AsyncReceiver,
    tree: Arc<TreeState>,
    forward: mpsc::Sender<Received>,
    is_link: bool,
) {
    loop {
        let received = channel.recv().await;
        let failed = received.is_err();
        let item = match received {
            Ok((frame, fds)) if is_link => match tree.route(frame, fds) {
                Some(other) => Ok(other),
                None => continue,
            },
            other => other,
        };
        if failed && is_link {
            tree.link_closed();
        }
        if forward.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// Reads a sub-worker's own link to the supervisor.
async fn read_link(mut link: AsyncReceiver, tree: Arc<TreeState>) {
    while let Ok((frame, fds)) = link.recv().await {
        // Nothing but tree frames is expected here; others are dropped.
        drop(tree.route(frame, fds));
    }
    tree.link_closed();
}

/// Answers a Connection; with `more` frames already waiting the ack is only
/// queued, to go out with a later one (the caller flushes before it waits).
async fn acknowledge(
    poster: &Poster,
    id: u64,
    accepted: bool,
    load: &LoadCounter,
    more: bool,
) -> Result<()> {
    let ack = Frame::ConnectionAck(ConnectionAck {
        id,
        accepted,
        open: load.open.load(Ordering::SeqCst),
    });
    match more {
        true => poster.feed(&ack).await,
        false => poster.send(&ack).await,
    }
}

//! http-hello: an HTTP/1.1 keep-alive server whose every reply names its
//! pid, for arbor pools in any mode, and standalone.
//!
//! Where its connections come from:
//! - sockets passed by the socket-activation convention (`LISTEN_FDS`):
//!   from arbord (pool modes `shared` and `reuseport`) or from systemd,
//!   fds from 3 either way;
//! - connections handed over by arbord in Connection frames (mode `handoff`);
//! - with neither, it binds `--listen ADDR` (default `127.0.0.1:8080`).
//!
//! Closing (arbord's Close, or SIGTERM/SIGINT when standalone) loses no
//! request, in two steps:
//! 1. stop accepting: each listener takes what the kernel already queued
//!    for it, then is dropped;
//! 2. only then, each connection's next request is answered with
//!    `Connection: close` (so clients reconnect, elsewhere: no new
//!    connection is sent to a listener about to close); a connection that
//!    stays idle for `LINGER` is shut down gracefully.
//!
//! It exits when every connection is done.

use std::convert::Infallible;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};

/// How long a connection may stay idle after closing began before it is shut.
const LINGER: Duration = Duration::from_secs(2);
/// The longest a close waits for connections to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// What every connection and listener of the process shares.
struct Server {
    /// Flips to `true` once: stop accepting.
    stop_accepting: watch::Sender<bool>,
    /// Flips to `true` once every listener is gone: end the connections.
    closing: watch::Sender<bool>,
    /// Listeners still open.
    listeners: Counter,
    /// Connections still open.
    connections: Counter,
    body: Bytes,
}

/// A count of running things, with a wake-up when it reaches zero.
#[derive(Default)]
struct Counter {
    count: AtomicUsize,
    zero: Notify,
}

impl Counter {
    async fn wait_zero(&self) {
        loop {
            let zero = self.zero.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            zero.await;
        }
    }
}

/// Counts one connection or listener while it lives.
struct Active(Arc<Server>, fn(&Server) -> &Counter);

impl Drop for Active {
    fn drop(&mut self) {
        let counter = (self.1)(&self.0);
        if counter.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            counter.zero.notify_waiters();
        }
    }
}

impl Server {
    fn new() -> Arc<Self> {
        Arc::new(Server {
            stop_accepting: watch::channel(false).0,
            closing: watch::channel(false).0,
            listeners: Counter::default(),
            connections: Counter::default(),
            body: Bytes::from(format!("hello from pid {}\n", std::process::id())),
        })
    }

    fn track(self: &Arc<Self>, counter: fn(&Server) -> &Counter) -> Active {
        counter(self).count.fetch_add(1, Ordering::SeqCst);
        Active(Arc::clone(self), counter)
    }

    /// Closes in the two steps of the module docs, waiting at most
    /// DRAIN_LIMIT for the connections.
    async fn close(&self) {
        self.stop_accepting.send_replace(true);
        let drained = async {
            self.listeners.wait_zero().await;
            self.closing.send_replace(true);
            self.connections.wait_zero().await;
        };
        let _ = tokio::time::timeout(DRAIN_LIMIT, drained).await;
        self.closing.send_replace(true);
    }

    fn respond(&self, closing: bool) -> Response<Full<Bytes>> {
        let mut response = Response::builder()
            .header("content-type", "text/plain")
            .header("content-length", self.body.len());
        if closing {
            // hyper ends the connection after this response.
            response = response.header("connection", "close");
        }
        response
            .body(Full::new(self.body.clone()))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

/// Completes once closing began.
async fn closing_begun(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

/// Serves one connection until the client leaves or closing ends it.
async fn serve<S>(server: Arc<Server>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut closing = server.closing.subscribe();
    let service = {
        let server = Arc::clone(&server);
        let closing = closing.clone();
        hyper::service::service_fn(move |_request: Request<Incoming>| {
            let response = server.respond(*closing.borrow());
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = closing_begun(&mut closing) => {}
    }
    // Closing: the client's next request is answered with Connection: close.
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = tokio::time::sleep(LINGER) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(LINGER, connection).await;
}

/// Serves an accepted connection in a task of its own; it counts as open
/// from now on, so that a close cannot miss it.
fn spawn_serve(server: &Arc<Server>, fd: OwnedFd) {
    let open = server.track(|s| &s.connections);
    let server = Arc::clone(server);
    tokio::spawn(async move {
        serve_fd(server, fd).await;
        drop(open);
    });
}

/// Serves an accepted stream socket of either family.
async fn serve_fd(server: Arc<Server>, fd: OwnedFd) {
    let socket = socket2::Socket::from(fd);
    let unix = socket.local_addr().is_ok_and(|addr| addr.is_unix());
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    let fd = OwnedFd::from(socket);
    if unix {
        if let Ok(stream) = tokio::net::UnixStream::from_std(fd.into()) {
            serve(server, stream).await;
        }
    } else if let Ok(stream) = tokio::net::TcpStream::from_std(fd.into()) {
        let _ = stream.set_nodelay(true);
        serve(server, stream).await;
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// A listener taken out of tokio, for the last accepts.
enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl StdListener {
    /// Every connection queued now (the listener is non-blocking).
    fn drain(&self) -> Vec<OwnedFd> {
        let mut queued = Vec::new();
        loop {
            let accepted = match self {
                StdListener::Tcp(l) => l.accept().map(|(s, _)| OwnedFd::from(s)),
                StdListener::Unix(l) => l.accept().map(|(s, _)| OwnedFd::from(s)),
            };
            match accepted {
                Ok(fd) => queued.push(fd),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return queued,
            }
        }
    }
}

impl Listener {
    fn into_std(self) -> std::io::Result<StdListener> {
        Ok(match self {
            Listener::Tcp(l) => StdListener::Tcp(l.into_std()?),
            Listener::Unix(l) => StdListener::Unix(l.into_std()?),
        })
    }

    async fn accept(&self) -> std::io::Result<OwnedFd> {
        Ok(match self {
            Listener::Tcp(l) => OwnedFd::from(l.accept().await?.0.into_std()?),
            Listener::Unix(l) => OwnedFd::from(l.accept().await?.0.into_std()?),
        })
    }
}

/// Accepts on a listening socket until closing; then takes what is already
/// queued (so that nothing queued is reset) and drops the listener.
async fn accept_loop(server: Arc<Server>, fd: OwnedFd) -> std::io::Result<()> {
    let _active = server.track(|s| &s.listeners);
    let socket = socket2::Socket::from(fd);
    socket.set_nonblocking(true)?;
    let unix = socket.local_addr()?.is_unix();
    let fd = OwnedFd::from(socket);
    let listener = if unix {
        Listener::Unix(tokio::net::UnixListener::from_std(fd.into())?)
    } else {
        Listener::Tcp(tokio::net::TcpListener::from_std(fd.into())?)
    };
    let mut closing = server.stop_accepting.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(fd) => spawn_serve(&server, fd),
                Err(e) => {
                    eprintln!("http-hello: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = closing_begun(&mut closing) => break,
        }
    }
    // Whatever the kernel already queued for this listener is served too:
    // plain non-blocking accepts until EAGAIN (tokio's cached readiness
    // could say "nothing" while connections wait), then the listener closes.
    for fd in listener.into_std()?.drain() {
        spawn_serve(&server, fd);
    }
    Ok(())
}

fn listen_arg() -> Result<Option<String>, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = Some(args.next().ok_or("--listen needs an address")?),
            "-h" | "--help" => {
                println!("usage: http-hello [--listen ADDR]   (default 127.0.0.1:8080 when no socket is passed)");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(listen)
}

async fn run() -> Result<(), String> {
    let listen = listen_arg()?;
    let server = Server::new();
    let mut listeners: Vec<OwnedFd> = arbor_worker::take_listen_fds()
        .into_iter()
        .map(|l| l.fd)
        .collect();
    let supervised = std::env::var_os("ARBOR_CHANNEL_FD").is_some();
    if let Some(addr) =
        listen.or_else(|| (listeners.is_empty() && !supervised).then(|| "127.0.0.1:8080".into()))
    {
        let listener =
            std::net::TcpListener::bind(&addr).map_err(|e| format!("bind {addr}: {e}"))?;
        listeners.push(listener.into());
    }
    for fd in listeners {
        tokio::spawn(accept_loop(Arc::clone(&server), fd));
    }
    if supervised {
        let mut worker =
            arbor_worker::nonblocking::AsyncWorker::connect().map_err(|e| e.to_string())?;
        let handed = Arc::clone(&server);
        worker.on_connection(move |connection| {
            // Counted before its task starts, so that a close cannot miss it.
            let open = handed.track(|s| &s.connections);
            let server = Arc::clone(&handed);
            async move {
                // The guard counts it open for arbord's least-busy policy.
                let _guard = connection.guard;
                serve_fd(server, connection.stream).await;
                drop(open);
            }
        });
        let closing = Arc::clone(&server);
        worker.on_close(move || async move {
            closing.close().await;
            Ok(())
        });
        worker.run().await.map_err(|e| e.to_string())
    } else {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| e.to_string())?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        server.close().await;
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("http-hello: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http-hello: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

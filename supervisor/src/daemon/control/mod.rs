//! The control requests, one file each, behind one [`dispatch`] that says
//! how each is answered ([`Reply`]), so that no request is read in two
//! places.

mod attach;
mod list;
mod logs;
mod pools;
mod post;
mod request;
mod signal;
mod spawn;
mod status;
mod stop;
mod watch;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use arbor_protocol::control::{ControlRequest, ControlResponse, DaemonEvent};
use tokio::sync::broadcast;

use super::registry::Daemon;

/// How a request is answered.
#[derive(Debug)]
pub(super) enum Reply {
    /// One answer; the client may send its next request.
    One(ControlResponse),
    /// One answer (an error where a stream or a port was asked for), then
    /// the connection ends.
    End(ControlResponse),
    /// A first answer, then the events of `worker` (every worker's when
    /// `None`) of kind `only` (every kind when `None`) until the client
    /// hangs up: `watch`, `logs -f`. Subscribed before the first answer is
    /// sent, so that no event falls in between.
    Stream {
        first: ControlResponse,
        events: broadcast::Receiver<DaemonEvent>,
        worker: Option<u64>,
        only: Option<&'static str>,
    },
    /// Attached to `worker`, with the client's end of a new port to it;
    /// the client talks to the worker on the port from then on.
    Port { worker: u64, port: OwnedFd },
    /// Ok, then arbord shuts down.
    Shutdown,
}

/// Answers one request; `fds` came with it (only `post` passes them on),
/// `origin` names the client (for a shared worker's `onconnect`).
pub(super) async fn dispatch(
    daemon: &Arc<Daemon>,
    request: ControlRequest,
    fds: Vec<OwnedFd>,
    origin: &str,
) -> Reply {
    match request {
        ControlRequest::Spawn(spawn) => Reply::One(spawn::spawn(daemon, spawn).await),
        ControlRequest::List => Reply::One(list::list(daemon)),
        ControlRequest::Post { id, data } => Reply::One(post::post(daemon, id, data, fds).await),
        ControlRequest::Request {
            id,
            data,
            timeout_ms,
        } => Reply::One(request::request(daemon, id, data, timeout_ms).await),
        ControlRequest::Close { id, grace_ms } => {
            Reply::One(stop::close(daemon, id, grace_ms).await)
        }
        ControlRequest::Terminate { id } => Reply::One(stop::terminate(daemon, id).await),
        ControlRequest::Signal { id, signal } => {
            Reply::One(signal::signal(daemon, id, &signal).await)
        }
        ControlRequest::Watch { id } => watch::watch(daemon, id),
        ControlRequest::Logs { id, lines, follow } => logs::logs(daemon, id, lines, follow),
        ControlRequest::Status => Reply::One(status::status(daemon)),
        ControlRequest::Shutdown => Reply::Shutdown,
        ControlRequest::Pools => Reply::One(pools::pools(daemon).await),
        ControlRequest::Scale { pool, replicas } => {
            Reply::One(pools::scale(daemon, &pool, replicas).await)
        }
        ControlRequest::Reload { pool } => Reply::One(pools::reload(daemon, pool).await),
        ControlRequest::Attach { name } => attach::attach(daemon, &name, origin).await,
    }
}

/// The error answer with `message`.
fn error(message: impl Into<String>) -> ControlResponse {
    ControlResponse::Error {
        message: message.into(),
    }
}

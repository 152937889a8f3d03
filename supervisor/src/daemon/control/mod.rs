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

use arbor_protocol::control::{ControlRequest, ControlResponse, Event};
use tokio::sync::broadcast;

use super::context::Daemon;
use super::error::ControlError;

/// How a request is answered.
#[derive(Debug)]
pub(super) enum Reply {
    /// One answer; the client may send its next request.
    One(ControlResponse),
    /// One answer (an error where a stream or a port was asked for), then
    /// the connection ends.
    End(ControlResponse),
    /// A first answer, then the events of `worker` (every worker's when
    /// `None`) in `form` until the client hangs up: `watch`, `events`,
    /// `logs -f`. Subscribed before the first answer is sent, so that no
    /// event falls in between.
    Stream {
        first: ControlResponse,
        events: broadcast::Receiver<Event>,
        worker: Option<u64>,
        form: StreamForm,
    },
    /// Attached to `worker`, with the client's end of a new port to it;
    /// the client talks to the worker on the port from then on.
    Port { worker: u64, port: OwnedFd },
    /// Ok, then arbord shuts down.
    Shutdown,
}

/// What a stream sends, and in which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamForm {
    /// Every event, flat ([`ControlResponse::Event`], for `Watch`).
    Flat,
    /// Every event, typed ([`ControlResponse::Notice`], for `Events`).
    Typed,
    /// Output lines only, flat (`Logs { follow: true }`).
    Output,
}

/// Answers one request; `fds` came with it (only `post` passes them on),
/// `origin` names the client (for a shared worker's `onconnect`).
pub(super) async fn dispatch(
    daemon: &Arc<Daemon>,
    request: ControlRequest,
    fds: Vec<OwnedFd>,
    origin: &str,
) -> Reply {
    let answer = match request {
        ControlRequest::Spawn(spawn) => spawn::spawn(daemon, spawn).await,
        ControlRequest::List => Ok(list::list(daemon)),
        ControlRequest::Post { id, data } => post::post(daemon, id, data, fds).await,
        ControlRequest::Request {
            id,
            data,
            timeout_ms,
        } => request::request(daemon, id, data, timeout_ms).await,
        ControlRequest::Close { id, grace_ms } => stop::close(daemon, id, grace_ms).await,
        ControlRequest::Terminate { id } => stop::terminate(daemon, id).await,
        ControlRequest::Signal { id, signal } => signal::signal(daemon, id, &signal).await,
        ControlRequest::Status => Ok(status::status(daemon)),
        ControlRequest::Pools => pools::pools(daemon).await,
        ControlRequest::Scale { pool, replicas } => pools::scale(daemon, &pool, replicas).await,
        ControlRequest::Reload { pool } => pools::reload(daemon, pool).await,
        // The requests answered otherwise than with one answer.
        ControlRequest::Watch { id } => return watch::watch(daemon, id, StreamForm::Flat),
        ControlRequest::Events { id } => return watch::watch(daemon, id, StreamForm::Typed),
        ControlRequest::Logs {
            id,
            lines,
            follow: false,
        } => logs::tail(daemon, id, lines),
        ControlRequest::Logs {
            id,
            lines,
            follow: true,
        } => {
            return logs::follow(daemon, id, lines)
                .unwrap_or_else(|failed| Reply::End(failed.response()))
        }
        ControlRequest::Attach { name } => return attach::attach(daemon, &name, origin).await,
        ControlRequest::Shutdown => return Reply::Shutdown,
    };
    Reply::One(answer.unwrap_or_else(|failed: ControlError| failed.response()))
}

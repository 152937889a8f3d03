//! The control requests, one file each, behind one [`dispatch`] that says
//! how each is answered ([`Reply`]), so that no request is read in two
//! places.

mod attach;
mod list;
mod logs;
mod pools;
mod post;
mod reply;
mod request;
mod signal;
mod spawn;
mod status;
mod stop;
mod watch;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use arbor_protocol::control::ControlRequest;

pub(super) use self::reply::{Reply, StreamForm};
use super::context::Daemon;
use super::error::ControlError;

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
        ControlRequest::Watch { id } => {
            return watch::watch(daemon, id, StreamForm::Flat)
                .unwrap_or_else(|failed| Reply::End(failed.response()))
        }
        ControlRequest::Events { id } => {
            return watch::watch(daemon, id, StreamForm::Typed)
                .unwrap_or_else(|failed| Reply::End(failed.response()))
        }
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

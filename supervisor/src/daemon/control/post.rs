//! `send`: a message, with the fds that came with the request, to a worker.

use std::os::fd::OwnedFd;

use arbor_protocol::control::ControlResponse;

use super::error;
use crate::daemon::registry::Daemon;

pub(super) async fn post(
    daemon: &Daemon,
    id: u64,
    data: Vec<u8>,
    fds: Vec<OwnedFd>,
) -> ControlResponse {
    match daemon.running(id) {
        Ok(worker) => match worker.post_message(data, fds).await {
            Ok(()) => ControlResponse::Ok,
            Err(e) => error(e.to_string()),
        },
        Err(e) => error(e),
    }
}

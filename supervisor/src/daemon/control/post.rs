//! `send`: a message, with the fds that came with the request, to a worker.

use std::os::fd::OwnedFd;

use arbor_protocol::control::ControlResponse;

use crate::daemon::context::Daemon;
use crate::daemon::error::ControlError;

pub(super) async fn post(
    daemon: &Daemon,
    id: u64,
    data: Vec<u8>,
    fds: Vec<OwnedFd>,
) -> Result<ControlResponse, ControlError> {
    daemon.registry.running(id)?.post_message(data, fds).await?;
    Ok(ControlResponse::Ok)
}

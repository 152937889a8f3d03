//! `request`: a message to a worker and its reply, within the client's
//! timeout.

use std::time::Duration;

use arbor_protocol::control::ControlResponse;

use crate::daemon::context::Daemon;
use crate::daemon::error::ControlError;

pub(super) async fn request(
    daemon: &Daemon,
    id: u64,
    data: Vec<u8>,
    timeout_ms: u64,
) -> Result<ControlResponse, ControlError> {
    let worker = daemon.registry.running(id)?;
    let reply = worker
        .request(data, Duration::from_millis(timeout_ms))
        .await?;
    Ok(ControlResponse::Reply(reply))
}

//! `request`: a message to a worker and its reply, within the client's
//! timeout.

use arbor_protocol::control::ControlResponse;

use crate::daemon::context::Daemon;
use crate::daemon::error::{wait_field, ControlError};

pub(super) async fn request(
    daemon: &Daemon,
    id: u64,
    data: Vec<u8>,
    timeout_ms: u64,
) -> Result<ControlResponse, ControlError> {
    let timeout = wait_field("timeout_ms", timeout_ms)?;
    let worker = daemon.registry.running(id)?;
    let reply = worker.request(data, timeout).await?;
    Ok(ControlResponse::Reply(reply))
}

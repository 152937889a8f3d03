//! `request`: a message to a worker and its reply, within the client's
//! timeout.

use std::time::Duration;

use arbor_protocol::control::ControlResponse;

use super::error;
use crate::daemon::registry::Daemon;

pub(super) async fn request(
    daemon: &Daemon,
    id: u64,
    data: Vec<u8>,
    timeout_ms: u64,
) -> ControlResponse {
    match daemon.running(id) {
        Ok(worker) => match worker
            .request(data, Duration::from_millis(timeout_ms))
            .await
        {
            Ok(reply) => ControlResponse::Reply(reply),
            Err(e) => error(e.to_string()),
        },
        Err(e) => error(e),
    }
}

//! `close` and `terminate`: a worker stopped for good (never restarted),
//! with its exit as the answer. A worker waiting for a restart just stays
//! stopped.

use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::control::{ControlResponse, Exit};

use crate::daemon::context::Daemon;
use crate::daemon::error::{wait_field, ControlError};
use crate::daemon::monitor::exit_of;

/// Closes worker `id` with `grace_ms`, or its recipe's grace.
pub(super) async fn close(
    daemon: &Arc<Daemon>,
    id: u64,
    grace_ms: Option<u64>,
) -> Result<ControlResponse, ControlError> {
    let grace = grace_ms.map(|ms| wait_field("grace_ms", ms)).transpose()?;
    stop(daemon, id, Some(grace)).await
}

/// Kills worker `id` (and its subtree) at once.
pub(super) async fn terminate(
    daemon: &Arc<Daemon>,
    id: u64,
) -> Result<ControlResponse, ControlError> {
    stop(daemon, id, None).await
}

/// Closes (`close` is `Some`, with its grace or the worker's own) or
/// terminates (`None`) worker `id`.
async fn stop(
    daemon: &Arc<Daemon>,
    id: u64,
    close: Option<Option<Duration>>,
) -> Result<ControlResponse, ControlError> {
    let Some(worker) = daemon.registry.request_stop(id)? else {
        // Between runs: it just stays stopped, with no process to end.
        return Ok(ControlResponse::Ended(Exit {
            code: None,
            signal: None,
            core_dumped: false,
        }));
    };
    let record = match close {
        Some(grace) => {
            worker
                .close(grace.unwrap_or_else(|| daemon.registry.grace(id)))
                .await?
        }
        None => worker.terminate().await?,
    };
    Ok(ControlResponse::Ended(exit_of(&record)))
}

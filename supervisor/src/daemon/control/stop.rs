//! `close` and `terminate`: a worker stopped for good (never restarted),
//! with its exit as the answer. A worker waiting for a restart just stays
//! stopped.

use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::control::{ControlResponse, ExitInfo};

use super::error;
use crate::daemon::registry::Daemon;

/// Closes worker `id` with `grace_ms`, or its recipe's grace.
pub(super) async fn close(daemon: &Arc<Daemon>, id: u64, grace_ms: Option<u64>) -> ControlResponse {
    stop(daemon, id, Some(grace_ms.map(Duration::from_millis))).await
}

/// Kills worker `id` (and its subtree) at once.
pub(super) async fn terminate(daemon: &Arc<Daemon>, id: u64) -> ControlResponse {
    stop(daemon, id, None).await
}

/// Closes (`close` is `Some`, with its grace or the worker's own) or
/// terminates (`None`) worker `id`.
async fn stop(daemon: &Arc<Daemon>, id: u64, close: Option<Option<Duration>>) -> ControlResponse {
    let worker = match daemon.request_stop(id) {
        Ok(Some(worker)) => worker,
        Ok(None) => {
            return ControlResponse::Exited(ExitInfo {
                code: None,
                signal: None,
            })
        }
        Err(message) => return error(message),
    };
    let exit = match close {
        Some(grace) => {
            worker
                .close(grace.unwrap_or_else(|| daemon.grace(id)))
                .await
        }
        None => worker.terminate().await,
    };
    match exit {
        Ok(record) => ControlResponse::Exited(ExitInfo {
            code: record.code,
            signal: record.signal.map(|s| s.name()),
        }),
        Err(e) => error(e.to_string()),
    }
}

//! `signal`: a signal, by name, to a worker's process.

use arbor_protocol::control::ControlResponse;

use super::error;
use crate::daemon::registry::Daemon;
use crate::Signal;

pub(super) async fn signal(daemon: &Daemon, id: u64, signal: &str) -> ControlResponse {
    match (daemon.running(id), Signal::from_name(signal)) {
        (Ok(worker), Some(signal)) => match worker.signal(signal).await {
            Ok(()) => ControlResponse::Ok,
            Err(e) => error(e.to_string()),
        },
        (Err(e), _) => error(e),
        (_, None) => error(format!("unknown signal {signal:?}")),
    }
}

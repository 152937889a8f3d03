//! `signal`: a signal, by name, to a worker's process.

use arbor_protocol::control::ControlResponse;

use crate::daemon::context::Daemon;
use crate::daemon::error::ControlError;
use crate::Signal;

pub(super) async fn signal(
    daemon: &Daemon,
    id: u64,
    signal: &str,
) -> Result<ControlResponse, ControlError> {
    let worker = daemon.registry.running(id)?;
    let signal =
        Signal::from_name(signal).ok_or_else(|| ControlError::UnknownSignal(signal.into()))?;
    worker.signal(signal).await?;
    Ok(ControlResponse::Ok)
}

//! arbord's end: every worker is closed at once, each on its own clock
//! (Close, then SIGTERM, then SIGKILL after `[daemon] shutdown_grace`), and
//! awaited; a second shutdown signal meanwhile terminates them all.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::context::Daemon;
use super::signals::DaemonSignal;
use crate::systemd::notify;

/// Stops every worker and returns once they are all gone.
pub(super) async fn shutdown(
    daemon: &Arc<Daemon>,
    signals: &mut mpsc::UnboundedReceiver<DaemonSignal>,
) {
    notify("STOPPING=1");
    let handles = daemon.registry.begin_shutdown();
    tracing::info!("shutting down {} workers", handles.len());
    // Every close starts at once (each worker's driver escalates on its
    // own clock), then the exits are awaited.
    for worker in &handles {
        worker.begin_close(daemon.config.daemon.shutdown_grace);
    }
    let all_closed = async {
        for worker in &handles {
            let _ = worker.wait().await;
        }
    };
    tokio::pin!(all_closed);
    // A second SIGTERM while closing: terminate everything at once.
    loop {
        tokio::select! {
            _ = &mut all_closed => return,
            signal = signals.recv() => if let Some(DaemonSignal::Shutdown) = signal {
                tracing::warn!("second shutdown signal: terminating every worker");
                for worker in daemon.registry.live_handles() {
                    worker.begin_terminate();
                }
            },
        }
    }
}

//! arbord's end: every worker is closed at once, each on its own clock
//! (Close, then SIGTERM, then SIGKILL after `[daemon] shutdown_grace`), and
//! awaited; a second shutdown signal meanwhile terminates them all. Then
//! watchers hear the last exits: the event streams are closed once every
//! monitor has told its worker's exit, and each sends what it holds (a
//! watcher that does not read gets [`DRAIN_LIMIT`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::context::Daemon;
use super::signals::DaemonSignal;
use crate::systemd::notify;

/// How long watchers get to receive the last events once the workers are
/// gone.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Stops every worker and returns once they are all gone and watchers have
/// heard their exits.
pub(super) async fn shutdown(
    daemon: &Arc<Daemon>,
    signals: &mut mpsc::UnboundedReceiver<DaemonSignal>,
) {
    close_all(daemon, signals).await;
    // Each monitor tells its worker's exit after the exit itself: wait for
    // the last, then let the streams send what they hold.
    if tokio::time::timeout(DRAIN_LIMIT, daemon.registry.runs_over())
        .await
        .is_err()
    {
        tracing::warn!("some workers' exits were not told within {DRAIN_LIMIT:?}");
    }
    let events = daemon.registry.events();
    events.close();
    if !events.drained(DRAIN_LIMIT).await {
        tracing::warn!("a watcher did not take the last events within {DRAIN_LIMIT:?}");
    }
}

/// Closes every worker and returns once they are all gone.
async fn close_all(daemon: &Arc<Daemon>, signals: &mut mpsc::UnboundedReceiver<DaemonSignal>) {
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

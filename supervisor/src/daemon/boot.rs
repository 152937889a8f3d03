//! arbord's start: the supervisor (with a cgroup per worker where it can
//! have one), the registry, the boot workers and pools, and the wait for
//! their Ready before systemd hears `READY=1`.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::control::WorkerState;
use arbor_protocol::Limits;

use super::context::Daemon;
use super::error::DaemonError;
use super::monitor::start;
use super::pools;
use super::recipe::Recipe;
use crate::config::Config;
use crate::Supervisor;

/// How long READY=1 waits for the boot workers' Ready.
const BOOT_READY_LIMIT: Duration = Duration::from_secs(30);

/// Builds the daemon and starts what `config` declares; returns once they
/// are started (their Ready is [`wait_for_boot_workers`]'s, which the
/// control socket does not wait for). `activated` are the pool sockets
/// systemd passed, by name.
pub(super) async fn boot(
    config: Config,
    mut activated: Vec<(String, OwnedFd)>,
) -> Result<Arc<Daemon>, DaemonError> {
    let daemon = Arc::new(Daemon::new(supervisor(&config)?, config.clone()));
    for worker in &config.workers {
        let recipe = Recipe::from_config(worker);
        if let Err(e) = start(&daemon, recipe, true).await {
            tracing::error!("boot worker {}: {e}", worker.name);
        }
    }
    for pool in &config.pools {
        if let Err(e) = pools::open(&daemon, pool, &mut activated).await {
            tracing::error!("boot pool {}: {e}", pool.worker.name);
        }
    }
    for (name, _) in &activated {
        tracing::warn!("socket {name:?} from systemd matches no pool socket; closed");
    }
    drop(activated);
    Ok(daemon)
}

/// The supervisor of `config`'s tree limits, with a cgroup per worker
/// where arbord has a writable cgroup v2 subtree and may use it.
fn supervisor(config: &Config) -> Result<Supervisor, crate::Error> {
    let supervisor = Supervisor::with_tree_limits(Limits::default(), config.daemon.tree_limits())?;
    match config
        .daemon
        .cgroups
        .then(crate::cgroup::Cgroups::detect)
        .flatten()
    {
        Some(cgroups) => {
            tracing::info!("a cgroup per worker, under {}", cgroups.base().display());
            Ok(supervisor.with_cgroups(cgroups))
        }
        None => {
            tracing::info!(
                "no cgroup per worker (cgroups = false, or no writable cgroup v2 subtree): \
                 what leaves a worker's process group is killed at shutdown"
            );
            Ok(supervisor)
        }
    }
}

/// Waits until no worker is starting (each is Ready, or already gone;
/// sub-workers the boot workers start meanwhile included), or a generous
/// bound passed ([`BOOT_READY_LIMIT`]), so that one hung worker cannot
/// stall the boot: what `READY=1` waits for.
pub(super) async fn wait_for_boot_workers(daemon: &Daemon) {
    let all_started = async {
        loop {
            let starting = daemon.registry.starting();
            if starting.is_empty() {
                return;
            }
            for mut seen in starting {
                let _ = seen.wait_for(|s| s.state != WorkerState::Starting).await;
            }
        }
    };
    if tokio::time::timeout(BOOT_READY_LIMIT, all_started)
        .await
        .is_err()
    {
        let left = daemon.registry.starting().len();
        tracing::warn!("{left} workers not Ready after {BOOT_READY_LIMIT:?}; ready anyway");
    }
}

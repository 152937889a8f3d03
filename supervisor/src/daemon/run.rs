//! [`run`]: arbord from its control socket to its exit.
//!
//! The control socket is bound (or taken from systemd), the daemon boots
//! (see [`super::boot`]), and one loop accepts control clients (each served
//! by a task of its own, so a slow or hostile client holds only that),
//! takes the signals the binary forwards, and keeps systemd's watchdog fed,
//! until a shutdown (see [`super::shutdown`]).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::mpsc;

use super::context::Daemon;
use super::error::DaemonError;
use super::serve::{refuse_busy, serve_client, MAX_CLIENTS};
use super::signals::DaemonSignal;
use super::{boot, reload, shutdown};
use crate::config::Config;
use crate::systemd::{notify, Activated};

/// Runs arbord until a shutdown request or signal; returns once every
/// worker is gone and the socket is removed.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    socket_path: PathBuf,
    activated: Activated,
    mut signals: mpsc::UnboundedReceiver<DaemonSignal>,
) -> Result<(), DaemonError> {
    let Activated {
        control: activated,
        sockets: activated_sockets,
    } = activated;
    let (listener, owned_path) = match activated {
        Some(listener) => (listener, None),
        None => (
            bind(
                &socket_path,
                config.daemon.mode,
                config.daemon.group.as_deref(),
            )?,
            Some(socket_path.clone()),
        ),
    };
    let socket_error = |source| DaemonError::Socket {
        path: socket_path.clone(),
        source,
    };
    listener.set_nonblocking(true).map_err(socket_error)?;
    let listener = UnixListener::from_std(listener).map_err(socket_error)?;
    let daemon = boot::boot(config, activated_sockets).await?;
    tracing::info!("arbord listening on {}", socket_path.display());
    serve(&daemon, &listener, config_path, &mut signals).await;
    shutdown::shutdown(&daemon, &mut signals).await;
    if let Some(path) = owned_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Accepts control clients and takes signals until a shutdown is asked for.
/// Clients are served from the start; `READY=1` waits for the boot
/// workers' Ready, and a SIGHUP before it waits with it.
async fn serve(
    daemon: &Arc<Daemon>,
    listener: &UnixListener,
    config_path: Option<PathBuf>,
    signals: &mut mpsc::UnboundedReceiver<DaemonSignal>,
) {
    let mut watchdog = watchdog_interval().map(tokio::time::interval);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    let booting = boot::wait_for_boot_workers(daemon);
    tokio::pin!(booting);
    let (mut booted, mut reload_after_boot) = (false, false);
    loop {
        tokio::select! {
            () = &mut booting, if !booted => {
                booted = true;
                notify("READY=1");
                notify(&daemon.registry.status_line());
                if std::mem::take(&mut reload_after_boot) {
                    begin_reload(daemon, &config_path);
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&connections).try_acquire_owned() {
                    Ok(permit) => {
                        let daemon = Arc::clone(daemon);
                        tokio::spawn(async move {
                            serve_client(daemon, stream).await;
                            drop(permit);
                        });
                    }
                    // Over the cap: this client is told so and dropped,
                    // the ones already connected go on.
                    Err(_) => {
                        tokio::spawn(refuse_busy(stream));
                    }
                },
                Err(e) => {
                    // Out of fds (EMFILE) and the like: pause instead of
                    // spinning on a listener that stays readable.
                    tracing::warn!("accept on the control socket: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            signal = signals.recv() => match signal {
                Some(DaemonSignal::Shutdown) | None => return,
                Some(DaemonSignal::Reload) if !booted => {
                    tracing::info!("SIGHUP while booting: the configuration is read again once booted");
                    reload_after_boot = true;
                }
                Some(DaemonSignal::Reload) => begin_reload(daemon, &config_path),
            },
            _ = tick(&mut watchdog) => notify("WATCHDOG=1"),
            _ = daemon.shutdown.notified() => return,
        }
    }
}

/// A SIGHUP's reload: in a task of its own (closing workers takes their
/// grace, and the accept loop, signals and watchdog go on), or, during one,
/// a note for it to read the configuration again when it is done.
fn begin_reload(daemon: &Arc<Daemon>, config_path: &Option<PathBuf>) {
    if daemon.registry.begin_reload() {
        notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            crate::systemd::monotonic_usec()
        ));
        tokio::spawn(reload::reload_on_signal(
            Arc::clone(daemon),
            config_path.clone(),
        ));
    } else {
        tracing::info!("SIGHUP during a reload: the configuration is read again once it is done");
    }
}

/// Half of `$WATCHDOG_USEC`, when systemd asks for keep-alives.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let pid_ok = std::env::var("WATCHDOG_PID")
        .ok()
        .map(|pid| pid.parse::<u32>().ok() == Some(std::process::id()))
        .unwrap_or(true);
    (pid_ok && usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Completes at each tick of `interval` (one schedule, however often the
/// caller's loop turns), or never.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Binds the control socket at `path`: replaces a stale socket file, refuses
/// to start when another arbord answers there, sets `mode`.
fn bind(
    path: &std::path::Path,
    mode: u32,
    group: Option<&str>,
) -> Result<StdUnixListener, DaemonError> {
    let socket_error = |source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(socket_error)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(socket_error)?;
        }
    }
    match crate::listen::remove_stale_socket(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(DaemonError::AlreadyRunning(path.to_path_buf()))
        }
        other => other.map_err(socket_error)?,
    }
    let listener = StdUnixListener::bind(path).map_err(socket_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(socket_error)?;
    if let Some(group) = group {
        let gid = crate::config::group_id(group).ok_or_else(|| {
            socket_error(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no group {group:?}"),
            ))
        })?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(socket_error)?;
    }
    Ok(listener)
}

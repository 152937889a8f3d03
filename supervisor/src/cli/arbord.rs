//! arbord: the arbor daemon. Parses flags, takes inherited fds and signals,
//! builds the runtime, and calls `crate::daemon::run`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::client::default_socket_path;
use crate::config::Config;
use crate::daemon::{self, DaemonSignal};
use clap::{Parser, ValueEnum};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// The arbor worker supervisor daemon (runs in the foreground).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// TOML configuration; built-in defaults when absent.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Control socket path (overrides the configuration and $ARBOR_SOCKET).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The whole program; `main` of the binary calls this.
pub fn main() -> ExitCode {
    // Started as one of the built-in workers (`entry = "echo"` in a config)?
    if let Some(entry) = arbor_worker::entry_point() {
        return run_entry(&entry);
    }
    // Before any thread exists: the activated socket and the signal handlers.
    let activated = crate::systemd::take_activated();
    let signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("arbord: cannot register signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let args = Args::parse();
    // Every worker costs arbord fds (channel, pidfd, pipes, sockets): the
    // soft limit goes up to the hard one, as systemd advises services to do.
    let fd_limit = crate::sys::raise_fd_limit();
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("arbord: bad configuration: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    init_logs(args.log_format);
    match fd_limit {
        Ok(limit) => tracing::debug!("fd limit {limit}"),
        Err(e) => tracing::warn!("could not raise the fd limit: {e}"),
    }
    let socket = args
        .socket
        .clone()
        .or_else(|| config.daemon.socket.clone())
        .unwrap_or_else(default_socket_path);

    let signal_rx = match forward_signals(signals) {
        Ok(signal_rx) => signal_rx,
        Err(e) => {
            eprintln!("arbord: cannot start the signal thread: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("arbord: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = as_subreaper(
        &runtime,
        daemon::run(config, args.config.clone(), socket, activated, signal_rx),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arbord: {e}");
            ExitCode::from(1)
        }
    }
}

/// One of the built-in workers (`entry = "echo"` in a configuration).
fn run_entry(entry: &str) -> ExitCode {
    match crate::cli::demo::run(entry) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arbord worker {entry}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs `daemon` as the subreaper of whatever its workers leave behind:
/// re-parented to arbord, reaped when it exits, and killed once the
/// workers are gone (`crate::reap`). Here and not in `daemon::run`: it
/// takes every child that is not a worker.
fn as_subreaper<T>(
    runtime: &tokio::runtime::Runtime,
    daemon: impl std::future::Future<Output = T>,
) -> T {
    if let Err(e) = crate::reap::become_subreaper() {
        tracing::warn!("cannot become the subreaper of the workers' descendants: {e}");
    }
    let orphan_reaper = runtime.spawn(crate::reap::reap_orphans_forever());
    let result = runtime.block_on(daemon);
    orphan_reaper.abort();
    let outlived = crate::reap::kill_orphans(std::time::Duration::from_secs(5));
    if outlived > 0 {
        tracing::info!("killed {outlived} descendants that outlived their workers");
    }
    result
}

/// Logs to stderr (where systemd's journal takes them), as text or JSON,
/// filtered by `RUST_LOG` (default `info`).
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// A thread that turns the signals into the daemon's: SIGHUP a reload,
/// SIGTERM and SIGINT a shutdown.
fn forward_signals(
    mut signals: signal_hook::iterator::Signals,
) -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<DaemonSignal>> {
    let (signal_tx, signal_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("arbord-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let forwarded = match signal {
                    SIGHUP => DaemonSignal::Reload,
                    _ => DaemonSignal::Shutdown,
                };
                if signal_tx.send(forwarded).is_err() {
                    return;
                }
            }
        })?;
    Ok(signal_rx)
}

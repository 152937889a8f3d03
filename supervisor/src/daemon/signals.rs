//! What the binary forwards to [`super::run`]: the signals it took.

/// Signals the binary forwards to [`super::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonSignal {
    /// SIGTERM or SIGINT: close every worker, then exit.
    Shutdown,
    /// SIGHUP: reload the configuration file.
    Reload,
}

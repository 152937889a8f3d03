//! What to start: [`WorkerSpec`].

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

/// The executable a worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A path, or a bare name looked up in `PATH`.
    Path(PathBuf),
    /// A named entry point of the current executable: `/proc/self/exe` is
    /// run again with `ARBOR_ENTRY=<name>`, so one binary holds a parent and
    /// its workers (see `arbor_worker::entry_point`).
    Entry(String),
}

/// Where a worker's stdout or stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// The supervisor's own stream.
    #[default]
    Inherit,
    /// Captured line by line into [`crate::WorkerEvent::Output`] events.
    Capture,
    /// `/dev/null`.
    Null,
}

/// What `post_message` does when the queue of messages waiting for the
/// worker (before it is Ready, or while it reads slowly) is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait for room (backpressure on the poster).
    #[default]
    Wait,
    /// Return [`crate::Error::QueueFull`]; nothing is dropped silently.
    Error,
}

/// Everything needed to start one worker.
#[derive(Debug)]
pub struct WorkerSpec {
    pub(crate) program: Program,
    pub(crate) args: Vec<OsString>,
    pub(crate) clear_env: bool,
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) name: Option<String>,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
    pub(crate) close_grace: Duration,
    pub(crate) queue_limit: usize,
    pub(crate) when_full: WhenFull,
    pub(crate) speaks_protocol: bool,
    pub(crate) listen_fds: Vec<(String, OwnedFd)>,
}

impl WorkerSpec {
    fn with_program(program: Program) -> Self {
        Self {
            program,
            args: Vec::new(),
            clear_env: false,
            env: Vec::new(),
            cwd: None,
            name: None,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            close_grace: Duration::from_secs(5),
            queue_limit: 1024,
            when_full: WhenFull::Wait,
            speaks_protocol: true,
            listen_fds: Vec::new(),
        }
    }

    /// A worker running `program` (a path, or a name looked up in `PATH`).
    pub fn program(program: impl Into<PathBuf>) -> Self {
        Self::with_program(Program::Path(program.into()))
    }

    /// A worker running the named entry point of the current executable.
    pub fn entry(name: impl Into<String>) -> Self {
        let name = name.into();
        Self::with_program(Program::Entry(name.clone())).name(name)
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// Starts from an empty environment instead of the supervisor's.
    pub fn env_clear(mut self) -> Self {
        self.clear_env = true;
        self.env.clear();
        self
    }

    /// The worker's working directory.
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// The worker's name (`ARBOR_WORKER_NAME`); defaults to the program's file name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where stdout goes.
    pub fn stdout(mut self, output: Output) -> Self {
        self.stdout = output;
        self
    }

    /// Where stderr goes.
    pub fn stderr(mut self, output: Output) -> Self {
        self.stderr = output;
        self
    }

    /// How long `close` waits after the Close frame before SIGTERM, and after
    /// SIGTERM before SIGKILL (default 5 s).
    pub fn close_grace(mut self, grace: Duration) -> Self {
        self.close_grace = grace;
        self
    }

    /// Bound on messages queued for the worker (default 1024), and what
    /// `post_message` does at the bound.
    pub fn queue_limit(mut self, limit: usize, when_full: WhenFull) -> Self {
        self.queue_limit = limit.max(1);
        self.when_full = when_full;
        self
    }

    /// Whether the program speaks arbor's protocol (default true). One that
    /// does not (`sleep`, a shell script) counts as running at once.
    pub fn speaks_protocol(mut self, speaks: bool) -> Self {
        self.speaks_protocol = speaks;
        self
    }

    /// Hands the worker a socket by systemd's socket-activation convention:
    /// fds from 4 on, with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID`.
    pub fn listen_fd(mut self, name: impl Into<String>, fd: OwnedFd) -> Self {
        self.listen_fds.push((name.into(), fd));
        self
    }

    /// The name the worker will carry.
    pub(crate) fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.program {
            Program::Entry(name) => name.clone(),
            Program::Path(path) => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.to_string_lossy().into_owned()),
        }
    }
}

//! What to start: [`WorkerSpec`], and the sockets handed to it at spawn:
//! [`ListenFds`].
//!
//! The spec lives in the protocol crate because both sides build one: a
//! parent program hands it to `arbor_supervisor::Supervisor::spawn`, and a
//! worker sends one in a Spawn frame to start a sub-worker
//! (`arbor_worker`'s `spawner`). [`WorkerSpec::to_wire`] and
//! [`WorkerSpec::from_wire`] convert between the two forms.
//!
//! A spec is a plain value (`Clone`, `==`, serde): it can be kept, compared
//! (arbord's reload asks whether a worker's spec changed) and written down
//! (arbord's state). The fds a worker gets are not part of it: they are
//! owned, used once, and passed at spawn beside the spec.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment variables that describe one spawn (the channel, the id, the
/// sockets): a worker never inherits them from whoever started it, it gets
/// its own.
pub const SPAWN_VARIABLES: [&str; 8] = [
    "ARBOR_CHANNEL_FD",
    "ARBOR_TREE_FD",
    "ARBOR_WORKER_ID",
    "ARBOR_WORKER_NAME",
    "ARBOR_ENTRY",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PID",
];

/// A worker's close grace when its spec names none: after a Close frame,
/// this long until SIGTERM, and as long again until SIGKILL.
pub const DEFAULT_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The [`SPAWN_VARIABLES`] that say where the worker's fds are and who it
/// is: only the supervisor sets them, whatever a spec's environment says
/// (`ARBOR_ENTRY` is not among them: an entry point sent in a Spawn frame
/// travels as it).
pub const CONTRACT_VARIABLES: [&str; 7] = [
    "ARBOR_CHANNEL_FD",
    "ARBOR_TREE_FD",
    "ARBOR_WORKER_ID",
    "ARBOR_WORKER_NAME",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PID",
];

/// Longest worker name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Whether `name` may name a worker: 1 to [`MAX_NAME_LEN`] bytes, no
/// control characters (a newline in a name would forge a line of a text
/// log; a NUL cannot go into the environment). The error says which rule.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the name is {} bytes long (at most {MAX_NAME_LEN})",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the name {name:?} contains the control character {c:?}"
        ));
    }
    Ok(())
}

/// Most listen fds a Spawn frame may hand a sub-worker: a worker asking for
/// many sub-workers at once must not make its supervisor hold thousands of
/// fds for it.
pub const MAX_SPAWN_FDS: usize = 16;

/// The executable a worker runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Program {
    /// A path, or a bare name looked up in `PATH`.
    Path(#[serde(with = "unix_path")] PathBuf),
    /// A named entry point of the current executable: `/proc/self/exe` is
    /// run again with `ARBOR_ENTRY=<name>`, so one binary holds a parent and
    /// its workers (see `arbor_worker::entry_point`).
    Entry(String),
}

/// Where a worker's stdout or stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Output {
    /// The supervisor's own stream; for a sub-worker, wherever its parent
    /// worker's goes (captured by arbord, say, as a stream of its own).
    #[default]
    Inherit,
    /// Captured line by line into `WorkerEvent::Output` events (arbor-supervisor).
    Capture,
    /// `/dev/null`.
    Null,
}

/// What `post_message` does when the queue of messages waiting for the
/// worker (before it is Ready, or while it reads slowly) is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum WhenFull {
    /// Wait for room (backpressure on the poster), or until the worker is
    /// gone (then `Error::WorkerGone`, at once: a killed worker's full
    /// queue holds no poster).
    #[default]
    Wait,
    /// Return `Error::QueueFull` (arbor-supervisor); nothing is dropped silently.
    Error,
}

/// Everything needed to start one worker but its sockets (see
/// [`ListenFds`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub(crate) program: Program,
    pub(crate) args: Vec<OsString>,
    pub(crate) clear_env: bool,
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    #[serde(with = "unix_path::option")]
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) name: Option<String>,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
    pub(crate) close_grace: Duration,
    pub(crate) queue_limit: usize,
    pub(crate) when_full: WhenFull,
    pub(crate) speaks_protocol: bool,
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
            close_grace: DEFAULT_CLOSE_GRACE,
            queue_limit: 1024,
            when_full: WhenFull::Wait,
            speaks_protocol: true,
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

    /// Takes the spec apart, for the supervisor that starts it.
    pub fn into_parts(self) -> SpecParts {
        let name = self.display_name();
        SpecParts {
            program: self.program,
            args: self.args,
            clear_env: self.clear_env,
            env: self.env,
            cwd: self.cwd,
            name,
            stdout: self.stdout,
            stderr: self.stderr,
            close_grace: self.close_grace,
            queue_limit: self.queue_limit,
            when_full: self.when_full,
            speaks_protocol: self.speaks_protocol,
        }
    }

    /// The grace `close` gives this worker at each step.
    pub fn grace(&self) -> Duration {
        self.close_grace
    }

    /// The spec as a Spawn frame carries it with the sockets `listen`, and
    /// the fds that go with the frame (those sockets, in order).
    ///
    /// An entry point names the *sending* process's executable, so it is
    /// sent as that executable's path with `ARBOR_ENTRY` set: the
    /// supervisor's own `/proc/self/exe` is another program. Likewise the
    /// environment a sub-worker inherits is its parent's, not the
    /// supervisor's: unless the spec clears it, the sender's environment
    /// (but [`SPAWN_VARIABLES`]) is sent in full, then the spec's changes.
    pub fn to_wire(self, listen: ListenFds) -> std::io::Result<(SpawnSpec, Vec<OwnedFd>)> {
        use std::os::unix::ffi::OsStrExt;
        let name = self.display_name();
        let bytes = |s: &std::ffi::OsStr| s.as_bytes().to_vec();
        let mut env: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        if !self.clear_env {
            env.extend(
                std::env::vars_os()
                    .filter(|(k, _)| !SPAWN_VARIABLES.iter().any(|v| std::ffi::OsStr::new(v) == k))
                    .map(|(k, v)| (bytes(&k), Some(bytes(&v)))),
            );
        }
        env.extend(
            self.env
                .iter()
                .map(|(k, v)| (bytes(k), v.as_deref().map(bytes))),
        );
        let program = match &self.program {
            Program::Path(path) => path.as_os_str().as_bytes().to_vec(),
            Program::Entry(entry) => {
                env.push((b"ARBOR_ENTRY".to_vec(), Some(entry.as_bytes().to_vec())));
                std::env::current_exe()?.as_os_str().as_bytes().to_vec()
            }
        };
        let (listen_names, fds) = listen.fds.into_iter().unzip();
        let spec = SpawnSpec {
            program,
            args: self.args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            clear_env: true,
            env,
            cwd: self.cwd.map(|c| c.into_os_string().into_encoded_bytes()),
            name,
            close_grace_ms: u64::try_from(self.close_grace.as_millis()).unwrap_or(u64::MAX),
            speaks_protocol: self.speaks_protocol,
            stdout: self.stdout,
            stderr: self.stderr,
            listen_names,
        };
        Ok((spec, fds))
    }

    /// The spec a Spawn frame carried, and the frame's fds as the sockets
    /// it names.
    ///
    /// A count of fds that does not match `listen_names` is an error (the
    /// fds are closed with it): the peer is not trusted.
    pub fn from_wire(spec: SpawnSpec, fds: Vec<OwnedFd>) -> Result<(Self, ListenFds), String> {
        use std::os::unix::ffi::OsStringExt;
        if fds.len() > MAX_SPAWN_FDS {
            return Err(format!(
                "{} listen fds (at most {MAX_SPAWN_FDS})",
                fds.len()
            ));
        }
        if spec.listen_names.len() != fds.len() {
            return Err(format!(
                "{} listen names for {} fds",
                spec.listen_names.len(),
                fds.len()
            ));
        }
        if spec.program.is_empty() {
            return Err("an empty program path".into());
        }
        let os = OsString::from_vec;
        let mut built = Self::with_program(Program::Path(os(spec.program).into()));
        built.args = spec.args.into_iter().map(os).collect();
        built.clear_env = spec.clear_env;
        built.env = spec
            .env
            .into_iter()
            .map(|(k, v)| (os(k), v.map(os)))
            .collect();
        built.cwd = spec.cwd.map(|c| os(c).into());
        built.name = Some(spec.name);
        built.close_grace = Duration::from_millis(spec.close_grace_ms);
        built.speaks_protocol = spec.speaks_protocol;
        built.stdout = spec.stdout;
        built.stderr = spec.stderr;
        built.check()?;
        let listen = ListenFds {
            fds: spec.listen_names.into_iter().zip(fds).collect(),
        };
        Ok((built, listen))
    }

    /// Checks what a program may not be given: a name (the spec's, or the
    /// program's file name) of 1 to [`MAX_NAME_LEN`] bytes without control
    /// characters (it goes into logs and `ps` lines), environment names
    /// that are not empty and hold no `=`, and no NUL byte anywhere (the
    /// program, an argument, a variable, the directory). The error names
    /// the field.
    pub fn check(&self) -> Result<(), String> {
        use std::os::unix::ffi::OsStrExt;
        let nul = |bytes: &[u8]| bytes.contains(&0);
        match &self.program {
            Program::Path(path) if path.as_os_str().is_empty() => {
                return Err("an empty program path".into())
            }
            Program::Path(path) if nul(path.as_os_str().as_bytes()) => {
                return Err("the program path contains a NUL byte".into())
            }
            Program::Entry(entry) => check_name(entry).map_err(|e| format!("entry point: {e}"))?,
            Program::Path(_) => {}
        }
        check_name(&self.display_name())?;
        if let Some(i) = self.args.iter().position(|a| nul(a.as_bytes())) {
            return Err(format!("argument {} contains a NUL byte", i + 1));
        }
        for (key, value) in &self.env {
            let key = key.as_bytes();
            if key.is_empty() || key.contains(&b'=') || nul(key) {
                return Err(format!(
                    "environment name {:?} is empty or holds `=` or NUL",
                    String::from_utf8_lossy(key)
                ));
            }
            if value.as_ref().is_some_and(|v| nul(v.as_bytes())) {
                return Err(format!(
                    "the value of {} contains a NUL byte",
                    String::from_utf8_lossy(key)
                ));
            }
        }
        if self
            .cwd
            .as_ref()
            .is_some_and(|c| nul(c.as_os_str().as_bytes()))
        {
            return Err("the working directory contains a NUL byte".into());
        }
        Ok(())
    }

    /// The name the worker will carry.
    pub fn display_name(&self) -> String {
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

/// A [`WorkerSpec`] taken apart ([`WorkerSpec::into_parts`]).
#[derive(Debug)]
pub struct SpecParts {
    /// What to run.
    pub program: Program,
    /// Its arguments (after argv\[0\]).
    pub args: Vec<OsString>,
    /// Start from an empty environment.
    pub clear_env: bool,
    /// Variables set (`Some`) or removed (`None`), in order.
    pub env: Vec<(OsString, Option<OsString>)>,
    /// The working directory.
    pub cwd: Option<PathBuf>,
    /// The name the worker carries.
    pub name: String,
    /// Where stdout goes.
    pub stdout: Output,
    /// Where stderr goes.
    pub stderr: Output,
    /// The grace of each close step.
    pub close_grace: Duration,
    /// Bound on queued messages.
    pub queue_limit: usize,
    /// What posting does at the bound.
    pub when_full: WhenFull,
    /// Whether the program speaks arbor's protocol.
    pub speaks_protocol: bool,
}

/// The sockets a worker is handed at spawn, by systemd's socket-activation
/// convention: fds from 3 on (`SD_LISTEN_FDS_START`), in the order added,
/// with `LISTEN_FDS`, `LISTEN_FDNAMES` (the names given here) and
/// `LISTEN_PID`; the worker's channel follows them.
#[derive(Debug, Default)]
pub struct ListenFds {
    fds: Vec<(String, OwnedFd)>,
}

impl ListenFds {
    /// No sockets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the socket `fd`, named `name` in `LISTEN_FDNAMES`.
    pub fn with(mut self, name: impl Into<String>, fd: OwnedFd) -> Self {
        self.push(name, fd);
        self
    }

    /// Adds the socket `fd`, named `name` in `LISTEN_FDNAMES`.
    pub fn push(&mut self, name: impl Into<String>, fd: OwnedFd) {
        self.fds.push((name.into(), fd));
    }

    /// How many sockets.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Their names, in order.
    pub fn names(&self) -> Vec<String> {
        self.fds.iter().map(|(name, _)| name.clone()).collect()
    }

    /// The fds, in order, for the spawn that hands them over.
    pub fn into_fds(self) -> Vec<OwnedFd> {
        self.fds.into_iter().map(|(_, fd)| fd).collect()
    }
}

/// Paths as their raw bytes in serde (a Unix path need not be UTF-8, which
/// serde's own `PathBuf` impl requires).
mod unix_path {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(path.as_os_str().as_bytes())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<PathBuf, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(deserializer)?;
        Ok(std::ffi::OsString::from_vec(bytes.into_vec()).into())
    }

    pub(super) mod option {
        use std::path::PathBuf;

        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        pub(in super::super) fn serialize<S: Serializer>(
            path: &Option<PathBuf>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            path.as_ref()
                .map(|path| {
                    serde_bytes::Bytes::new(std::os::unix::ffi::OsStrExt::as_bytes(
                        path.as_os_str(),
                    ))
                })
                .serialize(serializer)
        }

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<PathBuf>, D::Error> {
            let bytes: Option<serde_bytes::ByteBuf> = Deserialize::deserialize(deserializer)?;
            Ok(bytes
                .map(|bytes| std::os::unix::ffi::OsStringExt::from_vec(bytes.into_vec()))
                .map(|os: std::ffi::OsString| os.into()))
        }
    }
}

/// A [`WorkerSpec`] as a Spawn frame carries it (WIRE.md section 3): paths,
/// arguments and environment as raw bytes, since Unix allows any but NUL
/// (a `Vec<u8>` encodes exactly as a byte string: u64 length, then bytes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpawnSpec {
    /// The program's path (an entry point arrives as its executable's path
    /// plus `ARBOR_ENTRY` in `env`).
    pub program: Vec<u8>,
    /// Arguments after argv\[0\].
    pub args: Vec<Vec<u8>>,
    /// Start from an empty environment.
    pub clear_env: bool,
    /// Variables set or removed, in order.
    pub env: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The working directory.
    pub cwd: Option<Vec<u8>>,
    /// The sub-worker's name.
    pub name: String,
    /// The grace of each close step, in milliseconds.
    pub close_grace_ms: u64,
    /// Whether the program speaks arbor's protocol.
    pub speaks_protocol: bool,
    /// Where stdout goes.
    pub stdout: Output,
    /// Where stderr goes.
    pub stderr: Output,
    /// One name per fd of the frame, in order: the sub-worker's
    /// `LISTEN_FDNAMES`.
    pub listen_names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_survives_the_wire() {
        let spec = WorkerSpec::program("/bin/echo")
            .args(["a", "b"])
            .env("K", "v")
            .env_remove("GONE")
            .cwd("/tmp")
            .name("e")
            .close_grace(Duration::from_millis(1500))
            .speaks_protocol(false)
            .stdout(Output::Capture);
        let (wire, fds) = spec.to_wire(ListenFds::new()).unwrap();
        assert!(fds.is_empty());
        assert_eq!(wire.program, b"/bin/echo");
        assert_eq!(wire.close_grace_ms, 1500);
        let (back, listen) = WorkerSpec::from_wire(wire.clone(), fds).unwrap();
        assert!(listen.is_empty());
        let back = back.into_parts();
        assert_eq!(back.program, Program::Path("/bin/echo".into()));
        assert_eq!(back.args, ["a", "b"]);
        // The sender's own environment, then the spec's changes.
        assert!(back.clear_env);
        assert_eq!(
            back.env[back.env.len() - 2..],
            [("K".into(), Some("v".into())), ("GONE".into(), None)]
        );
        let path = std::env::var_os("PATH").unwrap();
        assert!(back.env.contains(&("PATH".into(), Some(path))));
        assert_eq!(back.cwd, Some(PathBuf::from("/tmp")));
        assert_eq!(back.name, "e");
        assert!(!back.speaks_protocol);
        assert_eq!(
            (back.stdout, back.stderr),
            (Output::Capture, Output::Inherit)
        );
    }

    #[test]
    fn a_spec_is_a_value_that_round_trips_through_the_codec_even_with_non_utf8_paths() {
        use std::os::unix::ffi::OsStringExt;
        let odd = PathBuf::from(OsString::from_vec(b"/tmp/\xffodd".to_vec()));
        let spec = WorkerSpec::program(&odd)
            .arg(OsString::from_vec(vec![0xfe, b'x']))
            .env("K", "v")
            .env_remove("GONE")
            .cwd(&odd)
            .name("n")
            .queue_limit(7, WhenFull::Error)
            .stderr(Output::Null);
        let mut bytes = Vec::new();
        crate::codec::encode_into(&spec, &mut bytes).unwrap();
        let back: WorkerSpec = crate::codec::decode_exact(&bytes).unwrap();
        assert_eq!(back, spec);
        assert_eq!(spec.clone(), spec);
        assert_ne!(spec.clone().arg("more"), spec);
        let entry = WorkerSpec::entry("part");
        let mut bytes = Vec::new();
        crate::codec::encode_into(&entry, &mut bytes).unwrap();
        assert_eq!(
            crate::codec::decode_exact::<WorkerSpec>(&bytes).unwrap(),
            entry
        );
    }

    #[test]
    fn an_entry_point_is_sent_as_this_executable_with_arbor_entry() {
        let (wire, _) = WorkerSpec::entry("part").to_wire(ListenFds::new()).unwrap();
        assert_eq!(
            wire.program,
            std::env::current_exe()
                .unwrap()
                .as_os_str()
                .as_encoded_bytes()
        );
        assert!(wire
            .env
            .contains(&(b"ARBOR_ENTRY".to_vec(), Some(b"part".to_vec()))));
    }

    #[test]
    fn spawn_variables_are_not_passed_on_and_a_cleared_env_stays_clear() {
        // Set by cargo for every test process, never by arbor: stands in for
        // a variable of the sender.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        let (wire, _) = WorkerSpec::program("/bin/true")
            .to_wire(ListenFds::new())
            .unwrap();
        assert!(wire.env.iter().any(|(k, _)| k == b"CARGO_PKG_NAME"));
        assert!(!wire
            .env
            .iter()
            .any(|(k, _)| SPAWN_VARIABLES.iter().any(|v| v.as_bytes() == k)));
        let (wire, _) = WorkerSpec::program("/bin/true")
            .env_clear()
            .env("ONLY", "this")
            .to_wire(ListenFds::new())
            .unwrap();
        assert_eq!(wire.env, [(b"ONLY".to_vec(), Some(b"this".to_vec()))]);
    }

    #[test]
    fn check_names_the_field_a_bad_spec_gets_wrong() {
        let ok = || WorkerSpec::program("/bin/true");
        assert_eq!(ok().check(), Ok(()));
        let bad = |spec: WorkerSpec| spec.check().unwrap_err();
        assert!(bad(ok().name("two\nlines")).contains("control character"));
        assert!(bad(ok().name("")).contains("empty"));
        assert!(bad(ok().name("x".repeat(MAX_NAME_LEN + 1))).contains("at most 255"));
        assert!(bad(ok().name("a\0b")).contains("control character"));
        assert!(bad(ok().env("A=B", "v")).contains("environment name"));
        assert!(bad(ok().env("", "v")).contains("environment name"));
        assert!(bad(ok().env("K", "a\0b")).contains("value of K"));
        assert!(bad(ok().arg("a\0b")).contains("argument 1"));
        assert!(bad(ok().cwd("/tmp/\0")).contains("working directory"));
        assert!(bad(WorkerSpec::program("")).contains("empty program"));
        assert_eq!(ok().name("x".repeat(MAX_NAME_LEN)).check(), Ok(()));
    }

    #[test]
    fn a_peer_spec_that_does_not_add_up_is_refused() {
        let (mut wire, _) = WorkerSpec::program("/bin/true")
            .to_wire(ListenFds::new())
            .unwrap();
        wire.listen_names = vec!["http".into()];
        assert!(WorkerSpec::from_wire(wire.clone(), Vec::new())
            .unwrap_err()
            .contains("1 listen names for 0 fds"));
        wire.listen_names.clear();
        let mut forged = wire.clone();
        forged.name = "a\nforged log line".into();
        assert!(WorkerSpec::from_wire(forged, Vec::new())
            .unwrap_err()
            .contains("control character"));
        wire.program.clear();
        assert!(WorkerSpec::from_wire(wire, Vec::new()).is_err());
    }
}

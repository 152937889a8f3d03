//! arbord's configuration file (TOML), and the built-in defaults.
//!
//! ```toml
//! [daemon]
//! socket = "/run/arbor/arbord.sock"   # default: $ARBOR_SOCKET, /run/arbor (root), $XDG_RUNTIME_DIR/arbor
//! mode = "0600"                       # of the control socket
//! allowed_uids = [1000]               # besides arbord's own uid and root
//! shutdown_grace = "10s"
//! max_depth = 8                       # worker trees: levels below a top-level worker,
//! max_children = 64                   # sub-workers per worker,
//! max_workers = 1024                  # workers in all, before a Spawn is refused
//! cgroups = true                      # a cgroup per worker, where one can be made
//!
//! [[worker]]                          # started at boot
//! name = "echo"
//! program = "/usr/local/bin/echo-worker"
//! args = []
//! env = { RUST_LOG = "info" }
//! cwd = "/"
//! restart = "on-failure"              # never | on-failure | always
//! close_grace = "5s"
//! restart_delay = "100ms"              # backoff: first delay,
//! restart_factor = 2.0                 # growth,
//! restart_max_delay = "30s"            # cap;
//! max_restarts = 5                     # intensity: at most 5 restarts
//! restart_window = "60s"               # in 60 s, else the worker is failed
//!
//! [[pool]]                            # N replicas of one program, with sockets
//! name = "web"
//! program = "/usr/local/bin/http-hello"
//! replicas = 4
//! ready_timeout = "30s"               # a replica not Ready by then is killed
//! surge = 1                           # replicas started at once in a rolling reload
//! restart = "always"                  # and every other `[[worker]]` key
//!
//! [[pool.socket]]
//! name = "http"                       # LISTEN_FDNAMES in the replicas; matched
//!                                     # against systemd's socket names
//! listen = "127.0.0.1:8080"           # or "[::1]:8080", "unix:/run/web.sock"
//! backlog = 1024
//! mode = "shared"                     # shared | reuseport | handoff
//! policy = "round-robin"              # handoff only: round-robin | least-busy
//!
//! [[shared]]                          # a SharedWorker: started on the first
//! name = "counter"                    # `arborctl attach counter`, each client
//! program = "/usr/local/bin/counter"  # a port of its own; every [[worker]] key
//! ```
//!
//! A bad file is a [`ConfigError`] naming the file, the line and column, and
//! the key (`worker[1].restart`); nothing is started.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::listen::ListenAddr;
use crate::restart::{RestartConfig, RestartPolicy};
use crate::WorkerSpec;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}:{column}: {key}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// Line, from 1 (0 when unknown).
    pub line: usize,
    /// Column, from 1 (0 when unknown).
    pub column: usize,
    /// The key, as a path (`worker[0].restart`), or `.` for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The whole configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Daemon settings.
    pub daemon: DaemonConfig,
    /// Workers started at boot.
    pub workers: Vec<WorkerConfig>,
    /// Pools started at boot.
    pub pools: Vec<PoolConfig>,
    /// Shared workers.
    pub shared: Vec<SharedConfig>,
}

/// `[[worker]]`: what to run, and how to restart it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// Its name, unique across workers, pools and shared workers.
    pub name: String,
    /// What each run starts (program or entry point, arguments,
    /// environment, directory, close grace, protocol), named `name`.
    pub spec: WorkerSpec,
    /// When and how fast it is restarted.
    pub restart: RestartConfig,
}

/// `[[pool]]`: replicas of one worker, serving the same sockets. It takes
/// every `[[worker]]` key, plus `replicas`, `ready_timeout`, `surge` and
/// `[[pool.socket]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The worker each replica runs.
    pub worker: WorkerConfig,
    /// How many replicas (default 1, at most [`MAX_REPLICAS`]).
    pub replicas: u32,
    /// How long a replica may take to send Ready before it is killed (and
    /// a rolling reload stops); default [`DEFAULT_READY_TIMEOUT`].
    pub ready_timeout: Duration,
    /// Replicas replaced at once in a rolling reload (default 1).
    pub surge: u32,
    /// The sockets its replicas serve.
    pub sockets: Vec<SocketConfig>,
}

/// `[[shared]]`: a shared worker (the standard's SharedWorker), started on
/// the first `attach` and again on the first one after it exits. It takes
/// every `[[worker]]` key.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedConfig {
    /// The worker.
    pub worker: WorkerConfig,
}

/// The file as serde reads it; [`Config::parse`] checks it and gives each
/// table its own type.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    daemon: DaemonConfig,
    #[serde(default)]
    worker: Vec<Table>,
    #[serde(default)]
    pool: Vec<Table>,
    #[serde(default)]
    shared: Vec<Table>,
}

/// `[[pool.socket]]`: a socket a pool's replicas serve.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// Its name: the replicas see it in `LISTEN_FDNAMES`, and a socket
    /// passed by systemd under this name is used instead of binding.
    pub name: String,
    /// Where to listen.
    pub listen: ListenAddr,
    /// The listen backlog (default 1024).
    #[serde(default = "default_backlog")]
    pub backlog: u32,
    /// How connections reach the replicas.
    #[serde(default)]
    pub mode: SocketMode,
    /// Which replica a handed-off connection goes to (`handoff` mode).
    #[serde(default)]
    pub policy: HandoffPolicy,
}

/// How a pool socket's connections reach the replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SocketMode {
    /// arbord binds once; every replica inherits the listening socket and
    /// the kernel spreads the accepts.
    #[default]
    Shared,
    /// arbord binds one `SO_REUSEPORT` listener per replica; the kernel
    /// spreads connections over them by hash.
    Reuseport,
    /// arbord accepts and hands each connection to a replica.
    Handoff,
}

impl SocketMode {
    /// As the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            SocketMode::Shared => "shared",
            SocketMode::Reuseport => "reuseport",
            SocketMode::Handoff => "handoff",
        }
    }
}

/// Which replica gets the next handed-off connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandoffPolicy {
    /// Each ready replica in turn (skipping one still answering its last).
    #[default]
    RoundRobin,
    /// The replica with the fewest open handed-off connections.
    LeastBusy,
}

impl HandoffPolicy {
    /// As the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            HandoffPolicy::RoundRobin => "round-robin",
            HandoffPolicy::LeastBusy => "least-busy",
        }
    }
}

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Control socket path; see [`crate::client::default_socket_path`].
    pub socket: Option<PathBuf>,
    /// Permission bits of the control socket, as an octal string.
    #[serde(default = "default_mode", deserialize_with = "octal")]
    pub mode: u32,
    /// Group the control socket is given to (with `mode = "0660"`, members
    /// can reach the socket; their uids must still be allowed).
    pub group: Option<String>,
    /// Uids allowed on the control socket besides arbord's own and root.
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// How long shutdown waits for each worker's close before SIGKILL.
    #[serde(default = "default_shutdown_grace", deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// Deepest level of a sub-worker (top-level workers are level 0).
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
    /// Most sub-workers one worker may have at once.
    #[serde(default = "default_max_children")]
    pub max_children: u32,
    /// Most workers in all; a Spawn beyond it is refused.
    #[serde(default = "default_max_workers")]
    pub max_workers: u32,
    /// Most sub-workers below one top-level worker (all levels); set below
    /// `max_workers`, one tree cannot starve the others' spawns.
    #[serde(default = "default_max_tree_workers")]
    pub max_tree_workers: u32,
    /// A cgroup per worker where arbord has a writable cgroup v2 subtree
    /// (`Delegate=yes` under systemd), so that a worker's exit kills every
    /// descendant it left, escaped ones included (see `arbor_supervisor::cgroup`).
    #[serde(default = "default_cgroups")]
    pub cgroups: bool,
    /// How long a control client may take to send a complete request, from
    /// its connection or its last answer (default 60s); then it is told so
    /// and disconnected. A stream it asked for (`watch`, `logs -f`) is not
    /// idle.
    #[serde(
        default = "default_control_idle_timeout",
        deserialize_with = "duration"
    )]
    pub control_idle_timeout: Duration,
}

/// [`DaemonConfig::control_idle_timeout`] when none is set.
pub const DEFAULT_CONTROL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

fn default_control_idle_timeout() -> Duration {
    DEFAULT_CONTROL_IDLE_TIMEOUT
}

fn default_cgroups() -> bool {
    true
}

impl DaemonConfig {
    /// The worker-tree limits this configuration sets.
    pub fn tree_limits(&self) -> crate::TreeLimits {
        crate::TreeLimits {
            max_depth: self.max_depth,
            max_children: self.max_children,
            max_workers: self.max_workers,
            max_tree_workers: self.max_tree_workers,
        }
    }
}

fn default_max_depth() -> u32 {
    crate::TreeLimits::default().max_depth
}

fn default_max_children() -> u32 {
    crate::TreeLimits::default().max_children
}

fn default_max_workers() -> u32 {
    crate::TreeLimits::default().max_workers
}

fn default_max_tree_workers() -> u32 {
    crate::TreeLimits::default().max_tree_workers
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            socket: None,
            mode: default_mode(),
            group: None,
            allowed_uids: Vec::new(),
            shutdown_grace: default_shutdown_grace(),
            max_depth: default_max_depth(),
            max_children: default_max_children(),
            max_workers: default_max_workers(),
            max_tree_workers: default_max_tree_workers(),
            cgroups: default_cgroups(),
            control_idle_timeout: DEFAULT_CONTROL_IDLE_TIMEOUT,
        }
    }
}

/// How long a pool replica may take to send Ready when its `[[pool]]`
/// names no `ready_timeout`.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Most replicas a pool may have (in the configuration and in a scale).
pub const MAX_REPLICAS: u32 = 1000;

/// A `[[worker]]`, `[[pool]]` or `[[shared]]` table as written: every key
/// any of them may have (a pool's keys are refused in the other two by
/// [`Config::parse`], which names the key and the line).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    /// Name.
    name: String,
    /// Program path or a name looked up in PATH (or `entry` instead).
    #[serde(default)]
    program: Option<String>,
    /// A worker built into arbord itself (`echo`, `primes`), for demos and
    /// smoke tests, instead of a program.
    #[serde(default)]
    entry: Option<String>,
    /// Arguments.
    #[serde(default)]
    args: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Working directory.
    cwd: Option<PathBuf>,
    /// Restart policy.
    #[serde(default, deserialize_with = "policy")]
    restart: RestartPolicy,
    /// Close grace.
    #[serde(default = "default_close_grace", deserialize_with = "duration")]
    close_grace: Duration,
    /// Delay before the first restart (default 100ms)...
    #[serde(default = "default_restart_delay", deserialize_with = "duration")]
    restart_delay: Duration,
    /// ...multiplied by this for each further one (default 2)...
    #[serde(default = "default_restart_factor")]
    restart_factor: f64,
    /// ...up to this (default 30s).
    #[serde(default = "default_restart_max_delay", deserialize_with = "duration")]
    restart_max_delay: Duration,
    /// At most this many restarts (default 5)...
    #[serde(default = "default_max_restarts")]
    max_restarts: u32,
    /// ...within this window (default 60s); one more and the worker is failed.
    #[serde(default = "default_restart_window", deserialize_with = "duration")]
    restart_window: Duration,
    /// Whether the program speaks arbor's protocol (default true).
    #[serde(default = "yes")]
    speaks_protocol: bool,
    /// `[[pool]]` only: how many replicas (default 1).
    replicas: Option<u32>,
    /// `[[pool]]` only: how long a replica may take to send Ready before it
    /// is killed (and a rolling reload stops); default 30s.
    #[serde(default, deserialize_with = "optional_duration")]
    ready_timeout: Option<Duration>,
    /// `[[pool]]` only: replicas replaced at once in a rolling reload (default 1).
    surge: Option<u32>,
    /// `[[pool]]` only: the sockets its replicas serve.
    #[serde(default)]
    socket: Vec<SocketConfig>,
}

impl Table {
    /// The worker this table describes (checked by [`Config::parse`]).
    fn worker(&self) -> WorkerConfig {
        let spec = match (&self.entry, &self.program) {
            (Some(entry), _) => WorkerSpec::entry(entry),
            (None, program) => WorkerSpec::program(program.clone().unwrap_or_default()),
        };
        let mut spec = spec
            .name(&self.name)
            .args(&self.args)
            .close_grace(self.close_grace)
            .speaks_protocol(self.speaks_protocol);
        for (key, value) in &self.env {
            spec = spec.env(key, value);
        }
        if let Some(cwd) = &self.cwd {
            spec = spec.cwd(cwd);
        }
        WorkerConfig {
            name: self.name.clone(),
            spec,
            restart: RestartConfig {
                policy: self.restart,
                first_delay: self.restart_delay,
                factor: self.restart_factor,
                max_delay: self.restart_max_delay,
                max_restarts: self.max_restarts,
                within: self.restart_window,
            },
        }
    }

    /// The pool this `[[pool]]` table describes, its defaults filled in.
    fn pool(&self) -> PoolConfig {
        PoolConfig {
            worker: self.worker(),
            replicas: self.replicas.unwrap_or(1),
            ready_timeout: self.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT),
            surge: self.surge.unwrap_or(1).max(1),
            sockets: self.socket.clone(),
        }
    }
}

fn default_backlog() -> u32 {
    1024
}
fn default_mode() -> u32 {
    0o600
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_close_grace() -> Duration {
    crate::spec::DEFAULT_CLOSE_GRACE
}
fn yes() -> bool {
    true
}
fn default_restart_delay() -> Duration {
    RestartConfig::default().first_delay
}
fn default_restart_factor() -> f64 {
    RestartConfig::default().factor
}
fn default_restart_max_delay() -> Duration {
    RestartConfig::default().max_delay
}
fn default_max_restarts() -> u32 {
    RestartConfig::default().max_restarts
}
fn default_restart_window() -> Duration {
    RestartConfig::default().within
}

/// The gid of group `name`, from /etc/group.
pub fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then(|| fields.nth(1)?.parse().ok())?
    })
}

fn octal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let text = String::deserialize(d)?;
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not an octal mode like \"0600\""))
        })
}

fn policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RestartPolicy, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Parses `250ms`, `5s`, `2m`, `1h` (and a bare number of seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like \"5s\" or \"250ms\""))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (ms, s, m, h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            key: ".".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`, reporting errors against `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let checker = Checker { text, path };
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|e| checker.error(".".into(), e.message().to_string(), e.span()))?;
        let file: File = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            checker.error(key, inner.message().to_string(), inner.span())
        })?;
        let mut names = HashSet::new();
        let mut socket_names = HashSet::new();
        let entries = file.worker.iter().map(|w| ("worker", w));
        let entries = entries
            .enumerate()
            .chain(file.pool.iter().map(|p| ("pool", p)).enumerate())
            .chain(file.shared.iter().map(|p| ("shared", p)).enumerate());
        for (i, (table, worker)) in entries {
            checker.table(table, i, worker, &mut names)?;
            checker.sockets(table, i, worker, &mut socket_names)?;
        }
        Ok(Config {
            workers: file.worker.iter().map(Table::worker).collect(),
            pools: file.pool.iter().map(Table::pool).collect(),
            shared: file
                .shared
                .iter()
                .map(|table| SharedConfig {
                    worker: table.worker(),
                })
                .collect(),
            daemon: file.daemon,
        })
    }
}

/// What [`Config::parse`] checks beyond serde, with the file's text to
/// point each error at its line.
struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Checker<'_> {
    fn error(&self, key: String, message: String, span: Option<Range<usize>>) -> ConfigError {
        let (line, column) = span
            .map(|s| line_column(self.text, s.start))
            .unwrap_or((0, 0));
        ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            key,
            message,
        }
    }

    /// Table `i` of kind `table` (`worker`, `pool`, `shared`), but its sockets.
    fn table<'t>(
        &self,
        table: &str,
        i: usize,
        worker: &'t Table,
        names: &mut HashSet<&'t str>,
    ) -> Result<(), ConfigError> {
        let at = || {
            self.text
                .find(&format!("\"{}\"", worker.name))
                .map(|s| s..s)
        };
        if let Err(reason) = crate::spec::check_name(&worker.name) {
            return Err(self.error(format!("{table}[{i}].name"), reason, at()));
        }
        let is_pool = table == "pool";
        let pool_only = [
            ("replicas", worker.replicas.is_some()),
            ("ready_timeout", worker.ready_timeout.is_some()),
            ("surge", worker.surge.is_some()),
            ("socket", !worker.socket.is_empty()),
        ];
        if let Some((key, _)) = pool_only.iter().find(|(_, set)| *set && !is_pool) {
            return Err(self.error(
                format!("{table}[{i}].{key}"),
                format!("`{key}` belongs in a [[pool]]"),
                at(),
            ));
        }
        if worker.replicas.is_some_and(|n| n > MAX_REPLICAS) {
            return Err(self.error(
                format!("{table}[{i}].replicas"),
                format!("at most {MAX_REPLICAS} replicas"),
                at(),
            ));
        }
        if !(1.0..=100.0).contains(&worker.restart_factor) {
            return Err(self.error(
                format!("{table}[{i}].restart_factor"),
                format!("{} is not between 1 and 100", worker.restart_factor),
                at(),
            ));
        }
        let day = Duration::from_secs(86_400);
        if worker.restart_delay > day || worker.restart_max_delay > day || worker.close_grace > day
        {
            return Err(self.error(
                format!("{table}[{i}]"),
                "restart delays and close_grace are limited to a day".into(),
                at(),
            ));
        }
        if worker.program.is_some() == worker.entry.is_some() {
            return Err(self.error(
                format!("{table}[{i}]"),
                "needs exactly one of `program` and `entry`".into(),
                at(),
            ));
        }
        if !names.insert(worker.name.as_str()) {
            return Err(self.error(
                format!("{table}[{i}].name"),
                format!("duplicate name {:?}", worker.name),
                at(),
            ));
        }
        Ok(())
    }

    /// The sockets of table `i` (a pool's): names unique across pools and
    /// fit for `LISTEN_FDNAMES`, `reuseport` only on TCP.
    fn sockets<'t>(
        &self,
        table: &str,
        i: usize,
        worker: &'t Table,
        socket_names: &mut HashSet<&'t str>,
    ) -> Result<(), ConfigError> {
        for (j, socket) in worker.socket.iter().enumerate() {
            let at = self
                .text
                .find(&format!("\"{}\"", socket.name))
                .map(|s| s..s);
            if socket.name.is_empty()
                || socket.name.contains([':', ' ', '\t', '\n'])
                || socket.name.len() > 255
            {
                return Err(self.error(
                    format!("{table}[{i}].socket[{j}].name"),
                    format!("socket name {:?} must be 1-255 characters without `:` or spaces (it goes into LISTEN_FDNAMES)", socket.name),
                    at,
                ));
            }
            if socket.name == "control" || !socket_names.insert(socket.name.as_str()) {
                return Err(self.error(
                    format!("{table}[{i}].socket[{j}].name"),
                    format!(
                        "socket name {:?} is taken (socket names are unique across pools; `control` is arbord's)",
                        socket.name
                    ),
                    at,
                ));
            }
            if socket.mode == SocketMode::Reuseport && !matches!(socket.listen, ListenAddr::Tcp(_))
            {
                return Err(self.error(
                    format!("{table}[{i}].socket[{j}].mode"),
                    "reuseport needs a TCP address".into(),
                    at,
                ));
            }
        }
        Ok(())
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("arbord.toml"))
    }

    #[test]
    fn the_config_fuzz_targets_seed_uses_every_table_and_parses() {
        let config = parse(include_str!("../fuzz/seeds/everything.toml")).unwrap();
        assert_eq!(config.daemon.max_tree_workers, 64);
        assert_eq!(
            (
                config.workers.len(),
                config.pools.len(),
                config.shared.len()
            ),
            (1, 1, 1)
        );
        assert_eq!(config.pools[0].sockets.len(), 1);
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.daemon.mode, 0o600);
        assert!(config.workers.is_empty());
    }

    #[test]
    fn a_full_file_parses() {
        let config = parse(
            r#"
[daemon]
socket = "/tmp/x.sock"
mode = "0660"
group = "root"
allowed_uids = [1000]
shutdown_grace = "2s"
max_children = 3

[[worker]]
name = "echo"
program = "echo-worker"
args = ["--fast"]
env = { A = "1" }
restart = "on-failure"
close_grace = "250ms"
"#,
        )
        .unwrap();
        assert_eq!(config.daemon.socket, Some(PathBuf::from("/tmp/x.sock")));
        assert_eq!(config.daemon.mode, 0o660);
        assert_eq!(config.daemon.group.as_deref(), Some("root"));
        assert_eq!(config.daemon.allowed_uids, [1000]);
        assert_eq!(config.daemon.shutdown_grace, Duration::from_secs(2));
        assert_eq!(config.daemon.tree_limits().max_children, 3);
        assert_eq!(config.daemon.tree_limits().max_depth, 8);
        let worker = &config.workers[0];
        assert_eq!(worker.restart.policy, RestartPolicy::OnFailure);
        assert_eq!(worker.restart.max_restarts, 5);
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(worker.spec.grace(), Duration::from_millis(250));
        let spec = worker.spec.clone().into_parts();
        assert!(spec.env.contains(&("A".into(), Some("1".into()))));
        assert_eq!(worker.name, "echo");
        assert_eq!(spec.args, ["--fast"]);
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let err = parse("[[worker]]\nname = \"a\"\nprogram = \"x\"\nrestart = \"sometimes\"\n")
            .unwrap_err();
        assert_eq!(
            (err.line, err.key.as_str()),
            (4, "worker[0].restart"),
            "{err}"
        );
        assert!(err.to_string().starts_with("arbord.toml:4:"), "{err}");
        assert!(err.message.contains("sometimes"), "{err}");

        let err = parse("[daemon]\nsokcet = \"/x\"\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert!(err.message.contains("sokcet"), "{err}");

        let err = parse("[[worker]]\nname = \"a\"\n").unwrap_err();
        assert!(err.message.contains("program"), "{err}");
        assert_eq!(err.key, "worker[0]");

        let err =
            parse("[[worker]]\nname = \"a\"\nprogram = \"x\"\nrestart_factor = inf\n").unwrap_err();
        assert_eq!(err.key, "worker[0].restart_factor", "{err}");

        let err = parse("[daemon\n").unwrap_err();
        assert_eq!(err.line, 1, "{err}");

        let err =
            parse("[[worker]]\nname=\"a\"\nprogram=\"x\"\n[[worker]]\nname=\"a\"\nprogram=\"y\"\n")
                .unwrap_err();
        assert!(err.message.contains("duplicate"), "{err}");

        let err = parse("[[worker]]\nname = \"a\\nb\"\nprogram = \"x\"\n").unwrap_err();
        assert_eq!(err.key, "worker[0].name", "{err}");
        assert!(err.message.contains("control character"), "{err}");
    }

    #[test]
    fn pools_parse_with_their_sockets() {
        let config = parse(
            r#"
[[pool]]
name = "web"
program = "http-hello"
replicas = 3
ready_timeout = "5s"
surge = 2

[[pool.socket]]
name = "http"
listen = "[::1]:8080"
mode = "handoff"
policy = "least-busy"

[[pool.socket]]
name = "local"
listen = "unix:/run/web.sock"
"#,
        )
        .unwrap();
        let pool = &config.pools[0];
        assert_eq!(pool.replicas, 3);
        assert_eq!(pool.ready_timeout, Duration::from_secs(5));
        assert_eq!(pool.surge, 2);
        assert_eq!(pool.sockets[0].mode, SocketMode::Handoff);
        assert_eq!(pool.sockets[0].policy, HandoffPolicy::LeastBusy);
        assert_eq!(pool.sockets[0].backlog, 1024);
        assert_eq!(pool.sockets[1].mode, SocketMode::Shared);
        assert_eq!(
            pool.sockets[1].listen,
            ListenAddr::Unix("/run/web.sock".into())
        );
    }

    #[test]
    fn pool_mistakes_are_named() {
        let pool = "[[pool]]\nname = \"web\"\nprogram = \"x\"\n";
        let err = parse(&format!(
            "{pool}[[pool.socket]]\nname = \"h\"\nlisten = \"localhost:80\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            (err.key.as_str(), err.line),
            ("pool[0].socket[0].listen", 6),
            "{err}"
        );
        let err = parse(&format!(
            "{pool}[[pool.socket]]\nname = \"h\"\nlisten = \"unix:/x\"\nmode = \"reuseport\"\n"
        ))
        .unwrap_err();
        assert_eq!(err.key, "pool[0].socket[0].mode", "{err}");
        let err = parse(&format!(
            "{pool}[[pool.socket]]\nname = \"h\"\nlisten = \"127.0.0.1:1\"\nmode = \"sideways\"\n"
        ))
        .unwrap_err();
        assert!(err.message.contains("sideways"), "{err}");
        let err = parse(&format!(
            "{pool}[[pool.socket]]\nname = \"control\"\nlisten = \"127.0.0.1:1\"\n"
        ))
        .unwrap_err();
        assert_eq!(err.key, "pool[0].socket[0].name", "{err}");
        let err = parse("[[worker]]\nname = \"a\"\nprogram = \"x\"\nreplicas = 2\n").unwrap_err();
        assert_eq!(err.key, "worker[0].replicas", "{err}");
        let err = parse(&format!(
            "[[worker]]\nname = \"web\"\nprogram = \"x\"\n{pool}"
        ))
        .unwrap_err();
        assert!(err.message.contains("duplicate"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("").is_err());
    }
}

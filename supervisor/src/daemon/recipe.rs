//! What a managed worker is started from, kept to restart it and compared
//! on a reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::control::SpawnRequest;

use super::pools::PoolRuntime;
use crate::config::WorkerConfig;
use crate::restart::RestartConfig;
use crate::{Output, WorkerSpec};

/// What a managed worker is started from (kept to restart it).
#[derive(Debug, Clone)]
pub(super) struct Recipe {
    pub(super) name: String,
    pub(super) program: crate::Program,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) cwd: Option<PathBuf>,
    pub(super) close_grace: Duration,
    pub(super) speaks_protocol: bool,
    pub(super) restart: RestartConfig,
    /// Set for a pool's replicas: the pool's sockets.
    pub(super) pool: Option<Arc<PoolRuntime>>,
    /// A pool replica not Ready by then is killed (and restarted as a failure).
    pub(super) ready_timeout: Option<Duration>,
}

impl Recipe {
    pub(super) fn for_pool(pool: &WorkerConfig, runtime: &Arc<PoolRuntime>) -> Self {
        Self {
            pool: Some(Arc::clone(runtime)),
            ready_timeout: Some(pool.ready_limit()),
            ..Self::from_config(pool)
        }
    }

    /// A sub-worker's entry: known by its name, started by its parent worker
    /// (so never by arbord again).
    pub(super) fn for_sub_worker(name: &str) -> Self {
        Self {
            name: name.to_string(),
            program: crate::Program::Path(PathBuf::new()),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            close_grace: crate::spec::DEFAULT_CLOSE_GRACE,
            speaks_protocol: true,
            restart: RestartConfig::default(),
            pool: None,
            ready_timeout: None,
        }
    }

    pub(super) fn from_config(worker: &WorkerConfig) -> Self {
        Self {
            name: worker.name.clone(),
            program: match (&worker.entry, &worker.program) {
                (Some(entry), _) => crate::Program::Entry(entry.clone()),
                (None, program) => crate::Program::Path(program.clone().unwrap_or_default().into()),
            },
            args: worker.args.clone(),
            env: worker
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cwd: worker.cwd.clone(),
            close_grace: worker.close_grace,
            speaks_protocol: worker.speaks_protocol,
            restart: worker.restart_config(),
            pool: None,
            ready_timeout: None,
        }
    }

    pub(super) fn from_request(request: SpawnRequest) -> Result<Self, String> {
        let restart = RestartConfig {
            policy: request.restart.parse()?,
            ..RestartConfig::default()
        };
        let name = request.name.unwrap_or_else(|| {
            std::path::Path::new(&request.program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| request.program.clone())
        });
        Ok(Self {
            name,
            program: crate::Program::Path(request.program.into()),
            args: request.args,
            env: request.env,
            cwd: request.cwd.map(PathBuf::from),
            close_grace: Duration::from_millis(request.close_grace_ms),
            speaks_protocol: request.speaks_protocol,
            restart,
            pool: None,
            ready_timeout: None,
        })
    }

    /// The spec of a new run; a pool replica gets its sockets here (a
    /// `reuseport` socket is bound anew for each).
    pub(super) fn spec(&self) -> std::io::Result<WorkerSpec> {
        let spec = match &self.program {
            crate::Program::Path(path) => WorkerSpec::program(path),
            crate::Program::Entry(entry) => WorkerSpec::entry(entry),
        };
        let mut spec = spec
            .name(&self.name)
            .args(&self.args)
            .close_grace(self.close_grace)
            .speaks_protocol(self.speaks_protocol)
            .stdout(Output::Capture)
            .stderr(Output::Capture);
        for (key, value) in &self.env {
            spec = spec.env(key, value);
        }
        if let Some(cwd) = &self.cwd {
            spec = spec.cwd(cwd);
        }
        if let Some(pool) = &self.pool {
            for (name, fd) in pool.listen_fds()? {
                spec = spec.listen_fd(name, fd);
            }
        }
        Ok(spec)
    }
}

/// Two recipes are equal when a reload can leave a worker started from one
/// running for the other: the same name, program, arguments, environment,
/// directory, grace, protocol, restart settings and Ready limit, and the
/// same pool (the very same sockets).
impl PartialEq for Recipe {
    fn eq(&self, other: &Self) -> bool {
        let same_pool = match (&self.pool, &other.pool) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_pool
            && self.name == other.name
            && self.program == other.program
            && self.args == other.args
            && self.env == other.env
            && self.cwd == other.cwd
            && self.close_grace == other.close_grace
            && self.speaks_protocol == other.speaks_protocol
            && self.restart == other.restart
            && self.ready_timeout == other.ready_timeout
    }
}

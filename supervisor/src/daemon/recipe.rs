//! What a managed worker is started from, kept to restart it and compared
//! on a reload.

use std::sync::Arc;
use std::time::Duration;

use arbor_protocol::control::SpawnRequest;

use super::pools::PoolRuntime;
use crate::config::{PoolConfig, WorkerConfig};
use crate::restart::RestartConfig;
use crate::{ListenFds, Output, WorkerSpec};

/// What a managed worker is started from (kept to restart it): the spec
/// of each run, its restart policy, and its pool if it is a replica.
#[derive(Debug, Clone)]
pub(super) struct Recipe {
    /// The configured name (also the spec's).
    pub(super) name: String,
    /// What each run starts (without its sockets: a replica gets its pool's
    /// at each spawn).
    pub(super) spec: WorkerSpec,
    pub(super) restart: RestartConfig,
    /// Set for a pool's replicas: the pool's sockets.
    pub(super) pool: Option<Arc<PoolRuntime>>,
    /// A pool replica not Ready by then is killed (and restarted as a failure).
    pub(super) ready_timeout: Option<Duration>,
}

impl Recipe {
    pub(super) fn for_pool(pool: &PoolConfig, runtime: &Arc<PoolRuntime>) -> Self {
        Self {
            pool: Some(Arc::clone(runtime)),
            ready_timeout: Some(pool.ready_timeout),
            ..Self::from_config(&pool.worker)
        }
    }

    /// A sub-worker's entry: known by its name, started by its parent worker
    /// (so never by arbord again).
    pub(super) fn for_sub_worker(name: &str) -> Self {
        Self::new(name, WorkerSpec::program(""), RestartConfig::default())
    }

    pub(super) fn from_config(worker: &WorkerConfig) -> Self {
        Self::new(&worker.name, worker.spec.clone(), worker.restart)
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
        if std::path::Path::new(&request.program).is_dir() {
            return Err(format!("program {:?} is a directory", request.program));
        }
        let grace = Duration::from_millis(request.close_grace_ms);
        if grace > super::error::MAX_WAIT {
            return Err(format!(
                "close_grace_ms {} is above a day",
                request.close_grace_ms
            ));
        }
        let mut spec = WorkerSpec::program(request.program)
            .args(request.args)
            .close_grace(grace)
            .speaks_protocol(request.speaks_protocol);
        for (key, value) in request.env {
            spec = spec.env(key, value);
        }
        if let Some(cwd) = request.cwd {
            spec = spec.cwd(cwd);
        }
        let recipe = Self::new(&name, spec, restart);
        // Refused before anything logs or lists the name.
        recipe.spec.check()?;
        Ok(recipe)
    }

    /// A recipe named `name` for `spec`, its output captured (arbord keeps
    /// every managed worker's output in its log ring).
    fn new(name: &str, spec: WorkerSpec, restart: RestartConfig) -> Self {
        Self {
            name: name.to_string(),
            spec: spec
                .name(name)
                .stdout(Output::Capture)
                .stderr(Output::Capture),
            restart,
            pool: None,
            ready_timeout: None,
        }
    }

    /// The grace of each close step.
    pub(super) fn close_grace(&self) -> Duration {
        self.spec.grace()
    }

    /// The sockets of a new run: a pool replica's (a `reuseport` socket is
    /// bound anew for each), none otherwise.
    pub(super) fn listen_fds(&self) -> std::io::Result<ListenFds> {
        match &self.pool {
            Some(pool) => pool.listen_fds(),
            None => Ok(ListenFds::new()),
        }
    }
}

/// Two recipes are equal when a reload can leave a worker started from one
/// running for the other: the same name, spec, restart settings and Ready
/// limit, and the same pool (the very same sockets).
impl PartialEq for Recipe {
    fn eq(&self, other: &Self) -> bool {
        let same_pool = match (&self.pool, &other.pool) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_pool
            && (&self.name, &self.spec, &self.restart, self.ready_timeout)
                == (
                    &other.name,
                    &other.spec,
                    &other.restart,
                    other.ready_timeout,
                )
    }
}

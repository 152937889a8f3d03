//! The usage the Web Workers articles show: a parent keeps one worker for
//! the current "environment" (a configuration, a data set, a tenant). When
//! the environment changes it terminates that worker and starts a new one,
//! and callers keep sending requests meanwhile without blocking. A reply
//! from the old worker never reaches a caller of the new one: each worker
//! has its own router task and its own table of pending requests, so a
//! request is answered by the worker it was sent to, or fails with
//! [`RequestError::Replaced`] if that worker was replaced first.
//!
//! `cargo run --release -p arbor-worker --example environment`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_supervisor::{Supervisor, Worker, WorkerEvent, WorkerSpec};
use tokio::sync::{mpsc, oneshot};

/// Why a request got no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The environment changed before its worker answered.
    Replaced,
    /// No environment was set yet.
    NoEnvironment,
}

type Pending = HashMap<u64, oneshot::Sender<String>>;

struct Current {
    environment: String,
    requests: mpsc::UnboundedSender<(u64, String, oneshot::Sender<String>)>,
    router: tokio::task::JoinHandle<()>,
}

/// One worker per environment, replaced when the environment changes.
#[allow(missing_debug_implementations)]
pub struct EnvironmentClient {
    supervisor: Supervisor,
    make_spec: Box<dyn Fn(&str) -> WorkerSpec + Send + Sync>,
    current: Mutex<Option<Current>>,
    next_id: AtomicU64,
}

impl EnvironmentClient {
    /// A client whose workers are started from `make_spec(environment)`.
    /// The worker must answer a message `"<id>:<payload>"` with
    /// `"<environment>:<id>:<payload>"`.
    pub fn new(
        supervisor: Supervisor,
        make_spec: impl Fn(&str) -> WorkerSpec + Send + Sync + 'static,
    ) -> Self {
        Self {
            supervisor,
            make_spec: Box::new(make_spec),
            current: Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    /// Switches to `environment`: starts its worker, then retires the old
    /// one (terminated; its unanswered requests fail with `Replaced`).
    pub async fn set_environment(&self, environment: &str) -> arbor_supervisor::Result<()> {
        let worker = self.supervisor.spawn((self.make_spec)(environment)).await?;
        let (requests, incoming) = mpsc::unbounded_channel();
        let router = tokio::spawn(route(worker, incoming));
        let old = self.current.lock().expect("lock").replace(Current {
            environment: environment.to_string(),
            requests,
            router,
        });
        drop(old); // its router sees the channel close and terminates the worker
        Ok(())
    }

    /// Retires the current worker and waits until it is gone.
    pub async fn retire(&self) {
        let current = self.current.lock().expect("lock").take();
        if let Some(Current {
            requests, router, ..
        }) = current
        {
            drop(requests);
            let _ = router.await;
        }
    }

    /// The environment requests go to now.
    pub fn environment(&self) -> Option<String> {
        self.current
            .lock()
            .expect("lock")
            .as_ref()
            .map(|c| c.environment.clone())
    }

    /// Sends `payload` to the current environment's worker and waits for
    /// its answer. Never blocks on the worker: the request is queued.
    pub async fn request(&self, payload: &str) -> Result<String, RequestError> {
        let (reply, answer) = oneshot::channel();
        {
            let current = self.current.lock().expect("lock");
            let current = current.as_ref().ok_or(RequestError::NoEnvironment)?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            current
                .requests
                .send((id, payload.to_string(), reply))
                .map_err(|_| RequestError::Replaced)?;
        }
        answer.await.map_err(|_| RequestError::Replaced)
    }
}

/// Owns one worker: posts its requests and routes its replies by id.
async fn route(
    mut worker: Worker,
    mut requests: mpsc::UnboundedReceiver<(u64, String, oneshot::Sender<String>)>,
) {
    let mut pending = Pending::new();
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some((id, payload, reply)) => {
                    pending.insert(id, reply);
                    if worker.post_message(format!("{id}:{payload}").into_bytes(), vec![]).await.is_err() {
                        break;
                    }
                }
                None => break, // replaced
            },
            event = worker.next_event() => match event {
                Some(WorkerEvent::Message { data, .. }) => {
                    let text = String::from_utf8_lossy(&data).into_owned();
                    let id = text.split(':').nth(1).and_then(|id| id.parse::<u64>().ok());
                    if let Some(reply) = id.and_then(|id| pending.remove(&id)) {
                        let _ = reply.send(text);
                    }
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    drop(pending); // unanswered callers see Replaced
    let _ = worker.terminate().await;
}

/// The worker side: answers `"<id>:<payload>"` with `"<env>:<id>:<payload>"`.
#[allow(dead_code)]
fn serve_environment() -> arbor_worker::Result<()> {
    let environment = std::env::args().nth(1).unwrap_or_default();
    let mut worker = arbor_worker::blocking::Worker::connect()?;
    worker.on_message(move |ctx, message, _| {
        let reply = format!("{environment}:{}", String::from_utf8_lossy(&message.data));
        ctx.post_message(reply.as_bytes(), &[])
    });
    worker.run()
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    if arbor_worker::entry_point().as_deref() == Some("environment") {
        return Ok(serve_environment()?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Arc::new(EnvironmentClient::new(Supervisor::new()?, |env| {
            WorkerSpec::entry("environment").arg(env)
        }));
        client.set_environment("staging").await?;
        let mut callers = Vec::new();
        for i in 0..6 {
            let caller = client.clone();
            callers.push(tokio::spawn(async move {
                let asked_of = caller.environment();
                (asked_of, caller.request(&format!("request {i}")).await)
            }));
            if i == 2 {
                client.set_environment("production").await?;
            }
        }
        for caller in callers {
            let (asked_of, answer) =
                tokio::time::timeout(Duration::from_secs(10), caller).await??;
            println!("asked {asked_of:?}: {answer:?}");
        }
        client.retire().await;
        Ok(())
    })
}

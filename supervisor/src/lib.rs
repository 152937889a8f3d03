//! arbor-supervisor: the parent's side of arbor, embeddable in any tokio program.
//!
//! [`Supervisor::spawn`] starts one OS process per [`WorkerSpec`] and returns
//! a [`Worker`]: the Web Workers model's `postMessage` (with fds), `onmessage`,
//! `onerror` and `onexit` as [`WorkerEvent`]s, `terminate`, plus `close`
//! (the worker's onclose runs, then SIGTERM, then SIGKILL) and an exact
//! [`ExitRecord`] for every exit.
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo() -> arbor_supervisor::Result<()> {
//! use arbor_supervisor::{Supervisor, WorkerEvent, WorkerSpec};
//!
//! let supervisor = Supervisor::new()?;
//! let mut worker = supervisor.spawn(WorkerSpec::program("/usr/local/bin/echo-worker")).await?;
//! worker.post_message(b"hello".to_vec(), vec![]).await?; // buffered until Ready
//! while let Some(event) = worker.next_event().await {
//!     if let WorkerEvent::Message { data, .. } = event {
//!         println!("reply: {}", String::from_utf8_lossy(&data));
//!         break;
//!     }
//! }
//! let exit = worker.close(std::time::Duration::from_secs(5)).await?;
//! println!("{exit}");
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod cgroup;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod error;
pub mod exit;
mod handoff;
mod link;
pub mod listen;
pub mod procfs;
pub mod reap;
pub mod restart;
pub mod signal;
mod spawn;
pub use arbor_protocol::spec;
mod supervisor;
mod sys;
pub mod systemd;
pub mod tree;
pub mod worker;

pub use arbor_protocol::spec::{Output, Program, WhenFull, WorkerSpec};
pub use error::{Error, Result};
pub use exit::{ExitRecord, Initiator, ResourceUsage};
pub use signal::Signal;
pub use supervisor::{channel_fd, Supervisor, FIRST_LISTEN_FD};
pub use tree::TreeLimits;
pub use worker::{Events, Stream, Worker, WorkerEvent};

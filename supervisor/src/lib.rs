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

// The embeddable library.
pub mod cgroup;
pub mod client;
pub mod error;
pub mod exit;
pub use arbor_protocol::signal;
pub use arbor_protocol::spec;
pub mod tree;
pub mod worker;

mod handoff;
mod link;
mod procfs;
mod reap;
mod spawn;
mod supervisor;
mod sys;

// arbord and arborctl. Their modules are private to this crate: an embedder
// sees the library above, and the binaries reach these through `programs`.
mod cli;
mod config;
mod daemon;
mod listen;
mod restart;
mod systemd;

#[doc(hidden)]
pub mod programs {
    //! The `main` of each binary, here so that this crate's binaries and the
    //! repository's test and benchmark binaries run exactly the same code.
    //! Not part of the library's API.

    use std::process::ExitCode;

    /// `arbord`'s main.
    pub fn arbord() -> ExitCode {
        crate::cli::arbord::main()
    }

    /// `arborctl`'s main.
    pub fn arborctl() -> ExitCode {
        crate::cli::arborctl::main()
    }

    /// Parses and checks `text` as arbord's configuration file, as arbord
    /// does at boot and on SIGHUP, for the config parser's fuzz target: the
    /// error's line and column (from 1; 0 when unknown) and its text.
    pub fn parse_config(text: &str) -> Result<(), (usize, usize, String)> {
        crate::config::Config::parse(text, std::path::Path::new("fuzz.toml"))
            .map(drop)
            .map_err(|e| (e.line, e.column, e.to_string()))
    }
}

pub use arbor_protocol::spec::{ListenFds, Output, Program, WhenFull, WorkerSpec};
pub use error::{Error, Result};
pub use exit::{ExitRecord, Initiator, ResourceUsage};
pub use signal::Signal;
pub use supervisor::{channel_fd, Supervisor, FIRST_LISTEN_FD};
pub use tree::TreeLimits;
pub use worker::{Events, Stream, Worker, WorkerEvent};

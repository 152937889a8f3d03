//! arbord: the daemon behind the control socket.
//!
//! [`run`] owns everything: the [`Supervisor`](crate::Supervisor), a
//! registry of managed workers, the control socket and shutdown. The parts,
//! each a file:
//! - [`run`](run()): the control socket, the accept loop, signals, the
//!   watchdog; `boot` starts what the configuration declares, `shutdown`
//!   closes every worker at the end.
//! - `registry`: the state (workers, pools, shared workers) and its changes;
//!   `recipe`: what a managed worker is started from.
//! - `monitor`: one task per managed worker, through its events, exits and
//!   restarts (the restart decisions are [`crate::restart`]'s).
//! - `serve`: one task per control client; `control`: one file per request
//!   behind one `dispatch`; `events`: the hub every watcher's stream reads.
//! - `reload` (SIGHUP, one at a time by `reload_gate`) and `pools`
//!   (replicas with sockets, scale, rolling reload).

mod boot;
mod context;
mod control;
mod error;
mod events;
mod lifecycle;
mod monitor;
mod pools;
mod recipe;
mod registry;
mod reload;
mod reload_gate;
mod run;
mod serve;
mod shutdown;
mod signals;

pub use run::run;
pub use signals::DaemonSignal;

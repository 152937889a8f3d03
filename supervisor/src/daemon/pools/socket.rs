//! One pool socket: bound by arbord (or passed by systemd) for as long as
//! arbord runs, and handed to each replica by its mode.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use arbor_protocol::control::PoolSocketInfo;

use crate::config::{SocketConfig, SocketMode};
use crate::handoff::Dispatcher;
use crate::listen::{self, ListenAddr};

/// One pool socket, open for as long as arbord runs.
#[derive(Debug)]
pub(crate) struct PoolSocket {
    pub(super) config: SocketConfig,
    /// The bound address (the port the kernel chose when configured as `:0`).
    pub(super) addr: ListenAddr,
    /// `shared`: the listening socket every replica inherits. `reuseport`:
    /// a bound socket that does not listen, holding the port between the
    /// replicas' own listeners. `handoff`: the dispatcher has it. Taken
    /// (closed) when the pool stops.
    pub(super) fd: std::sync::Mutex<Option<OwnedFd>>,
    pub(super) dispatcher: Option<Arc<Dispatcher>>,
    pub(super) activated: bool,
}

impl PoolSocket {
    /// Binds the socket, or takes the one systemd passed under its name.
    pub(super) fn open(config: &SocketConfig, activated: Option<OwnedFd>) -> std::io::Result<Self> {
        let from_systemd = activated.is_some();
        let mode = match (config.mode, from_systemd) {
            // One socket from systemd cannot become one per replica.
            (SocketMode::Reuseport, true) => {
                tracing::warn!(socket = %config.name, "socket from systemd: served as `shared`, not `reuseport`");
                SocketMode::Shared
            }
            (mode, _) => mode,
        };
        if mode == SocketMode::Reuseport && !migrates_requests() {
            tracing::warn!(socket = %config.name, "reuseport: a connection that reaches a closing replica's listener is reset; net.ipv4.tcp_migrate_req=1 moves it to another replica instead");
        }
        let fd = match activated {
            Some(fd) => fd,
            None => listen::bind(
                &config.listen,
                config.backlog,
                mode == SocketMode::Reuseport,
                mode != SocketMode::Reuseport,
            )?,
        };
        let addr = listen::local_addr(&fd)?;
        let (fd, dispatcher) = match mode {
            SocketMode::Handoff => (
                None,
                Some(Dispatcher::start(&config.name, config.policy, fd)?),
            ),
            _ => (Some(fd), None),
        };
        let fd = std::sync::Mutex::new(fd);
        Ok(Self {
            config: SocketConfig {
                mode,
                ..config.clone()
            },
            addr,
            fd,
            dispatcher,
            activated: from_systemd,
        })
    }

    /// The fd a new replica gets for this socket, if any.
    pub(super) fn fd_for_replica(&self) -> std::io::Result<Option<OwnedFd>> {
        let fd = self.fd.lock().unwrap_or_else(|p| p.into_inner());
        match (self.config.mode, fd.as_ref()) {
            (SocketMode::Handoff, _) => Ok(None),
            (SocketMode::Shared, Some(fd)) => fd.try_clone().map(Some),
            (SocketMode::Reuseport, Some(_)) => {
                listen::bind(&self.addr, self.config.backlog, true, true).map(Some)
            }
            (_, None) => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the pool's socket is closed",
            )),
        }
    }

    /// Stops accepting (handoff) and closes arbord's copy of the socket.
    pub(super) fn stop(&self) {
        if let Some(dispatcher) = &self.dispatcher {
            dispatcher.stop();
        }
        self.fd.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub(super) fn info(&self) -> PoolSocketInfo {
        PoolSocketInfo {
            name: self.config.name.clone(),
            listen: self.addr.to_string(),
            mode: self.config.mode.name().into(),
            policy: match self.config.mode {
                SocketMode::Handoff => self.config.policy.name().into(),
                _ => String::new(),
            },
            activated: self.activated,
        }
    }
}

/// Whether the kernel moves connections queued on a closing `SO_REUSEPORT`
/// listener to another one of its group (Linux 5.14+, off by default).
fn migrates_requests() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "1")
}

impl Drop for PoolSocket {
    fn drop(&mut self) {
        // A dispatcher task holds the listener: it must end with the socket.
        if let Some(dispatcher) = &self.dispatcher {
            dispatcher.stop();
        }
    }
}

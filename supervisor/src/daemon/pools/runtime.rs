//! What every replica of a pool shares: its sockets, and the handoff
//! dispatchers of those in `handoff` mode.

use std::sync::Arc;

use super::socket::PoolSocket;
use crate::handoff::Dispatcher;
use crate::listen::ListenAddr;
use crate::{ListenFds, Worker};

/// What every replica of a pool shares; each replica's recipe holds it.
#[derive(Debug, Default)]
pub(crate) struct PoolRuntime {
    pub(super) sockets: Vec<PoolSocket>,
}

impl PoolRuntime {
    /// The `LISTEN_FDS` sockets of a new replica, in configuration order.
    pub(crate) fn listen_fds(&self) -> std::io::Result<ListenFds> {
        let mut fds = ListenFds::new();
        for socket in &self.sockets {
            if let Some(fd) = socket.fd_for_replica()? {
                fds.push(&socket.config.name, fd);
            }
        }
        Ok(fds)
    }

    pub(super) fn dispatchers(&self) -> impl Iterator<Item = &Arc<Dispatcher>> {
        self.sockets.iter().filter_map(|s| s.dispatcher.as_ref())
    }

    /// Replica `id` sent Ready.
    pub(crate) fn replica_ready(&self, id: u64, worker: &Arc<Worker>) {
        for dispatcher in self.dispatchers() {
            dispatcher.add_replica(id, Arc::clone(worker));
        }
    }

    /// Replica `id` is being stopped: no more connections for it.
    pub(crate) fn retire(&self, id: u64) {
        for dispatcher in self.dispatchers() {
            dispatcher.retire(id);
        }
    }

    /// Replica `id` exited.
    pub(crate) fn replica_gone(&self, id: u64) {
        for dispatcher in self.dispatchers() {
            dispatcher.replica_gone(id);
        }
    }

    /// Replica `id` answered a handoff.
    pub(crate) fn ack(&self, id: u64, connection: u64, accepted: bool, open: u32) {
        for dispatcher in self.dispatchers() {
            dispatcher.ack(id, connection, accepted, open);
        }
    }

    /// Replica `id` reported its open connections.
    pub(crate) fn load(&self, id: u64, open: u32) {
        for dispatcher in self.dispatchers() {
            dispatcher.load(id, open);
        }
    }

    /// Stops accepting on every socket and closes arbord's copies
    /// (shutdown, pool removed); replicas keep theirs until they exit.
    pub(crate) fn stop(&self) {
        for socket in &self.sockets {
            socket.stop();
        }
    }

    /// Its sockets as `ps` shows them.
    pub(in crate::daemon) fn socket_infos(&self) -> Vec<arbor_protocol::control::PoolSocketInfo> {
        self.sockets.iter().map(PoolSocket::info).collect()
    }

    /// The addresses its sockets listen on.
    pub(in crate::daemon) fn ports(&self) -> Vec<ListenAddr> {
        self.sockets.iter().map(|s| s.addr.clone()).collect()
    }
}

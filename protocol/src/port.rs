//! Ports: the Web Workers standard's `MessageChannel`, as a connected pair
//! of Unix stream sockets that each speak arbor's framing.
//!
//! A port is transferable inside any message: its fd travels with the frame
//! ([`MessagePort::into_fd`] consumes the port, so the sender keeps no end
//! of it), and the receiver takes it back with [`MessagePort::from_fd`],
//! which refuses an fd that is not a Unix stream socket. A parent can so give
//! two workers a direct channel and step out of the path. Messages posted on
//! a port before its other end is taken wait in the socket, not lost.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::{blocking, nonblocking, Limits};

/// Why a received fd is not a port.
#[derive(Debug, thiserror::Error)]
#[error("fd is not a port: a port is a Unix stream socket")]
pub struct NotAPort;

/// One end of a message channel.
#[derive(Debug)]
pub struct MessagePort {
    socket: UnixStream,
}

impl MessagePort {
    /// A new pair of connected ports (close-on-exec).
    pub fn pair() -> io::Result<(MessagePort, MessagePort)> {
        let (a, b) = UnixStream::pair()?;
        Ok((MessagePort { socket: a }, MessagePort { socket: b }))
    }

    /// Takes a port received as an fd. Anything but a Unix stream socket is
    /// refused (and closed).
    pub fn from_fd(fd: OwnedFd) -> Result<MessagePort, NotAPort> {
        if !crate::sys::is_unix_stream(fd.as_fd()) {
            return Err(NotAPort);
        }
        Ok(MessagePort {
            socket: UnixStream::from(fd),
        })
    }

    /// The fd to send inside a message; this consumes the port.
    pub fn into_fd(self) -> OwnedFd {
        self.socket.into()
    }

    /// The port as a blocking channel.
    pub fn into_channel(self) -> io::Result<blocking::Channel> {
        blocking::Channel::new(self.socket)
    }

    /// The port as a tokio channel (call inside a runtime), with `limits`.
    pub fn into_async(self, limits: Limits) -> io::Result<nonblocking::AsyncChannel> {
        nonblocking::AsyncChannel::from_std(self.socket, limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Frame;

    #[test]
    fn a_port_sent_through_a_channel_connects_its_receiver() {
        let (parent, child) = blocking::Channel::pair().unwrap();
        let (mine, theirs) = MessagePort::pair().unwrap();
        let mut mine = mine.into_channel().unwrap();
        // Posted before the other end is even taken: it waits in the socket.
        mine.send_bytes(b"early", &[]).unwrap();
        let fd = theirs.into_fd();
        let (mut parent, mut child) = (parent, child);
        parent.send_bytes(b"port", &[fd.as_fd()]).unwrap();
        drop(fd);
        let (_, mut fds) = child.recv().unwrap();
        let mut theirs = MessagePort::from_fd(fds.remove(0))
            .unwrap()
            .into_channel()
            .unwrap();
        match theirs.recv().unwrap().0 {
            Frame::Message(m) => assert_eq!(m.data, b"early"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_is_not_a_port() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(MessagePort::from_fd(file.into()).is_err());
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        assert!(MessagePort::from_fd(a.into()).is_err());
    }
}

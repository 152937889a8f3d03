//! A control-socket client for programs that are not arborctl.
//!
//! [`connect`] is the standard's `new SharedWorker(name)` seen from outside
//! a worker: it asks arbord for a port to the shared worker `name` (which
//! arbord starts if it is not running) and returns the client's end. The
//! worker gets the other end in its `on_connect` handler; messages posted
//! before it takes the port wait in the socket.
//!
//! # Examples
//!
//! ```no_run
//! let port = arbor_supervisor::client::connect(
//!     &arbor_supervisor::client::default_socket_path(),
//!     "counter",
//! )?;
//! let mut channel = port.into_channel()?;
//! channel.send_bytes(b"inc", &[])?;
//! let (reply, _fds) = channel.recv()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use arbor_protocol::blocking::Channel;
use arbor_protocol::control::{ControlRequest, ControlResponse};
use arbor_protocol::{Frame, MessagePort};

use crate::error::{Error, Result};

/// A port to the shared worker `name` of the arbord at `socket`.
pub fn connect(socket: &Path, name: &str) -> Result<MessagePort> {
    let failed = |message: String| Error::Control {
        socket: socket.to_path_buf(),
        message,
    };
    let stream =
        UnixStream::connect(socket).map_err(|e| failed(format!("cannot reach arbord: {e}")))?;
    let mut channel = Channel::new(stream).map_err(|e| failed(e.to_string()))?;
    let request = ControlRequest::Attach {
        name: name.to_string(),
    };
    let sent = channel.send_value(&request, &[]);
    let received = channel.recv();
    let (message, mut fds) = match (received, sent) {
        (Ok((Frame::Message(message), fds)), _) => (message, fds),
        (Ok((other, _)), _) => {
            return Err(failed(format!("unexpected {} frame", other.kind().name())))
        }
        (Err(e), Err(sent)) => return Err(failed(format!("{sent}; then {e}"))),
        (Err(e), Ok(())) => return Err(failed(e.to_string())),
    };
    match message.decode::<ControlResponse>() {
        Ok(ControlResponse::Attached { .. }) if fds.len() == 1 => {
            MessagePort::from_fd(fds.remove(0)).map_err(|e| failed(e.to_string()))
        }
        Ok(ControlResponse::Error { message } | ControlResponse::Failed { message, .. }) => {
            Err(failed(message))
        }
        Ok(other) => Err(failed(format!(
            "unexpected answer {other:?} with {} fds",
            fds.len()
        ))),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// The control socket path when none is configured: `$ARBOR_SOCKET`, else
/// `/run/arbor/arbord.sock` for root, else `$XDG_RUNTIME_DIR/arbor/arbord.sock`
/// (or `/tmp/arbor-<uid>/arbord.sock` without a runtime directory).
pub fn default_socket_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ARBOR_SOCKET") {
        return PathBuf::from(path);
    }
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        return PathBuf::from("/run/arbor/arbord.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("arbor/arbord.sock"),
        None => PathBuf::from(format!("/tmp/arbor-{uid}/arbord.sock")),
    }
}

//! The panic hook: a worker that panics tells its parent what and where
//! (an Error frame, the spec's `onerror`) before it dies.
//!
//! The hook writes on its own duplicate of the channel socket, so it needs
//! no lock the panicking thread might hold. It is installed once, when the
//! worker connects, and chains to the hook that was there before.
//!
//! # Caveats
//!
//! The report is written between frames when the panic ends the process
//! (the blocking API writes whole frames before a handler runs again). In a
//! tokio worker where one task panics while another task is in the middle of
//! writing a large message, the report could land inside that message and
//! the parent would see the channel break; the process then goes on without
//! its channel, which the parent reports as a channel error.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use arbor_protocol::frame::Limits;
use arbor_protocol::message::{encode_frame, Outgoing};
use arbor_protocol::{ErrorReport, Frame, Location};
use nix::poll::{poll, PollFd, PollFlags};

static CHANNEL: OnceLock<UnixStream> = OnceLock::new();

/// Installs the hook, writing reports to a duplicate of `channel`.
pub(crate) fn install(channel: &UnixStream) {
    let Ok(dup) = channel.try_clone() else { return };
    if CHANNEL.set(dup).is_err() {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        previous(info);
    }));
}

fn report(info: &std::panic::PanicHookInfo<'_>) {
    let Some(channel) = CHANNEL.get() else { return };
    let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = info.payload().downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    };
    let location = info.location().map(|l| Location {
        file: l.file().to_string(),
        line: l.line(),
        column: l.column(),
    });
    let frame = Frame::Error(ErrorReport { message, location });
    let mut bytes = Vec::new();
    if encode_frame::<()>(&mut bytes, Outgoing::Frame(&frame), 0, &Limits::default()).is_ok() {
        write_all_waiting(channel, &bytes);
    }
}

/// Writes all of `bytes`, waiting (up to a second each time) when the
/// socket is non-blocking and full: the tokio API puts the shared open file
/// in non-blocking mode, and a report cut short would break the stream.
fn write_all_waiting(channel: &UnixStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match (&*channel).write(bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut pollfd = [PollFd::new(channel.as_fd(), PollFlags::POLLOUT)];
                // A timeout (0) or an error (EINTR included) gives up, as before.
                if !matches!(poll(&mut pollfd, 1000u16), Ok(n) if n > 0) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

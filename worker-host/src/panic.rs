//! The panic hook: a worker that panics tells its parent what and where
//! (an Error frame, the spec's `onerror`) before it dies.
//!
//! The hook writes on its own duplicate of the channel socket, so it needs
//! no lock the panicking thread might hold. It is installed once, when the
//! worker connects, and chains to the hook that was there before.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use arbor_protocol::frame::Limits;
use arbor_protocol::message::{encode_frame, Outgoing};
use arbor_protocol::{ErrorReport, Frame, Location};

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
        let _ = (&*channel).write_all(&bytes);
    }
}

//! systemd integration: `sd_notify` messages and socket activation.
//!
//! `notify` sends one datagram to `$NOTIFY_SOCKET` (a path, or an abstract
//! name written `@name`) and does nothing when it is unset, so arbord runs
//! the same under systemd and outside it. `take_activated_control_socket`
//! takes the control socket from `LISTEN_FDS` when systemd passed one; call
//! it first thing in `main`, before any thread exists.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};

/// Sends `state` (`READY=1`, `STATUS=...`, `STOPPING=1`, ...) to systemd.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    let sent = match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        None => socket.send_to(state.as_bytes(), &target),
    };
    if let Err(e) = sent {
        tracing::warn!("sd_notify {state:?} to {target}: {e}");
    }
}

/// The control socket passed by systemd socket activation: the fd named
/// `control` in `LISTEN_FDNAMES`, else the first one. `None` when this
/// process was not socket-activated (or `LISTEN_PID` names another process).
/// The `LISTEN_*` variables are removed so that they do not leak further.
pub fn take_activated_control_socket() -> Option<UnixListener> {
    let pid_matches = std::env::var("LISTEN_PID").ok()?.parse::<u32>().ok()? == std::process::id();
    let count: RawFd = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // Called before any thread exists (see the module docs).
        std::env::remove_var(var);
    }
    if !pid_matches || count < 1 {
        return None;
    }
    let index = names.split(':').position(|n| n == "control").unwrap_or(0) as RawFd;
    if index >= count {
        return None;
    }
    let fd = 3 + index;
    // SAFETY: systemd passed fds 3..3+LISTEN_FDS to this process (LISTEN_PID
    // matched) and nothing else in the process has taken them yet.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listener = UnixListener::from(owned);
    // The fd came without close-on-exec: set it, so workers never inherit it.
    let _ = set_cloexec(fd);
    Some(listener)
}

fn set_cloexec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: F_SETFD with an int flag on an fd this process owns.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// CLOCK_MONOTONIC in microseconds, as `RELOADING=1` wants it beside it.
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000
}

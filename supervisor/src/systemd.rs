//! systemd integration: `sd_notify` messages and socket activation.
//!
//! `notify` sends one datagram to `$NOTIFY_SOCKET` (a path, or an abstract
//! name written `@name`) and does nothing when it is unset, so arbord runs
//! the same under systemd and outside it. `take_activated`
//! takes the control and pool sockets from `LISTEN_FDS` when systemd passed them; call
//! it first thing in `main`, before any thread exists.
//!
//! Setting close-on-exec on the passed fds stays a hand-written `fcntl`:
//! it runs on fd numbers that may not be open (its failure is how a closed
//! one is skipped), and nix's `fcntl` needs a `BorrowedFd`, which only an
//! open fd may be. The clock is read through nix.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};

use nix::time::{clock_gettime, ClockId};

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

/// The sockets systemd passed by socket activation.
#[derive(Debug, Default)]
pub struct Activated {
    /// The control socket: the fd named `control`, or a single unnamed
    /// Unix socket.
    pub control: Option<UnixListener>,
    /// Every other socket, by its `LISTEN_FDNAMES` name: pool sockets with
    /// that name use it instead of binding.
    pub sockets: Vec<(String, OwnedFd)>,
}

/// Takes the sockets passed by systemd socket activation (nothing when this
/// process was not socket-activated, or `LISTEN_PID` names another process).
/// Each is made close-on-exec, and the `LISTEN_*` variables are removed so
/// that they do not leak further. Call before any thread exists.
pub fn take_activated() -> Activated {
    let pid_matches = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    let count: RawFd = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // Called before any thread exists (see the module docs).
        std::env::remove_var(var);
    }
    let mut activated = Activated::default();
    if !pid_matches || !(1..=1024).contains(&count) {
        return activated;
    }
    let names: Vec<&str> = names.split(':').collect();
    for index in 0..count {
        let fd = 3 + index;
        // They came without close-on-exec: set it, so workers never inherit
        // them. It fails on an fd that is not open: that one is not taken.
        if set_cloexec(fd).is_err() {
            continue;
        }
        // SAFETY: systemd passed fds 3..3+LISTEN_FDS to this process (LISTEN_PID
        // matched), this one is open (just checked), each is taken once here,
        // and nothing else in the process has taken them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = names
            .get(index as usize)
            .copied()
            .filter(|n| !n.is_empty() && *n != "unknown");
        match name {
            Some("control") => activated.control = Some(UnixListener::from(owned)),
            None if count == 1 && is_unix(&owned) => {
                activated.control = Some(UnixListener::from(owned))
            }
            Some(name) => activated.sockets.push((name.to_string(), owned)),
            None => activated.sockets.push((format!("fd{fd}"), owned)),
        }
    }
    activated
}

fn is_unix(fd: &OwnedFd) -> bool {
    fd.try_clone()
        .map(socket2::Socket::from)
        .and_then(|s| s.local_addr())
        .is_ok_and(|addr| addr.is_unix())
}

/// Hand-written on libc, not nix: `fd` is a number that may not be open
/// (see the module docs).
fn set_cloexec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: F_SETFD with an int flag touches only the fd's flags; on a
    // number that is not open it fails with EBADF, which the caller checks.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// CLOCK_MONOTONIC in microseconds, as `RELOADING=1` wants it beside it.
pub fn monotonic_usec() -> u64 {
    // CLOCK_MONOTONIC cannot fail; 0 stands for the impossible error, as before.
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |now| {
        now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000
    })
}

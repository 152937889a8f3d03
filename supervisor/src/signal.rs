//! Signals by number and name, without exposing libc or nix in the API.

use std::fmt;

/// A Unix signal, as in an exit record or a `signal` request.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

const NAMES: [(i32, &str); 31] = [
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGTRAP, "SIGTRAP"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGKILL, "SIGKILL"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGPIPE, "SIGPIPE"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
    (libc::SIGCHLD, "SIGCHLD"),
    (libc::SIGCONT, "SIGCONT"),
    (libc::SIGSTOP, "SIGSTOP"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
    (libc::SIGURG, "SIGURG"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGWINCH, "SIGWINCH"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGSYS, "SIGSYS"),
];

impl Signal {
    /// SIGTERM, the polite request to stop.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// SIGKILL, which cannot be caught.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// SIGINT.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// SIGHUP.
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// SIGSEGV.
    pub const SEGV: Signal = Signal(libc::SIGSEGV);
    /// SIGUSR1.
    pub const USR1: Signal = Signal(libc::SIGUSR1);

    /// The signal with this number, if it is a valid signal (1 to SIGRTMAX).
    pub fn from_number(number: i32) -> Option<Signal> {
        (1..=libc::SIGRTMAX())
            .contains(&number)
            .then_some(Signal(number))
    }

    /// The signal with this name, with or without the `SIG` prefix, in any case.
    pub fn from_name(name: &str) -> Option<Signal> {
        let upper = name.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        NAMES
            .iter()
            .find(|(_, n)| *n == full)
            .map(|(number, _)| Signal(*number))
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The signal's name (`SIGKILL`), or `SIG<n>` for one without a name here.
    pub fn name(self) -> String {
        NAMES
            .iter()
            .find(|(n, _)| *n == self.0)
            .map(|(_, name)| (*name).to_string())
            .unwrap_or_else(|| format!("SIG{}", self.0))
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        assert_eq!(Signal::from_name("kill"), Some(Signal::KILL));
        assert_eq!(Signal::from_name("SIGTERM").unwrap().number(), 15);
        assert_eq!(Signal::KILL.name(), "SIGKILL");
        assert_eq!(Signal::from_number(0), None);
        assert_eq!(Signal::from_name("SIGNOPE"), None);
        for (number, name) in NAMES {
            assert_eq!(Signal::from_name(name).unwrap().number(), number);
        }
    }
}

//! Signals by number and name, without exposing libc or nix in the API.
//!
//! The names are nix's: [`nix::sys::signal::Signal`] lists the standard
//! signals of the platform (31 on Linux) with their names. A realtime
//! signal (`SIGRTMIN..=SIGRTMAX`) is a valid [`Signal`] too, shown as
//! `SIG<n>`; its upper bound comes from libc, since nix has no realtime
//! signals.

use std::fmt;

use nix::sys::signal::Signal as Standard;

/// A Unix signal, as in an exit record or a `signal` request.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// SIGTERM, the polite request to stop.
    pub const TERM: Signal = Signal(Standard::SIGTERM as i32);
    /// SIGKILL, which cannot be caught.
    pub const KILL: Signal = Signal(Standard::SIGKILL as i32);
    /// SIGINT.
    pub const INT: Signal = Signal(Standard::SIGINT as i32);
    /// SIGHUP.
    pub const HUP: Signal = Signal(Standard::SIGHUP as i32);
    /// SIGSEGV.
    pub const SEGV: Signal = Signal(Standard::SIGSEGV as i32);
    /// SIGUSR1.
    pub const USR1: Signal = Signal(Standard::SIGUSR1 as i32);

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
        Standard::iterator()
            .find(|standard| standard.as_str() == full)
            .map(|standard| Signal(standard as i32))
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The signal's name (`SIGKILL`), or `SIG<n>` for one without a name here.
    pub fn name(self) -> String {
        Standard::try_from(self.0)
            .map(|standard| standard.as_str().to_string())
            .unwrap_or_else(|_| format!("SIG{}", self.0))
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
        for standard in Standard::iterator() {
            let (number, name) = (standard as i32, standard.as_str());
            assert_eq!(Signal::from_name(name).unwrap().number(), number);
        }
    }
}

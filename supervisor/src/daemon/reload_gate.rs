//! One configuration reload at a time.
//!
//! SIGHUP starts a reload in its own task (closing workers takes their
//! grace, and the accept loop, signals and watchdog go on meanwhile). A
//! SIGHUP that comes while one runs must neither start a second reload over
//! the same registry (both would start every added worker) nor be lost (the
//! file may have changed again): it asks the running one to read the file
//! once more when it is done. systemd hears one `RELOADING=1` and, after the
//! last pass, one `READY=1`.

/// Where the reloads stand: a pure state, held under the daemon's lock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReloadGate {
    /// No reload runs.
    #[default]
    Idle,
    /// A reload runs.
    Running,
    /// A reload runs, and a SIGHUP came after it began.
    Again,
}

impl ReloadGate {
    /// A SIGHUP came: `true` when the caller is to start a reload now,
    /// `false` when one runs already (it will read the file once more).
    pub(super) fn begin(&mut self) -> bool {
        match self {
            Self::Idle => {
                *self = Self::Running;
                true
            }
            Self::Running | Self::Again => {
                *self = Self::Again;
                false
            }
        }
    }

    /// A reload pass ended: `true` when another pass is to run (a SIGHUP
    /// came during this one), `false` when the reload is over.
    pub(super) fn finish(&mut self) -> bool {
        match self {
            Self::Again => {
                *self = Self::Running;
                true
            }
            Self::Running | Self::Idle => {
                *self = Self::Idle;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReloadGate;

    #[test]
    fn the_first_sighup_starts_a_reload_and_the_pass_ends_it() {
        let mut gate = ReloadGate::default();
        assert!(gate.begin());
        assert!(!gate.finish());
        assert_eq!(gate, ReloadGate::Idle);
    }

    #[test]
    fn sighups_during_a_reload_start_nothing_and_ask_for_one_more_pass() {
        let mut gate = ReloadGate::default();
        assert!(gate.begin());
        assert!(!gate.begin());
        assert!(!gate.begin());
        // However many came, one more pass, then the end.
        assert!(gate.finish());
        assert!(!gate.finish());
        assert!(gate.begin(), "a later SIGHUP starts a reload again");
    }
}

//! Servers nobody here wrote, for the tests that check arbor's promise that
//! a server written for systemd's socket activation runs unchanged as a
//! worker: gunicorn from PyPI, in a virtual environment under cargo's
//! target directory (`target/python`).
//!
//! `.ci/run` installs it before the tests; on a machine where it is not
//! there yet, the first test that needs it installs it (python3 and PyPI
//! are needed then), and a failure to do so fails that test with the
//! reason, never passes it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::wait_or_kill;

/// The bound on creating the environment and installing gunicorn.
const INSTALL_LIMIT: Duration = Duration::from_secs(300);

/// The virtual environment: `target/python`.
pub fn environment() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> (or target/<profile>/<bin>) → target/python
    let profile = exe
        .ancestors()
        .skip(1)
        .find(|dir| !dir.ends_with("deps"))
        .expect("the test binary's profile directory");
    profile
        .parent()
        .expect("cargo's target directory")
        .join("python")
}

/// The `gunicorn` executable, installed into [`environment`] if missing.
pub fn gunicorn() -> PathBuf {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _turn = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    let venv = environment();
    let gunicorn = venv.join("bin/gunicorn");
    if gunicorn.exists() {
        return gunicorn;
    }
    eprintln!(
        "installing gunicorn into {} (pip, from PyPI)",
        venv.display()
    );
    let run = |command: &mut Command, what: &str| {
        let mut child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e} (python3 is needed to run gunicorn)"));
        let status = wait_or_kill(&mut child, INSTALL_LIMIT, what);
        assert!(status.success(), "{what} failed: {status}");
    };
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv target/python",
    );
    run(
        Command::new(venv.join("bin/pip")).args(["install", "--quiet", "gunicorn"]),
        "pip install gunicorn",
    );
    assert!(
        gunicorn.exists(),
        "{} missing after pip install",
        gunicorn.display()
    );
    gunicorn
}

/// The directory of the WSGI app the gunicorn tests serve
/// (`integration-tests/servers/hello_wsgi.py`).
pub fn servers() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("servers")
}

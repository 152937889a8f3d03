//! An `execve` of a multi-threaded process ends every thread but the one
//! that calls it, and the children each ended thread started with
//! `PR_SET_PDEATHSIG` get their death signal; the children of the thread
//! that execs are spared. This is why arbor starts every worker from one
//! spawner thread: an in-place upgrade of arbord must exec from that
//! thread for its workers to live through it (`test-exec-probe` says how
//! it is shown).

use std::process::{Command, Stdio};
use std::time::Duration;

use arbor_integration_tests::{binary, wait_or_kill};

#[test]
fn an_exec_kills_the_children_of_other_threads_and_spares_the_exec_callers() {
    let mut child = Command::new(binary("test-exec-probe"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("test-exec-probe");
    // It prints one short line, which the pipe holds until it is read.
    let status = wait_or_kill(&mut child, Duration::from_secs(20), "test-exec-probe");
    let output = child.wait_with_output().expect("its output");
    assert!(status.success(), "{status}: {output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "main=alive thread=dead",
        "{output:?}"
    );
}

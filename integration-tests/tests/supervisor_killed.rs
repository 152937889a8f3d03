//! A supervisor killed with SIGKILL leaves no worker behind: each dies
//! within a second (PR_SET_PDEATHSIG from the long-lived spawner thread).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arbor_integration_tests::is_alive;

#[test]
fn workers_die_within_a_second_of_their_supervisor() {
    let mut supervisor = Command::new(env!("CARGO_BIN_EXE_test-supervisor"))
        .arg("5")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = supervisor.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = supervisor.kill();
            panic!("the test supervisor did not report its workers in time");
        }
    };
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 5, "{line:?}");
    assert!(pids.iter().all(|&pid| is_alive(pid)));

    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
    let killed = Instant::now();
    while pids.iter().any(|&pid| is_alive(pid)) {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "workers still alive 1 s after the supervisor died: {:?}",
            pids.iter()
                .filter(|&&pid| is_alive(pid))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

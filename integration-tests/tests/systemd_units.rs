//! The unit files pass `systemd-analyze verify`, and arbord serves a control
//! socket handed to it by `systemd-socket-activate`, systemd's own tool.

use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arbor_integration_tests::{binary, wait_or_kill, TempDir};

const LIMIT: Duration = Duration::from_secs(20);

use arbor_integration_tests::system_tool as tool;

/// `systemd-analyze verify` on `units` in `dir`: its exit status and what
/// it said about the unit files themselves.
fn verify(dir: &std::path::Path, units: &[&str]) -> (std::process::ExitStatus, Vec<String>) {
    let mut child = Command::new(tool("systemd-analyze"))
        .arg("verify")
        .args(units.iter().map(|u| dir.join(u)))
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut child, LIMIT, "systemd-analyze verify");
    let output = child.wait_with_output().unwrap();
    // Complaints about the unit files name them; messages about the host
    // (no systemd running in this container) do not.
    let about_units = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| units.iter().any(|u| l.contains(u)))
        .map(String::from)
        .collect();
    (status, about_units)
}

#[test]
fn the_unit_files_pass_systemd_analyze_verify() {
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let dir = TempDir::new("units");
    // verify checks that ExecStart exists: point it at the built arbord.
    let arbord = binary("test-arbord");
    for unit in ["arbord.service", "arbord.socket"] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        let text = text.replace("/usr/bin/arbord", &arbord.display().to_string());
        std::fs::write(dir.0.join(unit), text).unwrap();
    }
    let (status, complaints) = verify(&dir.0, &["arbord.service", "arbord.socket"]);
    assert!(
        status.success() && complaints.is_empty(),
        "systemd-analyze verify: {status}\n{}",
        complaints.join("\n")
    );
    // The same check fails a broken copy: an ExecStart that does not exist.
    let text = std::fs::read_to_string(dir.0.join("arbord.service")).unwrap();
    let broken = text.replace(&arbord.display().to_string(), "/nonexistent/arbord");
    std::fs::write(dir.0.join("broken.service"), broken).unwrap();
    let (status, complaints) = verify(&dir.0, &["broken.service"]);
    assert!(
        !status.success() && !complaints.is_empty(),
        "verify passed a unit whose ExecStart does not exist: {status}"
    );
}

#[test]
fn arbord_serves_a_socket_from_systemd_socket_activate() {
    let dir = TempDir::new("activate");
    let socket = dir.0.join("control.sock");
    let mut activator = Command::new(tool("systemd-socket-activate"))
        .arg("-l")
        .arg(&socket)
        .arg("--fdname=control")
        .arg(binary("test-arbord"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate did not listen"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The first connection makes systemd-socket-activate exec arbord with
    // the listening socket as fd 3.
    let mut ctl = Command::new(binary("test-arborctl"))
        .arg("--socket")
        .arg(&socket)
        .arg("status")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut ctl, LIMIT, "arborctl status");
    let output = ctl.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // systemd-socket-activate execs arbord in place: same pid.
    assert!(
        stdout.contains(&format!("arbord pid {}", activator.id())),
        "{stdout}"
    );
    assert!(UnixStream::connect(&socket).is_ok());
    let _ = activator.kill();
    let _ = activator.wait();
}

//! http-hello outside arbor: on its own `--listen` address, and under
//! systemd's `systemd-socket-activate` (the socket at fd 3). SIGTERM ends it
//! cleanly in both.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

fn http_hello() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_http-hello"))
}

/// A free port, never handed out before in this process (the two tests
/// run side by side, and the kernel may give a port back twice).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The two tests take turns: run side by side, the first could see its
/// connection reset (seen once in CI, not understood yet; see the session
/// note), and each starts a server of its own anyway.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kills the child when a test fails half-way.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two requests on one keep-alive connection, retried until the server
/// listens; returns the pid the replies name.
fn ask(port: u16) -> u32 {
    let deadline = Instant::now() + LIMIT;
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(e) => {
                assert!(Instant::now() < deadline, "nothing listens on {port}: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut pids = Vec::new();
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        let mut chunk = [0u8; 256];
        while !String::from_utf8_lossy(&response).ends_with('\n')
            || !String::from_utf8_lossy(&response).contains("hello from pid")
        {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "closed mid-response");
            response.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8(response).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let pid: u32 = text
            .rsplit("hello from pid ")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        pids.push(pid);
    }
    assert_eq!(pids[0], pids[1]);
    pids[0]
}

fn terminate(mut guard: Guard) {
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(guard.0.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn standalone_on_its_own_address() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let port = free_port();
    let child = Command::new(http_hello())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    assert_eq!(ask(port), guard.0.id());
    terminate(guard);
}

#[test]
fn under_systemd_socket_activate() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tool = [
        "/usr/bin/systemd-socket-activate",
        "/bin/systemd-socket-activate",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("systemd-socket-activate (Debian: apt-get install systemd)");
    let port = free_port();
    let child = Command::new(tool)
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--fdname=http")
        .arg(http_hello())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    // systemd-socket-activate execs http-hello in place: same pid.
    assert_eq!(ask(port), guard.0.id());
    terminate(guard);
}

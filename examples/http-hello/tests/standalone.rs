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

/// A free port below the kernel's ephemeral range, never handed out before
/// in this process. Below the range, because a port the kernel gave out for
/// `bind(0)` is one it may hand any `connect()` as its source port between
/// this probe and the server's own bind (the two tests run side by side,
/// each connecting while the other starts its server), and a client that
/// retries towards an ephemeral port can even connect to itself.
///
/// The probe binds and never listens: a process the other test forks at
/// that instant holds a copy of the probe until its exec, and were the probe
/// listening, this test's client could connect to that copy before the
/// server binds, and be reset when the exec closes it (a CI run failed so:
/// a reset on the first read, before systemd-socket-activate had even
/// printed that it listened). A bound socket that does not listen refuses
/// connections, which the client retries, and does not stop the server's
/// bind (both set SO_REUSEADDR).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("the kernel's ephemeral port range");
    let low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|low| low.parse().ok())
        .expect("a port number");
    assert!(low > 11_000, "no room below the ephemeral range {range:?}");
    let mut given = GIVEN.lock().unwrap();
    // Start at a place that differs between runs, then walk down.
    let start = 10_000 + std::process::id() as u16 % (low - 11_000);
    (start..low)
        .chain(10_000..start)
        .find(|port| !given.contains(port) && bindable(*port))
        .inspect(|port| given.push(*port))
        .expect("a free port below the ephemeral range")
}

/// Whether 127.0.0.1:`port` can be bound now, by a socket that never listens.
fn bindable(port: u16) -> bool {
    use socket2::{Domain, Socket, Type};
    let Ok(probe) = Socket::new(Domain::IPV4, Type::STREAM, None) else {
        return false;
    };
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    probe.set_reuse_address(true).is_ok() && probe.bind(&address.into()).is_ok()
}

/// Kills the child when a test fails half-way.
struct Guard(Child);

impl Guard {
    /// What the server said on stderr, and how it ended (it is killed if
    /// it still runs): for a failure's message.
    fn post_mortem(&mut self) -> String {
        let _ = self.0.kill();
        let status = self.0.wait();
        let mut said = String::new();
        if let Some(stderr) = self.0.stderr.as_mut() {
            let _ = stderr.read_to_string(&mut said);
        }
        format!("server {status:?}, stderr: {said:?}")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two requests on one keep-alive connection, retried until the server
/// listens; the pid the replies name. A failure says what the server said
/// and how it ended.
fn ask(port: u16, server: &mut Guard) -> u32 {
    match try_ask(port) {
        Ok(pid) => pid,
        Err(e) => panic!("port {port}: {e}; {}", server.post_mortem()),
    }
}

fn try_ask(port: u16) -> Result<u32, String> {
    let deadline = Instant::now() + LIMIT;
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("nothing listens: {e}")),
        }
    };
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut pids = Vec::new();
    for round in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .map_err(|e| format!("request {round}: write: {e}"))?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 256];
        while !String::from_utf8_lossy(&response).ends_with('\n')
            || !String::from_utf8_lossy(&response).contains("hello from pid")
        {
            let n = stream.read(&mut chunk).map_err(|e| {
                format!(
                    "request {round}: read after {:?}: {e}",
                    String::from_utf8_lossy(&response)
                )
            })?;
            if n == 0 {
                return Err(format!(
                    "request {round}: closed mid-response after {:?}",
                    String::from_utf8_lossy(&response)
                ));
            }
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
    Ok(pids[0])
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
    let port = free_port();
    let child = Command::new(http_hello())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    assert_eq!(ask(port, &mut guard), guard.0.id());
    terminate(guard);
}

#[test]
fn under_systemd_socket_activate() {
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
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    // systemd-socket-activate execs http-hello in place: same pid.
    assert_eq!(ask(port, &mut guard), guard.0.id());
    terminate(guard);
}

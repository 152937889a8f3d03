//! A small HTTP/1.1 keep-alive client and a bounded load generator, for the
//! pool tests against `http-hello` (whose replies name their pid).
//!
//! Every failure counts: a refused or reset connect, a connection that ends
//! before a whole response, a status other than 200. A response with
//! `Connection: close` is a success; the client then reconnects, as any
//! HTTP/1.1 client does.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long one request may take before it counts as failed.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// Where to send requests.
#[derive(Debug, Clone)]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

trait Stream: Read + Write + Send + std::os::fd::AsFd {}
impl<T: Read + Write + Send + std::os::fd::AsFd> Stream for T {}

/// One answered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The pid the reply named.
    pub pid: u32,
    /// The server ends the connection after it (`Connection: close`).
    pub close: bool,
}

/// A keep-alive client: one connection, reopened after the server closes it.
pub struct Client {
    target: Target,
    stream: Option<Box<dyn Stream>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Client({:?}, connected: {})",
            self.target,
            self.stream.is_some()
        )
    }
}

impl Client {
    /// A client for `target`; it connects on the first request.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            stream: None,
        }
    }

    /// Connects now (a fresh connection).
    pub fn connect(&mut self) -> Result<(), String> {
        let connect_error = |e: std::io::Error| format!("connect: {e}");
        let stream: Box<dyn Stream> = match &self.target {
            Target::Tcp(addr) => {
                let stream =
                    TcpStream::connect_timeout(addr, REQUEST_LIMIT).map_err(connect_error)?;
                let _ = stream.set_nodelay(true);
                Box::new(stream)
            }
            Target::Unix(path) => Box::new(UnixStream::connect(path).map_err(connect_error)?),
        };
        // Every read and write is bounded, whatever the socket's family.
        let fd = stream.as_fd();
        let socket = socket2::SockRef::from(&fd);
        socket
            .set_read_timeout(Some(REQUEST_LIMIT))
            .and_then(|()| socket.set_write_timeout(Some(REQUEST_LIMIT)))
            .map_err(|e| e.to_string())?;
        self.stream = Some(stream);
        Ok(())
    }

    /// One `GET /` on the current connection (connecting first when there
    /// is none).
    pub fn get(&mut self) -> Result<Reply, String> {
        if self.stream.is_none() {
            self.connect()?;
        }
        let result = self.exchange();
        if !matches!(result, Ok(Reply { close: false, .. })) {
            self.stream = None;
        }
        result
    }

    fn exchange(&mut self) -> Result<Reply, String> {
        let stream = self.stream.as_mut().ok_or("not connected")?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: arbor\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "connection closed after {} bytes of response",
                    buf.len()
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Err(format!("status: {}", head.lines().next().unwrap_or("")));
        }
        let header = |name: &str| {
            head.lines().find_map(|l| {
                l.strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_string())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or("no content-length")?;
        while buf.len() < head_end + length {
            let n = stream
                .read(&mut chunk)
                .map_err(|e| format!("read body: {e}"))?;
            if n == 0 {
                return Err("connection closed inside the body".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]);
        let pid = body
            .trim()
            .strip_prefix("hello from pid ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("unexpected body {body:?}"))?;
        Ok(Reply {
            pid,
            close: header("connection").is_some_and(|v| v == "close"),
        })
    }
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Requests answered.
    pub ok: u64,
    /// Requests that failed, with the first few reasons.
    pub failed: u64,
    /// Up to 20 failure reasons.
    pub reasons: Vec<String>,
    /// Requests answered per pid.
    pub by_pid: BTreeMap<u32, u64>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.failed += other.failed;
        for reason in other.reasons {
            if self.reasons.len() < 20 {
                self.reasons.push(reason);
            }
        }
        for (pid, n) in other.by_pid {
            *self.by_pid.entry(pid).or_default() += n;
        }
    }
}

/// Constant load: `connections` keep-alive clients sending requests back
/// to back until stopped.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Stats>>,
}

impl Load {
    /// Starts the clients.
    pub fn start(target: Target, connections: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..connections)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let target = target.clone();
                std::thread::spawn(move || {
                    let mut client = Client::new(target);
                    let mut stats = Stats::default();
                    while !stop.load(Ordering::Relaxed) {
                        match client.get() {
                            Ok(reply) => {
                                stats.ok += 1;
                                *stats.by_pid.entry(reply.pid).or_default() += 1;
                            }
                            Err(reason) => {
                                stats.failed += 1;
                                if stats.reasons.len() < 20 {
                                    stats.reasons.push(reason);
                                }
                            }
                        }
                    }
                    stats
                })
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops the clients (each finishes its request in flight, bounded by
    /// the request limit) and sums what they saw.
    pub fn stop(self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Stats::default();
        for thread in self.threads {
            match thread.join() {
                Ok(stats) => total.merge(stats),
                Err(_) => {
                    total.failed += 1;
                    total.reasons.push("a load thread panicked".into());
                }
            }
        }
        total
    }
}

/// A TCP port free on 127.0.0.1 right now, and never handed out before in
/// this process: the kernel may give a port it just gave back to the next
/// `bind(:0)`, and two tests running side by side must not share one.
///
/// The probe binds and never listens: a process another test forks at that
/// instant holds a copy of the probe until its exec, and a listening copy
/// would take the connections meant for the server about to bind the port,
/// then reset them when the exec closes it. A socket that only binds refuses
/// connections (clients retry) and does not stop the server's bind.
pub fn free_port() -> u16 {
    use socket2::{Domain, Socket, Type};
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    loop {
        let probe = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
        probe.set_reuse_address(true).expect("SO_REUSEADDR");
        probe.bind(&any.into()).expect("a free port");
        let port = probe
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .expect("a bound port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

//! arbord at scale: for each size (100, 1,000 and 10,000 idle workers, or
//! `ARBOR_SCALE_SIZES=100,1000`), a fresh arbord started with nothing, then
//! that many workers spawned through its control socket (eight clients at
//! once, each on its own connection), and measured:
//!
//! - the start: from the first Spawn sent until a watcher has seen every
//!   worker's Ready (starts per second);
//! - arbord's RSS growth per idle worker (its RSS with the workers, all
//!   Ready, against its RSS before the first);
//! - `arborctl ps` and `arborctl --json ps` (whole arborctl processes, as an
//!   operator runs them; median of five);
//! - a storm of exits: every worker SIGKILLed at once; the time from the
//!   first kill until a watcher has seen every exit, and how many events
//!   that watcher was told it missed;
//! - the shutdown: the same number started again on a fresh arbord, then
//!   `Shutdown`, timed until arbord has exited (every worker closed).
//!
//! Prints one JSON object per size; a size the fd limit cannot hold is
//! not run, and its object says so. arbord runs with `max_workers` set to
//! the size (at least its default, 1,024) and an fd limit of 65,536 (or
//! the hard limit, where this process may not raise it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arbor_protocol::control::{ControlRequest, ControlResponse, EventKind, SpawnRequest};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Control clients spawning at once.
const CLIENTS: usize = 8;
/// The fd limit asked for: 10,000 workers need about 40,000 of arbord's.
const FD_LIMIT: u64 = 65536;
/// The longest any one phase may take before the probe gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(600);

fn main() -> Result<()> {
    let limit = arbor_bench::raise_fd_limit(FD_LIMIT)?;
    let sizes = std::env::var("ARBOR_SCALE_SIZES").unwrap_or_else(|_| "100,1000,10000".into());
    for size in sizes.split(',') {
        let size: usize = size.trim().parse()?;
        let needed = size as u64 * FDS_PER_WORKER + 256;
        if needed > limit {
            // Said in the output, never skipped in silence.
            println!(
                "{{\"workers\": {size}, \"not_run\": \"needs about {needed} fds, the limit here is {limit}\"}}"
            );
            continue;
        }
        let mut arbord = Arbord::start(size)?;
        let baseline = arbor_bench::rss_kib(arbord.pid())?;
        let fds_before = fd_count(arbord.pid())?;
        let start = arbord.spawn_all(size)?;
        let rss = arbor_bench::rss_kib(arbord.pid())?;
        let fds = fd_count(arbord.pid())? - fds_before;
        let ps = arbord.ctl_median(&["ps"], size)?;
        let json_ps = arbord.ctl_median(&["--json", "ps"], 0)?;
        let (storm, missed) = arbord.storm(size)?;
        arbord.shutdown()?;
        let mut arbord = Arbord::start(size)?;
        let second_start = arbord.spawn_all(size)?;
        let shutdown = arbord.shutdown()?;
        println!(
            "{{\"workers\": {size}, \"start_s\": {:.3}, \"starts_per_s\": {:.0}, \"second_start_s\": {:.3}, \"arbord_kib_per_idle_worker\": {:.1}, \"arbord_fds_per_worker\": {:.2}, \"ps_ms\": {:.2}, \"json_ps_ms\": {:.2}, \"exit_storm_s\": {:.3}, \"exit_storm_missed\": {missed}, \"shutdown_s\": {:.3}}}",
            start.as_secs_f64(),
            size as f64 / start.as_secs_f64(),
            second_start.as_secs_f64(),
            (rss as f64 - baseline as f64) / size as f64,
            fds as f64 / size as f64,
            ps.as_secs_f64() * 1000.0,
            json_ps.as_secs_f64() * 1000.0,
            storm.as_secs_f64(),
            shutdown.as_secs_f64(),
        );
    }
    Ok(())
}

/// arbord's fds per idle worker: its channel, its pidfd, and the pipes of
/// its stdout and stderr.
const FDS_PER_WORKER: u64 = 4;

/// One arbord of the probe, killed if the probe stops early.
struct Arbord {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Arbord {
    fn start(size: usize) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("arbor-scale-{}-{size}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("arbord.toml");
        std::fs::write(
            &config,
            format!("[daemon]\nmax_workers = {}\n", size.max(1024)),
        )?;
        let socket = dir.join("arbord.sock");
        let child = Command::new(sibling("bench-arbord")?)
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .stderr(Stdio::null())
            .spawn()?;
        let arbord = Self { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while arbor_bench::control_ask(&arbord.socket, &ControlRequest::Status).is_err() {
            if Instant::now() > deadline {
                return Err("arbord did not answer within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(arbord)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Spawns `size` idle workers from [`CLIENTS`] clients at once; the
    /// time until a watcher has seen each one's Ready.
    fn spawn_all(&self, size: usize) -> Result<Duration> {
        let ready = self.watch(size, |kind| matches!(kind, EventKind::Ready))?;
        let started = Instant::now();
        let peer = sibling("bench-peer")?.display().to_string();
        std::thread::scope(|scope| -> Result<()> {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|client| {
                    let count = size / CLIENTS + usize::from(client < size % CLIENTS);
                    let peer = peer.clone();
                    scope.spawn(move || spawn_some(&self.socket, &peer, count))
                })
                .collect();
            for client in clients {
                client.join().map_err(|_| "a spawning client panicked")??;
            }
            Ok(())
        })?;
        let (seen, _) = ready.recv_timeout(PHASE_LIMIT)?;
        if seen < size {
            return Err(format!("{seen} of {size} workers were seen Ready").into());
        }
        Ok(started.elapsed())
    }

    /// A watcher on its own thread, counting events whose kind `counts`
    /// until it has `wanted` (events it was told it missed count too, so
    /// it ends); it sends back (counted, missed). Subscribed before it
    /// returns.
    fn watch(
        &self,
        wanted: usize,
        counts: fn(&EventKind) -> bool,
    ) -> Result<mpsc::Receiver<(usize, u64)>> {
        let mut channel = arbor_bench::control_connect(&self.socket, PHASE_LIMIT)?;
        channel.send_value(&ControlRequest::Events { id: None }, &[])?;
        match arbor_bench::control_answer(&mut channel)? {
            ControlResponse::Ok => {}
            other => return Err(format!("Events answered {other:?}").into()),
        }
        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut seen, mut missed) = (0, 0);
            while seen + (missed as usize) < wanted {
                match arbor_bench::control_answer(&mut channel) {
                    Ok(ControlResponse::Notice(event)) => match event.kind {
                        EventKind::Missed(count) => missed += count,
                        kind if counts(&kind) => seen += 1,
                        _ => {}
                    },
                    _ => break,
                }
            }
            let _ = done.send((seen, missed));
        });
        Ok(result)
    }

    /// The median time of five runs of arborctl with `args`; with `lines`
    /// above 0, checks that it listed that many workers (and a header).
    fn ctl_median(&self, args: &[&str], lines: usize) -> Result<Duration> {
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let output = Command::new(sibling("bench-arborctl")?)
                .arg("--socket")
                .arg(&self.socket)
                .args(args)
                .output()?;
            times.push(started.elapsed());
            if !output.status.success() {
                return Err(format!("arborctl {args:?} failed").into());
            }
            let listed = String::from_utf8_lossy(&output.stdout).lines().count();
            if lines > 0 && listed != lines + 1 {
                return Err(
                    format!("arborctl ps listed {listed} lines for {lines} workers").into(),
                );
            }
        }
        times.sort();
        Ok(times[times.len() / 2])
    }

    /// SIGKILLs every worker at once; the time until a watcher has seen
    /// every exit, and how many events it was told it missed.
    fn storm(&self, size: usize) -> Result<(Duration, u64)> {
        let pids: Vec<u32> = match arbor_bench::control_ask(&self.socket, &ControlRequest::List)? {
            ControlResponse::Workers(workers) => workers.iter().map(|w| w.pid).collect(),
            other => return Err(format!("List answered {other:?}").into()),
        };
        let exits = self.watch(size, |kind| matches!(kind, EventKind::Exit(_)))?;
        let started = Instant::now();
        for pid in pids {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
        }
        let (seen, missed) = exits.recv_timeout(PHASE_LIMIT)?;
        if seen + (missed as usize) < size {
            return Err(format!("{seen} of {size} exits were seen").into());
        }
        Ok((started.elapsed(), missed))
    }

    /// Asks arbord to shut down; the time until it has exited.
    fn shutdown(&mut self) -> Result<Duration> {
        let started = Instant::now();
        arbor_bench::control_ask(&self.socket, &ControlRequest::Shutdown)?;
        let deadline = started + PHASE_LIMIT;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                return Err("arbord did not exit after Shutdown".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(started.elapsed())
    }
}

impl Drop for Arbord {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Spawns `count` idle workers, one Spawn after another on one connection.
fn spawn_some(socket: &Path, peer: &str, count: usize) -> Result<()> {
    let mut channel = arbor_bench::control_connect(socket, PHASE_LIMIT)?;
    for _ in 0..count {
        let spawn = SpawnRequest {
            name: Some("idle".into()),
            program: peer.into(),
            args: vec!["worker-echo".into()],
            env: vec![],
            cwd: None,
            restart: "never".into(),
            close_grace_ms: 5000,
            speaks_protocol: true,
            shared: false,
        };
        channel.send_value(&ControlRequest::Spawn(spawn), &[])?;
        match arbor_bench::control_answer(&mut channel)? {
            ControlResponse::Spawned { .. } => {}
            other => return Err(format!("Spawn answered {other:?}").into()),
        }
    }
    Ok(())
}

/// How many fds process `pid` holds.
fn fd_count(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// A binary built beside this one.
fn sibling(name: &str) -> Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(name))
}

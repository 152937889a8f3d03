//! The soak's ways into arbord and its processes: control connections with
//! a deadline on every answer, the process facts it reads from `/proc`,
//! and its one source of chance.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arbor_protocol::blocking::Channel;
use arbor_protocol::control::{ControlRequest, ControlResponse, ErrorKind};
use arbor_protocol::Frame;

use super::freezes;

/// xorshift64*: the soak's only source of chance, so a seed replays it.
pub struct Chance(u64);

impl Chance {
    /// Chance from `seed` (any value; zero is made odd).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A control connection that is opened again well before it may have been
/// idle long enough for arbord to cut it off (`control_idle_timeout`).
pub struct Control {
    socket: PathBuf,
    channel: Option<Channel>,
    last_used: Instant,
    bound: Duration,
    idle: Duration,
}

impl Control {
    /// A connection to `socket` whose answers must come within `bound`;
    /// reopened after `idle` without use.
    pub fn new(socket: &Path, bound: Duration, idle: Duration) -> Self {
        Self {
            socket: socket.to_path_buf(),
            channel: None,
            last_used: Instant::now(),
            bound,
            idle,
        }
    }

    /// `request` and its answer, or why there is none.
    ///
    /// A kept connection that arbord cut for idleness first is asked again
    /// on a fresh one, as any keep-alive client must: arbord's idle clock
    /// starts when it has sent an answer, and on a loaded machine this
    /// side may read that answer and send its next request later than the
    /// margin kept here (half the timeout) allows. arbord says so
    /// (`Timeout`, "no complete request"), having done nothing with the
    /// request, so asking again is safe.
    pub fn ask(&mut self, request: &ControlRequest) -> Result<ControlResponse, String> {
        if self.last_used.elapsed() >= self.idle / 2 {
            self.channel = None;
        }
        let kept = self.channel.is_some();
        let mut answer = self.ask_once(request);
        if kept && answer.as_ref().is_ok_and(cut_for_idleness) {
            self.channel = None;
            answer = self.ask_once(request);
        }
        answer
    }

    fn ask_once(&mut self, request: &ControlRequest) -> Result<ControlResponse, String> {
        let channel = match self.channel.as_mut() {
            Some(channel) => channel,
            None => self.channel.insert(connect(&self.socket, self.bound)?),
        };
        let answer = ask_on(channel, request);
        self.last_used = Instant::now();
        if answer.is_err() {
            self.channel = None;
        }
        answer
    }
}

/// arbord's answer on a connection it closes because no complete request
/// came within its idle timeout.
fn cut_for_idleness(answer: &ControlResponse) -> bool {
    matches!(answer, ControlResponse::Failed { kind: ErrorKind::Timeout, message } if message.starts_with("no complete request"))
}

/// A fresh control connection whose reads give up after `bound`.
pub fn connect(socket: &Path, bound: Duration) -> Result<Channel, String> {
    let stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(bound))
        .map_err(|e| format!("read timeout: {e}"))?;
    Channel::new(stream).map_err(|e| format!("channel: {e}"))
}

/// `request` on `channel` and its answer, within the channel's read bound.
pub fn ask_on(channel: &mut Channel, request: &ControlRequest) -> Result<ControlResponse, String> {
    let started = Instant::now();
    channel
        .send_value(request, &[])
        .map_err(|e| format!("send {request:?}: {e}"))?;
    answer_on(channel)
        .map_err(|e| format!("{e} ({:?} after sending {request:?})", started.elapsed()))
}

/// The next answer on `channel`, within its read timeout of time awake
/// (see [`super::freezes`]: a machine-wide freeze does not count).
pub fn answer_on(channel: &mut Channel) -> Result<ControlResponse, String> {
    let began = Instant::now();
    loop {
        match channel.recv() {
            Ok((Frame::Message(message), _)) => {
                return message
                    .decode()
                    .map_err(|e| format!("an answer that does not decode: {e}"))
            }
            Ok(_) => continue,
            Err(e) if !e.is_fatal() => {
                let bound = channel
                    .socket()
                    .read_timeout()
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let awake = freezes::awake_since(began);
                if awake < bound {
                    continue;
                }
                return Err(format!(
                    "no answer: {e} ({awake:?} awake, {:?} frozen)",
                    freezes::frozen_since(began)
                ));
            }
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
}

/// `request` on a connection of its own, answered within `bound`.
pub fn ask_once(
    socket: &Path,
    request: &ControlRequest,
    bound: Duration,
) -> Result<ControlResponse, String> {
    ask_on(&mut connect(socket, bound)?, request)
}

/// When process `pid` started (clock ticks after boot, `/proc/PID/stat`'s
/// 22nd field), if it exists: with the pid, it names one process even
/// after the pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, maybe with spaces): field 3 on.
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

/// Process `pid`'s resident memory in KiB, if it exists.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

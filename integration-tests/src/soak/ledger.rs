//! Exactly-once, in-order delivery, checked end to end: a few senders post
//! numbered messages to the `ledger` worker through arbord (pipelined on a
//! fresh control connection each burst, some with a pipe's write end
//! attached); every acknowledged message must reach the worker once and in
//! its sender's order, and every attached pipe must carry its message's
//! line and then reach end-of-file (arbord kept no copy of the fd).

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use arbor_protocol::control::{ControlRequest, ControlResponse};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::control::{answer_on, connect, Chance, Control};

/// How many senders post to the ledger.
const SENDERS: usize = 3;
/// Most messages in one burst.
const BURST: usize = 8;
/// Most pipes waiting to be read at once.
const MAX_PIPES: usize = 48;

/// What the soak has had acknowledged, and the pipes it still must read.
pub struct Ledger {
    acked: [u64; SENDERS],
    /// Read ends, with the line their message must write.
    pipes: Vec<(OwnedFd, String)>,
    /// Messages whose delivery was confirmed by a tally.
    pub confirmed: u64,
    /// Pipes read to their end with the right line.
    pub pipes_read: u64,
}

impl Ledger {
    pub fn new() -> Self {
        Self {
            acked: [0; SENDERS],
            pipes: Vec::new(),
            confirmed: 0,
            pipes_read: 0,
        }
    }

    /// One burst from one sender to worker `id`: pipelined posts, then
    /// their answers, each of which must be `Ok`. Returns what it did.
    pub fn burst(
        &mut self,
        socket: &Path,
        bound: Duration,
        id: u64,
        chance: &mut Chance,
    ) -> Result<String, String> {
        let sender = chance.below(SENDERS);
        let count = 1 + chance.below(BURST);
        let mut channel = connect(socket, bound)?;
        let first = self.acked[sender] + 1;
        let mut kept = Vec::new();
        for seq in first..first + count as u64 {
            let data = format!("s{sender} {seq}");
            let request = ControlRequest::Post {
                id,
                data: data.clone().into_bytes(),
            };
            let sent = if self.pipes.len() + kept.len() < MAX_PIPES && chance.below(2) == 0 {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| format!("pipe2: {e}"))?;
                kept.push((read, format!("{data}\n")));
                // Our write end closes here, once sent: only the message's
                // copy may keep the pipe open.
                channel.send_value(&request, &[write.as_fd()])
            } else {
                channel.send_value(&request, &[])
            };
            sent.map_err(|e| format!("post {data}: {e}"))?;
        }
        for seq in first..first + count as u64 {
            match answer_on(&mut channel)? {
                ControlResponse::Ok => self.acked[sender] = seq,
                other => {
                    return Err(format!(
                        "the ledger's post s{sender} {seq} answered {other:?}"
                    ))
                }
            }
        }
        self.pipes.extend(kept);
        Ok(format!(
            "ledger: s{sender} {first}..={}",
            first + count as u64 - 1
        ))
    }

    /// Asks worker `id` for its tally on `control` (after every post the
    /// soak had acknowledged, so all of them are delivered by then) and
    /// checks it, then reads every pipe to its end.
    pub fn verify(
        &mut self,
        control: &mut Control,
        id: u64,
        bound: Duration,
    ) -> Result<(), String> {
        let request = ControlRequest::Request {
            id,
            data: b"tally".to_vec(),
            timeout_ms: bound.as_millis() as u64,
        };
        let tally = match control.ask(&request)? {
            ControlResponse::Reply(data) => String::from_utf8_lossy(&data).into_owned(),
            other => return Err(format!("the ledger's tally answered {other:?}")),
        };
        let expected: Vec<String> = (0..SENDERS)
            .filter(|s| self.acked[*s] > 0)
            .map(|s| format!("s{s}={}", self.acked[s]))
            .chain(["bad=0".to_string()])
            .collect();
        if tally != expected.join(" ") {
            return Err(format!(
                "the ledger saw {tally:?}; acknowledged: {:?}",
                expected.join(" ")
            ));
        }
        self.confirmed = self.acked.iter().sum();
        let deadline = Instant::now() + bound;
        for (read, line) in std::mem::take(&mut self.pipes) {
            let got = read_to_end(read, deadline)?;
            if got != line.as_bytes() {
                return Err(format!(
                    "a pipe posted with {line:?} carried {:?}",
                    String::from_utf8_lossy(&got)
                ));
            }
            self.pipes_read += 1;
        }
        Ok(())
    }
}

/// Everything until end-of-file, by `deadline`.
fn read_to_end(read: OwnedFd, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut file = std::fs::File::from(read);
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) => {
                return Err(format!(
                    "a posted pipe did not reach its end in time (read {:?}): a copy of its write end is still open",
                    String::from_utf8_lossy(&got)
                ))
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        match file.read(&mut chunk) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read a posted pipe: {e}")),
        }
    }
}

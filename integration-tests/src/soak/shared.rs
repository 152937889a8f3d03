//! The shared worker and its clients: attaches and detaches, and on each
//! client's port an `inc` whose answer must count up. A client's port may
//! break only after the soak killed the shared worker since it attached
//! (or just before: arbord sees a SIGKILL only when it reaps it).

use std::path::Path;
use std::time::{Duration, Instant};

use arbor_protocol::blocking::Channel;
use arbor_protocol::Frame;

use super::control::Chance;

/// The shared worker's name in the configuration.
pub const NAME: &str = "counter";
/// Most clients attached at once.
const MOST: usize = 4;
/// How long arbord may take to see a SIGKILLed shared worker's exit.
const KILL_NOTICED: Duration = Duration::from_secs(5);

struct Client {
    port: Channel,
    /// The last count this client was answered.
    last: u64,
    /// How many kills of the shared worker it has seen already (see
    /// [`Shared::epoch_now`]).
    epoch: u64,
}

/// The attached clients.
#[derive(Default)]
pub struct Shared {
    clients: Vec<Client>,
    /// How many times the soak killed the shared worker, and when last.
    kills: u64,
    last_kill: Option<Instant>,
    /// Answers checked.
    pub answers: u64,
    /// Attaches made.
    pub attaches: u64,
}

impl Shared {
    /// The configuration of the shared worker.
    pub fn config(program: &str) -> String {
        format!("[[shared]]\nname = {NAME:?}\nprogram = {program:?}\nargs = [\"counter\"]\n\n")
    }

    /// The soak is about to SIGKILL the shared worker.
    pub fn killing(&mut self) {
        self.kills += 1;
        self.last_kill = Some(Instant::now());
    }

    /// The kills a client attached now may still meet: arbord learns of a
    /// SIGKILL only when it reaps it, and a port handed over meanwhile goes
    /// to the dying run (and closes with it).
    fn epoch_now(&self) -> u64 {
        match self.last_kill {
            Some(at) if super::freezes::awake_since(at) < KILL_NOTICED => self.kills - 1,
            _ => self.kills,
        }
    }

    /// One operation on the shared worker's clients. Returns what it did.
    pub fn step(
        &mut self,
        socket: &Path,
        bound: Duration,
        chance: &mut Chance,
    ) -> Result<String, String> {
        match chance.below(3) {
            0 if self.clients.len() < MOST => {
                let port = arbor_supervisor::client::connect(socket, NAME)
                    .map_err(|e| format!("attach to {NAME}: {e}"))?;
                let port = port.into_channel().map_err(|e| format!("attach: {e}"))?;
                port.socket()
                    .set_read_timeout(Some(bound))
                    .map_err(|e| e.to_string())?;
                self.attaches += 1;
                self.clients.push(Client {
                    port,
                    last: 0,
                    epoch: self.epoch_now(),
                });
                Ok(format!("attach ({} clients)", self.clients.len()))
            }
            1 if !self.clients.is_empty() => {
                self.clients.swap_remove(chance.below(self.clients.len()));
                Ok(format!("detach ({} clients)", self.clients.len()))
            }
            _ if !self.clients.is_empty() => {
                let at = chance.below(self.clients.len());
                self.inc(at)
            }
            _ => Ok("no client to use".into()),
        }
    }

    /// `inc` on client `at`: its count must grow.
    fn inc(&mut self, at: usize) -> Result<String, String> {
        let kills = self.kills;
        let client = &mut self.clients[at];
        let answer = client
            .port
            .send_bytes(b"inc", &[])
            .map_err(|e| e.to_string())
            .and_then(|()| client.port.recv().map_err(|e| e.to_string()));
        let text = match answer {
            Ok((Frame::Message(message), _)) => String::from_utf8_lossy(&message.data).into_owned(),
            Ok((other, _)) => return Err(format!("{NAME} answered inc with {other:?}")),
            Err(e) if client.epoch < kills => {
                self.clients.swap_remove(at);
                return Ok(format!("inc: the port broke after a kill ({e}), detached"));
            }
            Err(e) => return Err(format!("inc on a port of {NAME}, never killed since: {e}")),
        };
        let count: u64 = text
            .strip_prefix("count ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{NAME} answered inc with {text:?}"))?;
        if count <= client.last {
            return Err(format!("{NAME} counted {count} after {}", client.last));
        }
        client.last = count;
        self.answers += 1;
        Ok(format!("inc: {text}"))
    }
}

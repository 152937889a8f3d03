//! Hostile control clients: garbage, a huge announced length that stalls,
//! half a frame, clients that never speak, and clients that ask for a
//! stream (`events`, `logs -f`) and never read it. arbord must cut each
//! off (idle and frame deadlines, the unread-answer bound) and stay
//! answerable; the soak keeps a few open for a while.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;

use arbor_protocol::blocking::Channel;
use arbor_protocol::control::ControlRequest;
use arbor_protocol::frame::{FrameKind, Header, DEFAULT_MAX_PAYLOAD};

use super::control::Chance;

/// Most hostile clients the soak keeps open.
const KEPT: usize = 32;

/// The hostile clients kept open.
#[derive(Default)]
pub struct Hostile {
    clients: Vec<UnixStream>,
}

impl Hostile {
    /// How many are open.
    pub fn open(&self) -> usize {
        self.clients.len()
    }

    /// Lets go of every one.
    pub fn drop_all(&mut self) {
        self.clients.clear();
    }

    /// One more hostile client; `logs_of` is a worker whose output to
    /// follow without reading. Returns what it did.
    pub fn one(
        &mut self,
        socket: &Path,
        logs_of: Option<u64>,
        chance: &mut Chance,
    ) -> Result<String, String> {
        let mut stream = UnixStream::connect(socket)
            .map_err(|e| format!("the control socket refused a connection: {e}"))?;
        let header = |payload_len| {
            Header {
                kind: FrameKind::Message as u8,
                payload_len,
                fd_count: 0,
            }
            .encode()
        };
        // A write may fail if arbord already cut the client off: fine.
        let what = match chance.below(6) {
            0 => {
                let _ = stream.write_all(b"GET / HTTP/1.1\r\n\r\n");
                "garbage".to_string()
            }
            1 => {
                let _ = stream.write_all(&header(DEFAULT_MAX_PAYLOAD));
                "16 MiB announced, then a stall".into()
            }
            2 => {
                let _ = stream.write_all(&header(100));
                let _ = stream.write_all(&[0u8; 10]);
                "half a frame".into()
            }
            3 | 4 => {
                let request = match logs_of {
                    Some(id) if chance.below(2) == 0 => ControlRequest::Logs {
                        id,
                        lines: 1000,
                        follow: true,
                    },
                    _ => ControlRequest::Events { id: None },
                };
                let what = format!("{request:?}, never read");
                let mut channel = Channel::new(stream.try_clone().map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                let _ = channel.send_value(&request, &[]);
                what
            }
            _ => "connects and says nothing".into(),
        };
        if self.clients.len() < KEPT {
            self.clients.push(stream);
        }
        Ok(format!("hostile: {what}"))
    }
}

//! The other process of every benchmark: echoes or sinks what the benchmark
//! sends, over arbor's channel or the raw baseline. Its channel is its stdin.

use std::io;

use arbor_bench::{channel_from_stdin, raw_recv_fds_until_ack, RawChannel};
use arbor_protocol::blocking::Channel;
use arbor_protocol::{Error, Frame};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let socket = channel_from_stdin()?;
    match mode.as_str() {
        // Replies to every message with the same bytes.
        "arbor-echo" => {
            let mut channel = Channel::new(socket)?;
            loop {
                match channel.recv() {
                    Ok((Frame::Message(m), _)) => channel.send_bytes(&m.data, &[])?,
                    Ok(_) => {}
                    Err(Error::Closed) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        // Takes messages (dropping their fds) and answers each Ping with a Pong.
        "arbor-sink" => {
            let mut channel = Channel::new(socket)?;
            loop {
                match channel.recv() {
                    Ok((Frame::Ping(n), _)) => channel.send(&Frame::Pong(n), &[])?,
                    Ok(_) => {}
                    Err(Error::Closed) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        "raw-echo" => {
            let mut channel = RawChannel::new(socket)?;
            let mut buf = Vec::new();
            loop {
                match channel.recv(&mut buf) {
                    Ok(true) => channel.send(&buf)?,
                    Ok(false) => channel.ack()?,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        "raw-sink" => {
            let mut channel = RawChannel::new(socket)?;
            let mut buf = Vec::new();
            loop {
                match channel.recv(&mut buf) {
                    Ok(true) => {}
                    Ok(false) => channel.ack()?,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        "raw-fd-sink" => loop {
            match raw_recv_fds_until_ack(&socket) {
                Ok(_) => {
                    use std::io::Write;
                    (&socket).write_all(&[1])?;
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        },
        other => Err(format!("unknown mode {other:?}").into()),
    }
}

//! The other process of every benchmark: echoes or sinks what the benchmark
//! sends, over arbor's channel or the raw baseline. Its channel is its stdin.

use std::io;

use arbor_bench::{channel_from_stdin, raw_recv_fds_until_ack, RawChannel};
use arbor_protocol::blocking::Channel;
use arbor_protocol::{Error, Frame};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode == "worker-echo" {
        // An arbor worker (channel at fd 3), the same as the echo example.
        let mut worker = arbor_worker::blocking::Worker::connect()?;
        worker.on_message(|ctx, message, _| ctx.reply(&message.data, &[]));
        return Ok(worker.run()?);
    }
    let socket = channel_from_stdin()?;
    match mode.as_str() {
        // The raw spawn baseline: one byte on the inherited socket, then wait
        // for the parent to close it.
        "raw-ready" => {
            use std::io::{Read, Write};
            (&socket).write_all(&[1])?;
            let mut rest = Vec::new();
            let _ = (&socket).read_to_end(&mut rest);
            Ok(())
        }
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
        // Reads every byte of each message (or of the Transfer that comes
        // with it), answers with their sum: the transfer benchmark's receiver.
        "sum-reader" => {
            let limits = arbor_protocol::Limits {
                max_payload: 128 << 20,
                ..arbor_protocol::Limits::default()
            };
            let mut channel = Channel::with_limits(socket, limits)?;
            loop {
                match channel.recv() {
                    Ok((Frame::Message(m), mut fds)) => {
                        // Either way the bytes are freed after the answer,
                        // as a receiver that is done with them would.
                        let view = match fds.pop() {
                            Some(fd) => Some(arbor_protocol::Transfer::from_fd(fd)?.map()?),
                            None => None,
                        };
                        let bytes: &[u8] = view.as_deref().unwrap_or(&m.data);
                        let sum = arbor_bench::byte_sum(bytes);
                        channel.send_bytes(&sum.to_le_bytes(), &[])?;
                    }
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

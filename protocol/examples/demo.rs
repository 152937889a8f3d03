//! Starts a worker process, exchanges messages with it and hands it a pipe.
//!
//! The same binary is parent and worker: the parent re-executes itself with
//! `--worker`, giving the child one end of a socketpair as its stdin. The
//! parent posts a greeting, a typed value, and the write end of a pipe; the
//! worker answers each, writes through the pipe, and exits on Close.
//!
//! Run it with `cargo run --release -p arbor-protocol --example demo`.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use arbor_protocol::blocking::Channel;
use arbor_protocol::{Frame, Message, Ready};

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    if std::env::args().nth(1).as_deref() == Some("--worker") {
        return worker();
    }
    let (ours, theirs) = UnixStream::pair()?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--worker")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()?;
    let mut channel = Channel::new(ours)?;
    channel
        .socket()
        .set_read_timeout(Some(Duration::from_secs(10)))?;

    // Posted before the worker is ready: the socket buffers them.
    channel.send_bytes(b"hello, worker", &[])?;
    channel.send_value(&("a typed value", 42u32), &[])?;
    let (pipe_read, pipe_write) = pipe()?;
    channel.send_bytes(b"here is a pipe", &[pipe_write.as_fd()])?;
    drop(pipe_write);

    let mut replies = 0;
    while replies < 3 {
        match channel.recv()? {
            (Frame::Ready(ready), _) => {
                println!("parent: worker {} (pid {}) is ready", ready.name, ready.pid)
            }
            (Frame::Message(m), _) => {
                println!("parent: reply {:?}", String::from_utf8_lossy(&m.data));
                replies += 1;
            }
            (other, _) => println!("parent: unexpected {other:?}"),
        }
    }
    let mut through_pipe = String::new();
    std::fs::File::from(pipe_read).read_to_string(&mut through_pipe)?;
    println!("parent: read from the pipe: {through_pipe:?}");

    channel.send(&Frame::Close, &[])?;
    let status = child.wait()?;
    println!("parent: worker exited with {status}");
    Ok(())
}

fn worker() -> Result<(), BoxError> {
    let socket = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let mut channel = Channel::new(socket)?;
    channel.send(
        &Frame::Ready(Ready::new(1, "demo-worker", std::process::id())),
        &[],
    )?;
    loop {
        let (frame, fds) = channel.recv()?;
        match frame {
            Frame::Message(m) => {
                let reply = match (m.decode::<(String, u32)>(), fds.into_iter().next()) {
                    (_, Some(fd)) => {
                        use std::io::Write;
                        std::fs::File::from(fd).write_all(b"written by the worker")?;
                        "got the pipe and wrote through it".to_string()
                    }
                    (Ok((text, n)), None) => format!("decoded ({text:?}, {n})"),
                    (Err(_), None) => format!("echo: {}", String::from_utf8_lossy(&m.data)),
                };
                channel.send(&Frame::Message(Message::new(reply.into_bytes())), &[])?;
            }
            Frame::Close => return Ok(()),
            _ => {}
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = std::io::pipe()?;
    Ok((r.into(), w.into()))
}

//! A worker with one behaviour per mode, for the integration tests.
//!
//! `test-worker MODE [ARG]`:
//! - `echo`: replies to each message with the same bytes and fds.
//! - `gated-echo PATH`: waits (up to 20 s) until PATH exists before it
//!   connects and sends Ready, then echoes: whatever was posted before the
//!   gate opened was posted before Ready.
//! - `exit CODE`: sends Ready, then exits with CODE.
//! - `segv [core|nocore]`: sends Ready, then dies of SIGSEGV on the first
//!   message; with `nocore` its RLIMIT_CORE is 0 (no core dump), with
//!   `core` as high as the hard limit allows.
//! - `stubborn`: ignores SIGTERM and the Close frame; only SIGKILL ends it.
//! - `hoard PATH`: sends Ready, then takes every handed-off connection and
//!   never answers (no ConnectionAck, the socket kept open, unserved);
//!   writes how many it holds to PATH after each.
//! - `onclose-file PATH`: on close, waits 200 ms, then writes "closed" to PATH.
//! - `list-fds`: replies to any message with the fds it inherited and its LISTEN_* variables.
//! - `garbage`: writes bytes that are not a frame on its channel, then waits.
//! - `lying`: sends a frame whose header names an fd it does not send, then waits.
//! - `panic`: panics with "boom" on the first message.
//! - `close-self`: replies to the first message, then closes itself (onclose posts "onclose ran").
//! - `env NAME`: replies "NAME:<message>" to each message.
//! - `write-fds`: writes each message's bytes into every fd that came with it.
//! - `chatty`: prints "line N" to stdout for N in 1..=3, then echoes.
//! - `plain`: does not speak the protocol; sleeps until killed.
//! - `port-ping`: takes the port that comes with a message, sends N (the
//!   message) numbered messages on it, reads N answers, posts "done N".
//! - `port-echo`: takes the port that comes with a message, echoes
//!   everything on it until it closes, then posts "echoed N".
//! - `transfer-sum`: maps the Transfer that comes with a message, posts
//!   "sum S len L" (or "error: ...").
//! - `orphans`: to a request, forks three processes it never waits for:
//!   one that exits at once, one that leaves the process group (setsid) and
//!   one that stays in it, both sleeping; replies with their pids
//!   ("EXITED ESCAPED GROUPED") and closes itself.
//! - `unsealed`: to the message "unsealed" it answers with an unsealed
//!   memfd (a hostile transfer); anything else is echoed.
//! - `ledger`: checks delivery. Each message is "SENDER SEQ"; a sender's
//!   first SEQ is 1 and each next one must be one more (anything else is
//!   a violation: a gap, a duplicate, a reordering). The message is written
//!   as "SENDER SEQ\n" into every fd that came with it. To the request
//!   "tally" it answers "SENDER=COUNT ..." per sender, then "bad=N" and the
//!   first violations.
//! - `flood N`: prints N lines to stdout and posts N messages at once,
//!   then echoes.

use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Duration;

use arbor_worker::blocking::Worker;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // What this process inherited, before the worker library opens anything.
    let inherited = list_fds();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let arg = args.get(1).cloned().unwrap_or_default();
    match mode {
        // A program that does not speak the protocol: its report on stdout.
        "plain-list-fds" => {
            println!("{}", fd_report(&inherited));
            return Ok(());
        }
        "plain" => loop {
            std::thread::sleep(Duration::from_secs(60));
        },
        "garbage" | "lying" => {
            let fd: i32 = std::env::var("ARBOR_CHANNEL_FD")?.parse()?;
            // SAFETY: the supervisor left our channel at ARBOR_CHANNEL_FD,
            // and nothing else in this process takes it.
            let channel = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut file = std::fs::File::from(channel);
            if mode == "garbage" {
                file.write_all(b"this is not an arbor frame at all")?;
            } else {
                // A Message header claiming one fd, with a 9-byte payload and no fd.
                let mut bytes = b"ARBR\x01\x02\x00\x00\x09\x00\x00\x00\x01\x00\x00\x00".to_vec();
                bytes.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, b'x']);
                file.write_all(&bytes)?;
            }
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        "hoard" => {
            let fd: i32 = std::env::var("ARBOR_CHANNEL_FD")?.parse()?;
            let id: u64 = std::env::var("ARBOR_WORKER_ID")?.parse()?;
            // SAFETY: the supervisor left our channel at ARBOR_CHANNEL_FD,
            // and nothing else in this process takes it.
            let channel = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut channel = arbor_protocol::blocking::Channel::new(
                std::os::unix::net::UnixStream::from(channel),
            )?;
            let ready = arbor_protocol::Ready::new(id, "hoard", std::process::id());
            channel.send(&arbor_protocol::Frame::Ready(ready), &[])?;
            let mut held = Vec::new();
            loop {
                match channel.recv() {
                    Ok((arbor_protocol::Frame::Connection(_), fds)) => {
                        held.extend(fds);
                        std::fs::write(&arg, held.len().to_string())?;
                    }
                    Ok(_) => {}
                    Err(_) => return Ok(()),
                }
            }
        }
        "stubborn" => {
            // SAFETY: ignoring SIGTERM in a single-threaded program.
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            let mut worker = Worker::connect()?;
            worker.on_close(|_| loop {
                std::thread::sleep(Duration::from_secs(60));
            });
            worker.run()?;
        }
        "gated-echo" => {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !std::path::Path::new(&arg).exists() {
                if std::time::Instant::now() > deadline {
                    return Err(format!("the gate {arg} did not open within 20 s").into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        "segv" if arg == "core" || arg == "nocore" => {
            use nix::sys::resource::{getrlimit, setrlimit, Resource};
            let (_, hard) = getrlimit(Resource::RLIMIT_CORE)?;
            let soft = if arg == "core" { hard } else { 0 };
            setrlimit(Resource::RLIMIT_CORE, soft, hard)?;
        }
        _ => {}
    }
    let mut worker = Worker::connect()?;
    match mode {
        "echo" | "gated-echo" => {
            worker.on_message(|ctx, message, fds| {
                let fds: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
                ctx.reply(&message.data, &fds)
            });
        }
        "write-fds" => {
            worker.on_message(|ctx, message, fds| {
                for fd in fds {
                    std::fs::File::from(fd)
                        .write_all(&message.data)
                        .expect("write through a passed fd");
                }
                ctx.post_message(b"written", &[])
            });
        }
        "chatty" => {
            for n in 1..=3 {
                println!("line {n}");
            }
            std::io::stdout().flush()?;
            eprintln!("to stderr");
            worker.on_message(|ctx, message, _| ctx.post_message(&message.data, &[]));
        }
        "exit" | "segv" => {
            let code: i32 = arg.parse().unwrap_or(0);
            worker.on_message(move |_, _, _| {
                if mode_is_segv() {
                    // A real invalid write: std's SIGSEGV handler (for stack
                    // overflows) restores the default and the write faults again.
                    let null = std::hint::black_box(std::ptr::null_mut::<u8>());
                    // SAFETY: deliberately not sound; the point is to crash.
                    unsafe { null.write_volatile(1) };
                }
                std::process::exit(code)
            });
        }
        "onclose-file" => {
            worker.on_close(move |_| {
                std::thread::sleep(Duration::from_millis(200));
                std::fs::write(&arg, b"closed").expect("write the onclose file");
                Ok(())
            });
        }
        "list-fds" => {
            let report = fd_report(&inherited);
            worker.on_message(move |ctx, _, _| ctx.post_message(report.as_bytes(), &[]));
        }
        "panic" => {
            worker.on_message(|_, _, _| panic!("boom"));
        }
        "close-self" => {
            worker.on_message(|ctx, message, _| {
                ctx.post_message(&message.data, &[])?;
                ctx.close();
                Ok(())
            });
            worker.on_close(|ctx| ctx.post_message(b"onclose ran", &[]));
        }
        "env" => {
            worker.on_message(move |ctx, message, _| {
                let reply = format!("{arg}:{}", String::from_utf8_lossy(&message.data));
                ctx.post_message(reply.as_bytes(), &[])
            });
        }
        "port-ping" | "port-echo" => {
            let pinging = mode == "port-ping";
            worker.on_message(move |ctx, message, mut fds| {
                let port = match fds.pop().map(arbor_protocol::MessagePort::from_fd) {
                    Some(Ok(port)) => port,
                    Some(Err(e)) => return ctx.post_message(format!("error: {e}").as_bytes(), &[]),
                    None => return ctx.post_message(b"error: no port", &[]),
                };
                let mut port = port.into_channel().map_err(arbor_protocol::Error::from)?;
                let mut count = 0u64;
                if pinging {
                    let n: u64 = String::from_utf8_lossy(&message.data).parse().unwrap_or(0);
                    // A window of 64 in flight (they wait in the socket
                    // until the other end is taken), then one more per answer.
                    const WINDOW: u64 = 64;
                    for i in 0..n.min(WINDOW) {
                        port.feed_bytes(i.to_string().as_bytes(), &[])?;
                    }
                    port.flush()?;
                    for i in 0..n {
                        if i + WINDOW < n {
                            port.send_bytes((i + WINDOW).to_string().as_bytes(), &[])?;
                        }
                        match port.recv()? {
                            (arbor_protocol::Frame::Message(m), _)
                                if m.data == i.to_string().as_bytes() =>
                            {
                                count += 1
                            }
                            other => {
                                return ctx
                                    .post_message(format!("error: {other:?}").as_bytes(), &[])
                            }
                        }
                    }
                    ctx.post_message(format!("done {count}").as_bytes(), &[])
                } else {
                    loop {
                        match port.recv() {
                            Ok((arbor_protocol::Frame::Message(m), _)) => {
                                port.send_bytes(&m.data, &[])?;
                                count += 1;
                            }
                            Ok(_) => {}
                            Err(arbor_protocol::Error::Closed) => break,
                            Err(e) => {
                                eprintln!("port-echo: {e}");
                                break;
                            }
                        }
                    }
                    ctx.post_message(format!("echoed {count}").as_bytes(), &[])
                }
            });
        }
        "transfer-sum" => {
            worker.on_message(|ctx, _, mut fds| {
                let reply = match fds.pop().map(arbor_protocol::Transfer::from_fd) {
                    Some(Ok(transfer)) => match transfer.map() {
                        Ok(view) => {
                            let sum: u64 = view.iter().map(|b| u64::from(*b)).sum();
                            format!("sum {sum} len {}", view.len())
                        }
                        Err(e) => format!("error: {e}"),
                    },
                    Some(Err(e)) => format!("error: {e}"),
                    None => "error: no transfer".into(),
                };
                ctx.post_message(reply.as_bytes(), &[])
            });
        }
        "orphans" => {
            worker.on_message(|ctx, _, _| {
                let exited = fork_child(Leftover::Exit);
                let escaped = fork_child(Leftover::Escape);
                let grouped = fork_child(Leftover::Stay);
                ctx.reply(format!("{exited} {escaped} {grouped}").as_bytes(), &[])?;
                ctx.close();
                Ok(())
            });
        }
        "unsealed" => {
            worker.on_message(|ctx, message, _| {
                if message.data == b"unsealed" {
                    let memfd = nix::sys::memfd::memfd_create(
                        c"hostile",
                        nix::sys::memfd::MFdFlags::MFD_CLOEXEC
                            | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
                    )
                    .map_err(|e| arbor_protocol::Error::from(std::io::Error::from(e)))?;
                    ctx.post_message(b"take this", &[memfd.as_fd()])
                } else {
                    ctx.post_message(&message.data, &[])
                }
            });
        }
        "ledger" => {
            let mut ledger = Ledger::default();
            worker.on_message(move |ctx, message, fds| {
                if message.data == b"tally" {
                    return ctx.reply(ledger.tally().as_bytes(), &[]);
                }
                let entry = ledger.take(&message.data);
                for fd in fds {
                    std::fs::File::from(fd)
                        .write_all(entry.as_bytes())
                        .expect("write through a passed fd");
                }
                Ok(())
            });
        }
        "flood" => {
            let count: u64 = arg.parse().unwrap_or(0);
            let mut out = std::io::stdout().lock();
            for n in 0..count {
                writeln!(out, "flood line {n}")?;
            }
            out.flush()?;
            drop(out);
            for n in 0..count {
                worker.post_message(format!("flood message {n}").as_bytes(), &[])?;
            }
            worker.on_message(|ctx, message, _| ctx.reply(&message.data, &[]));
        }
        other => return Err(format!("unknown mode {other:?}").into()),
    }
    worker.run()?;
    Ok(())
}

/// What this process inherited: its open fds, which of them are listening
/// sockets, and the spawn contract's variables.
fn fd_report(inherited: &[u32]) -> String {
    let listening: Vec<String> = inherited
        .iter()
        .filter(|&&fd| is_listening(fd as i32))
        .map(u32::to_string)
        .collect();
    let text: Vec<String> = inherited.iter().map(u32::to_string).collect();
    let var = |name| std::env::var(name).unwrap_or_default();
    format!(
        "fds={};listening={};ARBOR_CHANNEL_FD={};ARBOR_TREE_FD={};LISTEN_FDS={};LISTEN_FDNAMES={};LISTEN_PID={};pid={}",
        text.join(" "),
        listening.join(" "),
        var("ARBOR_CHANNEL_FD"),
        var("ARBOR_TREE_FD"),
        var("LISTEN_FDS"),
        var("LISTEN_FDNAMES"),
        var("LISTEN_PID"),
        std::process::id()
    )
}

/// What the `ledger` mode saw: per sender, the messages taken in order
/// and the next sequence number due; and every violation.
#[derive(Default)]
struct Ledger {
    senders: std::collections::BTreeMap<String, (u64, u64)>,
    violations: Vec<String>,
}

impl Ledger {
    /// Takes one "SENDER SEQ" message; returns its line for the fds.
    fn take(&mut self, data: &[u8]) -> String {
        let text = String::from_utf8_lossy(data).into_owned();
        let parsed = text
            .split_once(' ')
            .and_then(|(sender, seq)| Some((sender.to_string(), seq.parse::<u64>().ok()?)));
        match parsed {
            Some((sender, seq)) => {
                let (count, due) = self.senders.entry(sender.clone()).or_insert((0, 1));
                if seq == *due {
                    *count += 1;
                    *due += 1;
                } else {
                    self.violations
                        .push(format!("{sender}: got {seq}, {due} was due"));
                }
            }
            None => self
                .violations
                .push(format!("not a ledger entry: {text:?}")),
        }
        format!("{text}\n")
    }

    fn tally(&self) -> String {
        let mut out: Vec<String> = self
            .senders
            .iter()
            .map(|(sender, (count, _))| format!("{sender}={count}"))
            .collect();
        out.push(format!("bad={}", self.violations.len()));
        out.extend(self.violations.iter().take(5).cloned());
        out.join(" ")
    }
}

/// Whether `fd` is a socket in the listening state (SO_ACCEPTCONN).
fn is_listening(fd: i32) -> bool {
    // SAFETY: `fd` was just listed as open in this process and nothing
    // closes it while the borrow lives (this function's scope).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::AcceptConn).unwrap_or(false)
}

/// Open fds of this process, without the one read_dir itself uses.
fn list_fds() -> Vec<u32> {
    let dir = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd");
    let mut fds: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds.retain(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok());
    fds
}

fn mode_is_segv() -> bool {
    std::env::args().nth(1).as_deref() == Some("segv")
}

/// What a process forked by the `orphans` mode does.
#[derive(Clone, Copy)]
enum Leftover {
    Exit,
    Escape,
    Stay,
}

/// Forks a child that does `what` (only async-signal-safe calls) and never
/// returns; returns its pid once the child has done it (left the group).
fn fork_child(what: Leftover) -> i32 {
    let mut ends = [0; 2];
    // SAFETY: pipe writes two fds into `ends`.
    if unsafe { libc::pipe(ends.as_mut_ptr()) } != 0 {
        return -1;
    }
    let [read_end, write_end] = ends;
    // SAFETY: the child makes only async-signal-safe calls (_exit, setsid,
    // write, close, pause) and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        match what {
            // SAFETY: _exit ends the child at once.
            Leftover::Exit => unsafe { libc::_exit(0) },
            Leftover::Escape => {
                // SAFETY: setsid takes no arguments.
                unsafe { libc::setsid() };
            }
            Leftover::Stay => {}
        }
        // SAFETY: one byte from a live buffer to our end of the pipe: "done".
        unsafe { libc::write(write_end, [1u8].as_ptr().cast(), 1) };
        loop {
            // SAFETY: pause waits for a signal.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: closing our copy of the write end, an fd we own.
    unsafe { libc::close(write_end) };
    if !matches!(what, Leftover::Exit) {
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into `byte`; returns when the child
        // wrote it (or died and the pipe closed).
        unsafe { libc::read(read_end, (&mut byte as *mut u8).cast(), 1) };
    }
    // SAFETY: closing the read end, an fd we own.
    unsafe { libc::close(read_end) };
    pid
}

//! A worker with one behaviour per mode, for the integration tests.
//!
//! `test-worker MODE [ARG]`:
//! - `echo`: replies to each message with the same bytes and fds.
//! - `exit CODE`: sends Ready, then exits with CODE.
//! - `segv`: sends Ready, then dies of SIGSEGV.
//! - `stubborn`: ignores SIGTERM and the Close frame; only SIGKILL ends it.
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
        "plain" => loop {
            std::thread::sleep(Duration::from_secs(60));
        },
        "garbage" | "lying" => {
            // SAFETY: the supervisor left our channel at fd 3.
            let channel = unsafe { OwnedFd::from_raw_fd(3) };
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
        "stubborn" => {
            // SAFETY: ignoring SIGTERM in a single-threaded program.
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            let mut worker = Worker::connect()?;
            worker.on_close(|_| loop {
                std::thread::sleep(Duration::from_secs(60));
            });
            worker.run()?;
        }
        _ => {}
    }
    let mut worker = Worker::connect()?;
    match mode {
        "echo" => {
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
            worker.on_message(move |ctx, _, _| {
                let text: Vec<String> = inherited.iter().map(u32::to_string).collect();
                let var = |name| std::env::var(name).unwrap_or_default();
                let report = format!(
                    "fds={};LISTEN_FDS={};LISTEN_FDNAMES={};LISTEN_PID={};pid={}",
                    text.join(" "),
                    var("LISTEN_FDS"),
                    var("LISTEN_FDNAMES"),
                    var("LISTEN_PID"),
                    std::process::id()
                );
                ctx.post_message(report.as_bytes(), &[])
            });
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
        other => return Err(format!("unknown mode {other:?}").into()),
    }
    worker.run()?;
    Ok(())
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

//! The other process of every benchmark: echoes or sinks what the benchmark
//! sends, over arbor's channel or the raw baseline. Its channel is its stdin.

use std::io;

use arbor_bench::{channel_from_stdin, raw_recv_blob, raw_recv_fds_until_ack, RawChannel};
use arbor_protocol::blocking::Channel;
use arbor_protocol::{Error, Frame, FrameRef};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode == "worker-echo" {
        // An arbor worker (channel at `ARBOR_CHANNEL_FD`), the same as the echo example.
        let mut worker = arbor_worker::blocking::Worker::connect()?;
        worker.on_message(|ctx, message, _| ctx.reply(&message.data, &[]));
        return Ok(worker.run()?);
    }
    if mode == "tree-parent" {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        return Ok(runtime.block_on(tree_parent())?);
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
        // Replies to every message with the same bytes (received borrowed,
        // as the raw echo reads into one reused buffer).
        "arbor-echo" => {
            let (mut sender, mut receiver) = Channel::new(socket)?.into_split();
            loop {
                match receiver.recv_ref() {
                    Ok((FrameRef::Message(data), _)) => sender.send_bytes(data, &[])?,
                    Ok(_) => {}
                    Err(Error::Closed) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        // Takes messages (dropping their fds; each one's bytes read where
        // they were received) and answers each Ping with a Pong.
        "arbor-sink" => {
            let mut channel = Channel::new(socket)?;
            loop {
                match channel.recv_ref() {
                    Ok((FrameRef::Other(Frame::Ping(n)), _)) => {
                        channel.send(&Frame::Pong(n), &[])?
                    }
                    Ok((FrameRef::Message(data), _)) => {
                        std::hint::black_box(data);
                    }
                    Ok(_) => {}
                    Err(Error::Closed) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        // `arbor-sink` with the owned receive: a Frame and a Vec per message.
        "arbor-sink-owned" => {
            let mut channel = Channel::new(socket)?;
            loop {
                match channel.recv() {
                    Ok((Frame::Ping(n), _)) => channel.send(&Frame::Pong(n), &[])?,
                    Ok(frame) => {
                        std::hint::black_box(frame);
                    }
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
        // The raw twin of `sum-reader`, the transfer benchmark's `raw_copy`
        // receiver: reads each 8-byte-length-prefixed message into one
        // reused buffer, reads every byte, answers with their sum (8 bytes).
        "raw-sum-reader" => {
            use std::io::Write;
            let mut buf = Vec::new();
            while raw_recv_blob(&socket, &mut buf)? {
                let sum = arbor_bench::byte_sum(&buf);
                (&socket).write_all(&sum.to_le_bytes())?;
            }
            Ok(())
        }
        // The floor of a hop through a third process: relays each raw
        // message to its own `raw-echo` child and the echo back, with
        // blocking reads and writes and nothing else (no runtime, no
        // decoding). The baseline for a request through arbord.
        "raw-relay" => {
            let exe = std::env::current_exe()?;
            let exe = exe.to_str().ok_or("the benchmark's path is not UTF-8")?;
            let (mut echo, echo_socket) = arbor_bench::spawn_peer(exe, "raw-echo")?;
            let mut client = RawChannel::new(socket)?;
            let mut downstream = RawChannel::new(echo_socket)?;
            let mut buf = Vec::new();
            let relayed = loop {
                match client.recv(&mut buf) {
                    Ok(true) => {
                        downstream.send(&buf)?;
                        downstream.recv(&mut buf)?;
                        client.send(&buf)?;
                    }
                    Ok(false) => client.ack()?,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            drop(downstream);
            echo.wait()?;
            Ok(relayed?)
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

/// A worker with sub-workers, for the tree benchmark. To a request:
/// - `spawn`: starts a `worker-echo` sub-worker, waits for its Ready,
///   terminates it and answers (the whole cycle, as the parent sees it);
/// - `echo N SIZE`: N round trips of SIZE bytes with a kept `worker-echo`
///   sub-worker over their direct channel; answers the nanoseconds they took.
async fn tree_parent() -> arbor_worker::Result<()> {
    use arbor_worker::nonblocking::AsyncWorker;
    use arbor_worker::{SubWorker, SubWorkerEvent, WorkerSpec};
    use std::sync::Arc;
    use tokio::sync::Mutex;

    async fn started(spawner: &arbor_worker::Spawner) -> arbor_worker::Result<SubWorker> {
        let exe = std::env::current_exe().map_err(arbor_worker::Error::Spec)?;
        let mut sub = spawner
            .spawn(WorkerSpec::program(exe).arg("worker-echo"))
            .await?;
        match sub.next_event().await {
            Some(SubWorkerEvent::Ready) => Ok(sub),
            other => Err(arbor_worker::Error::Spec(io::Error::other(format!(
                "expected Ready, got {other:?}"
            )))),
        }
    }

    async fn round_trips(sub: &mut SubWorker, n: u64, size: usize) -> arbor_worker::Result<String> {
        let data = vec![7u8; size];
        let start = std::time::Instant::now();
        for _ in 0..n {
            sub.post_message(&data, &[]).await?;
            match sub.next_event().await {
                Some(SubWorkerEvent::Message { .. }) => {}
                other => return Ok(format!("error: expected the echo, got {other:?}")),
            }
        }
        Ok(start.elapsed().as_nanos().to_string())
    }

    let mut worker = AsyncWorker::connect()?;
    let (spawner, poster) = (worker.spawner(), worker.poster());
    let kept: Arc<Mutex<Option<SubWorker>>> = Arc::default();
    worker.on_message(move |incoming| {
        let (spawner, poster, kept) = (spawner.clone(), poster.clone(), Arc::clone(&kept));
        async move {
            let Some(id) = incoming.request_id else {
                return Ok(());
            };
            // Answered from a task of its own: the SpawnResults come
            // over this worker's channel, which `run` must keep reading.
            tokio::spawn(async move {
                let text = String::from_utf8_lossy(&incoming.message.data).into_owned();
                let words: Vec<&str> = text.split_whitespace().collect();
                let answer = match words[..] {
                    ["spawn"] => match started(&spawner).await {
                        Ok(sub) => sub.terminate().await.map(|_| "ok".to_string()),
                        Err(e) => Err(e),
                    },
                    ["echo", n, size] => {
                        let mut kept = kept.lock().await;
                        if kept.is_none() {
                            *kept = started(&spawner).await.ok();
                        }
                        match kept.as_mut() {
                            Some(sub) => {
                                round_trips(sub, n.parse().unwrap_or(1), size.parse().unwrap_or(64))
                                    .await
                            }
                            None => Ok("error: no sub-worker".into()),
                        }
                    }
                    _ => Ok(format!("error: {text:?}")),
                };
                let answer = answer.unwrap_or_else(|e| format!("error: {e}"));
                let _ = poster.reply(id, answer.as_bytes()).await;
            });
            Ok(())
        }
    });
    worker.run().await
}

//! Workers that start sub-workers, for the worker-tree tests.
//!
//! `test-tree MODE ARGS`:
//! - `tree DEPTH WIDTH DIR`: starts WIDTH sub-workers running `tree DEPTH-1
//!   WIDTH DIR` (none at depth 0), so a whole tree grows from one worker.
//!   Each node's onclose writes `DIR/<pid>`: its parent's pid and the
//!   CLOCK_MONOTONIC time in nanoseconds, so a test can check that children
//!   closed before their parents.
//! - `flood N`: a hostile worker that writes N Spawn frames (for `sleep
//!   600`) in a burst from one thread while another reads the answers,
//!   then posts and prints "started S refused R" (R by reason) and waits
//!   for Close.
//! - `control DIR`: starts two `tree 0 0 DIR` sub-workers, waits for both
//!   to be Ready, closes the first (SubWorker::close) and terminates the
//!   second, then prints and posts "closed CODE/SIGNAL terminated
//!   CODE/SIGNAL" (the exits as ChildExit reported them).
//! - `bad-spawns`: a hostile worker's malformed Spawn frames (listen names
//!   without fds, a NUL in the program, a program that does not exist, a
//!   ChildControl for a worker that is not its child), then one good
//!   Spawn, which it closes with a grace of u64::MAX ms, twice; prints and
//!   posts each answer and the exit, one per line.
//! - `drop DIR`: starts a `tree 0 0 DIR` sub-worker, waits for its Ready,
//!   drops its handle (closing its channel) and prints "dropped PID".
//! - `counter`: the standard's shared-state example, a shared worker: every
//!   client that connects gets a port of its own, and all of them see one
//!   counter. On a port, `inc` adds one and answers `count N`, `get`
//!   answers `count N`, `clients` answers `clients N`. Each connect and
//!   each closed port is printed ("port 3 closed, 2 clients left").
//! - `entry-sub`: starts the sub-worker `leaf`, a named entry point of this
//!   same binary (it answers every message with "leaf PID"), posts it "hi"
//!   and posts its answer to its own parent.
//! - `sub-fds WORKER`: starts `WORKER list-fds` (the test worker) as a
//!   sub-worker handed one listening socket, asks it for its report of
//!   what it inherited and posts that report to its own parent.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use arbor_protocol::blocking::Channel;
use arbor_protocol::{Frame, ListenFds, Output, Ready, Spawn, SpawnOutcome, WorkerSpec};
use arbor_worker::nonblocking::AsyncWorker;
use arbor_worker::{SubWorker, SubWorkerEvent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if arbor_worker::entry_point().as_deref() == Some("leaf") {
        let mut worker = arbor_worker::blocking::Worker::connect()?;
        worker.on_message(|ctx, _, _| {
            ctx.post_message(format!("leaf {}", std::process::id()).as_bytes(), &[])
        });
        return Ok(worker.run()?);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "tree" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(tree(arg(1).parse()?, arg(2).parse()?, arg(3)))?;
        }
        "flood" => flood(arg(1).parse()?)?,
        "bad-spawns" => bad_spawns()?,
        "drop" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(drop_one(arg(1)))?;
        }
        "control" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(control(arg(1)))?;
        }
        "counter" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(counter())?;
        }
        "entry-sub" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(entry_sub())?;
        }
        "sub-fds" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(sub_fds(arg(1)))?;
        }
        other => return Err(format!("unknown mode {other:?}").into()),
    }
    Ok(())
}

async fn entry_sub() -> arbor_worker::Result<()> {
    relay(
        WorkerSpec::entry("leaf").name("leaf"),
        ListenFds::new(),
        b"hi",
    )
    .await
}

async fn sub_fds(test_worker: String) -> arbor_worker::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(arbor_worker::Error::Spec)?;
    let spec = WorkerSpec::program(&test_worker)
        .arg("list-fds")
        .name("sub-fds");
    relay(
        spec,
        ListenFds::new().with("web", listener.into()),
        b"report",
    )
    .await
}

/// Starts `spec` as a sub-worker, posts it `ask`, posts its first answer
/// (or what became of it) to this worker's own parent, closes it, and
/// serves until closed.
async fn relay(
    spec: WorkerSpec,
    listen: ListenFds,
    ask: &'static [u8],
) -> arbor_worker::Result<()> {
    let worker = AsyncWorker::connect()?;
    let (spawner, poster) = (worker.spawner(), worker.poster());
    let test = async move {
        let mut sub = spawner.spawn_with_fds(spec, listen).await?;
        sub.post_message(ask, &[]).await?;
        let answer = loop {
            match sub.next_event().await {
                Some(SubWorkerEvent::Message { data, .. }) => break data,
                Some(SubWorkerEvent::Exit(exit)) => break format!("exited {exit:?}").into_bytes(),
                None => break b"no answer".to_vec(),
                Some(_) => {}
            }
        };
        poster.post_message(&answer, &[]).await?;
        sub.close(Duration::from_secs(5)).await.map(drop)
    };
    let testing = tokio::spawn(async move {
        if let Err(e) = test.await {
            eprintln!("relay: {e}");
        }
    });
    let result = worker.run().await;
    testing.abort();
    result
}

async fn tree(depth: u32, width: u32, dir: String) -> arbor_worker::Result<()> {
    let mut worker = AsyncWorker::connect()?;
    let spawner = worker.spawner();
    let exe = std::env::current_exe().map_err(arbor_worker::Error::Spec)?;
    let grow = {
        let dir = dir.clone();
        async move {
            let mut children: Vec<SubWorker> = Vec::new();
            if depth > 0 {
                for i in 0..width {
                    let spec = WorkerSpec::program(&exe)
                        .args(["tree", &(depth - 1).to_string(), &width.to_string(), &dir])
                        .name(format!("node-{}-{i}", depth - 1));
                    children.push(spawner.spawn(spec).await?);
                }
            }
            // Read every child's events to the end, as a parent should.
            for mut child in children {
                tokio::spawn(async move { while child.next_event().await.is_some() {} });
            }
            Ok::<(), arbor_worker::Error>(())
        }
    };
    let growing = tokio::spawn(async move {
        if let Err(e) = grow.await {
            // Into arbord's log of this worker, for the tests to read.
            eprintln!("grow: {e}");
        }
    });
    worker.on_close(move || async move {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_err(|e| arbor_worker::Error::Spec(e.into()))?;
        let nanos = now.tv_sec() as u128 * 1_000_000_000 + now.tv_nsec() as u128;
        let line = format!("{} {nanos}", std::os::unix::process::parent_id());
        std::fs::write(format!("{dir}/{}", std::process::id()), line)
            .map_err(arbor_worker::Error::Spec)?;
        Ok(())
    });
    let result = worker.run().await;
    growing.abort();
    result
}

fn flood(count: u64) -> Result<(), Box<dyn std::error::Error>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let fd: i32 = std::env::var("ARBOR_CHANNEL_FD")?.parse()?;
    // SAFETY: the supervisor left our channel at ARBOR_CHANNEL_FD, and
    // nothing else in this process takes it.
    let socket = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut sender = Channel::new(socket.try_clone()?)?;
    let mut receiver = Channel::new(socket)?;
    let id: u64 = std::env::var("ARBOR_WORKER_ID")?.parse()?;
    sender.send(
        &Frame::Ready(Ready::new(id, "flood", std::process::id())),
        &[],
    )?;
    let writer = std::thread::spawn(move || -> arbor_protocol::Result<Channel> {
        for request in 0..count {
            let spec = WorkerSpec::program("/bin/sleep")
                .arg("600")
                .name(format!("flood-{request}"))
                .speaks_protocol(false)
                .stdout(Output::Null);
            let (spec, _) = spec
                .to_wire(ListenFds::new())
                .map_err(arbor_protocol::Error::from)?;
            sender.feed(&Frame::Spawn(Box::new(Spawn { id: request, spec })), &[])?;
        }
        sender.flush()?;
        Ok(sender)
    });
    let (mut started, mut refused) = (0u64, std::collections::BTreeMap::new());
    let mut channels = Vec::new();
    while started + refused.values().sum::<u64>() < count {
        if let (Frame::SpawnResult(result), fds) = receiver.recv()? {
            match result.outcome {
                SpawnOutcome::Started { .. } => {
                    started += 1;
                    channels.extend(fds);
                }
                SpawnOutcome::Refused(refusal) => {
                    let reason = format!("{refusal:?}");
                    let kind = reason
                        .split([' ', '{', '('])
                        .next()
                        .unwrap_or("")
                        .to_string();
                    *refused.entry(kind).or_insert(0u64) += 1;
                }
            }
        }
    }
    let mut sender = writer.join().map_err(|_| "writer panicked")??;
    let refused: Vec<String> = refused.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    let report = format!("started {started} refused {}", refused.join(","));
    println!("{report}");
    sender.send_bytes(report.as_bytes(), &[])?;
    loop {
        match receiver.recv() {
            Ok((Frame::Close, _)) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

/// One counter and the number of clients, shared by every port.
#[derive(Debug, Default)]
struct Counter {
    count: u64,
    clients: u64,
}

async fn counter() -> arbor_worker::Result<()> {
    let mut worker = AsyncWorker::connect()?;
    let state = std::sync::Arc::new(std::sync::Mutex::new(Counter::default()));
    worker.on_connect(move |connected| {
        let state = std::sync::Arc::clone(&state);
        async move {
            let arbor_worker::nonblocking::ConnectedPort { id, origin, port } = connected;
            let clients = {
                let mut state = lock(&state);
                state.clients += 1;
                state.clients
            };
            println!("port {id} connected ({origin}), {clients} clients");
            let (mut sender, mut receiver) = port.into_split();
            while let Ok((Frame::Message(message), _)) = receiver.recv().await {
                let answer = {
                    let mut state = lock(&state);
                    match message.data.as_slice() {
                        b"inc" => {
                            state.count += 1;
                            format!("count {}", state.count)
                        }
                        b"get" => format!("count {}", state.count),
                        b"clients" => format!("clients {}", state.clients),
                        other => format!(
                            "error: unknown command {:?}",
                            String::from_utf8_lossy(other)
                        ),
                    }
                };
                if sender.send_bytes(answer.as_bytes(), &[]).await.is_err() {
                    break;
                }
            }
            let left = {
                let mut state = lock(&state);
                state.clients -= 1;
                state.clients
            };
            println!("port {id} closed, {left} clients left");
        }
    });
    worker.run().await
}

async fn control(dir: String) -> arbor_worker::Result<()> {
    let worker = AsyncWorker::connect()?;
    let (spawner, poster) = (worker.spawner(), worker.poster());
    let exe = std::env::current_exe().map_err(arbor_worker::Error::Spec)?;
    let test = async move {
        let mut subs = Vec::new();
        for name in ["to-close", "to-terminate"] {
            let spec = WorkerSpec::program(&exe)
                .args(["tree", "0", "0", &dir])
                .name(name);
            let mut sub = spawner.spawn(spec).await?;
            while !matches!(sub.next_event().await, Some(SubWorkerEvent::Ready) | None) {}
            subs.push(sub);
        }
        let describe = |exit: arbor_worker::ExitRecord| {
            format!("{:?}/{:?}", exit.code, exit.signal.map(|s| s.number()))
        };
        let (closed_record, terminated_record) = (
            subs[0].close(Duration::from_secs(5)).await?,
            subs[1].terminate().await?,
        );
        let (closed, terminated) = (describe(closed_record), describe(terminated_record));
        let report = format!("closed {closed} terminated {terminated}");
        println!("{report}");
        // The rest of each record, as the supervisor sent it.
        println!(
            "records: initiated by {:?}/{:?}, peak rss {}/{} KiB",
            closed_record.initiated_by,
            terminated_record.initiated_by,
            closed_record.usage.max_rss_kib,
            terminated_record.usage.max_rss_kib
        );
        poster.post_message(report.as_bytes(), &[]).await
    };
    let testing = tokio::spawn(async move {
        if let Err(e) = test.await {
            eprintln!("control: {e}");
        }
    });
    let result = worker.run().await;
    testing.abort();
    result
}

fn bad_spawns() -> Result<(), Box<dyn std::error::Error>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let fd: i32 = std::env::var("ARBOR_CHANNEL_FD")?.parse()?;
    // SAFETY: the supervisor left our channel at ARBOR_CHANNEL_FD, and
    // nothing else in this process takes it.
    let socket = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut channel = Channel::new(socket)?;
    let id: u64 = std::env::var("ARBOR_WORKER_ID")?.parse()?;
    channel.send(
        &Frame::Ready(Ready::new(id, "bad", std::process::id())),
        &[],
    )?;
    let plain = |program: &str| {
        WorkerSpec::program(program)
            .arg("600")
            .speaks_protocol(false)
            .to_wire(ListenFds::new())
            .map(|(spec, _)| spec)
    };
    let mut no_fds = plain("/bin/sleep")?;
    no_fds.listen_names = vec!["http".into()];
    let mut nul = plain("/bin/sleep")?;
    nul.program = b"/bin/sl\0eep".to_vec();
    let attempts = [
        no_fds,
        nul,
        plain("/nonexistent/program")?,
        plain("/bin/sleep")?,
    ];
    let mut answers = Vec::new();
    let mut started = None;
    for (request, spec) in attempts.into_iter().enumerate() {
        if request == 3 {
            // Not its child: ignored by the supervisor, which goes on.
            let control = arbor_protocol::ChildControl {
                worker_id: 999_999,
                action: arbor_protocol::ChildAction::Terminate,
            };
            channel.send(&Frame::ChildControl(control), &[])?;
        }
        let spawn = Spawn {
            id: request as u64,
            spec,
        };
        channel.send(&Frame::Spawn(Box::new(spawn)), &[])?;
        loop {
            if let (Frame::SpawnResult(result), _) = channel.recv()? {
                answers.push(match result.outcome {
                    SpawnOutcome::Started { worker_id, .. } => {
                        started = Some(worker_id);
                        format!("{}: started", result.id)
                    }
                    SpawnOutcome::Refused(refusal) => format!("{}: {refusal:?}", result.id),
                });
                break;
            }
        }
    }
    // A grace no clock can hold, asked twice: one close, bounded.
    if let Some(worker_id) = started {
        for _ in 0..2 {
            let control = arbor_protocol::ChildControl {
                worker_id,
                action: arbor_protocol::ChildAction::Close { grace_ms: u64::MAX },
            };
            channel.send(&Frame::ChildControl(control), &[])?;
        }
        loop {
            if let (Frame::ChildExit(exit), _) = channel.recv()? {
                answers.push(format!("4: closed {:?}/{:?}", exit.code, exit.signal));
                break;
            }
        }
    }
    for answer in &answers {
        println!("{answer}");
    }
    channel.send_bytes(answers.join("\n").as_bytes(), &[])?;
    loop {
        match channel.recv() {
            Ok((Frame::Close, _)) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

async fn drop_one(dir: String) -> arbor_worker::Result<()> {
    let worker = AsyncWorker::connect()?;
    let spawner = worker.spawner();
    let exe = std::env::current_exe().map_err(arbor_worker::Error::Spec)?;
    let test = async move {
        let spec = WorkerSpec::program(&exe)
            .args(["tree", "0", "0", &dir])
            .name("dropped");
        let mut sub = spawner.spawn(spec).await?;
        while !matches!(sub.next_event().await, Some(SubWorkerEvent::Ready) | None) {}
        let pid = sub.pid();
        drop(sub);
        println!("dropped {pid}");
        Ok::<(), arbor_worker::Error>(())
    };
    let testing = tokio::spawn(async move {
        if let Err(e) = test.await {
            eprintln!("drop: {e}");
        }
    });
    let result = worker.run().await;
    testing.abort();
    result
}

/// The counter, usable even if a handler panicked while holding it.
fn lock(state: &std::sync::Mutex<Counter>) -> std::sync::MutexGuard<'_, Counter> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

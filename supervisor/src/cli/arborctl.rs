//! arborctl: talks to arbord over its control socket.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::client::default_socket_path;
use crate::config::parse_duration;
use arbor_protocol::blocking::Channel;
use arbor_protocol::control::{
    ControlRequest, ControlResponse, DaemonEvent, Event, EventKind, Exit, PoolInfo, SpawnRequest,
    WorkerInfo, WorkerState,
};
use arbor_protocol::Frame;
use clap::{Parser, Subcommand};

/// Control arbord, the arbor worker supervisor.
///
/// Examples:
///   arborctl spawn --name echo --restart on-failure -- /usr/local/bin/echo-worker
///   arborctl ps --json
///   arborctl request 1 hello
///   arborctl close 1 --grace 2s
///   arborctl scale web 4
///   arborctl reload web
///   arborctl spawn --shared counter -- /usr/local/bin/counter
///   echo inc | arborctl attach counter
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Control socket (default: $ARBOR_SOCKET, /run/arbor/arbord.sock for root,
    /// else $XDG_RUNTIME_DIR/arbor/arbord.sock).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a worker; prints its id.
    Spawn {
        /// Name (default: the program's file name).
        #[arg(long)]
        name: Option<String>,
        /// never | on-failure | always.
        #[arg(long, default_value = "never")]
        restart: String,
        /// Close grace, e.g. 5s or 250ms [default: 5s].
        #[arg(long, value_parser = parse_duration)]
        close_grace: Option<Duration>,
        /// The program does not speak arbor's protocol (running once started).
        #[arg(long)]
        plain: bool,
        /// Register it as the shared worker NAME (`attach NAME` connects to
        /// it, and starts it again when it is not running).
        #[arg(long, value_name = "NAME", conflicts_with = "name")]
        shared: Option<String>,
        /// Program and arguments.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// List workers, then pools with their sockets and each replica's
    /// connections.
    Ps,
    /// Set a pool's replica count (waits for new replicas' Ready, or for
    /// removed ones to exit).
    Scale { pool: String, replicas: u32 },
    /// Rolling reload: replace every replica of POOL (or of every pool),
    /// each new one Ready before an old one is closed.
    Reload { pool: Option<String> },
    /// Post a message (DATA, or stdin with `-`), with files opened and
    /// passed as fds (`--fd PATH`, repeatable).
    Send {
        id: u64,
        data: String,
        /// A file (or FIFO) to open and pass along as an fd.
        #[arg(long = "fd", value_name = "PATH")]
        fds: Vec<PathBuf>,
    },
    /// Ask a worker and print its reply.
    Request {
        id: u64,
        data: String,
        /// How long to wait for the reply.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Close a worker gracefully (Close, then SIGTERM, then SIGKILL).
    Close {
        id: u64,
        /// Grace before each escalation step (the worker's own by default).
        #[arg(long, value_parser = parse_duration)]
        grace: Option<Duration>,
    },
    /// Kill a worker at once.
    Terminate { id: u64 },
    /// Send a signal to a worker (e.g. HUP or SIGUSR1).
    Signal { id: u64, signal: String },
    /// Print a worker's captured output.
    Logs {
        id: u64,
        /// Last this many lines.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: u32,
        /// Keep printing new lines as they come.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Print events (of one worker, or all) as they happen, one per line.
    Watch { id: Option<u64> },
    /// Connect to a shared worker: each stdin line goes to it as a message
    /// on this client's own port, each message it sends back is printed as
    /// a line (with --json, {"data": ...}), until EOF or the port closes.
    Attach { name: String },
    /// Daemon status.
    Status,
    /// Stop every worker and the daemon.
    Shutdown,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

/// `println!` that ends arborctl quietly when stdout is closed (as in
/// `arborctl watch | head -1`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

/// The whole program; `main` of the binary calls this.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let socket = args.socket.clone().unwrap_or_else(default_socket_path);
    match run(&args, &socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("arborctl: {message}");
            ExitCode::from(1)
        }
    }
}

fn payload(data: &str) -> Result<Vec<u8>, String> {
    if data == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading stdin: {e}"))?;
        return Ok(bytes);
    }
    Ok(data.as_bytes().to_vec())
}

fn run(args: &Args, socket: &std::path::Path) -> Result<(), String> {
    let Some(request) = request_for(args, socket)? else {
        return Ok(());
    };
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach arbord at {}: {e}", socket.display()))?;
    let mut channel = Channel::new(stream).map_err(|e| e.to_string())?;
    let files = files_to_send(&args.command)?;
    let fds: Vec<_> = files.iter().map(std::os::fd::AsFd::as_fd).collect();
    // A refused client may find the connection closed while it writes: the
    // daemon's answer (the refusal) is still there to read.
    let sent = channel.send_value(&request, &fds);
    let streaming = matches!(
        request,
        ControlRequest::Watch { .. }
            | ControlRequest::Events { .. }
            | ControlRequest::Logs { follow: true, .. }
    );
    answers(args, socket, &mut channel, sent, streaming)
}

/// The request `args` make, or `None` for a command done here
/// (completions) or on a connection of its own (attach).
fn request_for(args: &Args, socket: &std::path::Path) -> Result<Option<ControlRequest>, String> {
    let request = match &args.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                *shell,
                &mut Args::command(),
                "arborctl",
                &mut std::io::stdout(),
            );
            return Ok(None);
        }
        Command::Spawn {
            name,
            restart,
            close_grace,
            plain,
            shared,
            command,
        } => ControlRequest::Spawn(SpawnRequest {
            name: shared.clone().or_else(|| name.clone()),
            program: command[0].clone(),
            args: command[1..].to_vec(),
            env: Vec::new(),
            cwd: std::env::current_dir()
                .ok()
                .map(|d| d.to_string_lossy().into_owned()),
            restart: restart.clone(),
            close_grace_ms: close_grace
                .unwrap_or(crate::spec::DEFAULT_CLOSE_GRACE)
                .as_millis() as u64,
            speaks_protocol: !plain,
            shared: shared.is_some(),
        }),
        Command::Attach { name } => {
            let port = crate::client::connect(socket, name).map_err(|e| e.to_string())?;
            attach(port, args.json)?;
            return Ok(None);
        }
        Command::Ps => ControlRequest::List,
        Command::Scale { pool, replicas } => ControlRequest::Scale {
            pool: pool.clone(),
            replicas: *replicas,
        },
        Command::Reload { pool } => ControlRequest::Reload { pool: pool.clone() },
        Command::Send { id, data, .. } => ControlRequest::Post {
            id: *id,
            data: payload(data)?,
        },
        Command::Request { id, data, timeout } => ControlRequest::Request {
            id: *id,
            data: payload(data)?,
            timeout_ms: timeout.as_millis() as u64,
        },
        Command::Close { id, grace } => ControlRequest::Close {
            id: *id,
            grace_ms: grace.map(|g| g.as_millis() as u64),
        },
        Command::Terminate { id } => ControlRequest::Terminate { id: *id },
        Command::Signal { id, signal } => ControlRequest::Signal {
            id: *id,
            signal: signal.clone(),
        },
        Command::Logs { id, lines, follow } => ControlRequest::Logs {
            id: *id,
            lines: *lines,
            follow: *follow,
        },
        Command::Watch { id } => ControlRequest::Events { id: *id },
        Command::Status => ControlRequest::Status,
        Command::Shutdown => ControlRequest::Shutdown,
    };
    Ok(Some(request))
}

/// The files `send --fd` passes with the message, opened read-write where
/// they allow it.
fn files_to_send(command: &Command) -> Result<Vec<std::fs::File>, String> {
    let files = match command {
        Command::Send { fds, .. } => fds
            .iter()
            .map(|path| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .or_else(|_| std::fs::File::open(path))
                    .map_err(|e| format!("--fd {}: {e}", path.display()))
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    Ok(files)
}

/// Reads and prints arbord's answers: one, or a stream until arbord ends it.
fn answers(
    args: &Args,
    socket: &std::path::Path,
    channel: &mut Channel,
    sent: arbor_protocol::Result<()>,
    streaming: bool,
) -> Result<(), String> {
    let mut announced = false;
    loop {
        let received = channel.recv();
        if let (Err(e), Err(_)) = (&sent, &received) {
            return Err(format!("arbord at {}: {e}", socket.display()));
        }
        let response = match received {
            Ok((Frame::Message(message), _)) => message
                .decode::<ControlResponse>()
                .map_err(|e| e.to_string())?,
            Ok((other, _)) => {
                return Err(format!(
                    "unexpected {} frame from arbord",
                    other.kind().name()
                ))
            }
            Err(arbor_protocol::Error::Closed) if streaming && announced => return Ok(()),
            Err(e) => return Err(format!("arbord at {}: {e}", socket.display())),
        };
        if let (Command::Ps, ControlResponse::Workers(workers)) = (&args.command, &response) {
            // Then the pools, on the same connection.
            let pools = match channel
                .send_value(&ControlRequest::Pools, &[])
                .and_then(|_| channel.recv())
            {
                Ok((Frame::Message(message), _)) => match message.decode::<ControlResponse>() {
                    Ok(ControlResponse::Pools(pools)) => pools,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            print_ps(args.json, workers, &pools);
            return Ok(());
        }
        if !streaming {
            return print(args.json, response);
        }
        // A stream opens with an Ok (watch) or the lines so far (logs -f);
        // from then on nothing is missed, which stderr says.
        if response != ControlResponse::Ok {
            print(args.json, response)?;
        }
        if !std::mem::replace(&mut announced, true) {
            eprintln!("arborctl: following {}", socket.display());
        }
    }
}

/// `attach`: stdin lines to the port, the port's messages to stdout. At
/// stdin's end the port is shut down for writing, and what the worker still
/// sends is printed until it closes its end.
fn attach(port: arbor_protocol::MessagePort, json: bool) -> Result<(), String> {
    use std::io::BufRead;
    let socket = std::os::unix::net::UnixStream::from(port.into_fd());
    let writer_socket = socket.try_clone().map_err(|e| e.to_string())?;
    let mut receiver = Channel::new(socket).map_err(|e| e.to_string())?;
    let mut sender = Channel::new(writer_socket).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.send_bytes(line.as_bytes(), &[]).is_err() {
                return;
            }
        }
        let _ = sender.socket().shutdown(std::net::Shutdown::Write);
    });
    loop {
        match receiver.recv() {
            Ok((Frame::Message(message), _)) => {
                let text = String::from_utf8_lossy(&message.data);
                if json {
                    say!("{}", serde_json::json!({ "data": text }));
                } else {
                    say!("{}", text.trim_end_matches('\n'));
                }
            }
            Ok(_) => {}
            Err(arbor_protocol::Error::Closed) => return Ok(()),
            Err(e) => return Err(format!("the port broke: {e}")),
        }
    }
}

/// `ps`: the workers as a tree (sub-workers indented under the worker that
/// started them), then each pool with its sockets and replicas. With
/// `--json`, one array of workers, each with its `parent` (null for a
/// top-level worker); a pool's replicas carry `pool` and `connections`.
/// One pool below `ps`: its replicas, sockets and connections.
fn print_pool(pool: &PoolInfo) {
    let running = pool
        .replicas
        .iter()
        .filter(|r| r.state == WorkerState::Running.name())
        .count();
    say!("");
    say!(
        "pool {}: {running}/{} replicas running",
        pool.name,
        pool.replicas_wanted
    );
    for socket in &pool.sockets {
        let policy = if socket.policy.is_empty() {
            String::new()
        } else {
            format!(" {}", socket.policy)
        };
        let from = if socket.activated {
            ", from systemd"
        } else {
            ""
        };
        say!(
            "  socket {} {} ({}{policy}{from})",
            socket.name,
            socket.listen,
            socket.mode
        );
    }
    for r in &pool.replicas {
        say!(
            "  replica {:>4} pid {:>8}  {:<10} {} connections",
            r.id,
            r.pid,
            r.state,
            r.connections
        );
    }
}

fn print_ps(json: bool, workers: &[WorkerInfo], pools: &[PoolInfo]) {
    let replica = |id: u64| {
        pools.iter().find_map(|pool| {
            let r = pool.replicas.iter().find(|r| r.id == id)?;
            Some((pool.name.as_str(), r.connections))
        })
    };
    if json {
        let list: Vec<_> = workers
            .iter()
            .map(|w| {
                let (pool, connections) = replica(w.id).unzip();
                serde_json::json!({
                    "id": w.id, "name": w.name, "pid": w.pid, "state": w.state,
                    "uptime": w.uptime_secs, "restarts": w.restarts, "rss": w.rss_kib,
                    "last_exit": w.last_exit, "pool": pool, "connections": connections,
                    "parent": w.parent,
                })
            })
            .collect();
        say!("{}", serde_json::json!(list));
        return;
    }
    say!(
        "{:>4}  {:<20} {:>8}  {:<10} {:>8} {:>8} {:>9}",
        "ID",
        "NAME",
        "PID",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "RSS"
    );
    for (depth, w) in tree_order(workers) {
        let name = match depth {
            0 => w.name.clone(),
            depth => format!("{}└ {}", "  ".repeat(depth - 1), w.name),
        };
        say!(
            "{:>4}  {:<20} {:>8}  {:<10} {:>7}s {:>8} {:>6}KiB",
            w.id,
            name,
            w.pid,
            w.state,
            w.uptime_secs,
            w.restarts,
            w.rss_kib
        );
    }
    for pool in pools {
        print_pool(pool);
    }
}

/// The workers depth first, each with its depth: a top-level worker (or
/// one whose parent is no longer listed), then its sub-workers, by id.
fn tree_order(workers: &[WorkerInfo]) -> Vec<(usize, &WorkerInfo)> {
    let listed = |id: u64| workers.iter().any(|w| w.id == id);
    let mut stack: Vec<(usize, &WorkerInfo)> = workers
        .iter()
        .filter(|w| !w.parent.is_some_and(listed))
        .rev()
        .map(|w| (0, w))
        .collect();
    let mut ordered = Vec::with_capacity(workers.len());
    while let Some((depth, worker)) = stack.pop() {
        ordered.push((depth, worker));
        stack.extend(
            workers
                .iter()
                .filter(|w| w.parent == Some(worker.id))
                .rev()
                .map(|w| (depth + 1, w)),
        );
    }
    ordered
}

/// A typed event (`watch`): as the flat form prints, plus a sub-worker's
/// parent and an exit's signal number and core dump.
fn print_event(json: bool, event: Event) {
    let exit = match &event.kind {
        EventKind::Exit(exit) => Some(exit.clone().unwrap_or(Exit {
            code: None,
            signal: None,
            core_dumped: false,
        })),
        _ => None,
    };
    print_flat(json, DaemonEvent::from(&event), event.parent, exit.as_ref());
}

/// An event in the flat form (`logs -f`, and `watch` of an older arbord),
/// with what the typed form adds when there is one: the parent, and the
/// exit's signal number and core dump. An output line prints as itself.
fn print_flat(json: bool, flat: DaemonEvent, parent: Option<u64>, exit: Option<&Exit>) {
    if json {
        let mut object = serde_json::json!({
            "event": flat.event, "worker": flat.worker, "name": flat.name,
        });
        if let Some(parent) = parent {
            object["parent"] = serde_json::json!(parent);
        }
        if flat.event == "exit" {
            object["code"] = serde_json::json!(flat.code);
            object["signal"] = serde_json::json!(flat.signal);
        }
        if let Some(exit) = exit {
            object["signal_number"] = serde_json::json!(exit.signal.as_ref().map(|s| s.number));
            object["core_dumped"] = serde_json::json!(exit.core_dumped);
        }
        if let Some(text) = flat.text {
            object["text"] = serde_json::json!(text);
        }
        if let Some(missed) = flat.missed {
            object["missed"] = serde_json::json!(missed);
        }
        say!("{object}");
        return;
    }
    if flat.event == "output" {
        say!("{}", flat.text.unwrap_or_default());
        return;
    }
    let mut line = format!("{} {} {}", flat.worker, flat.name, flat.event);
    if let Some(parent) = parent {
        line += &format!(" parent={parent}");
    }
    if let Some(code) = flat.code {
        line += &format!(" code={code}");
    }
    if let Some(signal) = flat.signal {
        line += &format!(" signal={signal}");
    }
    if exit.is_some_and(|e| e.core_dumped) {
        line += " core-dumped";
    }
    if let Some(missed) = flat.missed {
        line += &format!(" missed={missed}");
    }
    if let Some(text) = flat.text {
        line += &format!(" {text:?}");
    }
    say!("{line}");
}

fn print(json: bool, response: ControlResponse) -> Result<(), String> {
    let to_json = |value: serde_json::Value| say!("{value}");
    match response {
        ControlResponse::Error { message } => return Err(message),
        ControlResponse::Failed { message, .. } => return Err(message),
        ControlResponse::Ok if json => to_json(serde_json::json!({"ok": true})),
        ControlResponse::Ok => {}
        ControlResponse::Spawned { id } if json => to_json(serde_json::json!({"id": id})),
        ControlResponse::Spawned { id } => say!("{id}"),
        ControlResponse::Workers(workers) => print_ps(json, &workers, &[]),
        ControlResponse::Attached { worker } => say!("attached to {worker}"),
        ControlResponse::Pools(pools) => print_ps(json, &[], &pools),
        ControlResponse::Done { message } if json => {
            to_json(serde_json::json!({"ok": true, "message": message}))
        }
        ControlResponse::Done { message } => say!("{message}"),
        ControlResponse::Reply(bytes) if json => {
            to_json(serde_json::json!({"reply": String::from_utf8_lossy(&bytes)}))
        }
        ControlResponse::Reply(bytes) => {
            use std::io::Write;
            let mut out = std::io::stdout();
            out.write_all(&bytes)
                .and_then(|_| out.write_all(b"\n"))
                .map_err(|e| e.to_string())?;
        }
        ControlResponse::Ended(exit) if json => to_json(serde_json::json!({
            "code": exit.code,
            "signal": exit.signal.as_ref().map(|s| &s.name),
            "signal_number": exit.signal.as_ref().map(|s| s.number),
            "core_dumped": exit.core_dumped,
        })),
        ControlResponse::Ended(exit) => {
            let core = if exit.core_dumped {
                " (core dumped)"
            } else {
                ""
            };
            match (exit.code, exit.signal) {
                (Some(code), _) => say!("exited with code {code}"),
                (None, Some(signal)) => say!("killed by {}{core}", signal.name),
                _ => say!("exited"),
            }
        }
        ControlResponse::Notice(event) => print_event(json, event),
        ControlResponse::Exited(exit) if json => {
            to_json(serde_json::json!({"code": exit.code, "signal": exit.signal}))
        }
        ControlResponse::Exited(exit) => match (exit.code, exit.signal) {
            (Some(code), _) => say!("exited with code {code}"),
            (None, Some(signal)) => say!("killed by {signal}"),
            _ => say!("exited"),
        },
        ControlResponse::Event(event) => print_flat(json, event, None, None),
        ControlResponse::Logs(lines) if json => to_json(serde_json::json!(lines)),
        ControlResponse::Logs(lines) => lines.iter().for_each(|l| say!("{l}")),
        ControlResponse::Status {
            pid,
            uptime_secs,
            workers,
            running,
        } if json => to_json(serde_json::json!({
            "pid": pid, "uptime": uptime_secs, "workers": workers, "running": running,
        })),
        ControlResponse::Status {
            pid,
            uptime_secs,
            workers,
            running,
        } => {
            say!("arbord pid {pid}, up {uptime_secs}s, {running} of {workers} workers running")
        }
    }
    Ok(())
}

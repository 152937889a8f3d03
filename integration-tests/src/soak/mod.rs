//! A seeded chaos soak against the real arbord. For a given time, random
//! operations run against one arbord that holds every kind of worker at
//! once: plain workers (restart always, on failure, never), a worker tree,
//! a shared worker with clients, a pool in each socket mode under HTTP
//! load, and a `ledger` worker that checks delivery. The operations:
//! spawns, requests, posts (some with fds), SIGKILL, SIGSTOP and SIGCONT of
//! workers, sub-workers and replicas, close, terminate, a request whose
//! worker dies under it, pool reloads and scales, SIGHUP with a changed
//! configuration, attaches and detaches, workers that flood output and
//! messages, and hostile control clients.
//!
//! The invariants, checked all along and at the end:
//! - `status` is answered within [`ANSWER_BOUND`];
//! - arbord leaves no zombie, and a killed tree's sub-workers end;
//! - arbord's fds and RSS stay within a margin of where they started (the
//!   fd margin grows with the workers running, which are bounded);
//! - every acknowledged message reaches its worker exactly once and in its
//!   sender's order, and an fd posted with one reaches it and is not kept
//!   ([`ledger`]);
//! - every exit is reported exactly once, with its exact (code, signal)
//!   where the soak decided it ([`exits`]);
//! - no request waits past its worker's exit;
//! - no HTTP request fails unless a replica's SIGKILL explains it, each
//!   listed in the report ([`load`]);
//! - after SIGTERM arbord exits 0 within a bound and no process it
//!   started is left.
//!
//! Every bound is on time awake: a freeze of the whole machine (a shared
//! virtual machine can stop every process for tens of seconds) is measured
//! by the soak itself and not counted against arbord ([`freezes`]); the
//! report says how long the machine was gone.
//!
//! A failure prints the seed, the last operations, the machine's freezes
//! so far, and arbord's threads as the failure found them; the seed
//! replays the same choices (which process each one meets depends on
//! timing).

mod control;
mod exits;
mod freezes;
mod hostile;
mod ledger;
mod load;
mod ops;
mod shared;

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use arbor_protocol::control::{ControlRequest, ControlResponse, WorkerInfo};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::arbord::{wait_until_within, Daemon, LIMIT};
use crate::{binary, children_of, fd_count_of, is_alive, process_state, test_worker, TempDir};
use control::{rss_kib, start_time, Chance, Control};
use exits::Exits;
use hostile::Hostile;
use ledger::Ledger;
use load::Load;
use shared::Shared;

/// How long `status` may take at any moment: the invariant.
pub const ANSWER_BOUND: Duration = Duration::from_secs(5);
/// How long any other answer may take: a spawn or a close waits for a
/// process, and on a loaded machine that can take seconds.
const OPERATION_BOUND: Duration = Duration::from_secs(20);
/// How long a request may still wait after its worker's SIGKILL: well
/// short of its own 30 s timeout.
const UNANSWERED_BOUND: Duration = Duration::from_secs(10);
/// arbord's idle timeout for control connections in the soak.
const IDLE: Duration = Duration::from_secs(2);
/// Most workers the soak itself keeps running at once.
const MAX_SPAWNED: usize = 16;
/// How far arbord's fds may rise above the start, besides 8 per worker
/// and one per hostile client.
const FD_MARGIN: usize = 64;
/// How far arbord's RSS may rise above the start.
const RSS_MARGIN_KIB: u64 = 64 * 1024;
/// How long a killed tree's sub-workers may take to end (their close
/// grace, then SIGTERM and SIGKILL).
const SUBTREE_END: Duration = Duration::from_secs(30);

/// What a soak did and saw.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub seconds: f64,
    pub operations: u64,
    pub worker_processes: usize,
    pub http_answered: u64,
    /// Failed HTTP requests, each with the operation that explains it.
    pub http_explained: Vec<String>,
    pub messages_delivered: u64,
    pub fds_delivered: u64,
    pub events: u64,
    pub exits: u64,
    pub shared_answers: u64,
    pub max_fds_over_start: usize,
    pub max_rss_over_start_kib: u64,
    /// The slowest answer to the soak's own requests, and its request.
    pub slowest_answer: (Duration, String),
    /// The slowest operation, and what it was.
    pub slowest_operation: (Duration, String),
    /// How long the end took: the load's stop, the ledger's last tally,
    /// arbord's shutdown and the watcher's last events.
    pub finish: Duration,
    /// The machine's freezes during the run (see `freezes`): how many, the
    /// longest, and their total; none of it counted against a bound.
    pub freezes: (usize, Duration, Duration),
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "chaos soak, seed {}: {} operations in {:.0} s ({:.1}/s), {} worker processes, invariants held",
            self.seed,
            self.operations,
            self.seconds,
            self.operations as f64 / self.seconds,
            self.worker_processes
        )?;
        writeln!(
            f,
            "  {} HTTP requests answered, {} failed (each explained by a replica's SIGKILL)",
            self.http_answered,
            self.http_explained.len()
        )?;
        for failure in &self.http_explained {
            writeln!(f, "    {failure}")?;
        }
        writeln!(
            f,
            "  {} messages delivered exactly once in order ({} with an fd), {} shared-worker answers",
            self.messages_delivered, self.fds_delivered, self.shared_answers
        )?;
        writeln!(
            f,
            "  {} events, {} exits each reported once; arbord at most {} fds and {} KiB RSS above its start",
            self.events, self.exits, self.max_fds_over_start, self.max_rss_over_start_kib
        )?;
        write!(
            f,
            "  slowest answer {:.1?} (to {}), slowest operation {:.1?} ({}), the end {:.1?}",
            self.slowest_answer.0,
            self.slowest_answer.1,
            self.slowest_operation.0,
            self.slowest_operation.1,
            self.finish
        )?;
        write!(
            f,
            "\n  the machine froze {} times (longest {:.1?}, {:.1?} in all), not counted against any bound",
            self.freezes.0, self.freezes.1, self.freezes.2
        )
    }
}

/// Runs the soak for `seconds` with `seed`; panics with the seed and the
/// last operations at the first broken invariant.
pub fn run(seconds: u64, seed: u64) -> Report {
    let started = Instant::now();
    freezes::watch();
    let mut soak = Soak::start(seed);
    let until = started + Duration::from_secs(seconds);
    while Instant::now() < until {
        let step = Instant::now();
        soak.step();
        let took = step.elapsed();
        if took > soak.slowest_step.0 {
            soak.slowest_step = (took, soak.log.back().cloned().unwrap_or_default());
        }
        soak.operations += 1;
        if soak.operations.is_multiple_of(20) {
            soak.check();
        }
    }
    soak.check();
    soak.finish(started)
}

/// The soak's state and its log of operations.
struct Soak {
    daemon: Daemon,
    /// Where the tree's nodes write their onclose files.
    tree_dir: TempDir,
    control: Control,
    chance: Chance,
    seed: u64,
    operations: u64,
    log: VecDeque<String>,
    /// Every worker process the soak has seen (pid, start time), to check
    /// none outlives arbord.
    pids: BTreeSet<(u32, u64)>,
    /// Workers stopped with SIGSTOP (id, pid), to continue later.
    stopped: Vec<(u64, u32)>,
    /// Workers whose end the soak does not decide: ever stopped (a close
    /// or its escalation ends them, a race), or told to end themselves and
    /// not seen to in time.
    undecided: BTreeSet<u64>,
    /// Workers the soak spawned with restart `never`, and their mode.
    never: std::collections::BTreeMap<u64, &'static str>,
    /// Processes that must be gone within `SUBTREE_END` of time awake after
    /// their kill (a killed tree's nodes): pid, start time, the kill.
    must_end: Vec<(u32, u64, Instant)>,
    /// Replicas the soak SIGKILLed (pid, start time).
    killed_replicas: BTreeSet<(u32, u64)>,
    config_turn: bool,
    /// arbord's log (its stderr), removed when the soak passes.
    log_path: std::path::PathBuf,
    fds_at_start: usize,
    rss_at_start: u64,
    max_fds_over: usize,
    max_rss_over: u64,
    /// The slowest answer on the soak's own connection, and its request.
    slowest: (Duration, String),
    /// The slowest operation, and what it was.
    slowest_step: (Duration, String),
    ledger: Ledger,
    exits: Exits,
    load: Load,
    shared: Shared,
    hostile: Hostile,
}

impl Soak {
    fn start(seed: u64) -> Self {
        // Replicas come and go under load: in reuseport mode the kernel
        // must hand a closing listener's queued connections on.
        crate::own_network_with_request_migration();
        let load = Load::new();
        let tree_dir = TempDir::new("soak-tree");
        // arbord's log goes to a file, kept when the soak fails.
        let log_path = std::env::temp_dir().join(format!("arbor-soak-{seed}.log"));
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let daemon = Daemon::start_with(&config(false, &load, &tree_dir), |command| {
            command.stderr(log);
        });
        let exits = Exits::watch(&daemon.socket, OPERATION_BOUND)
            .unwrap_or_else(|e| panic!("the soak's watcher: {e}"));
        let pid = daemon.pid();
        let mut soak = Self {
            control: Control::new(&daemon.socket, OPERATION_BOUND, IDLE / 2),
            daemon,
            tree_dir,
            chance: Chance::new(seed),
            seed,
            operations: 0,
            log: VecDeque::new(),
            pids: BTreeSet::new(),
            stopped: Vec::new(),
            undecided: BTreeSet::new(),
            never: Default::default(),
            must_end: Vec::new(),
            killed_replicas: BTreeSet::new(),
            config_turn: false,
            log_path,
            fds_at_start: 0,
            rss_at_start: 0,
            max_fds_over: 0,
            max_rss_over: 0,
            slowest: (Duration::ZERO, String::new()),
            slowest_step: (Duration::ZERO, String::new()),
            ledger: Ledger::new(),
            exits,
            load,
            shared: Shared::default(),
            hostile: Hostile::default(),
        };
        soak.await_boot();
        soak.fds_at_start = fd_count_of(pid);
        soak.rss_at_start = rss_kib(pid).unwrap_or(0);
        soak.load.start();
        soak
    }

    /// Waits until every pool's replicas and the tree's nodes run.
    fn await_boot(&mut self) {
        let pools = self.load.names();
        let deadline = Instant::now() + LIMIT;
        loop {
            let workers = self.running();
            let replicas = workers.iter().filter(|w| pools.contains(&w.name)).count();
            let nodes = workers.iter().filter(|w| w.parent.is_some()).count();
            let ledger = workers.iter().any(|w| w.name == "ledger");
            if replicas == 2 * pools.len() && nodes == TREE_WIDTH && ledger {
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "not booted within {LIMIT:?}: {replicas} replicas, {nodes} tree nodes, ledger {ledger}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn note(&mut self, op: String) {
        if self.log.len() == 60 {
            self.log.pop_front();
        }
        self.log.push_back(op);
    }

    fn fail(&self, what: &str) -> ! {
        // While arbord is as the failure found it: what each of its threads
        // is doing (a stall shows where it waits).
        let threads = self.log_path.with_extension("threads");
        let dumped = match dump_threads(self.daemon.pid(), &threads) {
            Ok(()) => format!("arbord's threads: {}", threads.display()),
            Err(e) => format!("arbord's threads not dumped: {e}"),
        };
        let listed = self.list_at_failure();
        let (freezes, longest, total) = freezes::summary();
        panic!(
            "soak invariant broken: {what}\nthe machine froze {freezes} times so far (longest {longest:.1?}, {total:.1?} in all)\nreplay with ARBOR_SOAK_SEED={}\nlast operations:\n  {}\narbord's log: {}\n{dumped}\n{listed}",
            self.seed,
            self.log.iter().cloned().collect::<Vec<_>>().join("\n  "),
            self.log_path.display()
        )
    }

    /// arbord's own view of its workers at a failure (`arborctl --json ps`
    /// on a fresh connection, at most 5 s), written beside its log: the
    /// state of the worker a stuck request was about, or that arbord no
    /// longer answers at all.
    fn list_at_failure(&self) -> String {
        let path = self.log_path.with_extension("ps.json");
        let socket = self.daemon.socket.clone();
        let listed = std::panic::catch_unwind(move || {
            crate::arbord::ctl_within(&socket, &["--json", "ps"], Duration::from_secs(5))
        });
        match listed {
            Ok(out) if out.status.success() => match std::fs::write(&path, &out.stdout) {
                Ok(()) => format!("arbord's workers: {}", path.display()),
                Err(e) => format!("arbord's workers not written: {e}"),
            },
            Ok(out) => format!(
                "arbord's workers not listed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(_) => "arbord's workers not listed: no answer within 5 s".to_string(),
        }
    }

    /// One control request on the soak's own connection, answered within
    /// [`OPERATION_BOUND`].
    fn ask(&mut self, request: &ControlRequest) -> ControlResponse {
        let started = Instant::now();
        let answer = match self.control.ask(request) {
            Ok(answer) => answer,
            Err(e) => self.fail(&e),
        };
        let took = started.elapsed();
        if took > Duration::from_secs(1) {
            self.note(format!("(answered in {took:?})"));
        }
        if took > self.slowest.0 {
            self.slowest = (took, format!("{request:?}").chars().take(60).collect());
        }
        answer
    }

    fn workers(&mut self) -> Vec<WorkerInfo> {
        match self.ask(&ControlRequest::List) {
            ControlResponse::Workers(workers) => {
                let seen = workers
                    .iter()
                    .filter(|w| w.pid != 0)
                    .filter_map(|w| Some((w.pid, start_time(w.pid)?)));
                self.pids.extend(seen);
                workers
            }
            other => self.fail(&format!("List answered {other:?}")),
        }
    }

    fn running(&mut self) -> Vec<WorkerInfo> {
        self.workers()
            .into_iter()
            .filter(|w| w.state == "running" && w.pid != 0)
            .collect()
    }

    /// A running worker that `fits`, at random.
    fn pick_where(&mut self, fits: impl Fn(&WorkerInfo) -> bool) -> Option<WorkerInfo> {
        let running: Vec<WorkerInfo> = self.running().into_iter().filter(|w| fits(w)).collect();
        (!running.is_empty()).then(|| running[self.chance.below(running.len())].clone())
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        // The worker may have exited meanwhile: that is fine.
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }

    /// Records how never-restarted worker `id` must end, if the soak alone
    /// decides it.
    fn expect(&mut self, id: u64, how: exits::Expected) {
        if self.never.contains_key(&id) && !self.undecided.contains(&id) {
            self.exits.expect(id, how);
        }
    }

    /// The invariants that hold at any moment.
    fn check(&mut self) {
        let pid = self.daemon.pid();
        let started = Instant::now();
        if !matches!(
            self.ask(&ControlRequest::Status),
            ControlResponse::Status { .. }
        ) {
            self.fail("Status was not answered with a status");
        }
        if freezes::awake_since(started) > ANSWER_BOUND {
            self.fail(&format!(
                "status took {:?} ({:?} of it awake)",
                started.elapsed(),
                freezes::awake_since(started)
            ));
        }
        if let Some(violation) = self.exits.violations().first() {
            self.fail(violation);
        }
        self.check_zombies(pid);
        self.check_ended();
        let live = self.running().len();
        if !is_alive(pid) {
            self.fail("arbord is gone");
        }
        let fds = fd_count_of(pid);
        let over = fds.saturating_sub(self.fds_at_start);
        self.max_fds_over = self.max_fds_over.max(over);
        if over > FD_MARGIN + 8 * live + self.hostile.open() {
            self.fail(&format!(
                "arbord holds {fds} fds (started with {}, {live} workers, {} hostile clients)",
                self.fds_at_start,
                self.hostile.open()
            ));
        }
        let rss = rss_kib(pid).unwrap_or_else(|| self.fail("arbord's RSS is unreadable"));
        let over = rss.saturating_sub(self.rss_at_start);
        self.max_rss_over = self.max_rss_over.max(over);
        if over > RSS_MARGIN_KIB {
            self.fail(&format!(
                "arbord's RSS is {rss} KiB (started at {})",
                self.rss_at_start
            ));
        }
    }

    /// A zombie may be seen between a worker's exit and its reap: only one
    /// that stays is a leak.
    fn check_zombies(&mut self, pid: u32) {
        let zombies: Vec<u32> = children_of(pid)
            .into_iter()
            .filter(|child| process_state(*child) == Some('Z'))
            .collect();
        for zombie in zombies {
            let seen = Instant::now();
            while process_state(zombie) == Some('Z') {
                if freezes::awake_since(seen) > ANSWER_BOUND {
                    self.fail(&format!(
                        "zombie {zombie} not reaped within {ANSWER_BOUND:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Processes that had to end by now have.
    fn check_ended(&mut self) {
        let due = |killed: &Instant| freezes::awake_since(*killed) > SUBTREE_END;
        let late: Vec<u32> = self
            .must_end
            .iter()
            .filter(|(pid, started, killed)| due(killed) && start_time(*pid) == Some(*started))
            .map(|(pid, _, _)| *pid)
            .collect();
        if !late.is_empty() {
            self.fail(&format!(
                "a killed tree's nodes {late:?} outlived it by {SUBTREE_END:?} awake"
            ));
        }
        self.must_end.retain(|(_, _, killed)| !due(killed));
    }

    /// The ledger's tally: every acknowledged message delivered once, in order.
    fn check_ledger(&mut self) {
        let workers = self.workers();
        let Some(id) = workers
            .iter()
            .find(|w| w.name == "ledger" && w.state == "running")
            .map(|w| w.id)
        else {
            let all: Vec<String> = workers
                .iter()
                .map(|w| format!("{} {} {}", w.id, w.name, w.state))
                .collect();
            self.fail(&format!("the ledger is not running; workers: {all:?}"));
        };
        if let Err(e) = self.ledger.verify(&mut self.control, id, OPERATION_BOUND) {
            self.fail(&e);
        }
    }

    /// Stops the load, checks the ledger, then SIGTERM: arbord exits 0
    /// within a bound, nothing it started is left, every exit was
    /// reported once.
    fn finish(mut self, started: Instant) -> Report {
        let finishing = Instant::now();
        let load = std::mem::replace(&mut self.load, Load::new());
        let verdict = load.stop(started).unwrap_or_else(|e| self.fail(&e));
        self.check_ledger();
        for (_, pid) in std::mem::take(&mut self.stopped) {
            self.signal(pid, Signal::SIGCONT);
        }
        self.workers();
        let pid = self.daemon.pid();
        self.signal(pid, Signal::SIGTERM);
        wait_until_within("arbord's exit after SIGTERM", LIMIT, || !is_alive(pid));
        match self.daemon.child.wait() {
            Ok(status) if status.success() => {}
            other => self.fail(&format!("arbord ended with {other:?} after SIGTERM")),
        }
        let left: Vec<u32> = self
            .pids
            .iter()
            .filter(|(pid, started)| is_alive(*pid) && start_time(*pid) == Some(*started))
            .map(|(pid, _)| *pid)
            .collect();
        if !left.is_empty() {
            self.fail(&format!("processes left after arbord's exit: {left:?}"));
        }
        let exits = std::mem::take(&mut self.exits);
        let (events, exits) = exits.verify_at_end().unwrap_or_else(|e| self.fail(&e));
        let _ = std::fs::remove_file(&self.log_path);
        Report {
            seed: self.seed,
            seconds: started.elapsed().as_secs_f64(),
            operations: self.operations,
            worker_processes: self.pids.len(),
            http_answered: verdict.ok,
            http_explained: verdict.explained,
            messages_delivered: self.ledger.confirmed,
            fds_delivered: self.ledger.pipes_read,
            events,
            exits,
            shared_answers: self.shared.answers,
            max_fds_over_start: self.max_fds_over,
            max_rss_over_start_kib: self.max_rss_over,
            slowest_answer: self.slowest.clone(),
            slowest_operation: self.slowest_step.clone(),
            finish: finishing.elapsed(),
            freezes: freezes::summary(),
        }
    }
}

/// The tree root's sub-workers.
const TREE_WIDTH: usize = 3;

/// arbord's configuration; `turn` changes the `turning` worker's mode (a
/// SIGHUP then replaces it).
fn config(turn: bool, load: &Load, tree_dir: &TempDir) -> String {
    let worker = test_worker().display().to_string();
    let tree = binary("test-tree").display().to_string();
    let declared = |name: &str, program: &str, args: &[&str], restart: &str| {
        format!(
            "[[worker]]\nname = {name:?}\nprogram = {program:?}\nargs = {args:?}\nrestart = {restart:?}\nclose_grace = \"200ms\"\n\n"
        )
    };
    let tree_args = [
        "tree",
        "1",
        &TREE_WIDTH.to_string(),
        &tree_dir.0.display().to_string(),
    ];
    [
        "[daemon]\ncontrol_idle_timeout = \"2s\"\n\n".to_string(),
        declared("steady", &worker, &["echo"], "always"),
        declared(
            "turning",
            &worker,
            &[if turn { "echo" } else { "chatty" }],
            "on-failure",
        ),
        declared("ledger", &worker, &["ledger"], "always"),
        declared("tree", &tree, &tree_args, "always"),
        Shared::config(&tree),
        load.config(&binary("http-hello").display().to_string()),
    ]
    .concat()
}

/// Writes to `path` each of process `pid`'s threads: its state and kernel
/// wait channel from /proc; then each of its child processes' state, wait
/// channel and kernel stack (a worker a stop waits on shows whether it
/// still runs, is stopped, is stuck in the kernel, or is a zombie nobody
/// reaped); then every thread's stack from gdb when gdb is
/// installed (bounded: gdb is killed after 60 s).
fn dump_threads(pid: u32, path: &std::path::Path) -> Result<(), String> {
    use std::fmt::Write as _;
    let mut text = String::new();
    for child in children_of(pid) {
        // A child in D state (uninterruptible: not even SIGKILL ends it
        // until its kernel wait does) is named with where it waits: its
        // wait channel, and its kernel stack where this process may read it.
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/{child}/{name}")).unwrap_or_default()
        };
        let _ = writeln!(
            text,
            "child {child}: {} wchan={}",
            read("stat").trim(),
            read("wchan").trim()
        );
        let stack = read("stack");
        if !stack.is_empty() {
            let _ = writeln!(text, "{}", stack.trim_end());
        }
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("/proc/{pid}/task: {e}"))?;
    for task in tasks.flatten() {
        let dir = task.path();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let _ = writeln!(
            text,
            "task {}: {} wchan={}",
            task.file_name().to_string_lossy(),
            read("stat").trim(),
            read("wchan").trim()
        );
    }
    let gdb = std::process::Command::new("timeout")
        .args([
            "60",
            "gdb",
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(std::process::Stdio::null())
        .output();
    match gdb {
        Ok(out) => {
            text.push_str(&String::from_utf8_lossy(&out.stdout));
            text.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        Err(e) => {
            let _ = writeln!(text, "gdb not run: {e}");
        }
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

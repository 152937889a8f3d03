//! The soak's operations: one chosen at random per step.

use std::time::{Duration, Instant};

use arbor_protocol::control::{ControlRequest, ControlResponse, SpawnRequest, WorkerInfo};
use nix::sys::signal::Signal;

use super::control::{answer_on, ask_once, connect, start_time};
use super::exits::Expected;
use super::{config, Soak, ANSWER_BOUND, MAX_SPAWNED, OPERATION_BOUND, UNANSWERED_BOUND};
use crate::test_worker;

/// The bound on a pool reload or scale: each step may wait for a replica's
/// Ready and an old one's close grace, on a loaded machine.
const POOL_OPERATION: Duration = Duration::from_secs(90);

impl Soak {
    /// Workers the soak may stop, close or kill at random. Not the ledger,
    /// which must see every message; the others have operations of their
    /// own: a pool's replicas and the shared worker are only SIGKILLed (a
    /// stopped one would hold its clients, which no operation explains),
    /// and the tree's root only SIGKILLed (closed, it would stay stopped).
    fn unspared(&self) -> impl Fn(&WorkerInfo) -> bool {
        let pools = self.load.names();
        move |w| {
            !["ledger", "tree", super::shared::NAME].contains(&w.name.as_str())
                && !pools.contains(&w.name)
        }
    }

    /// One random operation.
    pub(super) fn step(&mut self) {
        match self.chance.below(21) {
            0 | 1 => self.spawn(),
            2 => self.request(),
            3 => self.post(),
            4 | 5 => self.ledger_burst(),
            6 => self.kill_worker(),
            7 => self.kill_replica(),
            8 => self.stop_or_continue(),
            9 => self.close_one(),
            10 => self.terminate(),
            11 => self.sighup(),
            12 => self.hostile_client(),
            13 => {
                self.note(format!("drop {} hostile clients", self.hostile.open()));
                self.hostile.drop_all();
            }
            14 | 20 => self.shared_step(),
            15 => self.kill_shared(),
            16 => self.kill_in_tree(),
            17 => self.pool_operation(),
            18 => self.request_then_kill(),
            _ => self.check_ledger(),
        }
    }

    fn spawn(&mut self) {
        let spawned = self
            .running()
            .iter()
            .filter(|w| w.name.starts_with("soak-"))
            .count();
        if spawned >= MAX_SPAWNED {
            return self.close_one();
        }
        let restart = ["never", "on-failure", "always"][self.chance.below(3)];
        let (mode, arg) = [
            ("echo", "0"),
            ("chatty", "0"),
            ("exit", "3"),
            ("panic", "0"),
            ("flood", "100"),
        ][self.chance.below(5)];
        // A worker that floods is never restarted (it would flood again),
        // and two at most run at once: their bursts of events must fit the
        // watcher's buffer, or the soak's own watcher misses exits.
        let floods = self
            .running()
            .iter()
            .filter(|w| w.name == "soak-flood")
            .count();
        let (mode, arg) = if mode == "flood" && floods >= 2 {
            ("echo", "0")
        } else {
            (mode, arg)
        };
        let restart = if mode == "flood" { "never" } else { restart };
        self.note(format!("spawn {mode} restart={restart}"));
        let request = ControlRequest::Spawn(SpawnRequest {
            name: Some(format!("soak-{mode}")),
            program: test_worker().display().to_string(),
            args: vec![mode.into(), arg.into()],
            env: vec![],
            cwd: None,
            restart: restart.into(),
            close_grace_ms: 200,
            speaks_protocol: true,
            shared: false,
        });
        match self.ask(&request) {
            ControlResponse::Spawned { id } if restart == "never" => {
                self.never.insert(id, mode);
            }
            ControlResponse::Spawned { .. } | ControlResponse::Failed { .. } => {}
            other => self.fail(&format!("Spawn answered {other:?}")),
        }
    }

    /// A request to an echo worker gets its own data back, or a typed failure.
    fn request(&mut self) {
        let echoes = |w: &WorkerInfo| w.name == "soak-echo" || w.name == "steady";
        let Some(w) = self.pick_where(echoes) else {
            return;
        };
        let data = format!("ask {}", self.chance.next()).into_bytes();
        self.note(format!("request {} ({})", w.id, w.name));
        let request = ControlRequest::Request {
            id: w.id,
            data: data.clone(),
            timeout_ms: 2000,
        };
        match self.ask(&request) {
            ControlResponse::Reply(reply) if reply != data => {
                self.fail(&format!("worker {} answered another request's data", w.id))
            }
            // A worker killed or stopped meanwhile fails it, typed.
            ControlResponse::Reply(_) | ControlResponse::Failed { .. } => {}
            other => self.fail(&format!("Request answered {other:?}")),
        }
    }

    /// A post to any worker; to an `exit` or `panic` worker it is the end.
    fn post(&mut self) {
        let Some(w) = self.pick_where(|w| w.name != "ledger") else {
            return;
        };
        self.note(format!("post {} ({})", w.id, w.name));
        let request = ControlRequest::Post {
            id: w.id,
            data: b"hello".to_vec(),
        };
        match self.ask(&request) {
            ControlResponse::Ok => match w.name.as_str() {
                "soak-exit" => self.await_own_end(w.id, Expected::Code(3)),
                "soak-panic" => self.await_own_end(w.id, Expected::Code(101)),
                _ => {}
            },
            ControlResponse::Failed { .. } => {}
            other => self.fail(&format!("Post answered {other:?}")),
        }
    }

    /// Worker `id` was told to end itself: waits until it no longer runs,
    /// so that no later operation races its exit, then expects `how`. One
    /// that does not end within the bound (stopped, or slow) is left
    /// undecided.
    fn await_own_end(&mut self, id: u64, how: Expected) {
        if self.stopped.iter().any(|s| s.0 == id) {
            // Stopped, it ends only after a SIGCONT: undecided.
            self.undecided.insert(id);
            self.exits.forget(id);
            return;
        }
        let deadline = Instant::now() + ANSWER_BOUND;
        while self.running().iter().any(|w| w.id == id) {
            if Instant::now() > deadline {
                self.undecided.insert(id);
                self.exits.forget(id);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.expect(id, how);
    }

    fn ledger_burst(&mut self) {
        let Some(w) = self.pick_where(|w| w.name == "ledger") else {
            let ledger: Vec<_> = self
                .workers()
                .into_iter()
                .filter(|w| w.name == "ledger")
                .collect();
            self.fail(&format!("the ledger is not running: {ledger:?}"));
        };
        let socket = self.daemon.socket.clone();
        match self
            .ledger
            .burst(&socket, OPERATION_BOUND, w.id, &mut self.chance)
        {
            Ok(what) => self.note(what),
            Err(e) => self.fail(&e),
        }
    }

    fn kill_worker(&mut self) {
        let Some(w) = self.pick_where(self.unspared()) else {
            return;
        };
        self.note(format!("SIGKILL {} ({}) pid {}", w.id, w.name, w.pid));
        self.expect(w.id, Expected::Signal(9));
        self.signal(w.pid, Signal::SIGKILL);
    }

    fn kill_replica(&mut self) {
        let pools = self.load.names();
        let Some(w) = self.pick_where(|w| pools.contains(&w.name)) else {
            return;
        };
        // Never the last one alive: a pool with no replica refuses every
        // connection until the restart, and those failures would be the
        // operation's, not arbord's. A replica killed a moment ago may still
        // be listed as running until arbord reaps it, and one already reaped
        // (no start time left) until arbord's record catches up: neither
        // counts.
        let running = self.running();
        let killed = &self.killed_replicas;
        let alive = running.iter().filter(|r| {
            r.name == w.name
                && start_time(r.pid).is_some_and(|started| !killed.contains(&(r.pid, started)))
        });
        if alive.count() < 2 {
            return;
        }
        if let Some(started) = start_time(w.pid) {
            self.killed_replicas.insert((w.pid, started));
        }
        self.note(format!(
            "SIGKILL replica {} of {} pid {}",
            w.id, w.name, w.pid
        ));
        self.load.killing(&w.name, w.pid);
        self.signal(w.pid, Signal::SIGKILL);
    }

    fn stop_or_continue(&mut self) {
        if let Some((id, pid)) = self.stopped.pop() {
            self.note(format!("SIGCONT {id} pid {pid}"));
            self.signal(pid, Signal::SIGCONT);
        } else if let Some(w) = self.pick_where(self.unspared()) {
            self.note(format!("SIGSTOP {} ({}) pid {}", w.id, w.name, w.pid));
            self.undecided.insert(w.id);
            self.exits.forget(w.id);
            self.signal(w.pid, Signal::SIGSTOP);
            self.stopped.push((w.id, w.pid));
        }
    }

    pub(super) fn close_one(&mut self) {
        let Some(w) = self.pick_where(self.unspared()) else {
            return;
        };
        self.note(format!("close {} ({}) pid {}", w.id, w.name, w.pid));
        self.expect(w.id, Expected::Code(0));
        match self.ask(&ControlRequest::Close {
            id: w.id,
            grace_ms: Some(200),
        }) {
            ControlResponse::Ended(_) | ControlResponse::Failed { .. } => {}
            other => self.fail(&format!("Close answered {other:?}")),
        }
    }

    fn terminate(&mut self) {
        let Some(w) = self.pick_where(self.unspared()) else {
            return;
        };
        self.note(format!("terminate {} ({})", w.id, w.name));
        self.expect(w.id, Expected::Signal(9));
        match self.ask(&ControlRequest::Terminate { id: w.id }) {
            ControlResponse::Ended(_) | ControlResponse::Failed { .. } => {}
            other => self.fail(&format!("Terminate answered {other:?}")),
        }
    }

    fn sighup(&mut self) {
        self.config_turn = !self.config_turn;
        self.note(format!("SIGHUP, turning = {}", self.config_turn));
        // Written aside and renamed over the file, as an operator should: a
        // reload may read the file at any time (a SIGHUP during a reload
        // reads it again afterwards), and must never see half of it.
        let path = self.daemon.socket.with_file_name("arbord.toml");
        let aside = path.with_extension("toml.new");
        let text = config(self.config_turn, &self.load, &self.tree_dir);
        if let Err(e) = std::fs::write(&aside, text).and_then(|()| std::fs::rename(&aside, &path)) {
            self.fail(&format!("write the configuration: {e}"));
        }
        let pid = self.daemon.pid();
        self.signal(pid, Signal::SIGHUP);
    }

    fn hostile_client(&mut self) {
        let flood = self.pick_where(|w| w.name == "soak-flood").map(|w| w.id);
        let socket = self.daemon.socket.clone();
        match self.hostile.one(&socket, flood, &mut self.chance) {
            Ok(what) => self.note(what),
            Err(e) => self.fail(&e),
        }
    }

    fn shared_step(&mut self) {
        let socket = self.daemon.socket.clone();
        match self.shared.step(&socket, OPERATION_BOUND, &mut self.chance) {
            Ok(what) => self.note(format!("shared: {what}")),
            Err(e) => self.fail(&e),
        }
    }

    fn kill_shared(&mut self) {
        let Some(w) = self.pick_where(|w| w.name == super::shared::NAME) else {
            return;
        };
        self.note(format!("SIGKILL shared {} pid {}", w.id, w.pid));
        self.shared.killing();
        self.signal(w.pid, Signal::SIGKILL);
    }

    /// SIGKILL a sub-worker, or the tree's root: then every node of the
    /// old tree must end.
    fn kill_in_tree(&mut self) {
        let workers = self.running();
        let Some(root) = workers.iter().find(|w| w.name == "tree").cloned() else {
            return;
        };
        if self.chance.below(3) == 0 {
            self.note(format!("SIGKILL tree root {} pid {}", root.id, root.pid));
            let killed = Instant::now();
            let nodes = workers.iter().filter(|w| w.parent == Some(root.id));
            let nodes: Vec<_> = nodes
                .filter_map(|w| Some((w.pid, start_time(w.pid)?, killed)))
                .collect();
            self.must_end.extend(nodes);
            self.signal(root.pid, Signal::SIGKILL);
        } else if let Some(node) = self.pick_where(|w| w.parent == Some(root.id)) {
            self.note(format!("SIGKILL tree node {} pid {}", node.id, node.pid));
            self.signal(node.pid, Signal::SIGKILL);
        }
    }

    /// A rolling reload or a scale of one pool, answered `Done` or a typed
    /// failure within [`POOL_OPERATION`].
    fn pool_operation(&mut self) {
        let pools = self.load.names();
        let pool = pools[self.chance.below(pools.len())].clone();
        let request = if self.chance.below(2) == 0 {
            ControlRequest::Reload { pool: Some(pool) }
        } else {
            let replicas = 2 + self.chance.below(2) as u32;
            ControlRequest::Scale { pool, replicas }
        };
        self.note(format!("{request:?}"));
        let socket = self.daemon.socket.clone();
        match ask_once(&socket, &request, POOL_OPERATION) {
            Ok(ControlResponse::Done { .. } | ControlResponse::Failed { .. }) => {}
            Ok(other) => self.fail(&format!("{request:?} answered {other:?}")),
            Err(e) => self.fail(&e),
        }
    }

    /// A request to a stopped worker, then SIGKILL: its failure comes
    /// within [`UNANSWERED_BOUND`], not at its 30 s timeout.
    fn request_then_kill(&mut self) {
        let stopped: Vec<u64> = self.stopped.iter().map(|s| s.0).collect();
        let fits = |w: &WorkerInfo| w.name == "soak-echo" && !stopped.contains(&w.id);
        let Some(w) = self.pick_where(fits) else {
            return;
        };
        self.note(format!(
            "request to stopped {} pid {}, then SIGKILL",
            w.id, w.pid
        ));
        self.expect(w.id, Expected::Signal(9));
        self.signal(w.pid, Signal::SIGSTOP);
        let socket = self.daemon.socket.clone();
        let mut channel = connect(&socket, UNANSWERED_BOUND).unwrap_or_else(|e| self.fail(&e));
        let request = ControlRequest::Request {
            id: w.id,
            data: b"never answered".to_vec(),
            timeout_ms: 30_000,
        };
        if let Err(e) = channel.send_value(&request, &[]) {
            self.fail(&format!("send the request: {e}"));
        }
        self.signal(w.pid, Signal::SIGKILL);
        let killed = Instant::now();
        match answer_on(&mut channel) {
            Ok(ControlResponse::Failed { .. }) => {}
            Ok(other) => self.fail(&format!(
                "a request whose worker was killed answered {other:?}"
            )),
            Err(e) => self.fail(&format!(
                "a request still waited {:?} after its worker's SIGKILL: {e}",
                killed.elapsed()
            )),
        }
    }
}

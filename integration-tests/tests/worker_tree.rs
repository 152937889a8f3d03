//! Worker trees under the real arbord: workers that start sub-workers
//! (test-tree), listed as a tree, closed leaves first, terminated whole,
//! taken down with a parent that dies, bounded by the configured limits,
//! and a hostile worker's Spawn flood that costs nobody else anything.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use arbor_integration_tests::arbord::{wait_until, wait_until_within, Daemon, LIMIT};
use arbor_integration_tests::{
    binary, fd_count_of as fd_count, is_alive, process_state, test_worker, TempDir,
};

#[derive(Debug, Clone)]
struct Listed {
    id: u64,
    name: String,
    pid: u32,
    state: String,
    parent: Option<u64>,
}

fn listed(daemon: &Daemon) -> Vec<Listed> {
    daemon
        .ps_json()
        .into_iter()
        .map(|w| Listed {
            id: w["id"].as_u64().unwrap(),
            name: w["name"].as_str().unwrap().to_string(),
            pid: w["pid"].as_u64().unwrap() as u32,
            state: w["state"].as_str().unwrap().to_string(),
            parent: w["parent"].as_u64(),
        })
        .collect()
}

fn running(daemon: &Daemon) -> Vec<Listed> {
    listed(daemon)
        .into_iter()
        .filter(|w| w.state == "running")
        .collect()
}

/// Spawns `test-tree ARGS` under arbord as `name`; returns its id.
fn spawn_tree(daemon: &Daemon, name: &str, args: &[&str]) -> u64 {
    let tree = binary("test-tree");
    let mut command = vec!["spawn", "--name", name, "--", tree.to_str().unwrap()];
    command.extend_from_slice(args);
    daemon.ok(&command).trim().parse().unwrap()
}

/// Spawns `test-tree tree DEPTH WIDTH DIR` and waits until all its nodes run.
fn grow(daemon: &Daemon, depth: u32, width: u32, dir: &Path) -> (u64, Vec<Listed>) {
    let (depth_arg, width_arg) = (depth.to_string(), width.to_string());
    let root = spawn_tree(
        daemon,
        "root",
        &["tree", &depth_arg, &width_arg, dir.to_str().unwrap()],
    );
    let nodes: u32 = (0..=depth).map(|d| width.pow(d)).sum();
    wait_until("the whole tree running", || {
        running(daemon).len() == nodes as usize
    });
    (root, running(daemon))
}

/// Every pid of `nodes` is gone: no process, no zombie.
fn all_gone(nodes: &[Listed]) -> bool {
    nodes.iter().all(|n| process_state(n.pid).is_none())
}

#[test]
fn ps_shows_the_tree_and_close_runs_every_onclose_leaves_first() {
    let daemon = Daemon::start("");
    let fds_before = daemon.settled_fds();
    let dir = TempDir::new("tree-close");
    let (root, nodes) = grow(&daemon, 2, 2, &dir.0);

    // The parent column: the root, two children of it, four grandchildren.
    let by_id: BTreeMap<u64, &Listed> = nodes.iter().map(|n| (n.id, n)).collect();
    assert_eq!(by_id[&root].parent, None);
    let children: Vec<u64> = nodes
        .iter()
        .filter(|n| n.parent == Some(root))
        .map(|n| n.id)
        .collect();
    assert_eq!(children.len(), 2, "{nodes:?}");
    let grandchildren = nodes
        .iter()
        .filter(|n| n.parent.is_some_and(|p| children.contains(&p)))
        .count();
    assert_eq!(grandchildren, 4, "{nodes:?}");
    for node in &nodes {
        if let Some(parent) = node.parent {
            // Each sub-worker process is forked by arbord, not by its parent.
            assert_eq!(
                arbor_integration_tests::parent_of(node.pid),
                Some(daemon.pid()),
                "{node:?}"
            );
            assert_ne!(by_id[&parent].pid, node.pid);
        }
    }
    // With a cgroup per worker, each sub-worker's nests in its parent's.
    if arbor_integration_tests::machine_has(arbor_integration_tests::Needs::Cgroups) {
        let cgroup_of = |pid: u32| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap()
                .to_string()
        };
        for node in &nodes {
            if let Some(parent) = node.parent {
                let parents = cgroup_of(by_id[&parent].pid);
                let own = cgroup_of(node.pid);
                assert!(
                    own.starts_with(&format!("{parents}/worker-")),
                    "{own} not in {parents}"
                );
            }
        }
    }
    // The human listing draws the tree: sub-workers under their parent.
    let table = daemon.ok(&["ps"]);
    assert_eq!(table.matches("└ node-1-").count(), 2, "{table}");
    assert_eq!(table.matches("  └ node-0-").count(), 4, "{table}");

    let out = daemon.ok(&["close", &root.to_string(), "--grace", "5s"]);
    assert_eq!(out, "exited with code 0\n");
    wait_until("every node gone", || all_gone(&nodes));

    // Every onclose ran, and every child's before its parent's.
    let closed: BTreeMap<u32, (u32, u128)> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let pid = e.file_name().to_str().unwrap().parse().unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap();
            let (parent, at) = text.split_once(' ').unwrap();
            (pid, (parent.parse().unwrap(), at.parse().unwrap()))
        })
        .collect();
    assert_eq!(closed.len(), 7, "{closed:?}");
    for node in &nodes {
        let Some(parent) = node.parent else { continue };
        let parent_pid = by_id[&parent].pid;
        assert!(
            closed[&node.pid].1 < closed[&parent_pid].1,
            "{} closed after its parent {}",
            node.name,
            by_id[&parent].name
        );
    }
    wait_until("arbord's fds back where they were", || {
        fd_count(daemon.pid()) <= fds_before
    });
}

#[test]
fn terminate_takes_the_whole_subtree_at_once() {
    let daemon = Daemon::start("");
    let dir = TempDir::new("tree-terminate");
    let (root, nodes) = grow(&daemon, 2, 2, &dir.0);
    daemon.ok(&["terminate", &root.to_string()]);
    wait_until("every node gone", || all_gone(&nodes));
    // Killed, not closed: no onclose ran.
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
    assert!(running(&daemon).is_empty());
}

#[test]
fn terminate_of_a_sub_worker_takes_only_its_subtree() {
    let daemon = Daemon::start("");
    let dir = TempDir::new("tree-subtree");
    let (root, nodes) = grow(&daemon, 2, 2, &dir.0);
    let middle = nodes.iter().find(|n| n.parent == Some(root)).unwrap();
    let (gone, kept): (Vec<Listed>, Vec<Listed>) = nodes
        .iter()
        .cloned()
        .partition(|n| n.id == middle.id || n.parent == Some(middle.id));
    assert_eq!(gone.len(), 3);
    daemon.ok(&["terminate", &middle.id.to_string()]);
    wait_until("the middle subtree gone", || all_gone(&gone));
    assert!(kept.iter().all(|n| is_alive(n.pid)), "{kept:?}");
    assert_eq!(running(&daemon).len(), 4);
    daemon.ok(&["terminate", &root.to_string()]);
    wait_until("the rest gone", || all_gone(&kept));
}

#[test]
fn a_worker_that_dies_takes_its_subtree_with_it() {
    let daemon = Daemon::start("");
    let dir = TempDir::new("tree-crash");
    let (root, nodes) = grow(&daemon, 2, 2, &dir.0);
    let root_pid = nodes.iter().find(|n| n.id == root).unwrap().pid;
    // SAFETY: kill(2) on a pid arbord reported and has not reaped yet.
    assert_eq!(unsafe { libc::kill(root_pid as i32, libc::SIGKILL) }, 0);
    wait_until("every node gone", || all_gone(&nodes));
    let after = listed(&daemon);
    assert!(after.iter().all(|w| w.state == "exited"), "{after:?}");
}

#[test]
fn the_depth_limit_refuses_a_spawn_with_a_typed_reason() {
    let daemon = Daemon::start("[daemon]\nmax_depth = 1\n");
    let dir = TempDir::new("tree-depth");
    spawn_tree(
        &daemon,
        "root",
        &["tree", "2", "1", dir.0.to_str().unwrap()],
    );
    wait_until("the level-1 node says it was refused", || {
        listed(&daemon).iter().any(|w| {
            w.name == "node-1-0"
                && daemon
                    .ok(&["logs", &w.id.to_string()])
                    .contains("the worker tree may be at most 1 levels deep")
        })
    });
    assert_eq!(running(&daemon).len(), 2);
}

#[test]
fn a_tree_at_max_tree_workers_is_refused_with_a_typed_reason_while_another_grows() {
    let daemon = Daemon::start("[daemon]\nmax_tree_workers = 2\n");
    let dir = TempDir::new("tree-quota");
    // 3 sub-workers wanted below the root; 2 are allowed.
    let root = spawn_tree(
        &daemon,
        "root",
        &["tree", "1", "3", dir.0.to_str().unwrap()],
    );
    wait_until("the root says its third spawn was refused", || {
        daemon
            .ok(&["logs", &root.to_string()])
            .contains("one worker tree may have at most 2 sub-workers")
    });
    // (Its two sub-workers end with its failed grow, which drops them.)
    // Another tree still gets its places.
    let other = spawn_tree(
        &daemon,
        "other",
        &["tree", "1", "2", dir.0.to_str().unwrap()],
    );
    wait_until("the other tree's 2 sub-workers running", || {
        running(&daemon)
            .iter()
            .filter(|w| w.parent == Some(other))
            .count()
            == 2
    });
}

#[test]
fn a_spawn_flood_gets_one_answer_per_spawn_and_costs_nobody_else() {
    let config = format!(
        "[daemon]\nmax_children = 4\n\n[[worker]]\nname = \"echo\"\nprogram = {:?}\nargs = [\"echo\"]\n",
        test_worker().display().to_string()
    );
    let daemon = Daemon::start(&config);
    wait_until("echo running", || running(&daemon).len() == 1);
    let fds_before = daemon.settled_fds();
    let flood = spawn_tree(&daemon, "flood", &["flood", "5000"]);
    let mut report = String::new();
    wait_until_within("the flood's report", Duration::from_secs(60), || {
        report = daemon.ok(&["logs", &flood.to_string()]);
        report.contains("started")
    });
    assert!(
        report.contains("started 4 refused Children:4996"),
        "{report}"
    );
    // Everyone else is served as before.
    let echo = listed(&daemon)
        .iter()
        .find(|w| w.name == "echo")
        .unwrap()
        .id;
    assert_eq!(
        daemon.ok(&["request", &echo.to_string(), "still here"]),
        "still here\n"
    );
    let children: Vec<Listed> = listed(&daemon)
        .into_iter()
        .filter(|w| w.parent == Some(flood))
        .collect();
    assert_eq!(children.len(), 4, "{children:?}");
    daemon.ok(&["terminate", &flood.to_string()]);
    wait_until("the flood's sub-workers gone", || all_gone(&children));
    wait_until_within("arbord's fds back where they were", LIMIT, || {
        fd_count(daemon.pid()) <= fds_before
    });
}

#[test]
fn a_parent_worker_closes_and_terminates_its_own_sub_workers() {
    let daemon = Daemon::start("");
    let dir = TempDir::new("tree-control");
    let parent = spawn_tree(&daemon, "parent", &["control", dir.0.to_str().unwrap()]).to_string();
    let mut logs = String::new();
    wait_until("the parent's report", || {
        logs = daemon.ok(&["logs", &parent]);
        logs.contains("closed") || logs.contains("control:")
    });
    assert!(
        logs.contains("closed Some(0)/None terminated None/Some(9)"),
        "{logs}"
    );
    // The closed one ran its onclose; the terminated one did not.
    let listed = listed(&daemon);
    let pid_of = |name: &str| listed.iter().find(|w| w.name == name).unwrap();
    assert_eq!(pid_of("to-close").state, "exited");
    assert_eq!(pid_of("to-terminate").state, "exited");
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1);
}

#[test]
fn a_sub_workers_exit_record_says_who_ended_it_and_its_peak_memory() {
    let daemon = Daemon::start("");
    let dir = TempDir::new("tree-records");
    let parent = spawn_tree(&daemon, "parent", &["control", dir.0.to_str().unwrap()]).to_string();
    let mut logs = String::new();
    wait_until("the parent's report of the records", || {
        logs = daemon.ok(&["logs", &parent]);
        logs.contains("records:") || logs.contains("control:")
    });
    let line = logs
        .lines()
        .find(|line| line.contains("records:"))
        .unwrap_or_else(|| panic!("no records line in {logs}"));
    assert!(line.contains("initiated by Close/Terminate"), "{line}");
    let rss: Vec<u64> = line
        .split("peak rss ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" KiB"))
        .map(|pair| pair.split('/').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    assert_eq!(rss.len(), 2, "{line}");
    assert!(
        rss.iter().all(|&kib| kib > 0),
        "wait4's usage came through: {line}"
    );
}

#[test]
fn the_supervisor_side_handle_of_a_sub_worker_cannot_post_to_it() {
    let daemon = Daemon::start("");
    let dir = TempDir::new("tree-post");
    let (root, nodes) = grow(&daemon, 1, 1, &dir.0);
    let child = nodes.iter().find(|n| n.parent == Some(root)).unwrap();
    let refused = daemon.ctl(&["send", &child.id.to_string(), "hello"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("its channel is its parent worker's"),
        "{stderr}"
    );
    // It is still there to close, and closes.
    daemon.ok(&["close", &child.id.to_string(), "--grace", "5s"]);
    assert!(!is_alive(child.pid));
    assert!(is_alive(nodes.iter().find(|n| n.id == root).unwrap().pid));
}

#[test]
fn malformed_spawns_get_typed_refusals_and_cost_only_themselves() {
    let daemon = Daemon::start("");
    let id = spawn_tree(&daemon, "bad", &["bad-spawns"]).to_string();
    let mut logs = String::new();
    wait_until("the answers", || {
        logs = daemon.ok(&["logs", &id]);
        logs.contains("4: ")
    });
    let lines: Vec<&str> = logs.lines().collect();
    assert!(
        lines[0].starts_with("0: BadSpec") && lines[0].contains("1 listen names for 0 fds"),
        "{logs}"
    );
    assert!(
        lines[1].starts_with("1: BadSpec") && lines[1].contains("NUL"),
        "{logs}"
    );
    assert!(
        lines[2].starts_with("2: Failed") && lines[2].contains("execve"),
        "{logs}"
    );
    assert_eq!(lines[3], "3: started", "{logs}");
    // `sleep` reads no Close frame: SIGTERM at once, however long the grace.
    assert_eq!(lines[4], "4: closed None/Some(15)", "{logs}");
    let children: Vec<Listed> = listed(&daemon)
        .into_iter()
        .filter(|w| w.parent == Some(id.parse().unwrap()))
        .collect();
    assert_eq!(children.len(), 1, "{children:?}");
    assert!(all_gone(&children));
    // The supervisor goes on serving it.
    assert_eq!(running(&daemon).len(), 1);
    daemon.ok(&["terminate", &id]);
}

#[test]
fn dropping_a_sub_worker_handle_closes_its_channel_and_it_ends() {
    let daemon = Daemon::start("");
    let dir = TempDir::new("tree-drop");
    let id = spawn_tree(&daemon, "parent", &["drop", dir.0.to_str().unwrap()]);
    wait_until("the sub-worker dropped and gone", || {
        listed(&daemon)
            .iter()
            .any(|w| w.name == "dropped" && w.state == "exited")
    });
    let logs = daemon.ok(&["logs", &id.to_string()]);
    assert!(logs.contains("dropped "), "{logs}");
    assert_eq!(running(&daemon).len(), 1, "the parent runs on");
}

//! A cgroup per worker through the library: each worker in its own, killed
//! whole, removed after; and a hierarchy that refuses new cgroups costs the
//! workers their cgroup, never their start.

use std::path::PathBuf;
use std::time::Duration;

use arbor_integration_tests::{machine_has, process_state, test_worker, within, Needs};
use arbor_supervisor::cgroup::Cgroups;
use arbor_supervisor::{Supervisor, WorkerSpec};

/// A cgroup v2 directory of this test's own, below this process's cgroup,
/// removed on drop; `None` where the hierarchy is not writable.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(label: &str) -> Option<Self> {
        let probe = Cgroups::detect()?;
        let dir = probe
            .base()
            .parent()?
            .join(format!("arbor-test-{label}-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        Some(Self(dir))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            let _ = std::fs::read_dir(&self.0).map(|entries| {
                for entry in entries.flatten().filter(|e| e.path().is_dir()) {
                    for inner in std::fs::read_dir(entry.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                    {
                        let _ = std::fs::remove_dir(inner.path());
                    }
                    let _ = std::fs::remove_dir(entry.path());
                }
            });
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_string()
}

/// A worker that sleeps until it is killed.
async fn plain(supervisor: &Supervisor) -> arbor_supervisor::Worker {
    let spec = WorkerSpec::program(test_worker())
        .arg("plain")
        .speaks_protocol(false);
    supervisor.spawn(spec).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_gets_its_own_cgroup_and_it_goes_with_the_worker() {
    if !machine_has(Needs::Cgroups) {
        return;
    }
    let test = TestCgroup::new("own").expect("a test cgroup beside the detected one");
    let cgroups = Cgroups::under(&test.0).unwrap();
    let base = cgroups.base().to_path_buf();
    let supervisor = Supervisor::new().unwrap().with_cgroups(cgroups);
    assert_eq!(supervisor.cgroups(), Some(base.as_path()));
    let worker = plain(&supervisor).await;
    let own = cgroup_of(worker.pid());
    assert!(own.ends_with(&format!("/worker-{}", worker.id())), "{own}");
    let dir = base.join(format!("worker-{}", worker.id()));
    assert!(dir.exists());
    let pid = worker.pid();
    within(Duration::from_secs(20), "terminate", worker.terminate())
        .await
        .unwrap();
    assert!(process_state(pid).is_none());
    within(Duration::from_secs(20), "its cgroup removed", async {
        while dir.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hierarchy_that_refuses_cgroups_costs_the_worker_its_cgroup_not_its_start() {
    if !machine_has(Needs::Cgroups) {
        return;
    }
    let test = TestCgroup::new("full").expect("a test cgroup beside the detected one");
    let cgroups = Cgroups::under(&test.0).unwrap();
    // No more cgroups below this one than the supervisor's own directory.
    std::fs::write(test.0.join("cgroup.max.descendants"), "1").unwrap();
    let supervisor = Supervisor::new().unwrap().with_cgroups(cgroups);
    let worker = plain(&supervisor).await;
    assert!(!cgroup_of(worker.pid()).contains("/worker-"));
    within(Duration::from_secs(20), "terminate", worker.terminate())
        .await
        .unwrap();
}

//! Every exit is reported exactly: code, signal, core dump, who started it,
//! and close's escalation from the Close frame to SIGTERM to SIGKILL.

use std::time::{Duration, Instant};

use arbor_integration_tests::{test_worker, within};
use arbor_supervisor::{Error, Initiator, Signal, Supervisor, Worker, WorkerEvent, WorkerSpec};

const LIMIT: Duration = Duration::from_secs(20);

async fn spawn(supervisor: &Supervisor, spec: WorkerSpec) -> Worker {
    let mut worker = supervisor.spawn(spec).await.unwrap();
    match within(LIMIT, "Ready", worker.next_event()).await {
        Some(WorkerEvent::Ready) => worker,
        other => panic!("expected Ready, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_3_is_code_3() {
    let supervisor = Supervisor::new().unwrap();
    let worker = spawn(
        &supervisor,
        WorkerSpec::program(test_worker()).args(["exit", "3"]),
    )
    .await;
    worker.post_message(b"go".to_vec(), vec![]).await.unwrap();
    let exit = within(LIMIT, "exit", worker.wait()).await.unwrap();
    assert_eq!(
        (exit.code, exit.signal, exit.core_dumped),
        (Some(3), None, false)
    );
    assert_eq!(exit.initiated_by, Initiator::Worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_is_sigkill() {
    let supervisor = Supervisor::new().unwrap();
    let worker = spawn(&supervisor, WorkerSpec::program(test_worker()).arg("echo")).await;
    worker.signal(Signal::KILL).await.unwrap();
    let exit = within(LIMIT, "exit", worker.wait()).await.unwrap();
    assert_eq!((exit.code, exit.signal), (None, Some(Signal::KILL)));
    assert_eq!(exit.initiated_by, Initiator::Signal);
    assert_eq!(exit.signal.unwrap().name(), "SIGKILL");
}

/// A `test-worker segv CORE` in `dir`, crashed: its exit record.
async fn segfault(core: &str, dir: &std::path::Path) -> arbor_supervisor::ExitRecord {
    let supervisor = Supervisor::new().unwrap();
    let spec = WorkerSpec::program(test_worker())
        .args(["segv", core])
        .cwd(dir);
    let worker = spawn(&supervisor, spec).await;
    worker.post_message(b"go".to_vec(), vec![]).await.unwrap();
    let exit = within(LIMIT, "exit", worker.wait()).await.unwrap();
    assert_eq!((exit.code, exit.signal), (None, Some(Signal::SEGV)));
    assert_eq!(exit.initiated_by, Initiator::Crash);
    exit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segfault_with_rlimit_core_0_is_sigsegv_a_crash_and_no_core() {
    let dir = arbor_integration_tests::TempDir::new("no-core");
    let exit = segfault("nocore", &dir.0).await;
    assert!(!exit.core_dumped, "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segfault_with_a_core_allowed_is_reported_as_dumped() {
    let dir = arbor_integration_tests::TempDir::new("core");
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let exit = segfault("core", &dir.0).await;
    // The kernel dumps to the pattern (a file, relative to the worker's
    // directory, or a helper's pipe) and says so in the wait status.
    assert!(
        exit.core_dumped,
        "no core dumped with core_pattern {pattern:?}: {exit:?}"
    );
    if !pattern.starts_with('|') && !pattern.starts_with('/') {
        let files = std::fs::read_dir(&dir.0).unwrap().count();
        assert!(
            files > 0,
            "no core file in the worker's directory (core_pattern {pattern:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_is_immediate() {
    let supervisor = Supervisor::new().unwrap();
    let worker = spawn(
        &supervisor,
        WorkerSpec::program(test_worker()).arg("stubborn"),
    )
    .await;
    let started = Instant::now();
    let exit = within(LIMIT, "terminate", worker.terminate())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        (exit.signal, exit.initiated_by),
        (Some(Signal::KILL), Initiator::Terminate)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_ignoring_close_and_sigterm_is_killed_after_the_grace() {
    let supervisor = Supervisor::new().unwrap();
    let grace = Duration::from_millis(300);
    let worker = spawn(
        &supervisor,
        WorkerSpec::program(test_worker()).arg("stubborn"),
    )
    .await;
    let started = Instant::now();
    let exit = within(LIMIT, "close", worker.close(grace)).await.unwrap();
    let took = started.elapsed();
    assert_eq!(
        (exit.signal, exit.escalated_to),
        (Some(Signal::KILL), Some(Signal::KILL))
    );
    assert_eq!(exit.initiated_by, Initiator::Close);
    // Close frame, grace, SIGTERM (ignored), grace, SIGKILL.
    assert!(took >= 2 * grace, "killed early: {took:?}");
    assert!(
        took < 2 * grace + Duration::from_millis(100),
        "grace not honoured within 100 ms: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_does_not_speak_the_protocol_is_stopped_with_sigterm() {
    let supervisor = Supervisor::new().unwrap();
    let spec = WorkerSpec::program("sleep")
        .arg("600")
        .speaks_protocol(false);
    let worker = spawn(&supervisor, spec).await;
    let exit = within(LIMIT, "close", worker.close(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        (exit.signal, exit.escalated_to),
        (Some(Signal::TERM), Some(Signal::TERM))
    );
    assert_eq!(exit.initiated_by, Initiator::Close);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onclose_runs_to_completion_before_the_exit() {
    let supervisor = Supervisor::new().unwrap();
    let dir = std::env::temp_dir().join(format!("arbor-onclose-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let worker = spawn(
        &supervisor,
        WorkerSpec::program(test_worker()).args(["onclose-file".as_ref(), dir.as_os_str()]),
    )
    .await;
    let exit = within(LIMIT, "close", worker.close(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!((exit.code, exit.escalated_to), (Some(0), None));
    assert_eq!(
        std::fs::read(&dir).expect("onclose wrote its file"),
        b"closed"
    );
    let _ = std::fs::remove_file(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_an_error_event_with_its_location_then_the_exit() {
    let supervisor = Supervisor::new().unwrap();
    let mut worker = spawn(&supervisor, WorkerSpec::program(test_worker()).arg("panic")).await;
    worker.post_message(b"go".to_vec(), vec![]).await.unwrap();
    let (mut error, mut exit) = (None, None);
    within(LIMIT, "error and exit", async {
        while let Some(event) = worker.next_event().await {
            match event {
                WorkerEvent::Error { message, location } => error = Some((message, location)),
                WorkerEvent::Exit(record) => exit = Some(record),
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    let (message, location) = error.expect("an Error event before the Exit");
    assert_eq!(message, "boom");
    let location = location.expect("a location");
    assert!(location.file.ends_with("test-worker.rs"), "{location:?}");
    // The line of the worker's `panic!("boom")`, from its source.
    let source = include_str!("../src/bin/test-worker.rs");
    let line = source
        .lines()
        .position(|l| l.contains("panic!(\"boom\")"))
        .expect("the panic in test-worker.rs")
        + 1;
    assert_eq!(location.line as usize, line, "{location:?}");
    assert_eq!(exit.expect("Exit").code, Some(101));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_failures_are_typed() {
    let supervisor = Supervisor::new().unwrap();
    let err = supervisor
        .spawn(WorkerSpec::program("no-such-program-anywhere"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ProgramNotFound { .. }), "{err}");
    let not_executable =
        std::env::temp_dir().join(format!("arbor-not-executable-{}", std::process::id()));
    std::fs::write(&not_executable, b"data").unwrap();
    let err = supervisor
        .spawn(WorkerSpec::program(&not_executable))
        .await
        .unwrap_err();
    let _ = std::fs::remove_file(&not_executable);
    assert!(matches!(err, Error::Exec { step: "execve", .. }), "{err}");
    let err = supervisor
        .spawn(
            WorkerSpec::program(test_worker())
                .arg("echo")
                .cwd("/no/such/dir"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Exec { step: "chdir", .. }), "{err}");
    assert!(arbor_integration_tests::zombie_children().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_after_a_signal_still_closes() {
    let supervisor = Supervisor::new().unwrap();
    let worker = spawn(&supervisor, WorkerSpec::program(test_worker()).arg("echo")).await;
    // SIGWINCH's default action is to do nothing.
    worker
        .signal(Signal::from_name("WINCH").unwrap())
        .await
        .unwrap();
    let exit = within(LIMIT, "close", worker.close(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        (exit.code, exit.initiated_by, exit.escalated_to),
        (Some(0), Initiator::Close, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_failure_is_reported_whatever_fds_the_child_gets() {
    // Many targets (stdio captured, four sockets): the error pipe must not
    // collide with any of them, or a failed chdir would pass for a start.
    let supervisor = Supervisor::new().unwrap();
    let spec = WorkerSpec::program(test_worker())
        .arg("echo")
        .cwd("/no/such/dir")
        .stdout(arbor_supervisor::Output::Capture)
        .stderr(arbor_supervisor::Output::Capture);
    let mut listen = arbor_supervisor::ListenFds::new();
    for i in 0..4 {
        let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
        listen.push(format!("s{i}"), socket.into());
    }
    let err = supervisor.spawn_with_fds(spec, listen).await.unwrap_err();
    assert!(matches!(err, Error::Exec { step: "chdir", .. }), "{err}");
    assert!(arbor_integration_tests::zombie_children().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_from_inside_runs_onclose_flushes_and_exits_0() {
    let supervisor = Supervisor::new().unwrap();
    let mut worker = spawn(
        &supervisor,
        WorkerSpec::program(test_worker()).arg("close-self"),
    )
    .await;
    worker
        .post_message(b"last words".to_vec(), vec![])
        .await
        .unwrap();
    let mut messages = Vec::new();
    let exit = within(LIMIT, "self-close", async {
        loop {
            match worker.next_event().await.expect("event") {
                WorkerEvent::Message { data, .. } => messages.push(data),
                WorkerEvent::Exit(exit) => return exit,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(messages, [b"last words".to_vec(), b"onclose ran".to_vec()]);
    assert_eq!((exit.code, exit.initiated_by), (Some(0), Initiator::Worker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_close_with_a_shorter_grace_hurries_the_first() {
    let supervisor = Supervisor::new().unwrap();
    let worker = spawn(
        &supervisor,
        WorkerSpec::program(test_worker()).arg("stubborn"),
    )
    .await;
    let started = Instant::now();
    // A close with an hour's grace and, while it runs, one with 100 ms.
    let (first, hurried) = within(LIMIT, "the hurried close", async {
        tokio::join!(
            worker.close(Duration::from_secs(3600)),
            worker.close(Duration::from_millis(100))
        )
    })
    .await;
    assert_eq!(
        first.unwrap(),
        *hurried.as_ref().unwrap(),
        "one exit for both"
    );
    let exit = hurried.unwrap();
    assert_eq!(exit.signal, Some(Signal::KILL));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

//! What an `execve` of a multi-threaded process does to children that set
//! `PR_SET_PDEATHSIG`, by the thread that started them: the fact an
//! in-place upgrade of arbord has to design around.
//!
//! `test-exec-probe` starts `sleep 30` twice, once from its main thread and
//! once from a second thread that stays alive, each child setting its death
//! signal to SIGKILL before its exec; then the main thread execs
//! `test-exec-probe report PID_MAIN PID_THREAD`, which waits up to 2 s for
//! the death signals to land, prints `main=alive|dead thread=alive|dead`,
//! and kills whatever is left.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;

/// `sleep 30`, dying by SIGKILL when the thread that started it ends.
fn sleeper() -> std::io::Result<Child> {
    let mut command = Command::new("sleep");
    command.arg("30");
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing
    // else of the parent's.
    unsafe {
        command.pre_exec(|| set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
    command.spawn()
}

/// Whether `pid` runs (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1;
            after_name.split_whitespace().next().map(|s| s != "Z")
        })
        .unwrap_or(false)
}

fn report(main: u32, thread: u32) -> std::io::Result<()> {
    // The thread's child is killed as the exec ends that thread; give the
    // signal time to land before calling the other one spared.
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(thread) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let word = |pid| if alive(pid) { "alive" } else { "dead" };
    println!("main={} thread={}", word(main), word(thread));
    for pid in [main, thread] {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, main, thread] = &args[..] {
        if mode == "report" {
            let parse = |pid: &str| {
                pid.parse::<u32>()
                    .map_err(|e| std::io::Error::other(format!("{pid}: {e}")))
            };
            return report(parse(main)?, parse(thread)?);
        }
    }
    let from_main = sleeper()?;
    let (tell, told) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tell.send(sleeper().map(|child| child.id()));
        // Alive until the exec ends it.
        loop {
            std::thread::park();
        }
    });
    let from_thread = told
        .recv()
        .map_err(|_| std::io::Error::other("the second thread did not start its child"))??;
    let error = Command::new(std::env::current_exe()?)
        .arg("report")
        .arg(from_main.id().to_string())
        .arg(from_thread.to_string())
        .exec();
    Err(error)
}

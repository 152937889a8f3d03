//! arbord with 100 idle workers: `arborctl ps` latency (a whole arborctl
//! process, as an operator runs it; median of 20) and arbord's RSS. Prints
//! one JSON object. Run by bench/run.sh.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arbor_protocol::control::{ControlRequest, ControlResponse};

const WORKERS: usize = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("arbor-daemon-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let here = std::env::current_exe()?;
    let peer = here.with_file_name("bench-peer");
    let mut config = String::new();
    for i in 0..WORKERS {
        config += &format!(
            "[[worker]]\nname = \"echo{i}\"\nprogram = {:?}\nargs = [\"worker-echo\"]\n",
            peer.display().to_string()
        );
    }
    let config_path = dir.join("arbord.toml");
    std::fs::write(&config_path, config)?;
    let socket = dir.join("arbord.sock");
    let mut arbord = Command::new(here.with_file_name("bench-arbord"))
        .arg("--config")
        .arg(&config_path)
        .arg("--socket")
        .arg(&socket)
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(ControlResponse::Workers(workers)) =
            arbor_bench::control_ask(&socket, &ControlRequest::List)
        {
            if workers.iter().filter(|w| w.state == "running").count() == WORKERS {
                break;
            }
        }
        if Instant::now() > deadline {
            let _ = arbord.kill();
            return Err("workers did not all start within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut times = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let output = Command::new(here.with_file_name("bench-arborctl"))
            .arg("--socket")
            .arg(&socket)
            .arg("ps")
            .output()?;
        times.push(start.elapsed());
        assert!(output.status.success());
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).lines().count(),
            WORKERS + 1
        );
    }
    times.sort();
    let arbord_pid = arbord.id();
    // Read before the shutdown, reported after it: an unreadable /proc is
    // an error naming the pid, never an RSS of 0, and arbord is stopped
    // either way.
    let rss = arbor_bench::rss_kib(arbord_pid);
    let _ = arbor_bench::control_ask(&socket, &ControlRequest::Shutdown);
    let _ = arbord.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let rss = rss.map_err(|e| format!("arbord's RSS (pid {arbord_pid}): {e}"))?;
    println!(
        "{{\"arborctl_ps_100_workers_ms\": {:.2}, \"arbord_rss_100_idle_workers_kib\": {rss}}}",
        times[times.len() / 2].as_secs_f64() * 1000.0
    );
    Ok(())
}

//! The README's quick start, as written: arbord on the demo configuration
//! (`--config supervisor/demo/arbord.toml`, the socket from
//! `$ARBOR_SOCKET`), then every `arborctl` line of the README's session in
//! order, each output compared with the README's. Only what differs from
//! run to run is compared by its form: pids, uptimes and memory figures.

use std::path::Path;
use std::process::{Command, Stdio};

use arbor_integration_tests::arbord::{wait_until, LIMIT};
use arbor_integration_tests::{binary, wait_or_kill, TempDir};

/// The README's session: each `$ arborctl ...` line's arguments and the
/// lines printed after it.
fn readme_session() -> Vec<(Vec<String>, Vec<String>)> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("\n$ arborctl ps\n")
        .expect("the README's session");
    let block = &readme[start + 1..];
    let block = &block[..block.find("```").expect("the session's end")];
    let mut session: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("$ arborctl ") {
            Some(args) => session.push((
                args.split_whitespace().map(String::from).collect(),
                Vec::new(),
            )),
            None => session
                .last_mut()
                .expect("a command first")
                .1
                .push(line.to_string()),
        }
    }
    session
}

/// `arborctl ARGS` with the environment's socket: its stdout lines.
fn arborctl(socket: &Path, args: &[String]) -> Vec<String> {
    let mut child = Command::new(binary("test-arborctl"))
        .args(args)
        .env("ARBOR_SOCKET", socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut child, LIMIT, "arborctl");
    let output = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "arborctl {args:?}: {status}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// One `ps` row against the README's: ID, NAME, STATE and RESTARTS equal,
/// PID a number, UPTIME seconds, RSS in KiB.
fn same_ps_row(got: &str, readme: &str) -> bool {
    let (g, r): (Vec<&str>, Vec<&str>) = (
        got.split_whitespace().collect(),
        readme.split_whitespace().collect(),
    );
    if g.len() != 7 || r.len() != 7 {
        return got == readme;
    }
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    [0, 1, 3, 5].iter().all(|&i| g[i] == r[i])
        && numeric(g[2])
        && g[4].strip_suffix('s').is_some_and(numeric)
        && g[6].strip_suffix("KiB").is_some_and(numeric)
}

/// `ps --json` against the README's: equal but for pid, rss and uptime,
/// which must be numbers.
fn same_json(got: &str, readme: &str) -> bool {
    let strip = |text: &str| -> Option<serde_json::Value> {
        let mut value: serde_json::Value = serde_json::from_str(text).ok()?;
        for worker in value.as_array_mut()? {
            for key in ["pid", "rss", "uptime"] {
                worker.as_object_mut()?.remove(key)?.as_u64()?;
            }
        }
        Some(value)
    };
    strip(got).is_some() && strip(got) == strip(readme)
}

#[test]
fn the_readmes_quick_start_runs_as_written() {
    let dir = TempDir::new("quick-start");
    let socket = dir.0.join("arbord.sock");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../supervisor/demo/arbord.toml");
    let mut arbord = Command::new(binary("test-arbord"))
        .arg("--config")
        .arg(&config)
        .env("ARBOR_SOCKET", &socket)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = |socket: &Path| {
        std::os::unix::net::UnixStream::connect(socket).is_ok()
            && arborctl(socket, &["ps".into()])
                .iter()
                .filter(|l| l.contains(" running "))
                .count()
                == 2
    };
    wait_until("the demo's two workers running", || running(&socket));
    for (args, expected) in readme_session() {
        let got = arborctl(&socket, &args);
        let same = got.len() == expected.len()
            && got.iter().zip(&expected).all(|(g, r)| {
                g == r
                    || (args == ["ps"] && same_ps_row(g, r))
                    || (args == ["--json", "ps"] && same_json(g, r))
            });
        assert!(
            same,
            "arborctl {}:\nREADME:\n{}\ngot:\n{}",
            args.join(" "),
            expected.join("\n"),
            got.join("\n")
        );
    }
    // The session ends with `arborctl shutdown`: arbord exits 0.
    let status = wait_or_kill(&mut arbord, LIMIT, "arbord after the README's shutdown");
    assert!(status.success(), "{status}");
}

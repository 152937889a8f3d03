//! What a worker gets, decided before anything is made: its fds and their
//! numbers, its environment, its argv and what to exec. Pure: no fd is
//! opened and nothing is forked here, so the spawn contract is unit-tested
//! below without a process.
//!
//! The contract: a worker gets the sockets it was given at fds 3 and up,
//! exactly as systemd's socket activation passes them
//! (`SD_LISTEN_FDS_START`, with `LISTEN_FDS`, `LISTEN_FDNAMES` and its own
//! `LISTEN_PID`), so a server written for systemd runs unchanged; then,
//! when it speaks the protocol, its channel right after them, at the fd
//! `ARBOR_CHANNEL_FD` names (fd 3 when it has no sockets), and for a
//! sub-worker its tree link after that (`ARBOR_TREE_FD`);
//! `ARBOR_WORKER_ID` and `ARBOR_WORKER_NAME`; stdin from `/dev/null`;
//! stdout and stderr as its spec says; nothing else (every other fd of the
//! supervisor is close-on-exec). A program that does not speak the
//! protocol gets no channel at all.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use arbor_protocol::spec::{SpecParts, CONTRACT_VARIABLES, SPAWN_VARIABLES};

use crate::error::{Error, Result};
use crate::spec::{Output, Program, WhenFull};

/// The fd number of the first socket handed to a worker: systemd's
/// `SD_LISTEN_FDS_START`.
pub const FIRST_LISTEN_FD: RawFd = 3;

/// The fd number of the channel of a worker handed `listen_count` sockets:
/// right after them (`ARBOR_CHANNEL_FD`).
pub fn channel_fd(listen_count: usize) -> RawFd {
    FIRST_LISTEN_FD + listen_count as RawFd
}

/// What one fd of the worker is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The worker's end of its channel.
    Channel,
    /// The worker's end of its tree link (a sub-worker that speaks the
    /// protocol: its channel leads to its parent worker).
    TreeLink,
    /// `/dev/null`, for reading and writing.
    Null,
    /// The write end of a pipe whose read end the supervisor reads: the
    /// captured stdout at fd 1, stderr at fd 2.
    Capture,
    /// The spec's listen socket with this index.
    Listen(usize),
}

/// A worker's start, decided.
#[derive(Debug)]
pub(crate) struct Plan {
    /// What to exec, and with what.
    pub(crate) exec: Exec,
    /// Which fds to make, and where they go.
    pub(crate) layout: Layout,
    /// What its tasks need to know of it.
    pub(crate) settings: Settings,
}

/// What the child execs: every byte prepared before the fork.
#[derive(Debug)]
pub(crate) struct Exec {
    pub(crate) path: CString,
    pub(crate) argv: Vec<CString>,
    pub(crate) envp: Vec<CString>,
    /// Whether the child appends its own `LISTEN_PID` (it has sockets).
    pub(crate) listen_pid: bool,
    pub(crate) cwd: Option<CString>,
}

/// The worker's fds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Each fd it gets, what it is made from and its number in the worker,
    /// in the order they are made.
    pub(crate) fds: Vec<(Source, RawFd)>,
    /// Whether a channel socketpair is made. A worker that speaks the
    /// protocol gets one end ([`Source::Channel`]); a plain sub-worker gets
    /// none, but its parent still gets our end in SpawnResult (the one fd
    /// the frame carries), whose peer is closed, so the parent reads
    /// end-of-channel and then the exit.
    pub(crate) channel: bool,
}

/// What a worker's tasks need to know of it, from its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) name: String,
    /// Where its stdout and stderr go.
    pub(crate) outputs: [Output; 2],
    pub(crate) speaks_protocol: bool,
    pub(crate) queue_limit: usize,
    pub(crate) when_full: WhenFull,
}

/// A sub-worker's `Output::Inherit` means its parent worker's stream
/// (`parents`, stdout and stderr), not the supervisor's.
pub(crate) fn inherit_outputs(spec: &mut SpecParts, parents: [Output; 2]) {
    for (output, parents) in [&mut spec.stdout, &mut spec.stderr]
        .into_iter()
        .zip(parents)
    {
        if *output == Output::Inherit {
            *output = parents;
        }
    }
}

impl Plan {
    /// The plan for worker `id` (a sub-worker when `sub`) started from
    /// `spec`, handed sockets named `listen` (in order).
    pub(crate) fn new(spec: &SpecParts, listen: &[String], id: u64, sub: bool) -> Result<Self> {
        let listen_count = listen.len();
        let mut env = environment(spec, id)?;
        if listen_count > 0 {
            let names: Vec<&str> = listen.iter().map(String::as_str).collect();
            env.push(cstring_pair("LISTEN_FDS", &listen_count.to_string())?);
            env.push(cstring_pair("LISTEN_FDNAMES", &names.join(":"))?);
        }
        let mut fds = Vec::new();
        // The channel follows the listen fds.
        let channel_at = channel_fd(listen_count);
        if spec.speaks_protocol {
            env.push(cstring_pair("ARBOR_CHANNEL_FD", &channel_at.to_string())?);
            fds.push((Source::Channel, channel_at));
        }
        // A sub-worker's channel is its parent worker's; its own Spawn frames
        // come over a second socket, right after its channel.
        if sub && spec.speaks_protocol {
            let at = channel_at + 1;
            env.push(cstring_pair("ARBOR_TREE_FD", &at.to_string())?);
            fds.push((Source::TreeLink, at));
        }
        let (path, argv0) = resolve(spec)?;
        let mut argv = vec![argv0];
        for arg in &spec.args {
            argv.push(cstring(arg.as_bytes(), "an argument")?);
        }
        let cwd = spec
            .cwd
            .as_deref()
            .map(|c| cstring(c.as_os_str().as_bytes(), "the working directory"))
            .transpose()?;
        fds.push((Source::Null, 0));
        for (output, target) in [(spec.stdout, 1), (spec.stderr, 2)] {
            match output {
                Output::Inherit => {}
                Output::Null => fds.push((Source::Null, target)),
                Output::Capture => fds.push((Source::Capture, target)),
            }
        }
        for i in 0..listen_count {
            fds.push((Source::Listen(i), FIRST_LISTEN_FD + i as RawFd));
        }
        Ok(Self {
            exec: Exec {
                path,
                argv,
                envp: env,
                listen_pid: listen_count > 0,
                cwd,
            },
            layout: Layout {
                fds,
                channel: sub || spec.speaks_protocol,
            },
            settings: Settings {
                name: spec.name.clone(),
                outputs: [spec.stdout, spec.stderr],
                speaks_protocol: spec.speaks_protocol,
                queue_limit: spec.queue_limit,
                when_full: spec.when_full,
            },
        })
    }
}

fn cstring(bytes: &[u8], what: &'static str) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::Nul { what })
}

fn cstring_pair(key: &str, value: &str) -> Result<CString> {
    cstring(format!("{key}={value}").as_bytes(), "an environment entry")
}

/// The worker's environment, as `KEY=value` strings.
fn environment(spec: &SpecParts, id: u64) -> Result<Vec<CString>> {
    let spawn_variable = |k: &OsStr| SPAWN_VARIABLES.iter().any(|n| OsStr::new(n) == k);
    let mut vars: Vec<(OsString, OsString)> = if spec.clear_env {
        Vec::new()
    } else {
        std::env::vars_os()
            .filter(|(k, _)| !spawn_variable(k))
            .collect()
    };
    // A spec cannot move the channel or the listen fds by setting them.
    let contract = |k: &OsStr| CONTRACT_VARIABLES.iter().any(|n| OsStr::new(n) == k);
    for (key, value) in spec.env.iter().filter(|(k, _)| !contract(k)) {
        vars.retain(|(k, _)| k != key);
        if let Some(value) = value {
            vars.push((key.clone(), value.clone()));
        }
    }
    vars.push(("ARBOR_WORKER_ID".into(), id.to_string().into()));
    vars.push(("ARBOR_WORKER_NAME".into(), spec.name.clone().into()));
    if let Program::Entry(entry) = &spec.program {
        vars.push(("ARBOR_ENTRY".into(), entry.into()));
    }
    vars.into_iter()
        .map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            cstring(&entry, "an environment entry")
        })
        .collect()
}

/// The path to exec and argv[0].
fn resolve(spec: &SpecParts) -> Result<(CString, CString)> {
    match &spec.program {
        Program::Entry(_) => {
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
            Ok((
                cstring(b"/proc/self/exe", "the program path")?,
                cstring(exe.as_os_str().as_bytes(), "the program path")?,
            ))
        }
        Program::Path(path) => {
            let found = if path.as_os_str().as_bytes().contains(&b'/') {
                path.clone()
            } else {
                search_path(spec, path).ok_or_else(|| Error::ProgramNotFound {
                    program: path.clone(),
                })?
            };
            Ok((
                cstring(found.as_os_str().as_bytes(), "the program path")?,
                cstring(path.as_os_str().as_bytes(), "the program path")?,
            ))
        }
    }
}

/// Looks `name` up in the worker's `PATH` (its spec's, else the supervisor's).
fn search_path(spec: &SpecParts, name: &Path) -> Option<PathBuf> {
    let from_spec = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .and_then(|(_, v)| v.clone());
    let path = from_spec.or_else(|| {
        if spec.clear_env {
            None
        } else {
            std::env::var_os("PATH")
        }
    })?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::spec::WorkerSpec;

    /// A spec with an empty inherited environment.
    fn spec(speaks_protocol: bool) -> SpecParts {
        WorkerSpec::program("/bin/true")
            .env_clear()
            .speaks_protocol(speaks_protocol)
            .into_parts()
    }

    /// The names of listen sockets.
    fn names(sockets: &[&str]) -> Vec<String> {
        sockets.iter().map(|name| name.to_string()).collect()
    }

    /// The value of `key` in the plan's environment.
    fn var<'a>(plan: &'a Plan, key: &str) -> Option<&'a str> {
        plan.exec.envp.iter().find_map(|entry| {
            let entry = entry.to_str().unwrap();
            entry.strip_prefix(key)?.strip_prefix('=')
        })
    }

    #[test]
    fn listen_fds_come_from_3_in_order_with_their_names() {
        let plan = Plan::new(&spec(false), &names(&["http", "admin"]), 7, false).unwrap();
        assert_eq!(
            plan.layout.fds,
            [
                (Source::Null, 0),
                (Source::Listen(0), 3),
                (Source::Listen(1), 4),
            ]
        );
        assert_eq!(var(&plan, "LISTEN_FDS"), Some("2"));
        assert_eq!(var(&plan, "LISTEN_FDNAMES"), Some("http:admin"));
        assert!(plan.exec.listen_pid);
        assert_eq!(var(&plan, "ARBOR_WORKER_ID"), Some("7"));
    }

    #[test]
    fn a_plain_worker_gets_no_channel() {
        let plan = Plan::new(&spec(false), &names(&["http"]), 1, false).unwrap();
        assert!(!plan.layout.channel);
        assert!(!plan.layout.fds.iter().any(|(s, _)| *s == Source::Channel));
        assert_eq!(var(&plan, "ARBOR_CHANNEL_FD"), None);
        assert_eq!(var(&plan, "ARBOR_TREE_FD"), None);
    }

    #[test]
    fn the_channel_comes_right_after_the_listen_fds() {
        let plan = Plan::new(&spec(true), &names(&["http", "admin"]), 1, false).unwrap();
        assert!(plan.layout.channel);
        assert!(plan.layout.fds.contains(&(Source::Channel, 5)));
        assert_eq!(channel_fd(2), 5);
        assert_eq!(var(&plan, "ARBOR_CHANNEL_FD"), Some("5"));
        assert_eq!(var(&plan, "ARBOR_TREE_FD"), None);
        let alone = Plan::new(&spec(true), &names(&[]), 1, false).unwrap();
        assert!(alone.layout.fds.contains(&(Source::Channel, 3)));
        assert!(!alone.exec.listen_pid);
        assert_eq!(var(&alone, "LISTEN_FDS"), None);
    }

    #[test]
    fn a_sub_workers_tree_link_comes_right_after_its_channel() {
        let plan = Plan::new(&spec(true), &names(&["http"]), 1, true).unwrap();
        assert!(plan.layout.fds.contains(&(Source::Channel, 4)));
        assert!(plan.layout.fds.contains(&(Source::TreeLink, 5)));
        assert_eq!(var(&plan, "ARBOR_CHANNEL_FD"), Some("4"));
        assert_eq!(var(&plan, "ARBOR_TREE_FD"), Some("5"));
    }

    #[test]
    fn a_plain_sub_worker_gets_no_fd_of_its_channel_but_its_parent_gets_one() {
        let plan = Plan::new(&spec(false), &names(&[]), 1, true).unwrap();
        assert!(plan.layout.channel);
        assert_eq!(plan.layout.fds, [(Source::Null, 0)]);
        assert_eq!(var(&plan, "ARBOR_CHANNEL_FD"), None);
    }

    #[test]
    fn stdin_is_null_and_stdout_and_stderr_are_as_the_spec_says() {
        let mut parts = spec(true);
        parts.stdout = Output::Capture;
        parts.stderr = Output::Null;
        let plan = Plan::new(&parts, &[], 1, false).unwrap();
        assert_eq!(
            plan.layout.fds,
            [
                (Source::Channel, 3),
                (Source::Null, 0),
                (Source::Capture, 1),
                (Source::Null, 2),
            ]
        );
        assert_eq!(plan.settings.outputs, [Output::Capture, Output::Null]);
    }

    #[test]
    fn a_spec_cannot_move_the_channel_or_the_listen_fds() {
        let parts = WorkerSpec::program("/bin/true")
            .env_clear()
            .env("ARBOR_CHANNEL_FD", "9")
            .env("LISTEN_FDS", "4")
            .env("KEPT", "yes")
            .into_parts();
        let plan = Plan::new(&parts, &[], 1, false).unwrap();
        assert_eq!(var(&plan, "ARBOR_CHANNEL_FD"), Some("3"));
        assert_eq!(var(&plan, "LISTEN_FDS"), None);
        assert_eq!(var(&plan, "KEPT"), Some("yes"));
    }

    #[test]
    fn a_sub_workers_inherit_means_its_parents_stream() {
        let mut parts = spec(true);
        parts.stderr = Output::Null;
        inherit_outputs(&mut parts, [Output::Capture, Output::Capture]);
        assert_eq!(
            [parts.stdout, parts.stderr],
            [Output::Capture, Output::Null]
        );
    }

    #[test]
    fn argv_starts_with_the_program_as_given() {
        let parts = WorkerSpec::program("/bin/true").arg("-x").into_parts();
        let plan = Plan::new(&parts, &[], 1, false).unwrap();
        assert_eq!(plan.exec.path.to_str(), Ok("/bin/true"));
        let argv: Vec<_> = plan.exec.argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(argv, ["/bin/true", "-x"]);
    }
}

//! What arbor reads from /proc.

/// Resident memory of process `pid` in KiB (`VmRSS`), or 0 when unknown
/// (the process is gone, or /proc is not mounted). `pid` may be `"self"`.
pub fn rss_kib(pid: impl std::fmt::Display) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// How many established connections each process of `pids` holds on
/// `addrs`: TCP connections whose local port is one of theirs, and accepted
/// Unix connections on one of their paths. The socket tables are read once,
/// from arbord's own network namespace (which its workers share), then each
/// process's fd table; 0 for a process that is gone (or pid 0).
pub fn established(pids: &[u32], addrs: &[crate::listen::ListenAddr]) -> Vec<u32> {
    use crate::listen::ListenAddr;
    use std::collections::HashSet;
    let ports: Vec<String> = addrs
        .iter()
        .filter_map(|a| match a {
            ListenAddr::Tcp(tcp) => Some(format!(":{:04X}", tcp.port())),
            ListenAddr::Unix(_) => None,
        })
        .collect();
    let paths: Vec<String> = addrs
        .iter()
        .filter_map(|a| match a {
            ListenAddr::Unix(path) => Some(path.to_string_lossy().into_owned()),
            ListenAddr::Tcp(_) => None,
        })
        .collect();
    // Inodes of the sockets connected on those addresses.
    let mut connected: HashSet<String> = HashSet::new();
    let table =
        |name: &str| std::fs::read_to_string(format!("/proc/self/net/{name}")).unwrap_or_default();
    if !ports.is_empty() {
        for text in [table("tcp"), table("tcp6")] {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() > 9
                    && fields[3] == "01"
                    && ports.iter().any(|p| fields[1].ends_with(p.as_str()))
                {
                    connected.insert(fields[9].to_string());
                }
            }
        }
    }
    if !paths.is_empty() {
        // Num RefCount Protocol Flags Type St Inode Path; St 03 = connected.
        for line in table("unix").lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 7 && fields[5] == "03" && paths.iter().any(|p| p == fields[7]) {
                connected.insert(fields[6].to_string());
            }
        }
    }
    pids.iter()
        .map(|pid| {
            if *pid == 0 || connected.is_empty() {
                return 0;
            }
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                return 0;
            };
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|link| {
                    let link = link.to_string_lossy();
                    link.strip_prefix("socket:[")
                        .and_then(|l| l.strip_suffix(']'))
                        .is_some_and(|inode| connected.contains(inode))
                })
                .count() as u32
        })
        .collect()
}

/// This process's children, from `/proc/self/task/*/children` (each thread
/// lists the children it forked, and the orphans re-parented to it).
pub fn children() -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut children: Vec<u32> = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    children.sort_unstable();
    children.dedup();
    children
}

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

/// How many established connections process `pid` holds on `addrs`: TCP
/// connections whose local port is one of theirs, and accepted Unix
/// connections on one of their paths. Read from its fd table and its
/// network namespace's `/proc/<pid>/net/{tcp,tcp6,unix}`; 0 when unknown.
pub fn established(pid: u32, addrs: &[crate::listen::ListenAddr]) -> u32 {
    use crate::listen::ListenAddr;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
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
    let mut count = 0;
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        for fields in text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
        {
            if fields.len() > 9
                && fields[3] == "01"
                && ports.iter().any(|p| fields[1].ends_with(p.as_str()))
                && inodes.contains(fields[9])
            {
                count += 1;
            }
        }
    }
    if !paths.is_empty() {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
        // Num RefCount Protocol Flags Type St Inode Path; St 03 = connected.
        for fields in text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
        {
            if fields.len() > 7
                && fields[5] == "03"
                && paths.iter().any(|p| p == fields[7])
                && inodes.contains(fields[6])
            {
                count += 1;
            }
        }
    }
    count
}

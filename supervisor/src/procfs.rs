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

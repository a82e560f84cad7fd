//! A process's footprint read from `/proc` (Linux): resident memory and CPU
//! time, of the bench itself, the workers it starts, or the local broker.

/// A `kB` line of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`).
pub(crate) fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// A `kB` line of `/proc/<pid>/status` in MB (MiB).
pub(crate) fn status_mb(pid: u32, key: &str) -> Option<f64> {
    status_kb(pid, key).map(|kb| kb as f64 / 1024.0)
}

/// utime + stime of `/proc/<pid>/stat`, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// `sysconf(_SC_CLK_TCK)`, read once through `getconf` (100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// The local RabbitMQ's pid (a process named `beam.smp`), to report the
/// broker's CPU time when it runs on this machine.
pub(crate) fn local_broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "beam.smp")
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(super::status_kb(me, "VmRSS:").is_some_and(|kb| kb > 0));
        assert!(super::status_mb(me, "VmHWM:").is_some_and(|mb| mb > 0.0));
        assert!(super::cpu_seconds(me).is_some_and(|s| s >= 0.0));
        assert_eq!(super::status_kb(me, "NoSuchLine:"), None);
    }
}

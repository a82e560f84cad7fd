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

/// The CPU time of every process named one of `names` (a database server
/// and its backends), summed; `None` when there is none.
pub(crate) fn cpu_seconds_named(names: &[&str]) -> Option<f64> {
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| names.contains(&c.trim()))
        })
        .collect();
    (!pids.is_empty()).then(|| pids.into_iter().filter_map(cpu_seconds).sum())
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

/// The pid of the local RabbitMQ listening on `port` (a process named
/// `beam.smp` holding the listening socket), to report the broker's CPU time
/// and memory when it runs on this machine. Other RabbitMQ nodes on the
/// machine (tests start private ones) are not mistaken for it.
pub(crate) fn local_broker_pid(port: u16) -> Option<u32> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "beam.smp")
        })
        .find(|pid| holds_socket(*pid, &inodes))
}

/// Inodes of the TCP sockets listening on `port` (IPv4 and IPv6).
fn listening_inodes(port: u16) -> Vec<String> {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    // local_address, state 0A = LISTEN, inode.
                    let listening = cols.get(1)?.ends_with(&port) && *cols.get(3)? == "0A";
                    listening.then(|| cols.get(9).map(|i| (*i).to_owned()))?
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether `pid` has one of the socket `inodes` open.
fn holds_socket(pid: u32, inodes: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            let t = target.to_string_lossy();
            inodes.iter().any(|i| t == format!("socket:[{i}]"))
        })
    })
}

/// The port of an `amqp://` or `amqps://` URL (5672 or 5671 by default).
pub(crate) fn amqp_port(url: &str) -> u16 {
    url.parse::<lapin::uri::AMQPUri>()
        .map(|u| u.authority.port)
        .unwrap_or(if url.starts_with("amqps") { 5671 } else { 5672 })
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
        let name = std::fs::read_to_string(format!("/proc/{me}/comm")).expect("comm");
        assert!(super::cpu_seconds_named(&[name.trim()]).is_some_and(|s| s >= 0.0));
        assert_eq!(super::cpu_seconds_named(&["no-such-process-name"]), None);
    }

    #[test]
    fn finds_the_listener_of_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let inodes = super::listening_inodes(port);
        assert_eq!(inodes.len(), 1, "{inodes:?}");
        assert!(super::holds_socket(std::process::id(), &inodes));
        drop(listener);
        assert!(super::listening_inodes(port).is_empty());
        // Not a RabbitMQ: this process is no `beam.smp`.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(super::local_broker_pid(port), None);
    }

    #[test]
    fn amqp_ports() {
        assert_eq!(
            super::amqp_port("amqp://guest:guest@127.0.0.1:5673/%2f"),
            5673
        );
        assert_eq!(super::amqp_port("amqp://127.0.0.1"), 5672);
        assert_eq!(super::amqp_port("amqps://broker.example"), 5671);
    }
}

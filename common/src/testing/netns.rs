//! Hosts for multi-host tests: Linux network namespaces, each linked to the
//! root namespace by a veth pair with a /30 of its own in `10.201.0.0/16`
//! (the root end `.1`, the host `.2`). A process run in a host
//! ([`Host::command`]) reaches the machine's services only through that
//! link, at [`Host::gateway`] (services that listen on loopback only are
//! offered there by a [`crate::netfault::Proxy`] started with
//! [`crate::netfault::Proxy::start_on`]); [`Host::partition`] cuts the link
//! silently (link down: packets are dropped, nobody gets a reset) and
//! [`Host::heal`] restores it.
//!
//! Needs root and the `ip` tool (iproute2). Every namespace and link is
//! removed when its [`Host`] is dropped, also when a test panics; those of
//! a test process that was killed are removed by the next one that makes
//! hosts (their names carry the pid of the process that made them).
//!
//! ```no_run
//! use celeriac_common::testing::netns::Hosts;
//!
//! let hosts = Hosts::create(2)?;
//! let a = hosts.host(0);
//! let out = a.command("ip").args(["-4", "addr"]).output()?;
//! a.partition()?;
//! a.heal()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of the namespaces made here: `celeriac-<pid>-<set>-<host>`.
const NETNS_PREFIX: &str = "celeriac-";
/// Prefix of the root ends of the links: `cf<pid hex>-<set>-<host>`.
const LINK_PREFIX: &str = "cf";
/// Held while choosing addresses and names, so that test processes
/// running at once do not pick the same subnet.
const LOCK_FILE: &str = "/tmp/celeriac-netns.lock";

/// Hosts made together; each is removed when this is dropped.
#[derive(Debug)]
pub struct Hosts {
    hosts: Vec<Host>,
}

/// One host: a network namespace and its link to the root namespace.
#[derive(Debug)]
pub struct Host {
    netns: String,
    link: String,
    gateway: Ipv4Addr,
    addr: Ipv4Addr,
}

impl Hosts {
    /// Makes `n` hosts, each with a fresh namespace, link and subnet.
    pub fn create(n: usize) -> io::Result<Hosts> {
        static SETS: AtomicU32 = AtomicU32::new(0);
        let set = SETS.fetch_add(1, Ordering::SeqCst) & 0xff;
        let pid = std::process::id();
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)?;
        lock.lock()?;
        remove_stale();
        let mut taken = subnets_in_use()?;
        let mut hosts = Hosts { hosts: Vec::new() };
        for i in 0..n {
            let Some(subnet) = (0..16_384u32).find(|s| !taken.contains(s)) else {
                return Err(io::Error::other("no free /30 left in 10.201.0.0/16"));
            };
            taken.insert(subnet);
            let base = u32::from(Ipv4Addr::new(10, 201, 0, 0)) + subnet * 4;
            let host = Host {
                netns: format!("{NETNS_PREFIX}{pid}-{set}-{i}"),
                link: format!("{LINK_PREFIX}{pid:x}-{set:x}-{i:x}"),
                gateway: Ipv4Addr::from(base + 1),
                addr: Ipv4Addr::from(base + 2),
            };
            // Pushed first: a host half made is removed all the same.
            hosts.hosts.push(host);
            hosts.hosts[i].make()?;
        }
        Ok(hosts)
    }

    /// Host number `i` (from 0).
    ///
    /// # Panics
    /// If there is no such host.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// All the hosts.
    pub fn all(&self) -> &[Host] {
        &self.hosts
    }
}

impl Host {
    fn make(&self) -> io::Result<()> {
        let inner = format!("{}i", self.link);
        let cidr = |a: Ipv4Addr| format!("{a}/30");
        ip(&["netns", "add", &self.netns])?;
        ip(&[
            "link", "add", &self.link, "type", "veth", "peer", "name", &inner,
        ])?;
        ip(&["link", "set", &inner, "netns", &self.netns])?;
        ip(&["addr", "add", &cidr(self.gateway), "dev", &self.link])?;
        ip(&["link", "set", &self.link, "up"])?;
        let ns = ["-n", self.netns.as_str()];
        ip(&[&ns[..], &["addr", "add", &cidr(self.addr), "dev", &inner]].concat())?;
        ip(&[&ns[..], &["link", "set", &inner, "up"]].concat())?;
        ip(&[&ns[..], &["link", "set", "lo", "up"]].concat())
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.netns
    }

    /// The host's own address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The root namespace's end of the host's link: what the host reaches
    /// the machine's services at.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// A command that runs `program` inside the host (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    /// Cuts the host off: its link goes down, and packets either way are
    /// dropped without a word (no reset, no ICMP), as in a partition.
    pub fn partition(&self) -> io::Result<()> {
        ip(&["link", "set", &self.link, "down"])
    }

    /// Ends [`Host::partition`]: connections that survived it go on.
    pub fn heal(&self) -> io::Result<()> {
        ip(&["link", "set", &self.link, "up"])
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the root end removes the pair at once, even while a
        // process still holds the namespace open.
        let _ = ip(&["link", "del", &self.link]);
        let _ = ip(&["netns", "del", &self.netns]);
    }
}

/// Runs `ip args`; its stderr becomes the error.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// The /30s of `10.201.0.0/16` (numbered from 0) that root addresses use.
fn subnets_in_use() -> io::Result<HashSet<u32>> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()?;
    let base = u32::from(Ipv4Addr::new(10, 201, 0, 0));
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.split_once('/')?.0.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .filter(|a| a & 0xffff_0000 == base)
        .map(|a| (a - base) / 4)
        .collect())
}

/// Removes the namespaces and links of test processes that are gone.
fn remove_stale() {
    let dead = |pid: Option<u32>| {
        pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    };
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(NETNS_PREFIX)
                .and_then(|rest| rest.split('-').next()?.parse().ok());
            if dead(pid) {
                let _ = ip(&["netns", "del", &name]);
            }
        }
    }
    let Ok(out) = Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "12: cf1a2b-0-1@if11: <...>"
        let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) else {
            continue;
        };
        let pid = name
            .strip_prefix(LINK_PREFIX)
            .and_then(|rest| u32::from_str_radix(rest.split('-').next()?, 16).ok());
        if dead(pid) && name.matches('-').count() == 2 {
            let _ = ip(&["link", "del", name]);
        }
    }
}

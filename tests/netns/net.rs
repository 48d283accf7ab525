//! The network: a Linux bridge in a namespace of its own (the "switch"),
//! and one network namespace per host on it, joined by a veth pair, each
//! host with its own address from 192.0.2.0/24 (RFC 5737's documentation
//! range). Nothing is added to the root namespace (whose own network may
//! use that range too): the test process talks to the hosts from a thread
//! that joined the `console` host's namespace.
//!
//! Every namespace's name carries this run's suffix (`lnt-<pid in hex>-`),
//! and a new run first removes what a dead run of this harness left behind,
//! so a panic or a kill never leaves namespaces for long. Partitions are a
//! host's link set down (its veth, on the switch's side) or, for a cut from
//! some peers only, blackhole routes to them inside the host's namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// What every namespace this harness makes starts with.
const PREFIX: &str = "lnt";

/// Runs `ip` with `args`; an error carries its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output().context("run ip (install iproute2)")?;
    if !out.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why this harness cannot run here, if it cannot: it needs root (to make
/// namespaces and links), `ip` and `etcd`.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: making network namespaces needs CAP_NET_ADMIN".into());
    }
    if Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return Some("etcd is not installed (apt-get install etcd-server)".into());
    }
    let probe = format!("{PREFIX}-probe-{:x}", std::process::id());
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!("cannot make a network namespace: {e}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    None
}

/// Moves the calling thread into host namespace `ns` (threads it starts
/// afterwards, such as a tokio runtime's workers, are there too).
pub fn join_namespace(ns: &str) -> anyhow::Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).with_context(|| format!("open namespace {ns}"))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("join namespace {ns}"))
}

/// One host: a namespace with one interface, `eth0`, at `addr`.
pub struct Host {
    pub name: String,
    pub ns: String,
    pub addr: Ipv4Addr,
    /// The veth end on the bridge, in the switch's namespace.
    veth: String,
}

impl Host {
    /// `http://ADDR:PORT`.
    pub fn url(&self, port: u16) -> String {
        format!("http://{}:{port}", self.addr)
    }
}

/// The switch and the hosts; all removed on drop.
pub struct Net {
    switch: String,
    hosts: Vec<Host>,
}

impl Net {
    /// Makes the switch and one namespace per `(name, last octet)`.
    pub fn new(hosts: &[(&str, u8)]) -> anyhow::Result<Net> {
        sweep_stale();
        let run = format!("{PREFIX}-{:x}", std::process::id());
        let switch = format!("{run}-switch");
        ip(&["netns", "add", &switch])?;
        let mut net = Net { switch: switch.clone(), hosts: Vec::new() };
        ip(&["-n", &switch, "link", "add", "name", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for (i, (name, octet)) in hosts.iter().enumerate() {
            let ns = format!("{run}-{name}");
            let veth = format!("v{i}");
            let addr = Ipv4Addr::new(192, 0, 2, *octet);
            ip(&["netns", "add", &ns])?;
            net.hosts.push(Host { name: name.to_string(), ns: ns.clone(), addr, veth: veth.clone() });
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &switch, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &switch, "link", "set", &veth, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &veth, "up"])?;
        }
        Ok(net)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Takes the host's link down (it is cut from everyone) or up again.
    pub fn set_link(&self, host: &str, up: bool) -> anyhow::Result<()> {
        let h = self.host(host);
        ip(&["-n", &self.switch, "link", "set", &h.veth, if up { "up" } else { "down" }]).map(drop)
    }

    /// Cuts `host` from `peers` only (blackhole routes in its namespace:
    /// its packets to them are dropped, so is every answer it would send),
    /// or, with `cut = false`, heals that.
    pub fn set_cut(&self, host: &str, peers: &[&str], cut: bool) -> anyhow::Result<()> {
        let ns = self.host(host).ns.clone();
        for peer in peers {
            let target = format!("{}/32", self.host(peer).addr);
            ip(&["-n", &ns, "route", if cut { "add" } else { "del" }, "blackhole", &target])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            remove_namespace(&h.ns);
        }
        remove_namespace(&self.switch);
    }
}

/// Kills what still runs in namespace `ns`, then removes it.
fn remove_namespace(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _ = ip(&["netns", "del", ns]);
}

/// The run (pid) a namespace of this harness belongs to: `lnt-<hex>-…`.
fn run_of(name: &str) -> Option<u32> {
    let hex = name.strip_prefix(PREFIX)?.strip_prefix('-')?.split('-').next()?;
    u32::from_str_radix(hex, 16).ok()
}

/// Removes the namespaces of runs whose process is gone.
fn sweep_stale() {
    let dead = |name: &str| run_of(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
    if let Ok(list) = ip(&["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if ns.starts_with(PREFIX) && dead(ns) {
                eprintln!("removing namespace {ns} left by an earlier run");
                remove_namespace(ns);
            }
        }
    }
}

/// A process started in a host's namespace (`ip netns exec`), killed on
/// drop; its output goes to `log`.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program args` on `host`; stdout is piped when `stdout_piped`
    /// (to read the first line), else it goes to the log too.
    pub fn start(host: &Host, name: &str, program: &Path, args: &[String], log: PathBuf) -> anyhow::Result<Proc> {
        let file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &host.ns])
            .arg(program)
            .args(args)
            .env("LIDO_LOG", "info,lidod=debug")
            .env("NO_COLOR", "1")
            .env_remove("LIDO_CLUSTER_SECRET")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {name} on {}", host.name))?;
        Ok(Proc { name: name.to_string(), child: Some(child), log })
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last lines of its log (for a failure message).
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

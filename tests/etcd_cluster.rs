//! A real etcd cluster for the tests: `etcd` processes on 127.0.0.1, each
//! with its own data directory, killed when dropped.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a member may take to answer healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    /// Holds every member's data directory and log (kept after a failed test).
    dir: Option<tempfile::TempDir>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?.local_addr()?.port())
}

/// Whether etcd at `port` says it is healthy (it has a leader).
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl EtcdCluster {
    /// Starts `members` etcd members as one new cluster and waits (at most
    /// 30 s) until every one is healthy.
    pub fn start(members: usize) -> anyhow::Result<EtcdCluster> {
        if Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            bail!("etcd is not installed; the cluster tests run a real etcd: apt-get install etcd-server");
        }
        if members == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        let dir = tempfile::Builder::new().prefix("lido-etcd-").tempdir().context("make a temp dir for etcd")?;
        let mut list = Vec::new();
        for i in 0..members {
            let name = format!("m{i}");
            let data_dir = dir.path().join(&name);
            let log = dir.path().join(format!("{name}.log"));
            list.push(Member { name, client_port: free_port()?, peer_port: free_port()?, data_dir, log, child: None });
        }
        let initial_cluster =
            list.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port)).collect::<Vec<_>>().join(",");
        let token = format!("lido-test-{}-{}", std::process::id(), list[0].client_port);
        let mut cluster = EtcdCluster { members: list, initial_cluster, token, dir: Some(dir) };
        for i in 0..members {
            cluster.spawn(i)?;
        }
        for i in 0..members {
            cluster.wait_healthy(i)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let (initial_cluster, token) = (self.initial_cluster.clone(), self.token.clone());
        let m = &mut self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log = File::options().create(true).append(true).open(&m.log).context("open the etcd log")?;
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster, "--initial-cluster-token", &token])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start etcd")?;
        m.child = Some(child);
        Ok(())
    }

    fn wait_healthy(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            let m = &mut self.members[i];
            if healthy(m.client_port) {
                return Ok(());
            }
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                bail!("etcd member {} exited ({status}); its log:\n{log}", m.name);
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                bail!("etcd member {} not healthy within {HEALTHY_WITHIN:?}; its log:\n{log}", m.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every member's client URL (`http://127.0.0.1:PORT`), for `--etcd`.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client_port)).collect()
    }

    /// Kills member `i` with SIGKILL (its data stays for a restart).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data and ports; waits until healthy.
    pub fn restart_member(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_member(i);
        self.spawn(i)?;
        self.wait_healthy(i)
    }

    /// Where the members' data directories and logs are.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.as_ref().map_or(std::path::Path::new(""), |d| d.path())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
        if let (true, Some(dir)) = (std::thread::panicking(), self.dir.take()) {
            // Keep the logs of a failed test.
            eprintln!("etcd logs kept in {}", dir.keep().display());
        }
    }
}

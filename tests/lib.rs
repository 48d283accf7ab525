//! Test support: [`TestDaemon`] starts a real `lidod` process on a free
//! loopback port and stops it (and so its children) when dropped.
//! The tests themselves live in `it/`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lido_shared::client::LidoClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub mod etcd_cluster;
pub mod exchange;
pub mod kraken_fake;
pub mod kraken_node;
pub mod schwab_fake;
pub mod schwab_node;

/// The workspace's target directory for this build profile.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/it-<hash> → target/<profile>; a binary of this
    // crate (lido-bench) sits in target/<profile> itself.
    let dir = exe.parent().expect("target dir");
    if dir.ends_with("deps") { dir.parent().expect("target dir") } else { dir }.to_path_buf()
}

/// Builds the binaries the tests run, once per test process, so they are
/// never stale.
pub fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        let mut cmd = Command::new(cargo);
        // The same target selection as `cargo test --workspace`, so features
        // resolve alike and this is a no-op after the test build itself.
        cmd.args(["build", "--manifest-path", manifest, "--workspace", "--all-targets"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building lidod for the tests failed");
    });
}

/// Waits up to `within` for `child` to exit; kills it (and reaps it) if it
/// has not, and answers `None` then.
pub fn wait_child(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

pub fn lidod_path() -> PathBuf {
    ensure_built();
    bin_dir().join("lidod")
}

pub fn lidoctl_path() -> PathBuf {
    ensure_built();
    bin_dir().join("lidoctl")
}

pub fn example_path(name: &str) -> PathBuf {
    ensure_built();
    bin_dir().join("examples").join(name)
}

/// A `lidod` process on 127.0.0.1 with a free port.
pub struct TestDaemon {
    child: Option<Child>,
    pub url: String,
    pub log: PathBuf,
    /// The node's data dir (journal, paper venue state).
    pub data_dir: PathBuf,
    /// Whether the data dir is this daemon's own temporary one, removed on drop.
    owns_data_dir: bool,
}

impl TestDaemon {
    /// `lidod --listen 127.0.0.1:0` plus `args`, with a fresh temporary data
    /// dir (removed on drop); waits until it listens.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    /// Like [`TestDaemon::spawn`], with extra environment variables (which
    /// the broker processes it starts inherit).
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_from(&lidod_path(), args, env)
    }

    /// Like [`TestDaemon::spawn_with_env`], running the `lidod` at `lidod`
    /// (the benchmark's release build), on a fresh temporary data dir.
    pub fn spawn_from(lidod: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = temp_data_dir();
        let mut daemon = Self::launch(lidod, &dir, args, env);
        daemon.owns_data_dir = true;
        daemon
    }

    /// Like [`Self::spawn`] on a data dir the caller keeps (to restart a node
    /// on the same journal), with extra environment variables.
    pub fn spawn_with(data_dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(&lidod_path(), data_dir, args, env)
    }

    fn launch(lidod: &std::path::Path, data_dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = std::env::temp_dir().join(format!("lidod-test-{}-{}.log", std::process::id(), unique()));
        let log_file = std::fs::File::create(&log).expect("create log file");
        let mut child = Command::new(lidod)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .envs(env.iter().copied())
            .env("LIDO_LOG", "info,lidod=debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("start lidod");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read lidod's first line");
        let url = line
            .trim()
            .strip_prefix("lidod listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from lidod: {line:?}; log at {}", log.display()))
            .to_string();
        Self { child: Some(child), url, log, data_dir: data_dir.to_path_buf(), owns_data_dir: false }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn client(&self) -> LidoClient {
        LidoClient::new(self.url.clone()).expect("client")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        wait_child(&mut child, within)
    }

    /// Waits up to `within` for the process to exit on its own; its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL, no goodbye: what a crash looks like. Its broker children see
    /// their stdin close and exit; the data dir stays.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The daemon's log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows an order held at `point` by the debug-only
    /// test hook `LIDO_TEST_PAUSE_AT` (see `lidod/src/markets.rs`).
    pub async fn wait_for_pause(&self, point: &str, within: Duration) {
        let needle = format!("point=\"{point}\"");
        let alt = format!("point={point}");
        eventually(within, "the order held at the pause point", || async {
            let log = self.log_text();
            (log.contains("test pause") && (log.contains(&needle) || log.contains(&alt))).then_some(())
        })
        .await;
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL: its broker children see their stdin close and exit.
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
            if self.owns_data_dir {
                let _ = std::fs::remove_dir_all(&self.data_dir);
            }
        } else {
            eprintln!("lidod log kept at {}", self.log.display());
        }
    }
}

/// A GTC limit order on the `paper` market.
pub fn paper_limit(
    symbol: &str,
    side: lido_shared::model::Side,
    quantity: rust_decimal::Decimal,
    price: rust_decimal::Decimal,
    client_order_id: &str,
) -> lido_shared::api::PlaceOrder {
    lido_shared::api::PlaceOrder {
        market: "paper".into(),
        symbol: symbol.into(),
        side,
        order_type: lido_shared::model::OrderType::Limit,
        quantity,
        limit_price: Some(price),
        time_in_force: lido_shared::model::TimeInForce::Gtc,
        client_order_id: Some(client_order_id.into()),
    }
}

/// True while a process with this pid exists (and is not a zombie we own).
pub fn process_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    match stat {
        Ok(s) => !s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn sigkill(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("send SIGKILL");
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Copies a node's journal files (database, WAL, shared memory) from one
/// data dir to another, as restoring a backup would.
pub fn copy_journal(from: &std::path::Path, to: &std::path::Path) {
    for name in ["journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"] {
        let target = to.join(name);
        let _ = std::fs::remove_file(&target);
        if from.join(name).exists() {
            std::fs::copy(from.join(name), &target).unwrap();
        }
    }
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lidod-data-{}-{}", std::process::id(), unique()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp data dir");
    dir
}

pub(crate) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// One sample of a Prometheus text exposition: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// The samples of a Prometheus text exposition (version 0.0.4): comment and
/// blank lines skipped, label values unescaped. A line it cannot read fails
/// the test, with the line.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a Prometheus sample line: {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = std::collections::BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        loop {
            let (start, c) = chars.next()?;
            if c == '}' {
                rest = &body[start + 1..];
                break;
            }
            if c == ',' {
                continue;
            }
            let eq = body[start..].find("=\"")? + start;
            let key = body[start..eq].to_string();
            while chars.next().is_some_and(|(i, _)| i < eq + 1) {}
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    other => value.push(other),
                }
            }
            labels.insert(key, value);
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

/// `GET /metrics` of the node at `url`, parsed.
pub async fn scrape(url: &str) -> Vec<Sample> {
    let text = reqwest::get(format!("{url}/metrics")).await.expect("GET /metrics").text().await.expect("metrics body");
    parse_metrics(&text)
}

/// The sum of every sample named `name` whose labels include `labels`.
pub fn metric_sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines_are_read_with_their_labels() {
        let text = "# HELP x a counter\n# TYPE x counter\nx 3\n\
                    lido_orders_total{market=\"paper\",status=\"filled\"} 2\n\
                    h_bucket{broker=\"a \\\"b\\\"\",le=\"+Inf\"} 5\nh_sum{broker=\"p\"} 0.25\n";
        let samples = parse_metrics(text);
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0], Sample { name: "x".into(), labels: Default::default(), value: 3.0 });
        assert_eq!(samples[1].label("market"), Some("paper"));
        assert_eq!(samples[1].label("status"), Some("filled"));
        assert_eq!(samples[2].label("broker"), Some("a \"b\""));
        assert_eq!(samples[2].label("le"), Some("+Inf"));
        assert_eq!(metric_sum(&samples, "h_sum", &[("broker", "p")]), 0.25);
    }
}

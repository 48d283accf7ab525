//! The lidod under test: the release binaries next to the bench, and a
//! daemon whose market `crypto` routes to a kraken broker pointed at a
//! Kraken fake (as the integration tests set it up).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lido_shared::client::LidoClient;
use lido_shared::cluster::RunMode;
use lido_tests::kraken_fake::ws_urls;
use lido_tests::TestDaemon;

/// How long a daemon may take to get its broker streaming.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The daemons' log level: debug lines would be measured too.
pub const LOG_LEVEL: (&str, &str) = ("LIDO_LOG", "info");

/// Sets the order daemons' `LIDO_LOG` instead of [`LOG_LEVEL`], for a
/// diagnostic run (e.g. `info,tower_http=debug` stamps each request's
/// arrival and answer); the figures of such a run include the extra lines.
pub const LOG_OVERRIDE: &str = "LIDO_BENCH_LOG";

pub struct Lidod {
    pub lidod: PathBuf,
    pub lidoctl: PathBuf,
}

impl Lidod {
    /// Builds `lidod` and `lidoctl` in this profile (a no-op when fresh),
    /// so the figures are never of a stale binary.
    /// With `LIDO_BENCH_NO_BUILD` set, the binaries beside the bench run as
    /// they are: to compare two builds, copy each build's `lido-bench`,
    /// `lidod` and `lidoctl` into a directory of its own and run them there.
    pub fn build() -> anyhow::Result<Self> {
        let dir = lido_tests::bin_dir();
        if std::env::var_os("LIDO_BENCH_NO_BUILD").is_some() {
            eprintln!("lido-bench: LIDO_BENCH_NO_BUILD is set: running the binaries in {}", dir.display());
            return Ok(Self { lidod: dir.join("lidod"), lidoctl: dir.join("lidoctl") });
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        let mut cmd = Command::new(cargo);
        // The same package selection as the documented command, so features
        // resolve alike and this is a no-op after it.
        cmd.args(["build", "--manifest-path", manifest, "-p", "lidod", "-p", "lidoctl", "-p", "lido-tests", "--bins"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        if !cmd.status().context("running cargo build")?.success() {
            bail!("building lidod and lidoctl failed (see cargo's output above)");
        }
        Ok(Self { lidod: dir.join("lidod"), lidoctl: dir.join("lidoctl") })
    }

    /// A daemon with broker `k1` (a Kraken Pro account) on the Kraken fake
    /// at REST base `venue` (in this process or the venue's), run as
    /// `mode`, and market `crypto` on `k1`; `node` is the body of its
    /// `[node]` table (or empty).
    pub fn with_kraken(
        &self,
        venue: &str,
        mode: RunMode,
        env: &[(&str, &str)],
        node: &str,
    ) -> anyhow::Result<KrakenDaemon> {
        let dir = std::env::temp_dir().join(format!("lido-bench-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir)?;
        // The trading budget the order bench paces itself within (see orders.rs).
        let nonce = dir.join("k1.nonce");
        let broker = lido_tests::kraken_node::node_toml(venue, &ws_urls(venue).1, &nonce, mode, "tier = \"pro\"");
        let toml = format!("[node]\n{node}\n{broker}");
        let path = dir.join("lido.toml");
        std::fs::write(&path, toml)?;
        let config = lido_tests::kraken_fake::FakeConfig::default();
        let mut all_env =
            vec![LOG_LEVEL, ("KRAKEN_API_KEY", config.api_key.as_str()), ("KRAKEN_API_SECRET", &config.api_secret)];
        let log_override = std::env::var(LOG_OVERRIDE).ok();
        if let Some(level) = &log_override {
            all_env.push(("LIDO_LOG", level));
        }
        all_env.extend_from_slice(env);
        let daemon = TestDaemon::spawn_from(&self.lidod, &["--config", path.to_str().context("utf-8 path")?], &all_env);
        Ok(KrakenDaemon { daemon, dir })
    }
}

pub struct KrakenDaemon {
    pub daemon: TestDaemon,
    dir: PathBuf,
}

impl KrakenDaemon {
    /// A new algo session, once the broker answers quotes and its
    /// executions feed is up.
    pub async fn algo(&self) -> anyhow::Result<LidoClient> {
        let session = self.daemon.client().open_session("bench").await?;
        let algo = LidoClient::new(session.market_manager_url)?.with_token(&session.session_id);
        let operator = self.daemon.client();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let quoting = algo.quote("crypto", "BTC/USD").await.is_ok();
            let executions = operator
                .describe("k1")
                .await
                .is_ok_and(|k1| k1.service.metrics.get("executions_connected") == Some(&1.0));
            if quoting && executions {
                return Ok(algo);
            }
            if Instant::now() > deadline {
                bail!("the kraken broker was not ready within {READY_WITHIN:?}; log at {}", self.daemon.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for KrakenDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Resident set size of a process, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS in /proc status")?;
    Ok(kb * 1024)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

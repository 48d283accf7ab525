//! Control plane: `lidod` start → `/healthz` answers; `lidoctl spawn
//! broker kraken` → the broker's WebSocket to the venue is open (the
//! fake counts accepted sockets); lidod's memory per algo session.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lido_tests::kraken_fake::{FakeConfig, FakeKraken};
use lido_tests::TestDaemon;

use crate::daemon::LOG_LEVEL;
use crate::stats::Percentiles;

pub struct ControlPlane {
    pub start_to_serving: Percentiles,
    pub spawn_to_streaming: Percentiles,
    pub rss_idle: u64,
    pub rss_per_session: u64,
}

const WITHIN: Duration = Duration::from_secs(30);

pub async fn run(lidod: &crate::Lidod, starts: usize, sessions: usize) -> anyhow::Result<ControlPlane> {
    let mut serving = Vec::new();
    for _ in 0..starts {
        serving.push(start_to_serving(lidod).await?);
    }
    let mut streaming = Vec::new();
    for _ in 0..starts {
        streaming.push(spawn_to_streaming(lidod).await?);
    }
    let daemon = TestDaemon::spawn_from(&lidod.lidod, &[], &[LOG_LEVEL]);
    let operator = daemon.client();
    operator.health().await?;
    let rss_idle = crate::daemon::rss_bytes(daemon.pid())?;
    let mut open = Vec::with_capacity(sessions);
    for i in 0..sessions {
        open.push(operator.open_session(&format!("bench-{i}")).await?);
    }
    let after = crate::daemon::rss_bytes(daemon.pid())?;
    Ok(ControlPlane {
        start_to_serving: Percentiles::of(serving),
        spawn_to_streaming: Percentiles::of(streaming),
        rss_idle,
        rss_per_session: after.saturating_sub(rss_idle) / sessions.max(1) as u64,
    })
}

/// From spawning the process to the first `200` of `/healthz`.
async fn start_to_serving(lidod: &crate::Lidod) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let daemon = TestDaemon::spawn_from(&lidod.lidod, &[], &[LOG_LEVEL]);
    let http = reqwest::Client::new();
    let healthz = format!("{}/healthz", daemon.url);
    loop {
        if http.get(&healthz).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > WITHIN {
            bail!("lidod did not answer /healthz within {WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// From running `lidoctl spawn broker kraken` to the broker's first
/// WebSocket accepted by the fake.
async fn spawn_to_streaming(lidod: &crate::Lidod) -> anyhow::Result<Duration> {
    let config = FakeConfig::default();
    let fake = FakeKraken::start(config.clone()).await;
    let env =
        [LOG_LEVEL, ("KRAKEN_API_KEY", config.api_key.as_str()), ("KRAKEN_API_SECRET", config.api_secret.as_str())];
    let daemon = TestDaemon::spawn_from(&lidod.lidod, &[], &env);
    let nonce = std::env::temp_dir().join(format!("lido-bench-{}-k2.nonce", std::process::id()));
    let _ = std::fs::remove_file(&nonce);
    let started = Instant::now();
    let status = Command::new(&lidod.lidoctl)
        .args(["--url", &daemon.url, "spawn", "broker", "kraken", "--name", "k2"])
        .args(["--set", &format!("rest_url={}", fake.url)])
        .args(["--set", &format!("ws_url={}", fake.ws_url())])
        .args(["--set", &format!("ws_auth_url={}", fake.ws_auth_url())])
        .args(["--set", &format!("nonce_file={}", nonce.display())])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running lidoctl")?;
    if !status.success() {
        bail!("lidoctl spawn broker kraken failed ({status}); lidod log at {}", daemon.log.display());
    }
    while fake.websockets_opened() == 0 {
        if started.elapsed() > WITHIN {
            bail!("the spawned broker opened no WebSocket within {WITHIN:?}; log at {}", daemon.log.display());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    let _ = std::fs::remove_file(&nonce);
    Ok(took)
}

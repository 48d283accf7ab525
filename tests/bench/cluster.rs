//! `lido-bench cluster`: what the control plane holds on this machine. A
//! 3-member etcd cluster and two IMs on it; synthetic nodes check in with
//! both IMs once a second (as real nodes do), at growing node counts; then
//! real nodes take sessions through the IMs. Figures for docs/scaling.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lido_shared::access::CLUSTER_SECRET_HEADER;
use lido_shared::api::{Session, SessionRequest};
use lido_shared::cluster::{ManagerInfo, NodeCheckIn, NodeInfo, NodeLoad, ServiceInfo, ServiceKind, ServiceState};
use lido_tests::etcd_cluster::EtcdCluster;
use lido_tests::TestDaemon;

use crate::stats::Percentiles;
use crate::Lidod;

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Synthetic node counts to try, each for `--seconds`.
    #[arg(long, value_delimiter = ',', default_value = "50,200,500")]
    nodes: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Sessions to open through the IMs on two real nodes.
    #[arg(long, default_value_t = 300)]
    sessions: usize,
}

const SECRET: &str = "bench-cluster-secret-0123456789";

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let bins = Lidod::build()?;
    let etcd = EtcdCluster::start(3)?;
    let dir = std::env::temp_dir().join(format!("lido-bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let secret = dir.join("cluster-secret");
    std::fs::write(&secret, SECRET)?;
    let config = dir.join("im.toml");
    std::fs::write(
        &config,
        format!(
            "cluster_secret_file = {:?}\n[cluster]\nregistry = \"etcd\"\netcd_endpoints = {:?}\nnode_ttl_ms = 5000\n",
            secret.display().to_string(),
            etcd.client_urls()
        ),
    )?;
    let env = [crate::daemon::LOG_LEVEL];
    let cfg = config.to_str().context("utf-8 path")?;
    let ims: Vec<TestDaemon> = ["im1", "im2"]
        .iter()
        .map(|id| TestDaemon::spawn_from(&bins.lidod, &["--config", cfg, "--role", "im", "--node-id", id], &env))
        .collect();
    let im_urls: Vec<String> = ims.iter().map(|d| d.url.clone()).collect();
    let mut pids: Vec<u32> = ims.iter().map(TestDaemon::pid).collect();
    let etcd_pids = pgrep(&etcd.dir().display().to_string());
    pids.extend(&etcd_pids);

    println!("Check-ins: synthetic nodes, each to both IMs once a second; IMs on a 3-member etcd");
    println!(
        "{:>6} {:>10} {:>10} {:>9} {:>9} {:>7} {:>10} {:>11}",
        "nodes", "offered/s", "held/s", "p50 ms", "p99 ms", "errors", "IMs CPU%", "etcd CPU%"
    );
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(1024).build()?;
    for &n in &args.nodes {
        let stop = Instant::now() + Duration::from_secs(args.seconds);
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let cpu_before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..n {
            let (http, urls, ok, errors) = (http.clone(), im_urls.clone(), ok.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let body = NodeCheckIn { info: synthetic(i), watch_url: "ws://127.0.0.1:9/v1/cluster/watch".into() };
                let mut samples = Vec::new();
                // Spread the nodes over the second, as real ones drift apart.
                tokio::time::sleep(Duration::from_millis((i as u64 * 997) % 1000)).await;
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                while Instant::now() < stop {
                    tick.tick().await;
                    for url in &urls {
                        let t = Instant::now();
                        let r = http
                            .post(format!("{url}/v1/nodes/checkin"))
                            .header(CLUSTER_SECRET_HEADER, SECRET)
                            .json(&body)
                            .send()
                            .await;
                        match r {
                            Ok(resp) if resp.status().is_success() => {
                                samples.push(t.elapsed());
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                samples
            }));
        }
        let mut samples = Vec::new();
        for t in tasks {
            samples.extend(t.await?);
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu: Vec<f64> = pids
            .iter()
            .zip(&cpu_before)
            .map(|(p, before)| (cpu_ticks(*p).saturating_sub(*before)) as f64 / ticks_per_second() / secs * 100.0)
            .collect();
        let p = Percentiles::of(samples);
        println!(
            "{:>6} {:>10} {:>10.0} {:>9.1} {:>9.1} {:>7} {:>10.0} {:>11.0}",
            n,
            n * 2,
            ok.load(Ordering::Relaxed) as f64 / secs,
            p.p50.as_secs_f64() * 1e3,
            p.p99.as_secs_f64() * 1e3,
            errors.load(Ordering::Relaxed),
            cpu[..2].iter().sum::<f64>(),
            cpu[2..].iter().sum::<f64>(),
        );
        // Let the synthetic nodes' leases lapse before the next step.
        tokio::time::sleep(Duration::from_secs(6)).await;
    }

    // Sessions through the IMs, onto two real nodes.
    let node_cfg = dir.join("node.toml");
    std::fs::write(&node_cfg, format!("cluster_secret_file = {:?}\n", secret.display().to_string()))?;
    let ncfg = node_cfg.to_str().context("utf-8 path")?;
    let mut nodes = Vec::new();
    for (id, location) in [("n1", "ny"), ("n2", "ldn")] {
        let mut a = vec!["--config", ncfg, "--role", "node", "--node-id", id, "--location", location];
        for u in &im_urls {
            a.extend(["--im", u.as_str()]);
        }
        nodes.push(TestDaemon::spawn_from(&bins.lidod, &a, &env));
    }
    let client = lido_shared::client::LidoClient::new(im_urls[0].clone())?;
    let ready = Instant::now();
    while client.cluster().await.map(|s| s.nodes.iter().filter(|n| n.id.starts_with('n')).count()).unwrap_or(0) < 2 {
        anyhow::ensure!(ready.elapsed() < Duration::from_secs(30), "the nodes did not check in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..args.sessions {
        let (client, sem) = (client.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let req = SessionRequest { customer: format!("c{i}"), location: None };
            let t = Instant::now();
            let r: Result<Session, _> = client.send(client.req(reqwest::Method::POST, "/v1/sessions").json(&req)).await;
            r.ok().map(|_| t.elapsed())
        }));
    }
    let mut samples = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await? {
            Some(d) => samples.push(d),
            None => failed += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let p = Percentiles::of(samples);
    println!();
    println!("Sessions: {} new customers through one IM, 16 at a time, onto 2 nodes", args.sessions);
    println!(
        "  {:.0} sessions/s, p50 {:.1} ms, p99 {:.1} ms, {failed} failed",
        (args.sessions - failed) as f64 / secs,
        p.p50.as_secs_f64() * 1e3,
        p.p99.as_secs_f64() * 1e3
    );
    drop(nodes);
    drop(ims);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A node record the size of a real one: three managers, three services.
fn synthetic(i: usize) -> NodeInfo {
    let node = format!("syn-{i:04}");
    let service = |name: &str, kind, service_type: &str| ServiceInfo {
        name: name.into(),
        kind,
        service_type: service_type.into(),
        state: ServiceState::Running,
        node: node.clone(),
        mode: lido_shared::cluster::RunMode::Process,
        pid: Some(10_000 + i as u32),
        ws_url: Some(format!("ws://10.0.0.1:{}/pipe", 20_000 + i)),
        restarts: 0,
        started_at: Some(chrono::Utc::now()),
        detail: None,
        options: Default::default(),
        metrics: [("messages_per_s".to_string(), 12.0), ("pipe_latency_ms".to_string(), 0.4)].into_iter().collect(),
    };
    NodeInfo {
        id: node.clone(),
        location: if i.is_multiple_of(2) { "ny" } else { "ldn" }.into(),
        draining: false,
        api_url: format!("http://10.0.{}.{}:7700", i / 250, i % 250),
        managers: [ServiceKind::Broker, ServiceKind::Market, ServiceKind::Trader]
            .into_iter()
            .map(|kind| ManagerInfo { kind, state: ServiceState::Running, services: 1 })
            .collect(),
        services: vec![
            service("paper-1", ServiceKind::Broker, "paper"),
            service("paper", ServiceKind::Market, ""),
            service("t1", ServiceKind::Trader, ""),
        ],
        load: NodeLoad { sessions: i % 7, streams: i % 13, open_orders: 0 },
    }
}

fn pgrep(pattern: &str) -> Vec<u32> {
    let out = std::process::Command::new("pgrep").args(["-f", pattern]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 of stat; after the ")" they are the 12th and 13th.
    field(11) + field(12)
}

/// USER_HZ, the unit of /proc/<pid>/stat times: 100 on Linux.
fn ticks_per_second() -> f64 {
    100.0
}

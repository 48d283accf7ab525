//! A cluster on one machine: one `lidod --role im` and `--role node`
//! processes at two locations checking in with it, sharing a cluster
//! secret file; driven through the IM's API only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lido_shared::api::{Channel, SessionRequest};
use lido_shared::client::LidoClient;
use lido_shared::cluster::{MarketPool, ServiceKind, SpawnRequest, WatchCommand, WatchMessage};
use lido_tests::{eventually, lidoctl_path, temp_data_dir, TestDaemon};

/// A config shared by the IM and its nodes: the secret file, fast check-ins.
fn cluster_config(dir: &Path, after_hours: bool) -> PathBuf {
    let secret = dir.join("cluster-secret");
    std::fs::write(&secret, "cluster-test-secret-0123456789\n").unwrap();
    let mut text = format!(
        "cluster_secret_file = {:?}\n[cluster]\ncheckin_interval_ms = 200\nnode_ttl_ms = 1500\n",
        secret.display().to_string()
    );
    if after_hours {
        text.push_str("after_hours = { start = \"00:00\", end = \"23:59\", tz = \"UTC\" }\n");
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn im(config: &Path) -> TestDaemon {
    TestDaemon::spawn(&["--config", config.to_str().unwrap(), "--role", "im", "--node-id", "im1"])
}

fn node(config: &Path, im: &TestDaemon, id: &str, location: &str) -> TestDaemon {
    let args = ["--config", config.to_str().unwrap(), "--role", "node", "--im", &im.url, "--node-id", id];
    TestDaemon::spawn(&[&args[..], &["--location", location]].concat())
}

/// Waits until the IM lists exactly `ids`, each reachable (watched) and with
/// its paper market up.
async fn wait_for_nodes(im: &LidoClient, ids: &[&str]) {
    eventually(Duration::from_secs(20), &format!("nodes {ids:?} in the IM's view"), || async {
        let snapshot = im.cluster().await.ok()?;
        let seen: Vec<&str> = snapshot.nodes.iter().map(|n| n.id.as_str()).collect();
        (seen == ids).then_some(())
    })
    .await;
}

async fn session(im: &LidoClient, customer: &str, location: Option<&str>) -> lido_shared::api::Session {
    let req = SessionRequest { customer: customer.into(), location: location.map(str::to_string) };
    // A node counts only once its watch socket is up: retry 503s briefly.
    eventually(Duration::from_secs(10), "a session", || async {
        im.send(im.req(reqwest::Method::POST, "/v1/sessions").json(&req)).await.ok()
    })
    .await
}

#[tokio::test]
async fn an_im_places_sessions_on_nodes_and_forwards_operator_actions() {
    let dir = temp_data_dir();
    let config = cluster_config(&dir, false);
    let im_daemon = im(&config);
    let n1 = node(&config, &im_daemon, "n1", "ny");
    let mut n2 = node(&config, &im_daemon, "n2", "ldn");
    let im = im_daemon.client();
    wait_for_nodes(&im, &["n1", "n2"]).await;
    let snapshot = im.cluster().await.unwrap();
    assert_eq!(snapshot.nodes[0].location, "ny");
    assert_eq!(snapshot.nodes[1].api_url, n2.url);

    // Least loaded first (a tie goes to n1), then the asked location.
    let a = session(&im, "acme", None).await;
    assert_eq!(a.node, "n1");
    assert_eq!(a.market_manager_url, n1.url);
    let b = session(&im, "beta", None).await;
    assert_eq!(b.node, "n2", "n1 has a session, n2 none");
    let a2 = session(&im, "acme", Some("ldn")).await;
    assert_eq!(a2.node, "n2");
    // The TraderManager is sticky: acme's stays on n1.
    assert_eq!(a.trader_manager_url, n1.url);
    assert_eq!(a2.trader_manager_url, n1.url);
    assert_eq!(b.trader_manager_url, n2.url);

    // A stream on n2 through its session.
    let on_n2 = LidoClient::new(a2.market_manager_url.clone()).unwrap().with_token(a2.session_id.clone());
    // Its paper broker may still be starting (a busy machine): wait for it.
    eventually(Duration::from_secs(20), "n2's paper broker quoting", || async {
        on_n2.quote("paper", "BTC/USD").await.ok()
    })
    .await;
    let mut stream = on_n2.stream().await.unwrap();
    stream.subscribe(Channel::Quotes, "paper", Some("BTC/USD")).await.unwrap();
    stream.next_event(Duration::from_secs(15)).await.unwrap();

    // Drain n2: new sessions avoid it, its stream goes on.
    im.drain_node("n2").await.unwrap();
    eventually(Duration::from_secs(5), "n2 draining in the view", || async {
        im.cluster().await.ok()?.nodes.iter().find(|n| n.id == "n2").filter(|n| n.draining).map(|_| ())
    })
    .await;
    let c = session(&im, "gamma", Some("ldn")).await;
    assert_eq!(c.node, "n1", "n2 is draining");
    stream.next_event(Duration::from_secs(10)).await.expect("the stream on the draining node goes on");
    eventually(Duration::from_secs(5), "n2 itself draining", || async {
        let health = n2.client().health().await.ok()?;
        (health["draining"] == true).then_some(())
    })
    .await;
    im.undrain_node("n2").await.unwrap();
    let d = session(&im, "delta", Some("ldn")).await;
    assert_eq!(d.node, "n2", "undrained");

    // Operator actions go to the node concerned.
    let request = SpawnRequest {
        kind: ServiceKind::Broker,
        service_type: Some("paper".into()),
        name: Some("p9".into()),
        node: Some("n1".into()),
        options: [("mode".to_string(), "task".to_string())].into(),
    };
    let spawned = im.spawn(&request).await.unwrap();
    assert_eq!(spawned.node, "n1");
    eventually(Duration::from_secs(10), "p9 in the IM's view", || async {
        im.cluster().await.ok()?.service("p9").filter(|s| s.node == "n1").map(|_| ())
    })
    .await;
    assert_eq!(im.describe("p9").await.unwrap().service.name, "p9");
    assert_eq!(im.describe("nope").await.unwrap_err().code(), Some("unknown_service"));
    // Every node runs its own paper-1: a bare name is ambiguous, name@node is not.
    let err = im.describe("paper-1").await.unwrap_err();
    assert_eq!(err.code(), Some("ambiguous_service"), "{err}");
    assert!(err.to_string().contains("paper-1@n1"), "the error shows how to name one: {err}");
    let on_n2 = im.describe("paper-1@n2").await.unwrap();
    assert_eq!((on_n2.service.name.as_str(), on_n2.service.node.as_str()), ("paper-1", "n2"));
    assert_eq!(im.drain_node("n9").await.unwrap_err().code(), Some("unknown_node"));
    let sessions = im.sessions().await.unwrap();
    assert!(sessions.len() >= 5, "{sessions:?}");
    // Algo routes are the nodes'.
    assert_eq!(im.markets().await.unwrap_err().code(), Some("not_a_node"));

    // A pool change reaches every node with that market; logs are the node's answer.
    let pool = MarketPool { brokers: Some("paper-1".into()), ..MarketPool::default() };
    assert_eq!(im.set_market("paper", &pool).await.unwrap().name, "paper");
    assert_eq!(im.set_market("nope", &pool).await.unwrap_err().code(), Some("unknown_market"));
    assert_eq!(im.logs("p9", 10).await.unwrap_err().code(), Some("no_logs"), "a task broker has no process log");
    // The same actions as watch commands, with correlated replies.
    let mut watch = im.watch().await.unwrap();
    assert!(
        matches!(watch.next().await.unwrap(), WatchMessage::Snapshot { snapshot, .. } if snapshot.nodes.len() == 2)
    );
    watch.send(&WatchCommand::Drain { id: 7, node: "n9".into() }).await.unwrap();
    let reply = loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap() {
            WatchMessage::Reply { id: 7, ok, error, .. } => break (ok, error),
            _ => continue,
        }
    };
    assert!(!reply.0);
    assert_eq!(reply.1.unwrap().code, "unknown_node");

    // lidoctl status at the IM lists both nodes.
    let out = std::process::Command::new(lidoctl_path())
        .args(["--url", &im_daemon.url, "status"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.starts_with("2 nodes"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("n1")) && table.lines().any(|l| l.starts_with("n2")), "{table}");

    // A node that dies leaves the view within its time to live.
    drop(stream);
    n2.kill9();
    eventually(Duration::from_secs(10), "the IM re-dialing n2", || async {
        im_daemon.log_text().contains("re-dialing node n2").then_some(())
    })
    .await;
    wait_for_nodes(&im, &["n1"]).await;
    let e = session(&im, "epsilon", Some("ldn")).await;
    assert_eq!(e.node, "n1");
    drop(n1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn after_hours_an_idle_draining_node_is_stopped() {
    let dir = temp_data_dir();
    let config = cluster_config(&dir, true);
    let im_daemon = im(&config);
    let mut n1 = node(&config, &im_daemon, "n1", "ny");
    let n2 = node(&config, &im_daemon, "n2", "ny");
    let im = im_daemon.client();
    wait_for_nodes(&im, &["n1", "n2"]).await;
    let mut watch = im.watch().await.unwrap();
    im.drain_node("n1").await.unwrap();
    let status = n1.wait_exit(Duration::from_secs(20)).expect("the drained idle node stops");
    assert!(status.success(), "{status:?}: {}", n1.log_text());
    let announced = "node n1 stopped: idle and draining in the after-hours window 00:00-23:59 UTC";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(std::time::Instant::now() < deadline, "no event said {announced:?}");
        let Ok(msg) = tokio::time::timeout(Duration::from_secs(1), watch.next()).await else { continue };
        if serde_json::to_string(&msg.unwrap()).unwrap().contains(announced) {
            break;
        }
    }
    wait_for_nodes(&im, &["n2"]).await;
    drop(n2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node that stalls past its TTL while its watch socket holds (a frozen
/// process, or etcd losing its lease) leaves the IM's list, then checks in
/// again: it must take sessions at once, not count as unreachable until
/// its socket drops (the multi-host harness saw `no_node_available` for a
/// minute after such a stall).
#[tokio::test]
async fn a_node_back_from_a_stall_longer_than_its_ttl_takes_sessions_again() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let dir = temp_data_dir();
    let config = cluster_config(&dir, false);
    let im_daemon = im(&config);
    let n1 = node(&config, &im_daemon, "n1", "ny");
    let im = im_daemon.client();
    wait_for_nodes(&im, &["n1"]).await;
    session(&im, "acme", None).await;

    // Frozen for longer than node_ttl_ms (1500): the IM drops it.
    let pid = Pid::from_raw(n1.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    eventually(Duration::from_secs(10), "n1 gone from the IM's view", || async {
        im.cluster().await.ok()?.nodes.is_empty().then_some(())
    })
    .await;
    kill(pid, Signal::SIGCONT).unwrap();
    wait_for_nodes(&im, &["n1"]).await;

    let again = session(&im, "beta", None).await;
    assert_eq!(again.node, "n1");
    drop(n1);
    let _ = std::fs::remove_dir_all(&dir);
}

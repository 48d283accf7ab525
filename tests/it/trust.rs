//! Customers' code holds no operator power: a hosted trader on a cluster
//! in `--auth tokens` mode, started by a lidod that has venue keys, the
//! cluster secret and an unrelated variable in its environment, gets none
//! of them; every credential it has is refused (401/403) on every operator
//! and internal route of its node and of the IM; it cannot read the node's
//! nor the IM's data dir; and it still checks in and trades. A kraken broker gets its own keys and no one else's.

use std::path::Path;
use std::time::Duration;

use lido_shared::cluster::{ServiceKind, ServiceState, SpawnRequest};
use lido_tests::{bin_dir, ensure_built, eventually, temp_data_dir, TestDaemon};

const CLUSTER_SECRET: &str = "trust-test-cluster-secret-0123456789abcdef";
const KRAKEN_KEY: &str = "trust-kraken-key";
// Base64, as Kraken hands out secrets.
const KRAKEN_SECRET: &str = "a3Jha2VuLXNlY3JldC1mb3ItdGhlLXRydXN0LXRlc3Q=";
const SCHWAB_SECRET: &str = "trust-schwab-app-secret";
const UNRELATED: &str = "trust-unrelated-value";

fn lidod_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("LIDO_CLUSTER_SECRET", CLUSTER_SECRET),
        ("KRAKEN_API_KEY", KRAKEN_KEY),
        ("KRAKEN_API_SECRET", KRAKEN_SECRET),
        ("SCHWAB_APP_KEY", "trust-schwab-app-key"),
        ("SCHWAB_APP_SECRET", SCHWAB_SECRET),
        ("TRUST_UNRELATED", UNRELATED),
    ]
}

async fn bootstrap_token(dir: &Path) -> String {
    let path = dir.join("bootstrap-token");
    eventually(Duration::from_secs(10), "the bootstrap token file", || async {
        std::fs::read_to_string(&path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
    })
    .await
}

/// The variables of a running process, from `/proc/<pid>/environ`.
fn environ(pid: u32) -> Option<Vec<(String, String)>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let vars = raw
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .filter_map(|e| String::from_utf8_lossy(e).split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect::<Vec<_>>();
    (!vars.is_empty()).then_some(vars)
}

#[tokio::test]
async fn a_hosted_trader_holds_nothing_of_lidods_and_can_do_only_what_its_customer_can() {
    ensure_built();
    let env = lidod_env();
    let im_dir = temp_data_dir();
    let node_dir = temp_data_dir();
    let im = TestDaemon::spawn_with(&im_dir, &["--role", "im", "--node-id", "im1", "--auth", "tokens"], &env);
    let node = TestDaemon::spawn_with(
        &node_dir,
        &["--role", "node", "--im", &im.url, "--node-id", "n1", "--auth", "tokens"],
        &env,
    );
    // What lidod would write there with no LIDO_CLUSTER_SECRET: the trader must not read it either.
    std::fs::write(node_dir.join("cluster-secret"), format!("{CLUSTER_SECRET}\n")).unwrap();
    let op = im.client().with_token(bootstrap_token(&im_dir).await);
    eventually(Duration::from_secs(20), "the node in the IM's view with its paper broker up", || async {
        let snap = op.cluster().await.ok()?;
        let up = snap.service("paper-1").is_some_and(|s| s.state == ServiceState::Running);
        up.then_some(())
    })
    .await;
    bootstrap_token(&node_dir).await;

    // A kraken broker on an unreachable venue: it runs, retrying; only its environment matters here.
    let unreachable = "127.0.0.1:9";
    let kraken = SpawnRequest {
        kind: ServiceKind::Broker,
        service_type: Some("kraken".into()),
        name: Some("k1".into()),
        options: [
            ("rest_url".to_string(), format!("http://{unreachable}")),
            ("ws_url".to_string(), format!("ws://{unreachable}/v2")),
            ("ws_auth_url".to_string(), format!("ws://{unreachable}/v2")),
        ]
        .into(),
        ..Default::default()
    };
    op.spawn(&kraken).await.expect("spawn a kraken broker");

    let files = ["bootstrap-token", "cluster-secret", "auth.sqlite", "journal.sqlite"]
        .map(|f| node_dir.join(f).display().to_string())
        .into_iter()
        .chain(["bootstrap-token", "auth.sqlite"].map(|f| im_dir.join(f).display().to_string()))
        .collect::<Vec<_>>();
    for f in &files {
        assert!(Path::new(f).exists(), "{f} exists, so a refusal to read it is the sandbox's");
    }
    let probe = SpawnRequest {
        kind: ServiceKind::Trader,
        name: Some("probe".into()),
        options: [
            ("exec".to_string(), bin_dir().join("trust_probe").display().to_string()),
            ("customer".to_string(), "acme".to_string()),
            ("im_url".to_string(), im.url.clone()),
            ("node".to_string(), "n1".to_string()),
            ("files".to_string(), files.join(",")),
            // What the operator passes on purpose does reach it.
            ("env.ALGO_MODE".to_string(), "probe".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    op.spawn(&probe).await.expect("spawn the probe trader");

    let report_path = node_dir.join("traders").join("probe").join("report.json");
    let report: serde_json::Value = eventually(Duration::from_secs(90), "the probe's report", || async {
        let text = std::fs::read(&report_path).ok()?;
        serde_json::from_slice(&text).ok()
    })
    .await;

    // 1. Its environment: the trader contract, its options, what the operator set; nothing of lidod's.
    let names: Vec<&str> = report["env"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    let values: Vec<&str> = report["values"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    for leaked in ["LIDO_CLUSTER_SECRET", "KRAKEN_API_KEY", "KRAKEN_API_SECRET", "SCHWAB_APP_SECRET", "TRUST_UNRELATED"]
    {
        assert!(!names.contains(&leaked), "the trader got {leaked}: {names:?}");
    }
    for secret in [CLUSTER_SECRET, KRAKEN_KEY, KRAKEN_SECRET, SCHWAB_SECRET, UNRELATED] {
        assert!(!values.iter().any(|v| v.contains(secret)), "a value of lidod's reached the trader: {names:?}");
    }
    for wanted in ["LIDO_API_URL", "LIDO_TOKEN", "LIDO_SERVICE_NAME", "LIDO_CUSTOMER", "LIDO_SERVICE_KEY", "ALGO_MODE"]
    {
        assert!(names.contains(&wanted), "the trader lacks {wanted}: {names:?}");
    }

    // 2. Every credential it holds, every way, every operator and internal route, node and IM: refused.
    let attempts = report["attempts"].as_u64().unwrap();
    let not_denied = report["not_denied"].as_array().unwrap();
    assert!(attempts > 500, "the probe tried {attempts} requests");
    assert!(not_denied.is_empty(), "answered other than 401/403: {not_denied:#?}");
    // Its own check-in works: it runs, and it trades as its customer.
    // (The IM may be re-dialing the node's watch socket after that burst: wait for its view.)
    eventually(Duration::from_secs(20), "the probe running in the IM's view", || async {
        let state = op.cluster().await.ok()?.service("probe")?.state;
        (state == ServiceState::Running).then_some(())
    })
    .await;
    assert_eq!(report["order_status"], 201, "the trader trades for acme");
    // The node still runs (no shutdown, drain or stop got through).
    assert!(!op.cluster().await.unwrap().nodes.iter().any(|n| n.draining));

    // 3. The data dirs and lidod's own environment (/proc/<lidod>/environ,
    // which holds the venue keys) are out of its reach; its work dir and the
    // system are not.
    let reads = report["reads"].as_object().unwrap();
    for f in &files {
        assert_eq!(reads[f.as_str()], "PermissionDenied", "the trader's read of {f}");
    }
    let (lidod_environ, read) =
        reads.iter().find(|(path, _)| path.ends_with("/environ")).expect("the probe tried lidod's environ");
    assert_eq!(read, "PermissionDenied", "the trader's read of {lidod_environ}");
    assert_eq!(report["own_file"], true, "the trader works in its own dir");
    assert_eq!(report["system_file"], true, "the trader reads the system's files");

    // A kraken broker gets its own keys and the cluster secret, nothing else of lidod's.
    let k1_env = eventually(Duration::from_secs(15), "the kraken broker's environment", || async {
        environ(op.cluster().await.ok()?.service("k1")?.pid?)
    })
    .await;
    let has = |name: &str, value: &str| k1_env.iter().any(|(k, v)| k == name && v == value);
    assert!(has("KRAKEN_API_KEY", KRAKEN_KEY) && has("KRAKEN_API_SECRET", KRAKEN_SECRET), "{k1_env:?}");
    assert!(has("LIDO_CLUSTER_SECRET", CLUSTER_SECRET));
    for other in ["SCHWAB_APP_KEY", "SCHWAB_APP_SECRET", "TRUST_UNRELATED"] {
        assert!(!k1_env.iter().any(|(k, _)| k == other), "the kraken broker got {other}");
    }
    drop(node);
    drop(im);
    for dir in [im_dir, node_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

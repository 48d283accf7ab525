//! The node autoscaler: its local provisioner starts real `lidod --role
//! node` processes and stops them (on release, SIGTERM; when it goes away,
//! kill); and an IM with `[cluster.autoscale]` on provisions nodes by
//! itself, to its minimum and when the load per node passes the threshold.

use std::time::Duration;

use lido_shared::api::SessionRequest;
use lido_shared::cluster::{ClusterEvent, NodeScaleStatus, WatchMessage};
use lido_tests::{eventually, lidod_path, process_alive, temp_data_dir, TestDaemon};
use lidod::cluster::provision::{LocalProvisioner, LocalProvisionerConfig, ProvisionRequest, Provisioner};

/// Nodes check in with an IM that need not run: they start all the same.
fn provisioner(base: &std::path::Path) -> LocalProvisioner {
    LocalProvisioner::new(LocalProvisionerConfig {
        exe: Some(lidod_path()),
        base_dir: base.to_path_buf(),
        ims: vec!["http://127.0.0.1:9".into()],
        extra_args: vec!["--log".into(), "info".into()],
        stop_grace_ms: 15_000,
        ..LocalProvisionerConfig::default()
    })
}

fn request(id: &str) -> ProvisionRequest {
    ProvisionRequest { node_id: id.into(), location: Some("ny".into()), nodes_wanted: 2 }
}

#[tokio::test]
async fn a_local_node_runs_until_released() {
    let base = tempfile::tempdir().expect("temp dir");
    let p = provisioner(base.path());
    let node = p.provision(&request("auto-1")).await.expect("node starts");
    assert_eq!(node.node_id, "auto-1");
    let pid = node.pid.expect("a child pid");
    let url = node.api_url.expect("the node printed its address");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let health = reqwest::get(format!("{url}/healthz")).await.expect("the node answers");
    assert!(health.status().is_success(), "{}", health.status());
    assert!(base.path().join("auto-1").is_dir(), "its data dir");
    assert_eq!(p.running(), ["auto-1"]);

    p.release("auto-1").await.expect("release");
    assert!(!process_alive(pid), "auto-1 ({pid}) still runs after release");
    assert!(p.running().is_empty());
    let err = p.release("auto-1").await.expect_err("released twice");
    assert!(err.to_string().contains("not started by this provisioner"), "{err}");
}

#[tokio::test]
async fn local_nodes_die_with_their_provisioner() {
    let base = tempfile::tempdir().expect("temp dir");
    let p = provisioner(base.path());
    let one = p.provision(&request("auto-1")).await.expect("auto-1 starts").pid.expect("pid");
    let two = p.provision(&request("auto-2")).await.expect("auto-2 starts").pid.expect("pid");
    assert!(process_alive(one) && process_alive(two));
    drop(p);
    eventually(Duration::from_secs(15), "both nodes gone", || async {
        (!process_alive(one) && !process_alive(two)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_im_provisions_nodes_to_its_minimum_and_under_load() {
    let dir = temp_data_dir();
    let secret = dir.join("cluster-secret");
    std::fs::write(&secret, "nodescale-test-secret-0123456789\n").unwrap();
    let config = dir.join("im.toml");
    std::fs::write(
        &config,
        format!(
            r#"cluster_secret_file = {secret:?}
[cluster]
checkin_interval_ms = 200
node_ttl_ms = 1500
[cluster.autoscale]
enabled = true
min_nodes = 1
max_nodes = 2
high_load_per_node = 3
low_load_per_node = 1
cooldown_ms = 500
location = "ny"
[cluster.provisioner]
kind = "local"
exe = {exe:?}
base_dir = {base:?}
"#,
            secret = secret.display().to_string(),
            exe = lidod_path().display().to_string(),
            base = dir.join("nodes").display().to_string(),
        ),
    )
    .unwrap();
    let im = TestDaemon::spawn(&["--config", config.to_str().unwrap(), "--role", "im", "--node-id", "im1"]);
    let client = im.client();
    let mut watch = client.watch().await.expect("watch the IM");

    // No node at all: below the minimum, the leader provisions one.
    eventually(Duration::from_secs(40), "auto-1 provisioned and checked in", || async {
        let snapshot = client.cluster().await.ok()?;
        snapshot.nodes.iter().any(|n| n.id == "auto-1" && n.location == "ny").then_some(())
    })
    .await;
    let status: NodeScaleStatus = client.send(client.req(reqwest::Method::GET, "/v1/cluster/autoscale")).await.unwrap();
    assert!(status.leader, "{status:?}");
    assert_eq!(status.leader_id.as_deref(), Some("im1"), "{status:?}");
    let provisioned = status.recent.iter().find(|d| d.action == "provision").expect("a provision decision");
    assert!(provisioned.reason.contains("min"), "the reason says why: {provisioned:?}");

    // Load above 3 per node: a second node.
    for i in 0..5 {
        let req = SessionRequest { customer: format!("c{i}"), location: None };
        eventually(Duration::from_secs(10), "a session", || async {
            client
                .send::<lido_shared::api::Session>(client.req(reqwest::Method::POST, "/v1/sessions").json(&req))
                .await
                .ok()
        })
        .await;
    }
    eventually(Duration::from_secs(40), "auto-2 provisioned under load", || async {
        let snapshot = client.cluster().await.ok()?;
        snapshot.nodes.iter().any(|n| n.id == "auto-2").then_some(())
    })
    .await;
    // The decisions went out as events, with their reasons.
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        let mut actions = Vec::new();
        while let Ok(message) = watch.next().await {
            if let WatchMessage::Event { event: ClusterEvent::NodeScaled { action, node, reason, .. }, .. } = message {
                assert!(!reason.is_empty());
                actions.push((action, node));
                if actions.iter().filter(|(a, _)| a == "provision").count() == 2 {
                    break;
                }
            }
        }
        actions
    })
    .await
    .expect("two provision events");
    assert!(seen.contains(&("provision".to_string(), Some("auto-2".to_string()))), "{seen:?}");

    // The rules change at run time, for every IM (they live in the registry);
    // bad ones change nothing.
    let put = |body: serde_json::Value| {
        let client = client.clone();
        async move {
            client
                .send::<serde_json::Value>(client.req(reqwest::Method::PUT, "/v1/cluster/autoscale").json(&body))
                .await
        }
    };
    let err = put(serde_json::json!({"min_nodes": 0})).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_autoscale"), "{err}");
    let err = put(serde_json::json!({"max_nodez": 3})).await.unwrap_err();
    assert!(err.to_string().contains("max_nodez"), "the error names the field: {err}");
    // lidoctl, as an operator would.
    let lidoctl = |args: &[&str]| {
        let out = std::process::Command::new(lido_tests::lidoctl_path())
            .args(["--url", &im.url])
            .args(args)
            .output()
            .expect("run lidoctl");
        assert!(out.status.success(), "lidoctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let shown = lidoctl(&["get", "nodescale"]);
    assert!(shown.contains("im1") && shown.contains("auto-2") && shown.contains("provision"), "{shown}");
    let changed = lidoctl(&["set", "nodescale", "--set", "max_nodes=3", "--set", "high_load_per_node=2"]);
    assert!(changed.contains("max_nodes = 3"), "{changed}");
    let rules = put(serde_json::json!({})).await.unwrap();
    assert_eq!((rules["max_nodes"].as_u64(), rules["min_nodes"].as_u64()), (Some(3), Some(1)), "{rules}");
    eventually(Duration::from_secs(40), "auto-3 under the new rules", || async {
        let snapshot = client.cluster().await.ok()?;
        snapshot.nodes.iter().any(|n| n.id == "auto-3").then_some(())
    })
    .await;
    let status: NodeScaleStatus = client.send(client.req(reqwest::Method::GET, "/v1/cluster/autoscale")).await.unwrap();
    assert_eq!((status.max_nodes, status.high_load_per_node), (3, 2), "{status:?}");

    // The nodes are the IM's children: they end with it, even when it is killed.
    let mut im = im;
    im.kill9();
    eventually(Duration::from_secs(20), "provisioned nodes gone with their IM", || async {
        let out =
            std::process::Command::new("pgrep").args(["-f", &dir.join("nodes").display().to_string()]).output().ok()?;
        out.stdout.is_empty().then_some(())
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

//! The node autoscaler's local provisioner starts real `lidod` nodes and
//! stops them: on release (SIGTERM) and when it goes away (kill).
//!
//! The `lidod` on this branch does not know `--role`/`--node-id`/`--im` yet,
//! so the nodes start with `cluster_flags = false` (id and location in the
//! generated config file); the argv with the flags is unit-tested
//! (`local_args_carry_the_role_id_location_and_ims`).

use std::time::Duration;

use lido_tests::{eventually, lidod_path, process_alive};
use lidod::cluster::provision::{LocalProvisioner, LocalProvisionerConfig, ProvisionRequest, Provisioner};

fn provisioner(base: &std::path::Path) -> LocalProvisioner {
    LocalProvisioner::new(LocalProvisionerConfig {
        exe: Some(lidod_path()),
        base_dir: base.to_path_buf(),
        cluster_flags: false,
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

use super::*;

fn request(id: &str) -> ProvisionRequest {
    ProvisionRequest { node_id: id.into(), location: Some("ny".into()), nodes_wanted: 3 }
}

fn command(provision: &str, release: &str) -> CommandProvisioner {
    CommandProvisioner::new(CommandProvisionerConfig {
        provision: provision.into(),
        release: release.into(),
        timeout_ms: 10_000,
    })
}

#[test]
fn the_config_is_tagged_by_kind() {
    let cfg: ProvisionerConfig = toml::from_str(
        "kind = \"command\"\nprovision = \"kubectl scale statefulset lidod-node --replicas=$LIDO_NODES_WANTED\"\nrelease = \"true\"",
    )
    .unwrap();
    let ProvisionerConfig::Command(c) = &cfg else { panic!("{cfg:?}") };
    assert_eq!(c.timeout_ms, 60_000);
    assert_eq!(cfg.build().kind(), "command");

    let cfg: ProvisionerConfig =
        toml::from_str("kind = \"local\"\nbase_dir = \"/var/lib/lido/nodes\"\nims = [\"http://127.0.0.1:7700\"]")
            .unwrap();
    let ProvisionerConfig::Local(l) = &cfg else { panic!("{cfg:?}") };
    assert_eq!(l.base_dir, PathBuf::from("/var/lib/lido/nodes"));
    assert_eq!(l.listen, "127.0.0.1:0");
    assert!(l.cluster_flags);
    assert_eq!(cfg.build().kind(), "local");

    let err = toml::from_str::<ProvisionerConfig>("kind = \"local\"\nbasedir = \"x\"").unwrap_err();
    assert!(err.to_string().contains("basedir"), "{err}");
    let err = toml::from_str::<ProvisionerConfig>("kind = \"cloud\"").unwrap_err();
    assert!(err.to_string().contains("cloud"), "{err}");
}

#[test]
fn local_args_carry_the_role_id_location_and_ims() {
    let cfg = LocalProvisionerConfig {
        ims: vec!["http://10.0.0.1:7700".into(), "http://10.0.0.2:7700".into()],
        extra_args: vec!["--log".into(), "debug".into()],
        ..LocalProvisionerConfig::default()
    };
    let args = local_args(&cfg, &request("auto-1"), Path::new("/n/auto-1.toml"), Path::new("/n/auto-1"));
    assert_eq!(
        args,
        [
            "--role",
            "node",
            "--node-id",
            "auto-1",
            "--location",
            "ny",
            "--im",
            "http://10.0.0.1:7700",
            "--im",
            "http://10.0.0.2:7700",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/n/auto-1",
            "--config",
            "/n/auto-1.toml",
            "--log",
            "debug"
        ]
    );
    let bare = LocalProvisionerConfig { cluster_flags: false, ..cfg };
    let args = local_args(&bare, &request("auto-1"), Path::new("c.toml"), Path::new("d"));
    assert_eq!(args, ["--listen", "127.0.0.1:0", "--data-dir", "d", "--config", "c.toml", "--log", "debug"]);
}

#[test]
fn local_config_names_the_node_and_the_secret() {
    let cfg = LocalProvisionerConfig {
        cluster_secret_file: Some("/etc/lido/cluster-secret".into()),
        ..LocalProvisionerConfig::default()
    };
    let text = local_config_from(&cfg, &request("auto-\"7"), None).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(table["cluster_secret_file"].as_str(), Some("/etc/lido/cluster-secret"));
    assert_eq!(table["node"]["id"].as_str(), Some("auto-\"7"));
    assert_eq!(table["node"]["location"].as_str(), Some("ny"));
}

#[tokio::test]
async fn a_command_gets_the_node_env() {
    let p = command(
        "test \"$LIDO_NODE_ID\" = auto-2 && test \"$LIDO_LOCATION\" = ny && test \"$LIDO_NODES_WANTED\" = 3",
        "test \"$LIDO_NODE_ID\" = auto-2",
    );
    let node = p.provision(&request("auto-2")).await.unwrap();
    assert_eq!(node, ProvisionedNode { node_id: "auto-2".into(), api_url: None, pid: None });
    p.release("auto-2").await.unwrap();
    let err = p.release("auto-9").await.unwrap_err();
    assert!(err.to_string().contains("exited with code 1"), "{err}");
}

#[tokio::test]
async fn a_command_may_name_the_node_it_started() {
    let p = command("echo scaling; echo LIDO_NODE_ID=lidod-node-$((LIDO_NODES_WANTED - 1))", "true");
    let node = p.provision(&request("auto-1")).await.unwrap();
    assert_eq!(node.node_id, "lidod-node-2");
    let quiet = command("true", "true");
    assert_eq!(quiet.provision(&request("auto-1")).await.unwrap().node_id, "auto-1");
}

#[tokio::test]
async fn a_failing_command_says_its_exit_code_and_stderr_tail() {
    let p = command("echo 'error: no quota left' >&2; exit 3", "false");
    let err = p.provision(&request("auto-1")).await.unwrap_err().to_string();
    assert!(err.starts_with("provision command `echo"), "{err}");
    assert!(err.contains("exited with code 3: error: no quota left"), "{err}");
    let err = p.release("auto-1").await.unwrap_err().to_string();
    assert!(err.contains("release command `false` exited with code 1: (no stderr)"), "{err}");
    let long = command("yes x | head -c 5000 >&2; exit 1", "true");
    let err = long.provision(&request("a")).await.unwrap_err().to_string();
    assert!(err.len() < 800 && err.contains('…'), "{err}");
}

#[tokio::test]
async fn a_slow_command_times_out() {
    let p = CommandProvisioner::new(CommandProvisionerConfig {
        provision: "sleep 5".into(),
        release: "true".into(),
        timeout_ms: 100,
    });
    let err = p.provision(&request("a")).await.unwrap_err().to_string();
    assert!(err.contains("did not finish within 100 ms"), "{err}");
}

#[tokio::test]
async fn a_local_release_of_an_unknown_node_says_so() {
    let p = LocalProvisioner::new(LocalProvisionerConfig::default());
    let err = p.release("auto-1").await.unwrap_err().to_string();
    assert!(err.contains("not started by this provisioner"), "{err}");
}

#[tokio::test]
async fn a_local_node_that_exits_at_once_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = LocalProvisioner::new(LocalProvisionerConfig {
        exe: Some("false".into()),
        base_dir: dir.path().to_path_buf(),
        ..LocalProvisionerConfig::default()
    });
    let err = p.provision(&request("auto-1")).await.unwrap_err().to_string();
    assert!(err.contains("exited with code 1"), "{err}");
    assert!(dir.path().join("auto-1.toml").exists());
    assert!(p.running().is_empty());
}

#[test]
fn local_config_keeps_the_node_config_and_sets_id_location_and_secret() {
    let cfg =
        LocalProvisionerConfig { cluster_secret_file: Some("/s/secret".into()), ..LocalProvisionerConfig::default() };
    let base =
        "[node]\nid = \"old\"\njournal_synchronous = \"normal\"\n[[broker]]\nname = \"paper-1\"\ntype = \"paper\"\n";
    let text = local_config_from(&cfg, &request("auto-3"), Some(base)).unwrap();
    let parsed: crate::config::Config = toml::from_str(&text).expect("a valid node config");
    assert_eq!(parsed.node.id, "auto-3");
    assert_eq!(parsed.node.location, "ny");
    assert_eq!(parsed.brokers.len(), 1, "{text}");
    assert_eq!(parsed.cluster_secret_file.as_deref(), Some(std::path::Path::new("/s/secret")));
    assert_eq!(parsed.node.journal_synchronous, crate::journal::Synchronous::Normal);
}

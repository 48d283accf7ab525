use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use lido_shared::cluster::{NodeInfo, NodeLoad};

use super::*;
use crate::cluster::memory::MemoryRegistry;
use crate::cluster::provision::{self, ProvisionError, ProvisionedNode};

fn node(id: &str, sessions: usize, streams: usize) -> NodeRecord {
    NodeRecord {
        info: NodeInfo {
            id: id.into(),
            location: "ny".into(),
            draining: false,
            api_url: format!("http://{id}"),
            managers: Vec::new(),
            services: Vec::new(),
            load: NodeLoad { sessions, streams, open_orders: 0 },
        },
        watch_url: format!("ws://{id}/v1/cluster/watch"),
        checked_in: Utc::now(),
    }
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn cfg() -> NodeScaleConfig {
    NodeScaleConfig { enabled: true, ..NodeScaleConfig::default() }
}

/// The rule with no drain flags, nothing pending, no earlier action.
fn rule(nodes: &[NodeRecord], draining: &[&str], provisioned: &[&str], pending: usize) -> Decision {
    let (draining, provisioned) = (set(draining), set(provisioned));
    let inputs =
        ScaleInputs { draining: &draining, provisioned: &provisioned, pending, now: Instant::now(), last_action: None };
    decide(nodes, inputs, &cfg())
}

#[test]
fn defaults_and_toml() {
    let cfg: NodeScaleConfig = toml::from_str("enabled = true\nmax_nodes = 6\nlocation = \"ny\"").unwrap();
    assert_eq!(
        cfg,
        NodeScaleConfig { enabled: true, max_nodes: 6, location: Some("ny".into()), ..NodeScaleConfig::default() }
    );
    assert_eq!((cfg.min_nodes, cfg.high_load_per_node, cfg.low_load_per_node, cfg.cooldown_ms), (1, 200, 50, 30_000));
    let err = toml::from_str::<NodeScaleConfig>("max_node = 3").unwrap_err();
    assert!(err.to_string().contains("unknown field `max_node`"), "{err}");
    assert!(cfg.validate().is_ok());
    let crossed = NodeScaleConfig { min_nodes: 5, max_nodes: 2, ..NodeScaleConfig::default() };
    assert!(crossed.validate().unwrap_err().contains("min_nodes (5) is above max_nodes (2)"));
    let thresholds = NodeScaleConfig { low_load_per_node: 300, ..NodeScaleConfig::default() };
    assert!(thresholds.validate().unwrap_err().contains("low_load_per_node"));
}

#[test]
fn high_load_provisions_with_the_figures_in_words() {
    let d = rule(&[node("a", 200, 40), node("b", 100, 140)], &[], &[], 0);
    assert_eq!(d, Decision::Provision { reason: "average load 240 per node > 200 on 2 nodes".into() });
}

#[test]
fn high_load_at_max_or_with_a_pending_node_holds() {
    let full: Vec<NodeRecord> = (0..4).map(|i| node(&format!("n{i}"), 300, 0)).collect();
    let d = rule(&full, &[], &[], 0);
    assert!(matches!(&d, Decision::Hold { kind: HoldKind::AtMax, reason } if reason.contains("at max 4")), "{d:?}");
    // A draining node counts toward the cap too.
    let d = rule(&full, &["n3"], &[], 0);
    assert!(matches!(d, Decision::Hold { kind: HoldKind::AtMax, .. }), "{d:?}");
    let d = rule(&[node("a", 300, 0)], &[], &[], 1);
    assert!(
        matches!(&d, Decision::Hold { kind: HoldKind::Pending, reason } if reason.contains("1 node pending")),
        "{d:?}"
    );
}

#[test]
fn low_load_drains_the_least_loaded() {
    let d = rule(&[node("a", 30, 0), node("b", 5, 0), node("c", 20, 0)], &[], &[], 0);
    let Decision::Drain { node, reason } = d else { panic!("{d:?}") };
    assert_eq!(node, "b");
    assert_eq!(reason, "average load 18.3 per node < 50 on 3 nodes; b is the least loaded (5)");
}

#[test]
fn never_drains_the_last_node_or_below_min() {
    let d = rule(&[node("a", 0, 0)], &[], &[], 0);
    assert!(
        matches!(&d, Decision::Hold { kind: HoldKind::AtMin, reason } if reason.contains("never the last node")),
        "{d:?}"
    );
    let two = [node("a", 0, 0), node("b", 1, 0)];
    let (draining, provisioned) = (set(&[]), set(&[]));
    let inputs = ScaleInputs {
        draining: &draining,
        provisioned: &provisioned,
        pending: 0,
        now: Instant::now(),
        last_action: None,
    };
    let d = decide(&two, inputs, &NodeScaleConfig { min_nodes: 2, ..cfg() });
    assert!(matches!(&d, Decision::Hold { kind: HoldKind::AtMin, reason } if reason.contains("at min 2")), "{d:?}");
    // The draining node does not count as live: one live node stays.
    let d = rule(&two, &["b"], &[], 0);
    assert!(matches!(d, Decision::Hold { kind: HoldKind::AtMin, .. }), "{d:?}");
}

#[test]
fn does_not_drain_when_the_others_would_go_above_high() {
    let cfg = NodeScaleConfig { low_load_per_node: 150, high_load_per_node: 200, ..cfg() };
    let (draining, provisioned) = (set(&[]), set(&[]));
    let inputs = ScaleInputs {
        draining: &draining,
        provisioned: &provisioned,
        pending: 0,
        now: Instant::now(),
        last_action: None,
    };
    let d = decide(&[node("a", 140, 0), node("b", 140, 0)], inputs, &cfg);
    assert!(
        matches!(&d, Decision::Hold { kind: HoldKind::AtMin, reason } if reason.contains("1 node would carry 280")),
        "{d:?}"
    );
}

#[test]
fn below_min_provisions_and_above_max_drains() {
    let d = rule(&[], &[], &[], 0);
    assert_eq!(d, Decision::Provision { reason: "0 nodes live < min 1".into() });
    let d = rule(&[node("a", 0, 0)], &["a"], &[], 0);
    assert!(matches!(d, Decision::Provision { .. }), "{d:?}");
    let many: Vec<NodeRecord> = (0..5).map(|i| node(&format!("n{i}"), 100 + i, 0)).collect();
    let d = rule(&many, &[], &[], 0);
    assert!(
        matches!(&d, Decision::Drain { node, reason } if node == "n0" && reason.starts_with("5 nodes live > max 4")),
        "{d:?}"
    );
}

#[test]
fn in_band_holds() {
    let d = rule(&[node("a", 100, 20), node("b", 60, 0)], &[], &[], 0);
    assert_eq!(
        d,
        Decision::Hold { kind: HoldKind::InBand, reason: "average load 90 per node within 50..200 on 2 nodes".into() }
    );
}

#[test]
fn cooldown_holds_every_action() {
    let (draining, provisioned) = (set(&[]), set(&[]));
    let now = Instant::now();
    let recent = ScaleInputs {
        draining: &draining,
        provisioned: &provisioned,
        pending: 0,
        now: now + Duration::from_secs(10),
        last_action: Some(now),
    };
    let d = decide(&[node("a", 500, 0)], recent, &cfg());
    assert_eq!(
        d,
        Decision::Hold {
            kind: HoldKind::CoolingDown,
            reason: "cooling down: last action 10s ago, cooldown 30s".into()
        }
    );
    let later = ScaleInputs { now: now + Duration::from_secs(30), ..recent };
    assert!(matches!(decide(&[node("a", 500, 0)], later, &cfg()), Decision::Provision { .. }));
}

#[test]
fn releases_only_an_idle_drained_node_we_started() {
    let nodes = [node("a", 100, 0), node("auto-1", 0, 0)];
    let d = rule(&nodes, &["auto-1"], &["auto-1"], 0);
    assert_eq!(
        d,
        Decision::Release {
            node: "auto-1".into(),
            reason: "auto-1 is drained and idle (no session, stream or open order)".into()
        }
    );
    // Not ours: never released.
    assert!(!matches!(rule(&nodes, &["auto-1"], &[], 0), Decision::Release { .. }));
    // Still busy: not yet.
    let busy = [node("a", 100, 0), node("auto-1", 0, 1)];
    assert!(!matches!(rule(&busy, &["auto-1"], &["auto-1"], 0), Decision::Release { .. }));
    let mut orders = node("auto-1", 0, 0);
    orders.info.load.open_orders = 2;
    assert!(!matches!(rule(&[node("a", 100, 0), orders], &["auto-1"], &["auto-1"], 0), Decision::Release { .. }));
}

#[test]
fn next_node_id_skips_the_taken_ones() {
    let pending = BTreeMap::from([("auto-3".to_string(), Instant::now())]);
    let id = next_node_id(&[node("auto-1", 0, 0)], &set(&["auto-2"]), &set(&["auto-4"]), &pending);
    assert_eq!(id, "auto-5");
}

/// A provisioner double that counts its calls.
#[derive(Default)]
struct Counting {
    provisions: AtomicUsize,
    releases: Mutex<Vec<String>>,
    fail: bool,
}

#[async_trait]
impl Provisioner for Counting {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn provision(&self, req: &ProvisionRequest) -> provision::Result<ProvisionedNode> {
        self.provisions.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            return Err(ProvisionError::Failed {
                what: "fake".into(),
                code: "code 1".into(),
                stderr: "no quota".into(),
            });
        }
        Ok(ProvisionedNode { node_id: req.node_id.clone(), api_url: None, pid: None })
    }

    async fn release(&self, node_id: &str) -> provision::Result<()> {
        self.releases.lock().unwrap().push(node_id.to_string());
        Ok(())
    }
}

const TTL: Duration = Duration::from_secs(3600);

/// The autoscaler, looking every 20 ms.
fn spawn(
    me: String,
    registry: Arc<dyn Registry>,
    provisioner: Arc<dyn Provisioner>,
    cfg: NodeScaleConfig,
    bus: EventBus,
    stop: CancellationToken,
) -> NodeScaler {
    let leader = registry.campaign(&me, stop.child_token());
    spawn_with_tick(me, registry, leader, provisioner, cfg, bus, stop, Duration::from_millis(20))
}

/// Polls `done` until it holds, for at most 30 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn scaled(bus: &EventBus, action: &str) -> Vec<(Option<String>, String)> {
    bus.history(|_| true)
        .into_iter()
        .filter_map(|n| match n.event {
            ClusterEvent::NodeScaled { action: a, node, reason, .. } if a == action => Some((node, reason)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn high_load_provisions_once_per_cooldown() {
    let registry = Arc::new(MemoryRegistry::new());
    registry.check_in(&node("a", 300, 0), TTL).await.unwrap();
    let fake = Arc::new(Counting::default());
    let bus = EventBus::new();
    let stop = CancellationToken::new();
    let cfg = NodeScaleConfig { cooldown_ms: 200, max_nodes: 3, ..cfg() };
    let scaler = spawn("im-1".into(), registry.clone(), fake.clone(), cfg, bus.clone(), stop.clone());

    until("a provision", || fake.provisions.load(Ordering::SeqCst) == 1).await;
    let provisions = scaled(&bus, "provision");
    assert_eq!(provisions, vec![(Some("auto-1".into()), "average load 300 per node > 200 on 1 node".into())]);
    // auto-1 has not checked in: it stays pending, so no second node while it is awaited.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fake.provisions.load(Ordering::SeqCst), 1);
    let status = scaler.status();
    assert!(status.leader && status.enabled, "{status:?}");
    assert_eq!(status.pending, vec!["auto-1".to_string()]);
    assert_eq!(status.provisioner, "fake");
    assert_eq!(status.recent.iter().filter(|d| d.action == "provision").count(), 1);
    let holds = scaled(&bus, "hold");
    assert!(holds.iter().any(|(_, r)| r.contains("waiting for 1 node pending")), "{holds:?}");
    assert_eq!(registry.setting(PROVISIONED_SETTING).await.unwrap().as_deref(), Some(r#"["auto-1"]"#));

    // It checks in, still loaded: after the cooldown, one more, auto-2.
    registry.check_in(&node("auto-1", 300, 0), TTL).await.unwrap();
    until("a second provision", || fake.provisions.load(Ordering::SeqCst) == 2).await;
    assert_eq!(scaled(&bus, "provision")[1].0.as_deref(), Some("auto-2"));
    stop.cancel();
}

#[tokio::test]
async fn low_load_drains_the_least_loaded_then_releases_it_when_idle() {
    let registry = Arc::new(MemoryRegistry::new());
    registry.check_in(&node("a", 20, 0), TTL).await.unwrap();
    registry.check_in(&node("auto-1", 3, 2), TTL).await.unwrap();
    registry.put_setting(PROVISIONED_SETTING, r#"["auto-1"]"#).await.unwrap();
    let fake = Arc::new(Counting::default());
    let bus = EventBus::new();
    let stop = CancellationToken::new();
    let cfg = NodeScaleConfig { cooldown_ms: 100, ..cfg() };
    let scaler = spawn("im-1".into(), registry.clone(), fake.clone(), cfg, bus.clone(), stop.clone());

    until("a drain", || !scaled(&bus, "drain").is_empty()).await;
    let drains = scaled(&bus, "drain");
    assert_eq!(drains[0].0.as_deref(), Some("auto-1"));
    assert!(drains[0].1.contains("< 50 on 2 nodes; auto-1 is the least loaded (5)"), "{drains:?}");
    assert!(registry.draining().await.unwrap().contains("auto-1"));

    // Busy still: not released, even after the cooldown.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(fake.releases.lock().unwrap().is_empty());
    // Idle: released, forgotten, flag cleared.
    registry.check_in(&node("auto-1", 0, 0), TTL).await.unwrap();
    until("a release", || !fake.releases.lock().unwrap().is_empty()).await;
    assert_eq!(*fake.releases.lock().unwrap(), vec!["auto-1".to_string()]);
    until("the registry to forget auto-1", || scaled(&bus, "release").len() == 1).await;
    assert!(registry.nodes().await.unwrap().iter().all(|n| n.info.id != "auto-1"));
    assert!(registry.draining().await.unwrap().is_empty());
    assert_eq!(registry.setting(PROVISIONED_SETTING).await.unwrap().as_deref(), Some("[]"));
    // `a` is the last node: it is never drained.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(scaled(&bus, "drain").len(), 1);
    let status = scaler.status();
    assert_eq!(status.nodes.len(), 1);
    assert!(status.last_decision.unwrap().reason.contains("never the last node"));
    stop.cancel();
}

#[tokio::test]
async fn a_failing_provisioner_is_reported_and_retried_after_the_cooldown() {
    let registry = Arc::new(MemoryRegistry::new());
    registry.check_in(&node("a", 999, 0), TTL).await.unwrap();
    let fake = Arc::new(Counting { fail: true, ..Counting::default() });
    let bus = EventBus::new();
    let stop = CancellationToken::new();
    let cfg = NodeScaleConfig { cooldown_ms: 4_000, ..cfg() };
    let _scaler = spawn("im-1".into(), registry, fake.clone(), cfg, bus.clone(), stop.clone());
    until("a failed provision", || !scaled(&bus, "provision_failed").is_empty()).await;
    let failed = scaled(&bus, "provision_failed");
    assert!(failed[0].1.contains("exited with code 1: no quota"), "{failed:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.provisions.load(Ordering::SeqCst), 1, "no retry inside the cooldown");
    until("a retry", || fake.provisions.load(Ordering::SeqCst) == 2).await;
    stop.cancel();
}

#[tokio::test]
async fn disabled_or_not_leading_does_nothing() {
    let registry = Arc::new(MemoryRegistry::new());
    registry.check_in(&node("a", 999, 0), TTL).await.unwrap();
    let fake = Arc::new(Counting::default());
    let bus = EventBus::new();
    let stop = CancellationToken::new();
    let cfg = NodeScaleConfig { enabled: false, ..cfg() };
    let scaler = spawn("im-1".into(), registry, fake.clone(), cfg, bus.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.provisions.load(Ordering::SeqCst), 0);
    let status = scaler.status();
    assert!(status.leader && !status.enabled, "{status:?}");
    assert!(scaled(&bus, "hold").is_empty());
    stop.cancel();
}

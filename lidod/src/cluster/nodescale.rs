//! The node autoscaler of the leader InfrastructureManager.
//!
//! [`decide`] is the rule, a pure function of the registry's nodes, their
//! drain flags, the nodes this autoscaler started and the time of its last
//! action: add a node when the average load (sessions + streams per live,
//! non-draining node) is above `high_load_per_node`, drain the least-loaded
//! one when it is below `low_load_per_node`, release (stop) a node it
//! started once that node is drained and idle. [`spawn_node_autoscaler`]
//! runs the rule once a second while this IM leads and carries the answer
//! out through a [`Provisioner`] and the [`Registry`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use lido_shared::cluster::{ClusterEvent, NodeScaleDecision, NodeScaleNode, NodeScaleStatus};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::provision::{ProvisionRequest, Provisioner};
use super::registry::{NodeRecord, Registry, RegistryResult};
use crate::events::EventBus;

/// `[cluster.autoscale]`: when the leader IM adds or removes nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeScaleConfig {
    pub enabled: bool,
    /// Never fewer live (non-draining) nodes than this: below it, add one.
    pub min_nodes: usize,
    /// Never more nodes (live, draining and pending) than this.
    pub max_nodes: usize,
    /// Sessions + streams per live node above which a node is added.
    pub high_load_per_node: usize,
    /// Sessions + streams per live node below which the least-loaded node is drained.
    pub low_load_per_node: usize,
    /// The least time between two actions (provision, drain, release).
    pub cooldown_ms: u64,
    /// Where new nodes go (`--location`); unset: the provisioner's default.
    pub location: Option<String>,
    /// How long a provisioned node may take to check in before it no longer
    /// counts as pending.
    pub pending_timeout_ms: u64,
}

impl Default for NodeScaleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_nodes: 1,
            max_nodes: 4,
            high_load_per_node: 200,
            low_load_per_node: 50,
            cooldown_ms: 30_000,
            location: None,
            pending_timeout_ms: 120_000,
        }
    }
}

impl NodeScaleConfig {
    /// Refuses a rule that cannot hold: bounds crossed, thresholds crossed.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_nodes == 0 {
            return Err("cluster.autoscale.min_nodes must be at least 1".into());
        }
        if self.min_nodes > self.max_nodes {
            return Err(format!(
                "cluster.autoscale.min_nodes ({}) is above max_nodes ({}): lower min_nodes or raise max_nodes",
                self.min_nodes, self.max_nodes
            ));
        }
        if self.low_load_per_node >= self.high_load_per_node {
            return Err(format!(
                "cluster.autoscale.low_load_per_node ({}) must be below high_load_per_node ({})",
                self.low_load_per_node, self.high_load_per_node
            ));
        }
        Ok(())
    }

    fn cooldown(&self) -> Duration {
        Duration::from_millis(self.cooldown_ms)
    }
}

/// Why the rule holds, so that a change of reason (not of the figures in
/// it) is reported once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldKind {
    /// The load is between the thresholds.
    InBand,
    CoolingDown,
    /// A node was provisioned and has not checked in yet.
    Pending,
    /// It would add a node, but the cluster is at `max_nodes`.
    AtMax,
    /// It would drain a node, but that would go below `min_nodes`, leave no
    /// node, or push the others above `high_load_per_node`.
    AtMin,
}

/// What the rule says to do now.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Hold {
        kind: HoldKind,
        reason: String,
    },
    /// Start one more node.
    Provision {
        reason: String,
    },
    /// Flag `node` draining: no new sessions or services go there.
    Drain {
        node: String,
        reason: String,
    },
    /// Stop `node` (drained, idle, started by us) and forget it.
    Release {
        node: String,
        reason: String,
    },
}

impl Decision {
    pub fn action(&self) -> &'static str {
        match self {
            Self::Hold { .. } => "hold",
            Self::Provision { .. } => "provision",
            Self::Drain { .. } => "drain",
            Self::Release { .. } => "release",
        }
    }

    pub fn node(&self) -> Option<&str> {
        match self {
            Self::Hold { .. } | Self::Provision { .. } => None,
            Self::Drain { node, .. } | Self::Release { node, .. } => Some(node),
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Hold { reason, .. }
            | Self::Provision { reason }
            | Self::Drain { reason, .. }
            | Self::Release { reason, .. } => reason,
        }
    }
}

/// What the rule sees besides the registry's nodes.
#[derive(Clone, Copy, Debug)]
pub struct ScaleInputs<'a> {
    /// The registry's drain flags.
    pub draining: &'a BTreeSet<String>,
    /// The nodes this autoscaler started (only those it may release).
    pub provisioned: &'a BTreeSet<String>,
    /// Nodes provisioned that have not checked in yet.
    pub pending: usize,
    pub now: Instant,
    /// When the autoscaler last acted (or failed to), for the cooldown.
    pub last_action: Option<Instant>,
}

/// A node's load as the rule counts it: sessions + streams.
pub fn load(node: &NodeRecord) -> usize {
    node.info.load.sessions + node.info.load.streams
}

/// A drained node is idle when it has no session, stream or open order.
fn idle(node: &NodeRecord) -> bool {
    load(node) == 0 && node.info.load.open_orders == 0
}

/// The rule. Order of precedence: cooldown; release of an idle drained node
/// we started; back up to `min_nodes`; add a node above `high`; drain one
/// above `max_nodes` or below `low`; else hold.
pub fn decide(nodes: &[NodeRecord], inputs: ScaleInputs<'_>, cfg: &NodeScaleConfig) -> Decision {
    let hold = |kind, reason: String| Decision::Hold { kind, reason };
    if let Some(last) = inputs.last_action {
        let since = inputs.now.saturating_duration_since(last);
        if since < cfg.cooldown() {
            return hold(
                HoldKind::CoolingDown,
                format!("cooling down: last action {}s ago, cooldown {}s", since.as_secs(), cfg.cooldown().as_secs()),
            );
        }
    }
    if let Some(node) = nodes
        .iter()
        .find(|n| inputs.draining.contains(&n.info.id) && inputs.provisioned.contains(&n.info.id) && idle(n))
    {
        return Decision::Release {
            node: node.info.id.clone(),
            reason: format!("{} is drained and idle (no session, stream or open order)", node.info.id),
        };
    }

    let live: Vec<&NodeRecord> = nodes.iter().filter(|n| !inputs.draining.contains(&n.info.id)).collect();
    let total: usize = live.iter().map(|n| load(n)).sum();
    let count = live.len();
    // Every node there is or will be: the cap counts draining and pending ones.
    let all = nodes.len() + inputs.pending;
    let average = per_node(total, count);
    let on = |n: usize| format!("{n} node{}", if n == 1 { "" } else { "s" });

    if count + inputs.pending < cfg.min_nodes {
        if all >= cfg.max_nodes {
            return hold(
                HoldKind::AtMax,
                format!("{} live below min {} but {} at max {}", on(count), cfg.min_nodes, on(all), cfg.max_nodes),
            );
        }
        return Decision::Provision { reason: format!("{} live < min {}", on(count), cfg.min_nodes) };
    }
    if count > 0 && total > cfg.high_load_per_node * count {
        let why = format!("average load {average} per node > {} on {}", cfg.high_load_per_node, on(count));
        if inputs.pending > 0 {
            return hold(HoldKind::Pending, format!("{why}, waiting for {} pending to check in", on(inputs.pending)));
        }
        if all >= cfg.max_nodes {
            return hold(HoldKind::AtMax, format!("{why}, but {} at max {}", on(all), cfg.max_nodes));
        }
        return Decision::Provision { reason: why };
    }
    let least = live.iter().min_by(|a, b| load(a).cmp(&load(b)).then_with(|| b.info.id.cmp(&a.info.id)));
    if count > cfg.max_nodes {
        if let Some(node) = least {
            return Decision::Drain {
                node: node.info.id.clone(),
                reason: format!(
                    "{} live > max {}; {} is the least loaded ({})",
                    on(count),
                    cfg.max_nodes,
                    node.info.id,
                    load(node)
                ),
            };
        }
    }
    if total < cfg.low_load_per_node * count {
        let why = format!("average load {average} per node < {} on {}", cfg.low_load_per_node, on(count));
        if inputs.pending > 0 {
            return hold(HoldKind::Pending, format!("{why}, waiting for {} pending to check in", on(inputs.pending)));
        }
        if count <= 1 {
            return hold(HoldKind::AtMin, format!("{why}, but never the last node"));
        }
        if count <= cfg.min_nodes {
            return hold(HoldKind::AtMin, format!("{why}, but at min {}", cfg.min_nodes));
        }
        // Hysteresis: the others must stay under `high` without it.
        if total > cfg.high_load_per_node * (count - 1) {
            return hold(
                HoldKind::AtMin,
                format!(
                    "{why}, but {} would carry {} per node > {}",
                    on(count - 1),
                    per_node(total, count - 1),
                    cfg.high_load_per_node
                ),
            );
        }
        if let Some(node) = least {
            return Decision::Drain {
                node: node.info.id.clone(),
                reason: format!("{why}; {} is the least loaded ({})", node.info.id, load(node)),
            };
        }
    }
    hold(
        HoldKind::InBand,
        format!(
            "average load {average} per node within {}..{} on {}",
            cfg.low_load_per_node,
            cfg.high_load_per_node,
            on(count)
        ),
    )
}

/// `total / count` for people: `240`, `12.5`, `0` for no node.
fn per_node(total: usize, count: usize) -> String {
    if count == 0 {
        return "0".into();
    }
    if total.is_multiple_of(count) {
        return (total / count).to_string();
    }
    format!("{:.1}", total as f64 / count as f64)
}

/// The registry setting holding the nodes the autoscaler started (a JSON
/// array), so that a new leader may release them too.
pub const PROVISIONED_SETTING: &str = "nodescale.provisioned";

/// The registry setting holding rules an operator set at run time (JSON of
/// [`NodeScaleConfig`]); every IM's autoscaler follows it over its file.
pub const SETTINGS_KEY: &str = "nodescale.config";

/// Decisions kept for the status.
const RECENT: usize = 20;

/// A handle on the running autoscaler, for `GET /v1/cluster/autoscale`.
#[derive(Clone)]
pub struct NodeScaler {
    status: Arc<Mutex<NodeScaleStatus>>,
    /// The rules in force: the config file's, or the last ones an operator
    /// put in the registry (`SETTINGS_KEY`), which every IM follows.
    cfg: Arc<Mutex<NodeScaleConfig>>,
}

impl NodeScaler {
    pub fn status(&self) -> NodeScaleStatus {
        self.lock().clone()
    }

    /// The rules in force.
    pub fn config(&self) -> NodeScaleConfig {
        self.cfg.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The rules in force with the fields of `changes` (a JSON object of
    /// `[cluster.autoscale]` keys) replaced; an error names a bad field.
    pub fn merged(&self, changes: &serde_json::Value) -> Result<NodeScaleConfig, String> {
        merge(self.config(), changes)
    }

    fn lock(&self) -> MutexGuard<'_, NodeScaleStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `base` with the fields of `changes` (a JSON object of
/// `[cluster.autoscale]` keys) replaced, validated.
pub fn merge(base: NodeScaleConfig, changes: &serde_json::Value) -> Result<NodeScaleConfig, String> {
    let serde_json::Value::Object(changes) = changes else {
        return Err("expected an object of [cluster.autoscale] fields, e.g. {\"max_nodes\": 6}".into());
    };
    let mut current = serde_json::to_value(base).map_err(|e| e.to_string())?;
    if let serde_json::Value::Object(fields) = &mut current {
        for (k, v) in changes {
            fields.insert(k.clone(), v.clone());
        }
    }
    let cfg: NodeScaleConfig = serde_json::from_value(current).map_err(|e| e.to_string())?;
    cfg.validate()?;
    Ok(cfg)
}

/// Starts the autoscaler of IM `me`: while `me` leads (per `leader`, the
/// IM's [`Registry::campaign`]), once a second, it reads the nodes and
/// drain flags, applies [`decide`] and acts. It ends with `stop`.
pub fn spawn_node_autoscaler(
    me: String,
    registry: Arc<dyn Registry>,
    leader: watch::Receiver<Option<String>>,
    provisioner: Arc<dyn Provisioner>,
    cfg: NodeScaleConfig,
    bus: EventBus,
    stop: CancellationToken,
) -> NodeScaler {
    spawn_with_tick(me, registry, leader, provisioner, cfg, bus, stop, Duration::from_secs(1))
}

/// [`spawn_node_autoscaler`] looking every `tick` (tests look more often).
#[allow(clippy::too_many_arguments)]
fn spawn_with_tick(
    me: String,
    registry: Arc<dyn Registry>,
    leader: watch::Receiver<Option<String>>,
    provisioner: Arc<dyn Provisioner>,
    cfg: NodeScaleConfig,
    bus: EventBus,
    stop: CancellationToken,
    tick: Duration,
) -> NodeScaler {
    let status = NodeScaleStatus {
        enabled: cfg.enabled,
        provisioner: provisioner.kind().to_string(),
        min_nodes: cfg.min_nodes,
        max_nodes: cfg.max_nodes,
        high_load_per_node: cfg.high_load_per_node,
        low_load_per_node: cfg.low_load_per_node,
        ..NodeScaleStatus::default()
    };
    let handle = NodeScaler { status: Arc::new(Mutex::new(status)), cfg: Arc::new(Mutex::new(cfg.clone())) };
    let mut scaler = Scaler {
        me,
        registry,
        leader,
        provisioner,
        cfg,
        bus,
        handle: handle.clone(),
        pending: BTreeMap::new(),
        last_action: None,
        last_hold: None,
        recent: VecDeque::with_capacity(RECENT),
    };
    tokio::spawn(follow_leader(scaler.me.clone(), scaler.leader.clone(), handle.clone(), stop.clone()));
    tokio::spawn(async move { scaler.run(stop, tick).await });
    handle
}

/// Shows each change of leader in the status at once (a round may be
/// waiting on an unreachable registry meanwhile), with when this IM began
/// or ceased to lead.
async fn follow_leader(
    me: String,
    mut leader: watch::Receiver<Option<String>>,
    handle: NodeScaler,
    stop: CancellationToken,
) {
    let mut led = false;
    loop {
        let leader_id = leader.borrow_and_update().clone();
        let leads = leader_id.as_deref() == Some(me.as_str());
        {
            let mut status = handle.lock();
            status.leader = leads;
            status.leader_id = leader_id;
            if leads && !led {
                status.leading_since = Some(Utc::now());
            } else if led && !leads {
                status.stepped_down_at = Some(Utc::now());
            }
        }
        if leads != led {
            tracing::info!(im = %me, leads, "node autoscaler {}", if leads { "leads" } else { "no longer leads" });
            led = leads;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = leader.changed() => if r.is_err() {
                // The campaign ended (the IM is closing): it leads no more.
                let mut status = handle.lock();
                if status.leader {
                    status.leader = false;
                    status.stepped_down_at = Some(Utc::now());
                }
                return;
            },
        }
    }
}

struct Scaler {
    me: String,
    registry: Arc<dyn Registry>,
    /// The leader's name, from this IM's campaign.
    leader: watch::Receiver<Option<String>>,
    provisioner: Arc<dyn Provisioner>,
    cfg: NodeScaleConfig,
    bus: EventBus,
    handle: NodeScaler,
    /// Provisioned, not checked in yet: id → until when it counts.
    pending: BTreeMap<String, Instant>,
    last_action: Option<Instant>,
    last_hold: Option<HoldKind>,
    recent: VecDeque<NodeScaleDecision>,
}

impl Scaler {
    async fn run(&mut self, stop: CancellationToken, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut led = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let leads = self.leader.borrow().as_deref() == Some(self.me.as_str());
            if leads != led {
                led = leads;
                // A new term: the cooldown and hold reason start afresh, the
                // pending nodes of an earlier term are forgotten.
                self.last_hold = None;
                self.pending.clear();
            }
            self.follow_settings().await;
            if !leads || !self.cfg.enabled {
                continue;
            }
            if let Err(e) = self.round().await {
                tracing::warn!(im = %self.me, error = %e, "node autoscaler: cannot read the cluster registry, will retry");
                self.handle.lock().error = Some(e.to_string());
            }
        }
        tracing::debug!(im = %self.me, "node autoscaler stopped");
    }

    /// Adopts rules an operator put in the registry since the last look.
    async fn follow_settings(&mut self) {
        let Ok(Some(text)) = self.registry.setting(SETTINGS_KEY).await else { return };
        let read = serde_json::from_str::<NodeScaleConfig>(&text)
            .map_err(|e| e.to_string())
            .and_then(|cfg| cfg.validate().map(|()| cfg));
        let cfg = match read {
            Ok(cfg) => cfg,
            Err(error) => {
                tracing::warn!(key = SETTINGS_KEY, %error, "node autoscaler: ignoring unreadable rules in the registry");
                return;
            }
        };
        if cfg == self.cfg {
            return;
        }
        tracing::info!(im = %self.me, rules = %text, "node autoscaler: new rules from the registry");
        *self.handle.cfg.lock().unwrap_or_else(|p| p.into_inner()) = cfg.clone();
        {
            let mut status = self.handle.lock();
            status.enabled = cfg.enabled;
            status.min_nodes = cfg.min_nodes;
            status.max_nodes = cfg.max_nodes;
            status.high_load_per_node = cfg.high_load_per_node;
            status.low_load_per_node = cfg.low_load_per_node;
        }
        self.cfg = cfg;
    }

    /// One look at the registry and, maybe, one action.
    async fn round(&mut self) -> RegistryResult<()> {
        let nodes = self.registry.nodes().await?;
        let draining = self.registry.draining().await?;
        let mut provisioned = self.provisioned().await?;
        let now = Instant::now();
        self.pending.retain(|id, until| {
            let checked_in = nodes.iter().any(|n| &n.info.id == id);
            if !checked_in && *until <= now {
                tracing::warn!(node = %id, "node autoscaler: provisioned node never checked in, no longer waiting for it");
            }
            !checked_in && *until > now
        });
        let inputs = ScaleInputs {
            draining: &draining,
            provisioned: &provisioned,
            pending: self.pending.len(),
            now,
            last_action: self.last_action,
        };
        let decision = decide(&nodes, inputs, &self.cfg);
        self.show(&nodes, &draining, &provisioned, &decision);
        // Reading the registry took time: act only if still the leader (a
        // leader cut off from etcd has stepped down before its lease ends).
        if self.leader.borrow().as_deref() != Some(self.me.as_str()) {
            return Ok(());
        }
        let outcome = match &decision {
            Decision::Hold { kind, reason } => {
                if self.last_hold != Some(*kind) {
                    self.last_hold = Some(*kind);
                    self.report("hold", None, reason.clone(), true);
                }
                return Ok(());
            }
            Decision::Provision { reason } => {
                let request = ProvisionRequest {
                    node_id: next_node_id(&nodes, &draining, &provisioned, &self.pending),
                    location: self.cfg.location.clone(),
                    nodes_wanted: nodes.len() + self.pending.len() + 1,
                };
                match self.provisioner.provision(&request).await {
                    Ok(node) => {
                        provisioned.insert(node.node_id.clone());
                        self.pending
                            .insert(node.node_id.clone(), now + Duration::from_millis(self.cfg.pending_timeout_ms));
                        self.save_provisioned(&provisioned).await;
                        Ok(("provision", Some(node.node_id), reason.clone()))
                    }
                    Err(e) => Err(("provision_failed", Some(request.node_id), format!("{reason}; {e}"))),
                }
            }
            Decision::Drain { node, reason } => match self.registry.set_draining(node, true).await {
                Ok(()) => Ok(("drain", Some(node.clone()), reason.clone())),
                Err(e) => Err(("drain_failed", Some(node.clone()), format!("{reason}; {e}"))),
            },
            Decision::Release { node, reason } => match self.provisioner.release(node).await {
                Ok(()) => {
                    // Stopped on purpose: forget it now rather than at its TTL,
                    // and clear its flag so a later node of that name starts fresh.
                    let forgot = async {
                        self.registry.remove_node(node).await?;
                        self.registry.set_draining(node, false).await
                    };
                    if let Err(e) = forgot.await {
                        tracing::warn!(node = %node, error = %e, "node autoscaler: released node not yet forgotten by the registry");
                    }
                    provisioned.remove(node);
                    self.save_provisioned(&provisioned).await;
                    Ok(("release", Some(node.clone()), reason.clone()))
                }
                Err(e) => Err(("release_failed", Some(node.clone()), format!("{reason}; {e}"))),
            },
        };
        // Acting, or failing to, starts the cooldown (a failing provisioner
        // is retried at the cooldown's pace, not every second).
        self.last_action = Some(now);
        self.last_hold = None;
        match outcome {
            Ok((action, node, reason)) => self.report(action, node, reason, true),
            Err((action, node, reason)) => self.report(action, node, reason, false),
        }
        Ok(())
    }

    /// The nodes the autoscaler started, as the registry keeps them.
    async fn provisioned(&self) -> RegistryResult<BTreeSet<String>> {
        let Some(json) = self.registry.setting(PROVISIONED_SETTING).await? else {
            return Ok(BTreeSet::new());
        };
        Ok(serde_json::from_str(&json).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "node autoscaler: unreadable {PROVISIONED_SETTING} setting, treating as empty");
            BTreeSet::new()
        }))
    }

    async fn save_provisioned(&self, provisioned: &BTreeSet<String>) {
        let json = serde_json::to_string(provisioned).unwrap_or_else(|_| "[]".into());
        if let Err(e) = self.registry.put_setting(PROVISIONED_SETTING, &json).await {
            tracing::warn!(error = %e, "node autoscaler: cannot record the nodes it started");
        }
    }

    /// The status's picture of the nodes and this round's decision.
    fn show(
        &self,
        nodes: &[NodeRecord],
        draining: &BTreeSet<String>,
        provisioned: &BTreeSet<String>,
        decision: &Decision,
    ) {
        let live: Vec<&NodeRecord> = nodes.iter().filter(|n| !draining.contains(&n.info.id)).collect();
        let total: usize = live.iter().map(|n| load(n)).sum();
        let mut status = self.handle.lock();
        status.nodes = nodes
            .iter()
            .map(|n| NodeScaleNode {
                id: n.info.id.clone(),
                location: n.info.location.clone(),
                load: load(n),
                draining: draining.contains(&n.info.id),
                provisioned: provisioned.contains(&n.info.id),
            })
            .collect();
        status.pending = self.pending.keys().cloned().collect();
        status.load_per_node = if live.is_empty() { 0.0 } else { total as f64 / live.len() as f64 };
        status.last_decision = Some(NodeScaleDecision {
            action: decision.action().to_string(),
            node: decision.node().map(str::to_string),
            reason: decision.reason().to_string(),
            at: Utc::now(),
        });
        status.error = None;
    }

    /// One log line and one cluster event per decision that acted (or
    /// failed to) and per change of the reason to hold.
    fn report(&mut self, action: &str, node: Option<String>, reason: String, ok: bool) {
        let record = NodeScaleDecision {
            action: action.to_string(),
            node: node.clone(),
            reason: reason.clone(),
            at: Utc::now(),
        };
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(record.clone());
        {
            let mut status = self.handle.lock();
            status.recent = self.recent.iter().cloned().collect();
            status.last_decision = Some(record);
        }
        let shown = node.as_deref().unwrap_or("-");
        if ok {
            tracing::info!(im = %self.me, action, node = shown, reason = %reason, "node autoscaler");
        } else {
            tracing::warn!(im = %self.me, action, node = shown, reason = %reason, "node autoscaler: action failed, retrying after the cooldown");
        }
        self.bus.publish(ClusterEvent::NodeScaled {
            action: action.to_string(),
            node,
            reason,
            leader: self.me.clone(),
        });
    }
}

/// `auto-N` with the smallest N no node, flag or pending entry uses.
pub fn next_node_id(
    nodes: &[NodeRecord],
    draining: &BTreeSet<String>,
    provisioned: &BTreeSet<String>,
    pending: &BTreeMap<String, Instant>,
) -> String {
    let taken = |id: &str| {
        nodes.iter().any(|n| n.info.id == id)
            || draining.contains(id)
            || provisioned.contains(id)
            || pending.contains_key(id)
    };
    (1..).map(|n| format!("auto-{n}")).find(|id| !taken(id)).unwrap_or_else(|| "auto-0".into())
}

#[cfg(test)]
mod tests;

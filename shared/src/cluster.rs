//! The operator API of the InfrastructureManager: cluster snapshot, the
//! watch stream, and spawn/stop/drain requests (over REST or as commands on
//! the watch WebSocket, with correlated replies).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ErrorDetail;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    #[default]
    Broker,
    Market,
    Trader,
}

impl ServiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Broker => "broker",
            Self::Market => "market",
            Self::Trader => "trader",
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ServiceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "broker" | "brokers" => Ok(Self::Broker),
            "market" | "markets" => Ok(Self::Market),
            "trader" | "traders" => Ok(Self::Trader),
            other => Err(format!("unknown service kind {other:?}: expected broker, market or trader")),
        }
    }
}

/// A service's health. The default is pessimistic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    #[default]
    Starting,
    Running,
    Degraded,
    Draining,
    Stopped,
    Failed,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Degraded => "degraded",
            Self::Draining => "draining",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a service runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// A child process of `lidod` (isolation: a crash does not take the node down).
    #[default]
    Process,
    /// A task inside `lidod`, speaking the same pipe protocol in memory.
    Task,
    /// Started elsewhere and adopted on check-in.
    External,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceInfo {
    pub name: String,
    pub kind: ServiceKind,
    /// `paper`, `kraken`, …; empty for markets.
    #[serde(rename = "type")]
    pub service_type: String,
    pub state: ServiceState,
    pub node: String,
    pub mode: RunMode,
    pub pid: Option<u32>,
    /// The service's pipe WebSocket, once checked in.
    pub ws_url: Option<String>,
    /// How many times the manager restarted it.
    pub restarts: u32,
    pub started_at: Option<DateTime<Utc>>,
    /// Why it is degraded or failed, or what it is waiting for.
    pub detail: Option<String>,
    pub options: BTreeMap<String, String>,
    /// Load and latency figures (messages/s, pipe round trip, …).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ManagerInfo {
    pub kind: ServiceKind,
    pub state: ServiceState,
    pub services: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeLoad {
    pub sessions: usize,
    pub streams: usize,
    pub open_orders: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    pub id: String,
    pub location: String,
    pub draining: bool,
    /// The node's algo API (its MarketManager).
    pub api_url: String,
    pub managers: Vec<ManagerInfo>,
    pub services: Vec<ServiceInfo>,
    pub load: NodeLoad,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterSnapshot {
    pub nodes: Vec<NodeInfo>,
    pub ts: DateTime<Utc>,
}

impl ClusterSnapshot {
    pub fn services(&self) -> impl Iterator<Item = &ServiceInfo> {
        self.nodes.iter().flat_map(|n| n.services.iter())
    }

    pub fn service(&self, name: &str) -> Option<&ServiceInfo> {
        self.services().find(|s| s.name == name)
    }
}

/// A change in the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClusterEvent {
    ServiceChanged {
        service: ServiceInfo,
    },
    ServiceRemoved {
        name: String,
        node: String,
    },
    NodeChanged {
        id: String,
        draining: bool,
        load: NodeLoad,
    },
    /// Once a second per node: each service's figures (`messages_per_s`,
    /// `pipe_latency_ms`, …) for live rates and sparklines.
    Metrics {
        node: String,
        services: BTreeMap<String, BTreeMap<String, f64>>,
    },
    /// A market moved symbols from one broker to another: after a failure
    /// (`planned: false`, the algo streams got a gap marker per feed) or a
    /// drain or failback (`planned: true`, make-before-break, no gap).
    Failover {
        market: String,
        symbols: Vec<String>,
        /// The feeds moved (`quotes BTC/USD`); orders-only routes have none.
        feeds: Vec<String>,
        from: String,
        to: String,
        reason: String,
        planned: bool,
        /// From the failure seen (or the move begun) to the new broker carrying it.
        duration_ms: u64,
        at: DateTime<Utc>,
    },
    /// Something an operator should see (restart, failure, drain, …).
    Log {
        level: String,
        message: String,
    },
    /// The leader IM's node autoscaler acted (`provision`, `drain`,
    /// `release`, or one of those `_failed`) or changed why it holds (`hold`).
    NodeScaled {
        action: String,
        /// The node drained or released, or the node provisioned.
        #[serde(default)]
        node: Option<String>,
        /// In words: "average load 240 per node > 200 on 2 nodes".
        reason: String,
        /// The IM that decided.
        leader: String,
    },
    /// A node checked in with the InfrastructureManager for the first time.
    NodeAdded {
        node: NodeInfo,
    },
    /// A node left the cluster: it stopped checking in, or was stopped.
    NodeRemoved {
        id: String,
        reason: String,
    },
}

/// `POST /v1/nodes/checkin` body: a node tells an InfrastructureManager it
/// is alive, what it runs and where the IM can watch it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeCheckIn {
    pub info: NodeInfo,
    /// The node's own `/v1/cluster/watch` (ws:// or wss://).
    pub watch_url: String,
}

/// `POST /v1/nodes/order-claims` body: a node claims a client order (by
/// Lido's order id) before it sends it to a venue, so that it is placed
/// through one node only, cluster-wide.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderClaim {
    pub order_id: String,
    /// The node that means to send it.
    pub node: String,
}

/// The answer to an [`OrderClaim`]: the node that holds the order, which is
/// the claimant unless another node claimed it first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderClaimReply {
    pub holder: String,
}

/// The InfrastructureManager's answer to a [`NodeCheckIn`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeCheckInReply {
    pub accepted: bool,
    /// The node should take no new sessions or spawns.
    pub draining: bool,
    /// The node should shut down gracefully (idle, draining, after hours).
    pub stop: bool,
}

/// `PUT /v1/markets/{name}` body: a live market's new pool, as comma lists
/// like the spawn options. A field left out keeps its current value; an
/// empty `fallback` or `symbols` clears it (an empty universe: whatever
/// the pool offers).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "BTreeMap<String, Option<String>>")]
pub struct MarketPool {
    /// Brokers in priority order, highest first, e.g. `k2,k1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "k2,k1")]
    pub brokers: Option<String>,
    /// Brokers used only when none of `brokers` can carry a symbol, e.g. `paper-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// The symbol universe, e.g. `BTC/USD,ETH/USD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<String>,
}

/// Read from a JSON object only (a derived reader would also take an array),
/// refusing fields it does not know.
impl TryFrom<BTreeMap<String, Option<String>>> for MarketPool {
    type Error = String;

    fn try_from(mut fields: BTreeMap<String, Option<String>>) -> Result<Self, String> {
        let mut take = |name: &str| fields.remove(name).flatten();
        let pool = Self { brokers: take("brokers"), fallback: take("fallback"), symbols: take("symbols") };
        match fields.keys().next() {
            Some(other) => Err(format!("unknown field `{other}`, expected one of `brokers`, `fallback`, `symbols`")),
            None => Ok(pool),
        }
    }
}

/// `PUT /v1/log-level` body and answer: the node's new log filter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLevel {
    /// A level (`debug`) or a filter (`info,lidod=debug`): levels and
    /// `target=level` directives, comma-separated.
    #[schema(
        pattern = "^((trace|debug|info|warn|error|off)|[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*(=(trace|debug|info|warn|error|off))?)(,((trace|debug|info|warn|error|off)|[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*(=(trace|debug|info|warn|error|off))?))*$"
    )]
    pub filter: String,
}

/// `POST /v1/services` body. Its schema says what each kind takes (a broker
/// its type, a market its name and brokers, a trader its program), see
/// [`SpawnRequest::schema`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpawnRequest {
    pub kind: ServiceKind,
    /// The implementation of a broker (`paper`, `kraken`, `schwab`,
    /// `tdameritrade`); markets and traders have none.
    #[serde(rename = "type", default)]
    pub service_type: Option<String>,
    /// 1-32 of `a-z 0-9 - _`, starting with a letter; required for a market.
    #[serde(default)]
    pub name: Option<String>,
    /// A node id; `null` picks the least-loaded non-draining node.
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl ToSchema for SpawnRequest {}

impl utoipa::PartialSchema for SpawnRequest {
    /// One of a broker (`type` required), a market (`name` and
    /// `options.brokers` required, no `type`) and a trader (`options.exec`
    /// required, no `type`); each may name its node, `null` for the
    /// least-loaded one.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, SchemaType, Type};
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let nullable = |pattern: &str| {
            ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null])).pattern(Some(pattern))
        };
        let name = "^[a-z][a-z0-9_-]{0,31}$";
        let shape = |kind: &str| {
            ObjectBuilder::new()
                .property("kind", string().enum_values(Some([kind])))
                .required("kind")
                .property("node", nullable(".*").description(Some("A node id; null picks the least-loaded one.")))
        };
        let free_options = || string_map(string());
        let broker = shape("broker")
            .property("type", string().enum_values(Some(["paper", "kraken", "schwab", "tdameritrade"])))
            .required("type")
            .property("name", nullable(name))
            .property("options", free_options());
        let market = shape("market")
            .property("type", ObjectBuilder::new().schema_type(Type::Null))
            .property("name", string().pattern(Some(name)))
            .required("name")
            .property(
                "options",
                ObjectBuilder::new()
                    .property(
                        "brokers",
                        string().description(Some("The broker pool, comma-separated, in priority order.")),
                    )
                    .required("brokers")
                    .additional_properties(Some(AdditionalProperties::FreeForm(false))),
            )
            .required("options");
        let trader = shape("trader")
            .property("type", ObjectBuilder::new().schema_type(Type::Null))
            .property("name", nullable(name))
            .property(
                "options",
                string_map(string())
                    .property("exec", string().description(Some("The path of the program to run.")))
                    .required("exec")
                    .property("customer", string().pattern(Some("^[A-Za-z0-9._-]{1,64}$"))),
            )
            .required("options");
        OneOfBuilder::new()
            .description(Some("A broker has a type; a market a name and brokers; a trader a program."))
            .item(broker)
            .item(market)
            .item(trader)
            .into()
    }
}

/// An object of string values.
fn string_map(values: utoipa::openapi::schema::ObjectBuilder) -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Object)
        .additional_properties(Some(values))
}

/// Commands an operator may send on `/v1/cluster/watch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WatchCommand {
    Spawn {
        id: u64,
        #[serde(flatten)]
        request: SpawnRequest,
    },
    Stop {
        id: u64,
        name: String,
    },
    Restart {
        id: u64,
        name: String,
    },
    Drain {
        id: u64,
        node: String,
    },
    Undrain {
        id: u64,
        node: String,
    },
    /// Drain a broker: its markets move its work away without a gap.
    DrainService {
        id: u64,
        name: String,
    },
    UndrainService {
        id: u64,
        name: String,
    },
    /// Change a live market's pool (as `PUT /v1/markets/{name}`).
    SetMarket {
        id: u64,
        name: String,
        pool: MarketPool,
    },
    Snapshot {
        id: u64,
    },
    /// Opt in to (or out of) the node's order flow events.
    Follow {
        id: u64,
        orders: bool,
    },
}

impl WatchCommand {
    /// The id its reply will carry.
    pub fn id(&self) -> u64 {
        match self {
            Self::Spawn { id, .. }
            | Self::Stop { id, .. }
            | Self::Restart { id, .. }
            | Self::Drain { id, .. }
            | Self::Undrain { id, .. }
            | Self::DrainService { id, .. }
            | Self::UndrainService { id, .. }
            | Self::SetMarket { id, .. }
            | Self::Snapshot { id }
            | Self::Follow { id, .. } => *id,
        }
    }
}

/// A session as operators see it: the token is never shown whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// The first characters of the session token, enough to tell sessions apart.
    pub id: String,
    pub customer: String,
    pub node: String,
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/services/{name}`: the service and its recent events, newest last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceDetail {
    pub service: ServiceInfo,
    pub events: Vec<EventRecord>,
}

/// A numbered cluster event, as kept for `describe`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventRecord {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub event: ClusterEvent,
}

/// What `/v1/cluster/watch` sends: a snapshot first, then numbered events,
/// and replies to commands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchMessage {
    Snapshot {
        seq: u64,
        snapshot: ClusterSnapshot,
    },
    Event {
        seq: u64,
        ts: DateTime<Utc>,
        event: ClusterEvent,
    },
    /// An order changed state on the node: sent only to watchers that asked
    /// with [`WatchCommand::Follow`] `orders: true`; not numbered.
    Order {
        node: String,
        order: crate::model::Order,
    },
    Reply {
        id: u64,
        ok: bool,
        #[serde(default)]
        service: Option<ServiceInfo>,
        #[serde(default)]
        error: Option<ErrorDetail>,
    },
    Error {
        error: ErrorDetail,
    },
}

/// `GET /v1/cluster/autoscale` (the node autoscaler of the leader IM):
/// the rule's inputs and its recent decisions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeScaleStatus {
    /// Whether the IM answering leads (only the leader scales).
    pub leader: bool,
    /// The leading IM, if known.
    pub leader_id: Option<String>,
    pub enabled: bool,
    /// `local` or `command`.
    pub provisioner: String,
    pub min_nodes: usize,
    pub max_nodes: usize,
    pub high_load_per_node: usize,
    pub low_load_per_node: usize,
    pub nodes: Vec<NodeScaleNode>,
    /// Nodes provisioned that have not checked in yet.
    pub pending: Vec<String>,
    /// Sessions + streams per live, non-draining node.
    pub load_per_node: f64,
    pub last_decision: Option<NodeScaleDecision>,
    /// The decisions that acted and each change of the reason to hold, newest last (at most 20).
    pub recent: Vec<NodeScaleDecision>,
    /// The last failure to read the registry or to act, if the latest round failed.
    pub error: Option<String>,
    /// When this IM last became the leader.
    #[serde(default)]
    pub leading_since: Option<DateTime<Utc>>,
    /// When this IM last stopped being the leader (it stepped down, or its
    /// lease could not be renewed).
    #[serde(default)]
    pub stepped_down_at: Option<DateTime<Utc>>,
}

/// A node as the autoscaler sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeScaleNode {
    pub id: String,
    pub location: String,
    /// Sessions + streams.
    pub load: usize,
    pub draining: bool,
    /// Started by the autoscaler (so it may release it once drained and idle).
    pub provisioned: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeScaleDecision {
    /// `hold`, `provision`, `drain`, `release` (or `…_failed`).
    pub action: String,
    pub node: Option<String>,
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_scaled_event_is_tagged_and_round_trips() {
        let event = ClusterEvent::NodeScaled {
            action: "provision".into(),
            node: Some("auto-1".into()),
            reason: "average load 240 per node > 200 on 2 nodes".into(),
            leader: "im-a".into(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "node_scaled");
        assert_eq!(json["node"], "auto-1");
        assert_eq!(serde_json::from_value::<ClusterEvent>(json).unwrap(), event);
        let status: NodeScaleStatus =
            serde_json::from_str(&serde_json::to_string(&NodeScaleStatus::default()).unwrap()).unwrap();
        assert!(!status.leader && status.recent.is_empty());
    }

    #[test]
    fn a_market_pool_is_an_object_of_known_fields() {
        let pool: MarketPool = serde_json::from_str(r#"{"brokers":"k2,k1","fallback":null}"#).unwrap();
        assert_eq!(pool, MarketPool { brokers: Some("k2,k1".into()), ..MarketPool::default() });
        let err = serde_json::from_str::<MarketPool>(r#"{"brokers":"k1","pool":"k2"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `pool`"), "{err}");
        assert!(serde_json::from_str::<MarketPool>("[null, null]").is_err(), "an array is not a pool");
        let cmd: WatchCommand =
            serde_json::from_str(r#"{"op":"set_market","id":3,"name":"crypto","pool":{"brokers":"k2"}}"#).unwrap();
        assert_eq!(cmd.id(), 3);
    }
}

//! The autoscaler's status, `GET /v1/autoscale` (operator): the rules it
//! follows, the current values they are checked against, and its recent
//! decisions with their reasons.
//!
//! Two things scale. The MarketManager's *instances* (fan-out shards of
//! the algo streams) grow with clients per instance and fan-out latency;
//! each broker's *venue connections* grow with subscriptions per
//! connection. Both release what sits idle.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/autoscale`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AutoscaleStatus {
    pub rules: AutoscaleRules,
    /// The MarketManager's instances, oldest first.
    pub instances: Vec<InstanceStatus>,
    /// Brokers that report venue connections.
    pub brokers: Vec<BrokerScale>,
    /// Recent decisions, oldest first (instances and brokers).
    pub decisions: Vec<ScaleDecision>,
}

/// The thresholds instances are added and released by (`[autoscale]` in `lido.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AutoscaleRules {
    pub min_instances: usize,
    pub max_instances: usize,
    /// An instance is full at this many clients (algo streams, and sessions
    /// assigned to it that have not opened their stream yet).
    pub max_clients_per_instance: usize,
    /// p99 of router publish → frame handed to the socket, over the window.
    pub max_fanout_latency_ms: f64,
    /// An extra instance with no client for this long is released.
    pub idle_release_s: u64,
    /// The window the fan-out p99 is taken over.
    pub latency_window_s: u64,
}

/// One instance and its current figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceStatus {
    pub id: u32,
    /// Algo streams joined to it.
    pub streams: usize,
    /// Sessions assigned to it whose stream is not open yet.
    pub reserved: usize,
    /// Fan-out p99 over the last full window; `null` before any frame.
    pub fanout_p99_ms: Option<f64>,
    /// Frames measured in that window.
    pub frames: u64,
    pub created_at: DateTime<Utc>,
    /// Since when it has had no client, if it has none.
    pub idle_since: Option<DateTime<Utc>>,
}

/// A broker's venue connections, from the figures it reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BrokerScale {
    pub broker: String,
    pub venue_connections: usize,
    /// Subscriptions carried by each open connection.
    pub subscriptions_per_connection: Vec<usize>,
    pub max_subscriptions_per_connection: usize,
    /// A connection counts as full this many subscriptions before the limit.
    pub subscription_headroom: usize,
    /// Share of the account's REST call budget in use (0 to 1).
    pub rest_budget_used: f64,
    /// Share of the busiest pair's trading-rate budget in use (0 to 1).
    pub trading_budget_used: f64,
}

/// One decision and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScaleDecision {
    pub at: DateTime<Utc>,
    /// `instances` or the broker's name.
    pub scope: String,
    /// `add_instance`, `release_instance`, `open_connection`, `close_connection`.
    pub action: String,
    pub reason: String,
}

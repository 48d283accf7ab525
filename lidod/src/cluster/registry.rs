//! The cluster registry: what the InfrastructureManagers share.
//!
//! One trait, two backends: [`MemoryRegistry`] for a single IM (the
//! default) and, behind the `etcd` cargo feature, `EtcdRegistry` for
//! several IMs on one etcd cluster (`cluster/etcd.rs`). Every IM reads and
//! writes the same keys, so they hand out the same answers:
//!
//! - node check-ins are held for a time to live (an etcd lease): a node that
//!   stops checking in vanishes on its own, services with it;
//! - drain flags and scale settings are plain keys;
//! - a customer's TraderManager node is set once with a compare-and-swap;
//! - so is the node that may send a client order to its venue (the
//!   cluster-wide guard that places each order at most once);
//! - one IM at a time leads (runs the node autoscaler);
//! - every change is streamed to every IM ([`Registry::watch`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lido_shared::cluster::NodeInfo;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// A node as it last checked in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its view of itself: id, location, API URL, services, load. `draining`
    /// here is what the node reported; the registry's drain flag is the truth.
    pub info: NodeInfo,
    /// The WebSocket the IMs watch it on (its `/v1/cluster/watch`).
    pub watch_url: String,
    pub checked_in: DateTime<Utc>,
}

/// A change any IM made, as every IM sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryChange {
    /// A node checked in for the first time, or again with a new record.
    Node(NodeRecord),
    /// A node's entry expired (it stopped checking in) or was removed.
    NodeGone(String),
    Draining {
        node: String,
        draining: bool,
    },
    /// A customer's TraderManager node was set (first time or reassigned).
    Assigned {
        customer: String,
        node: String,
    },
    Setting {
        key: String,
        value: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The backend cannot be reached (etcd down or no quorum): the caller
    /// should answer 503 and retry later, never guess.
    #[error("cluster registry unavailable: {0}")]
    Unavailable(String),
    #[error("cluster registry: {0}")]
    Other(String),
}

pub type RegistryResult<T> = Result<T, RegistryError>;

#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// `memory` or `etcd`, for status.
    fn backend(&self) -> &'static str;

    /// Records a node's check-in; its entry vanishes `ttl` after the last one.
    async fn check_in(&self, node: &NodeRecord, ttl: Duration) -> RegistryResult<()>;
    /// Every node whose entry is alive.
    async fn nodes(&self) -> RegistryResult<Vec<NodeRecord>>;
    /// Forgets a node at once (it was stopped on purpose).
    async fn remove_node(&self, id: &str) -> RegistryResult<()>;

    async fn set_draining(&self, node: &str, draining: bool) -> RegistryResult<()>;
    /// The nodes flagged draining (flags outlive the node's entry).
    async fn draining(&self) -> RegistryResult<BTreeSet<String>>;

    /// The customer's TraderManager node: `candidate` if the customer has
    /// none yet (created with a compare-and-swap, so of two IMs asking at
    /// once one wins and both answer the winner), else the one it has.
    async fn assign(&self, customer: &str, candidate: &str) -> RegistryResult<String>;
    /// Moves the customer from `from` to `to` only if it is still on `from`;
    /// returns the node it is on afterwards.
    async fn reassign(&self, customer: &str, from: &str, to: &str) -> RegistryResult<String>;
    /// Every customer → node assignment.
    async fn assignments(&self) -> RegistryResult<BTreeMap<String, String>>;

    /// Claims a client order for `node` before it is sent to a venue: the
    /// first node to claim an order id holds it for good (a create-if-absent
    /// compare-and-swap), so the same order can be sent through one node
    /// only, whatever the venue's own duplicate guard does. Returns the
    /// holder: `node` itself, or the node that claimed it first.
    async fn claim_order(&self, order_id: &str, node: &str) -> RegistryResult<String>;

    async fn put_setting(&self, key: &str, value: &str) -> RegistryResult<()>;
    async fn setting(&self, key: &str) -> RegistryResult<Option<String>>;

    /// Campaigns for leadership as `me` until `stop`; the receiver holds the
    /// current leader's name (None while there is none or it is unknown).
    /// Losing the backend loses the lead: a leader that cannot renew it
    /// must see `Some(other)` or `None`, never keep acting.
    fn campaign(&self, me: &str, stop: CancellationToken) -> watch::Receiver<Option<String>>;

    /// Changes from now on, made by any IM.
    fn watch(&self) -> broadcast::Receiver<RegistryChange>;

    /// Whether API tokens, their revocations and the audit log live here
    /// (etcd: every IM accepts the same tokens) rather than in each IM's own
    /// store (memory: one IM, its `auth.sqlite`).
    fn shares_access(&self) -> bool {
        false
    }

    /// Records (or replaces, on revocation) a token's stored form by id.
    async fn put_token(&self, id: &str, record: &str) -> RegistryResult<()> {
        let _ = (id, record);
        Err(RegistryError::Other(format!("the {} registry does not keep tokens", self.backend())))
    }

    /// Every token's stored form.
    async fn shared_tokens(&self) -> RegistryResult<Vec<String>> {
        Ok(Vec::new())
    }

    /// Appends an audit record (JSON).
    async fn append_audit(&self, record: &str) -> RegistryResult<()> {
        let _ = record;
        Err(RegistryError::Other(format!("the {} registry does not keep the audit log", self.backend())))
    }

    /// Every audit record (JSON), in no particular order.
    async fn audit_records(&self) -> RegistryResult<Vec<String>> {
        Ok(Vec::new())
    }

    /// One round trip to the backend (retried within the usual deadline):
    /// `Unavailable` when it cannot be reached. The IM's `/healthz` follows it.
    async fn ping(&self) -> RegistryResult<()> {
        Ok(())
    }
}

//! The node's side of the cluster-wide order guard (`--role node`).
//!
//! Lido's order id is the same on every node for one customer's client order
//! id (`markets::order_id_for`), and each node journals its own orders. A
//! venue's duplicate guard does not close the gap between two nodes: Kraken
//! refuses a repeated `cl_ord_id` only while the first order is open, and
//! Schwab keeps no client id at all. So before a node sends a new order it
//! claims the order id at its InfrastructureManagers (the registry's
//! create-if-absent, [`crate::cluster::Registry::claim_order`]): the first
//! node to claim it is the only one that ever sends it.
//!
//! A node alone (`--role all`) has no claims to make: its journal is the
//! whole cluster's.

use std::time::Duration;

use lido_shared::access::{Secret, CLUSTER_SECRET_HEADER};
use lido_shared::cluster::{OrderClaim, OrderClaimReply};

/// The path an IM takes order claims on.
pub const ORDER_CLAIM_PATH: &str = "/v1/nodes/order-claims";

/// How long one IM has to answer a claim before the next is asked.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(2);

/// Why no IM could say who holds an order.
#[derive(Debug, thiserror::Error)]
#[error("no InfrastructureManager answered the order claim ({0})")]
pub struct ClaimError(String);

/// Claims orders for one node at its IMs; cheap to clone.
#[derive(Clone)]
pub struct OrderClaims {
    http: reqwest::Client,
    ims: Vec<String>,
    secret: Secret,
    node: String,
}

impl OrderClaims {
    /// Fails when the HTTP client cannot be built (no TLS backend).
    pub fn new(node: String, ims: &[String], secret: Secret) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder().timeout(CLAIM_TIMEOUT).build()?;
        let ims = ims.iter().map(|im| im.trim_end_matches('/').to_string()).collect();
        Ok(Self { http, ims, secret, node })
    }

    /// This node's id, the claimant.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node that holds `order_id`: this one if it is the first to claim
    /// it. Asks each IM in turn (they share one registry) until one answers.
    pub async fn claim(&self, order_id: &str) -> Result<String, ClaimError> {
        let body = OrderClaim { order_id: order_id.to_string(), node: self.node.clone() };
        let mut errors = Vec::new();
        for im in &self.ims {
            match self.ask(im, &body).await {
                Ok(reply) => return Ok(reply.holder),
                Err(e) => errors.push(format!("{im}: {e}")),
            }
        }
        Err(ClaimError(errors.join("; ")))
    }

    async fn ask(&self, im: &str, body: &OrderClaim) -> Result<OrderClaimReply, String> {
        let answer = self
            .http
            .post(format!("{im}{ORDER_CLAIM_PATH}"))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        if !status.is_success() {
            return Err(format!("{status}: {}", answer.text().await.unwrap_or_default()));
        }
        answer.json().await.map_err(|e| format!("unreadable answer: {e}"))
    }
}

//! An algo's client for a Lido cluster: it opens its session at any of the
//! InfrastructureManagers and, when its node goes away (killed, stopped,
//! restarted without the session), opens a new one on a live node and
//! carries on there, by itself.
//!
//! Retrying an order on another node is safe because every order carries a
//! client order id (one is made here when the caller gave none) and Lido's
//! order id is derived from the customer and that id: the new node finds
//! the first order at the venue instead of placing a second one.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::api::{OrdersQuery, PlaceOrder, Session};
use crate::model::{Fill, Order, Position, Quote};

use super::http::{LidoClient, Placed};
use super::stream::Stream;
use super::ClientError;

/// How many times one call moves to another node before it gives up.
const MAX_FAILOVERS: usize = 6;
/// The first pause before retrying on a new session; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// A session on a Lido cluster that follows live nodes.
pub struct ClusterClient {
    ims: Vec<LidoClient>,
    customer: String,
    location: Option<String>,
    ca: Option<std::path::PathBuf>,
    current: Mutex<Option<Current>>,
    /// Held while a session is opened, so calls that find none at the same
    /// moment open one between them, not one each.
    opening: tokio::sync::Mutex<()>,
    failovers: AtomicU64,
}

#[derive(Clone)]
struct Current {
    session: Session,
    node: LidoClient,
}

impl ClusterClient {
    /// `im_urls`: the InfrastructureManagers, tried in order; `token`: the
    /// customer's API token (none in open mode); `ca`: a private CA to trust.
    pub fn new(
        im_urls: &[String],
        customer: impl Into<String>,
        token: Option<&str>,
        ca: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let mut ims = Vec::new();
        for url in im_urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            let client = LidoClient::with_ca(url, ca)?;
            ims.push(match token {
                Some(t) => client.with_token(t),
                None => client,
            });
        }
        if ims.is_empty() {
            return Err(ClientError::InvalidUrl("no InfrastructureManager URL given".into()));
        }
        Ok(Self {
            ims,
            customer: customer.into(),
            location: None,
            ca: ca.map(Path::to_path_buf),
            current: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            failovers: AtomicU64::new(0),
        })
    }

    /// Ask the IMs for a node at this location first.
    pub fn prefer_location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    /// How many times this client moved to a new session after losing one.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// The current session, opening one if there is none.
    pub async fn session(&self) -> Result<Session, ClientError> {
        Ok(self.current().await?.session)
    }

    /// A client for the current session's node (its MarketManager).
    pub async fn node(&self) -> Result<LidoClient, ClientError> {
        Ok(self.current().await?.node)
    }

    async fn current(&self) -> Result<Current, ClientError> {
        if let Some(c) = self.lock().clone() {
            return Ok(c);
        }
        let _opening = self.opening.lock().await;
        // Another call may have opened one while this one waited.
        if let Some(c) = self.lock().clone() {
            return Ok(c);
        }
        let fresh = self.open().await?;
        *self.lock() = Some(fresh.clone());
        Ok(fresh)
    }

    /// Opens a session at the first IM that answers.
    async fn open(&self) -> Result<Current, ClientError> {
        let mut last = None;
        for im in &self.ims {
            match im.open_session_at(&self.customer, self.location.as_deref()).await {
                Ok(session) => {
                    let node = LidoClient::with_ca(&session.market_manager_url, self.ca.as_deref())?
                        .with_token(session.session_id.clone());
                    tracing::info!(node = %session.node, url = %session.market_manager_url, "session opened");
                    return Ok(Current { session, node });
                }
                // This IM is down, or has no node for us right now: ask the next.
                Err(e) if im_unavailable(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one IM"))
    }

    /// Forgets the session on `node` (if it is still the current one).
    fn drop_session(&self, node: &str) {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|c| c.session.node == node) {
            *current = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `op` against the current node; when the node is gone (cannot be
    /// reached, the connection broke, it no longer knows the session, or it
    /// is shutting down), opens a session on a live node and runs it again.
    /// Only for calls that are safe to repeat.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, ClientError>
    where
        F: Fn(LidoClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            let current = match self.current().await {
                Ok(c) => Some(c),
                Err(e) if attempt < MAX_FAILOVERS && im_unavailable(&e) => None,
                Err(e) => return Err(e),
            };
            if let Some(current) = current {
                match op(current.node.clone()).await {
                    Err(e) if attempt < MAX_FAILOVERS && node_gone(&e) => {
                        tracing::warn!(node = %current.session.node, error = %e, "node lost; opening a session on another");
                        self.drop_session(&current.session.node);
                        self.failovers.fetch_add(1, Ordering::Relaxed);
                    }
                    other => return other,
                }
            }
            attempt += 1;
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    /// Places an order, on another node if this one is lost on the way.
    /// Without a client order id, one is made here first, so a retry finds
    /// the same order rather than placing another.
    pub async fn place_order(&self, order: &PlaceOrder) -> Result<Placed, ClientError> {
        let mut order = order.clone();
        if order.client_order_id.is_none() {
            order.client_order_id = Some(format!("c-{}", uuid::Uuid::new_v4().simple()));
        }
        self.call(|c| {
            let order = order.clone();
            async move { c.place_order(&order).await }
        })
        .await
    }

    pub async fn order(&self, order_id: &str) -> Result<Order, ClientError> {
        self.call(|c| async move { c.order(order_id).await }).await
    }

    /// Cancel is idempotent at Lido: a second cancel of a canceled order
    /// answers the order.
    pub async fn cancel_order(&self, order_id: &str) -> Result<Order, ClientError> {
        self.call(|c| async move { c.cancel_order(order_id).await }).await
    }

    pub async fn orders(&self, query: &OrdersQuery) -> Result<Vec<Order>, ClientError> {
        self.call(|c| async move { c.orders(query).await }).await
    }

    pub async fn open_orders(&self) -> Result<Vec<Order>, ClientError> {
        self.call(|c| async move { c.open_orders().await }).await
    }

    pub async fn fills(&self) -> Result<Vec<Fill>, ClientError> {
        self.call(|c| async move { c.fills().await }).await
    }

    pub async fn positions(&self, market: Option<&str>) -> Result<Vec<Position>, ClientError> {
        self.call(|c| async move { c.positions(market).await }).await
    }

    pub async fn quote(&self, market: &str, symbol: &str) -> Result<Quote, ClientError> {
        self.call(|c| async move { c.quote(market, symbol).await }).await
    }

    /// The algo stream on the current node (a new node's when this one is
    /// gone). A stream that ends with its node: call again and subscribe
    /// again; sequence numbers start afresh on the new stream.
    pub async fn stream(&self) -> Result<Stream, ClientError> {
        self.call(|c| async move { c.stream().await }).await
    }
}

/// An InfrastructureManager that cannot be reached, or has no node to
/// offer now (503): another IM, or a later try, may.
fn im_unavailable(e: &ClientError) -> bool {
    e.is_unreachable() || e.status() == Some(503)
}

/// True when the error means the session's node is gone rather than that
/// the request was refused: nothing answered, the connection broke, the
/// node does not know the session (it restarted), it is shutting down, or
/// it is cut off from the cluster (`cluster_unavailable`: it cannot claim
/// an order id at any IM, and sent nothing, so another node may place it).
fn node_gone(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. } | ClientError::Closed => true,
        ClientError::Http(e) => e.is_connect() || e.is_request() || e.is_body() || e.is_timeout(),
        ClientError::WebSocket(_) => e.is_unreachable(),
        ClientError::Api { status: 401, .. } => true,
        ClientError::Api { status: 503, code, .. } => {
            code == "shutting_down" || code == "node_stopping" || code == "cluster_unavailable"
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_not_a_lost_node() {
        let refused = ClientError::Api { status: 400, code: "invalid_order".into(), message: "x".into() };
        assert!(!node_gone(&refused));
        let rejected = ClientError::Api { status: 409, code: "duplicate".into(), message: "x".into() };
        assert!(!node_gone(&rejected));
        let unknown_session = ClientError::Api { status: 401, code: "invalid_token".into(), message: "x".into() };
        assert!(node_gone(&unknown_session), "a node that restarted no longer knows the session");
        assert!(node_gone(&ClientError::Closed));
    }

    #[test]
    fn a_node_cut_off_from_the_cluster_is_left_for_another() {
        let cut_off = ClientError::Api { status: 503, code: "cluster_unavailable".into(), message: "x".into() };
        assert!(node_gone(&cut_off), "it sent nothing; another node may place the order");
        let busy = ClientError::Api { status: 503, code: "no_broker".into(), message: "x".into() };
        assert!(!node_gone(&busy), "a market with no broker up is the same on every node");
    }

    /// An IM that takes 100 ms to open each session, counting them.
    async fn slow_im(opened: std::sync::Arc<AtomicU64>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let opened = opened.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let n = opened.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let body = format!(
                        r#"{{"session_id":"s-{n}","customer":"acme","node":"n1","market_manager_url":"http://127.0.0.1:1","trader_manager_url":"http://127.0.0.1:1"}}"#
                    );
                    let answer = format!(
                        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn calls_that_find_no_session_at_once_open_one_between_them() {
        let opened = std::sync::Arc::new(AtomicU64::new(0));
        let client = ClusterClient::new(&[slow_im(opened.clone()).await], "acme", None, None).unwrap();
        let (a, b, c) = tokio::join!(client.session(), client.session(), client.session());
        let ids = [a.unwrap().session_id, b.unwrap().session_id, c.unwrap().session_id];
        assert_eq!(opened.load(Ordering::SeqCst), 1, "one session opened, not one per call");
        assert!(ids.iter().all(|id| id == &ids[0]));
    }

    #[test]
    fn it_needs_an_im() {
        assert!(ClusterClient::new(&[" ".into()], "acme", None, None).is_err());
        assert!(ClusterClient::new(&["ftp://x".into()], "acme", None, None).is_err());
        assert!(ClusterClient::new(&["http://127.0.0.1:1".into()], "acme", None, None).is_ok());
    }
}

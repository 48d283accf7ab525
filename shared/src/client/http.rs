use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use super::stream::{ws_url, ClusterWatch, Stream};
use super::ClientError;
use crate::access::{AuditQuery, AuditRecord, CreateToken, CreatedToken, TokenInfo};
use crate::api::{MarketInfo, OrdersQuery, PlaceOrder, Session, SessionRequest};
use crate::cluster::{
    ClusterSnapshot, LogLevel, MarketPool, NodeInfo, ServiceDetail, ServiceInfo, SessionInfo, SpawnRequest,
};
use crate::model::{Balance, Book, Fill, Instrument, Order, Position, Quote};

/// REST client for one Lido endpoint (an IM, a node's algo API, or both: the
/// embedded default serves all on one address).
#[derive(Clone, Debug)]
pub struct LidoClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// The trust of both the REST calls and the WebSockets.
    tls: Arc<rustls::ClientConfig>,
}

impl LidoClient {
    /// `base` like `http://127.0.0.1:7700` or `https://lido.example:7700`
    /// (a certificate from a public CA).
    pub fn new(base: impl Into<String>) -> Result<Self, ClientError> {
        Self::with_ca(base, None)
    }

    /// Like [`Self::new`], also trusting the private CA certificate (PEM) in
    /// `ca`: the one that signed lidod's certificate, or a self-signed
    /// certificate itself.
    pub fn with_ca(base: impl Into<String>, ca: Option<&Path>) -> Result<Self, ClientError> {
        let base = base.into().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::InvalidUrl(base));
        }
        let tls = crate::tls::client_config(ca)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .use_preconfigured_tls((*tls).clone())
            .build()?;
        Ok(Self { base, token: None, http, tls })
    }

    /// Sends `Authorization: Bearer <token>` (a session id or an API token).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    // ---- InfrastructureManager --------------------------------------------

    /// Opens a session for `customer`; use the returned id as token.
    pub async fn open_session(&self, customer: &str) -> Result<Session, ClientError> {
        self.open_session_at(customer, None).await
    }

    /// [`Self::open_session`], on a node at `location` if one can take it
    /// (an InfrastructureManager's choice; a node takes it as it is).
    pub async fn open_session_at(&self, customer: &str, location: Option<&str>) -> Result<Session, ClientError> {
        let body = SessionRequest { customer: customer.to_string(), location: location.map(String::from) };
        self.send(self.req(Method::POST, "/v1/sessions").json(&body)).await
    }

    pub async fn cluster(&self) -> Result<ClusterSnapshot, ClientError> {
        self.get("/v1/cluster").await
    }

    pub async fn spawn(&self, request: &SpawnRequest) -> Result<ServiceInfo, ClientError> {
        self.send(self.req(Method::POST, "/v1/services").json(request)).await
    }

    pub async fn stop_service(&self, name: &str) -> Result<ServiceInfo, ClientError> {
        self.send(self.req(Method::DELETE, &format!("/v1/services/{}", enc(name)))).await
    }

    pub async fn restart_service(&self, name: &str) -> Result<ServiceInfo, ClientError> {
        self.send(self.req(Method::POST, &format!("/v1/services/{}/restart", enc(name)))).await
    }

    /// Sessions across the cluster (tokens shortened).
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, ClientError> {
        self.get("/v1/sessions").await
    }

    /// The autoscaler's rules, current figures and recent decisions (operator).
    pub async fn autoscale(&self) -> Result<crate::autoscale::AutoscaleStatus, ClientError> {
        self.get("/v1/autoscale").await
    }

    /// The IM's node autoscaler: leader, rules, load per node, decisions.
    pub async fn node_autoscale(&self) -> Result<crate::cluster::NodeScaleStatus, ClientError> {
        self.get("/v1/cluster/autoscale").await
    }

    /// Changes the node autoscaler's rules for every IM: `changes` is an
    /// object of `[cluster.autoscale]` fields; answers the rules in force.
    pub async fn set_node_autoscale(&self, changes: &serde_json::Value) -> Result<serde_json::Value, ClientError> {
        self.send(self.req(Method::PUT, "/v1/cluster/autoscale").json(changes)).await
    }

    /// A service with its recent events.
    pub async fn describe(&self, name: &str) -> Result<ServiceDetail, ClientError> {
        self.get(&format!("/v1/services/{}", enc(name))).await
    }

    /// The last `tail` lines of a service process's output.
    pub async fn logs(&self, name: &str, tail: usize) -> Result<String, ClientError> {
        let path = format!("/v1/services/{}/logs?tail={tail}", enc(name));
        let resp = self.execute(self.req(Method::GET, &path)).await?;
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        Ok(resp.text().await?)
    }

    /// Like [`Self::logs`], then follows: each new chunk of lines as it comes,
    /// until the service stops or the connection drops.
    pub async fn follow_logs(&self, name: &str, tail: usize) -> Result<LogStream, ClientError> {
        let path = format!("/v1/services/{}/logs?tail={tail}&follow=true", enc(name));
        let resp = self.execute(self.req(Method::GET, &path).timeout(Duration::from_secs(365 * 24 * 3600))).await?;
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        Ok(LogStream { resp })
    }

    pub async fn drain_node(&self, node: &str) -> Result<NodeInfo, ClientError> {
        self.send(self.req(Method::POST, &format!("/v1/nodes/{}/drain", enc(node)))).await
    }

    pub async fn undrain_node(&self, node: &str) -> Result<NodeInfo, ClientError> {
        self.send(self.req(Method::POST, &format!("/v1/nodes/{}/undrain", enc(node)))).await
    }

    /// Drains a broker: its markets move its feeds and open orders away without a gap.
    pub async fn drain_service(&self, name: &str) -> Result<ServiceInfo, ClientError> {
        self.send(self.req(Method::POST, &format!("/v1/services/{}/drain", enc(name)))).await
    }

    pub async fn undrain_service(&self, name: &str) -> Result<ServiceInfo, ClientError> {
        self.send(self.req(Method::POST, &format!("/v1/services/{}/undrain", enc(name)))).await
    }

    /// Changes a live market's pool (fields left out stay); routes move without a gap.
    pub async fn set_market(&self, name: &str, pool: &MarketPool) -> Result<ServiceInfo, ClientError> {
        self.send(self.req(Method::PUT, &format!("/v1/markets/{}", enc(name))).json(pool)).await
    }

    /// Sets the node's log filter (`debug`, `info,lidod=debug`) at run time.
    pub async fn set_log_level(&self, filter: &str) -> Result<LogLevel, ClientError> {
        let body = LogLevel { filter: filter.to_string() };
        self.send(self.req(Method::PUT, "/v1/log-level").json(&body)).await
    }

    // ---- Access control ----------------------------------------------------

    /// Creates a token (operators only); the answer holds its secret, shown once.
    pub async fn create_token(&self, request: &CreateToken) -> Result<CreatedToken, ClientError> {
        self.send(self.req(Method::POST, "/v1/tokens").json(request)).await
    }

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.get("/v1/tokens").await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo, ClientError> {
        self.send(self.req(Method::DELETE, &format!("/v1/tokens/{}", enc(id)))).await
    }

    /// Operator actions, oldest first: the newest `limit`, at or after `since`.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, ClientError> {
        self.send(self.req(Method::GET, "/v1/audit").query(query)).await
    }

    /// The live cluster stream (snapshot first, then events; accepts commands).
    pub async fn watch(&self) -> Result<ClusterWatch, ClientError> {
        ClusterWatch::connect(&ws_url(&self.base, "/v1/cluster/watch")?, self.token.as_deref(), &self.tls).await
    }

    // ---- Algo API ----------------------------------------------------------

    pub async fn markets(&self) -> Result<Vec<MarketInfo>, ClientError> {
        self.get("/v1/markets").await
    }

    pub async fn instruments(&self, market: &str) -> Result<Vec<Instrument>, ClientError> {
        self.get(&format!("/v1/instruments?market={}", enc(market))).await
    }

    pub async fn quote(&self, market: &str, symbol: &str) -> Result<Quote, ClientError> {
        self.get(&format!("/v1/quotes?market={}&symbol={}", enc(market), enc(symbol))).await
    }

    pub async fn book(&self, market: &str, symbol: &str, depth: usize) -> Result<Book, ClientError> {
        self.get(&format!("/v1/book?market={}&symbol={}&depth={depth}", enc(market), enc(symbol))).await
    }

    /// Places an order. `created` is false when the client order id was
    /// already used and the first order came back.
    pub async fn place_order(&self, order: &PlaceOrder) -> Result<Placed, ClientError> {
        let resp = self.execute(self.req(Method::POST, "/v1/orders").json(order)).await?;
        let created = resp.status() == StatusCode::CREATED;
        let order = decode(resp).await?;
        Ok(Placed { order, created })
    }

    pub async fn order(&self, order_id: &str) -> Result<Order, ClientError> {
        self.get(&format!("/v1/orders/{}", enc(order_id))).await
    }

    pub async fn cancel_order(&self, order_id: &str) -> Result<Order, ClientError> {
        self.send(self.req(Method::DELETE, &format!("/v1/orders/{}", enc(order_id)))).await
    }

    pub async fn orders(&self, query: &OrdersQuery) -> Result<Vec<Order>, ClientError> {
        self.send(self.req(Method::GET, "/v1/orders").query(query)).await
    }

    pub async fn open_orders(&self) -> Result<Vec<Order>, ClientError> {
        self.orders(&OrdersQuery { status: Some("open".into()), market: None }).await
    }

    pub async fn fills(&self) -> Result<Vec<Fill>, ClientError> {
        self.get("/v1/fills").await
    }

    pub async fn positions(&self, market: Option<&str>) -> Result<Vec<Position>, ClientError> {
        self.send(self.req(Method::GET, "/v1/positions").query(&[("market", market)])).await
    }

    pub async fn balances(&self, market: Option<&str>) -> Result<Vec<Balance>, ClientError> {
        self.send(self.req(Method::GET, "/v1/balances").query(&[("market", market)])).await
    }

    /// The algo stream (`/v1/stream`).
    pub async fn stream(&self) -> Result<Stream, ClientError> {
        Stream::connect(&ws_url(&self.base, "/v1/stream")?, self.token.as_deref(), &self.tls).await
    }

    pub async fn health(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/healthz").await
    }

    // ---- plumbing ----------------------------------------------------------

    /// A raw request against this endpoint, for calls without a helper.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.req(Method::GET, path)).await
    }

    /// Sends and decodes a JSON answer, mapping error bodies to [`ClientError::Api`].
    pub async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        decode(self.execute(req).await?).await
    }

    async fn execute(&self, req: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        req.send().await.map_err(|e| {
            if let Some(reason) = crate::tls::untrusted(&e) {
                ClientError::Untrusted { url: self.base.clone(), reason }
            } else if e.is_connect() {
                ClientError::Unreachable { url: self.base.clone(), source: e }
            } else {
                ClientError::Http(e)
            }
        })
    }
}

/// A followed log: [`LogStream::next_chunk`] until `None`.
pub struct LogStream {
    resp: reqwest::Response,
}

impl LogStream {
    /// The next piece of output (one or more whole lines), or `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<String>, ClientError> {
        Ok(self.resp.chunk().await?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

/// The answer to [`LidoClient::place_order`].
#[derive(Clone, Debug)]
pub struct Placed {
    pub order: Order,
    /// False when this client order id had been used before.
    pub created: bool,
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!("cannot decode answer: {e}: {}", String::from_utf8_lossy(&bytes)))
        });
    }
    Err(ClientError::from_response(status.as_u16(), &bytes))
}

/// The error a non-success answer carries.
async fn error_of(resp: reqwest::Response) -> ClientError {
    let status = resp.status().as_u16();
    match resp.bytes().await {
        Ok(bytes) => ClientError::from_response(status, &bytes),
        Err(e) => e.into(),
    }
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::enc;

    #[test]
    fn encodes_symbols() {
        assert_eq!(enc("BTC/USD"), "BTC%2FUSD");
        assert_eq!(enc("a b"), "a%20b");
    }
}

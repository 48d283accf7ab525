//! The InfrastructureManager over many nodes (`--role im`): nodes check in
//! with it, it watches each over WebSocket (re-dialing a dropped socket),
//! places sessions on the least-loaded reachable node, keeps each
//! customer's TraderManager sticky through the [`Registry`], forwards
//! operator actions to the node concerned, and stops idle draining nodes
//! in the after-hours window. Each IM campaigns for the lead (one per
//! cluster: only the leader stops nodes or autoscales) and follows whether
//! it reaches its registry (`/healthz` answers 503 while it does not).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lido_shared::access::{Secret, CLUSTER_SECRET_HEADER};
use lido_shared::api::{Session, SessionRequest};
use lido_shared::cluster::{
    ClusterEvent, ClusterSnapshot, NodeCheckIn, NodeCheckInReply, NodeInfo, NodeLoad, ServiceKind, WatchMessage,
};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::after_hours::AfterHours;
use super::registry::{NodeRecord, Registry, RegistryChange, RegistryError};
use crate::auth::Access;
use crate::error::ApiError;
use crate::events::EventBus;

/// The first re-dial of a lost node watch socket, and the cap it doubles to.
const REDIAL_MIN: Duration = Duration::from_millis(100);
const REDIAL_MAX: Duration = Duration::from_secs(2);
/// How often the IM checks that it reaches its registry.
const REGISTRY_PROBE: Duration = Duration::from_secs(1);

/// Whether the IM reaches its registry, as of its last probe.
#[derive(Clone, Debug)]
pub struct RegistryHealth {
    pub reachable: bool,
    /// Since when it is so.
    pub since: DateTime<Utc>,
    /// The last probe's failure while unreachable.
    pub error: Option<String>,
}

/// What a [`ClusterIm`] is made of.
pub struct ImParts {
    pub id: String,
    pub registry: Arc<dyn Registry>,
    pub access: Access,
    pub cluster_secret: Secret,
    pub node_ttl: Duration,
    pub after_hours: Option<AfterHours>,
    /// Cancelled when the IM shuts down.
    pub closing: CancellationToken,
}

/// Cheap to clone; the IM's state and its node connections.
#[derive(Clone)]
pub struct ClusterIm {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    registry: Arc<dyn Registry>,
    access: Access,
    bus: EventBus,
    secret: Secret,
    http: reqwest::Client,
    node_ttl: Duration,
    after_hours: Option<AfterHours>,
    closing: CancellationToken,
    nodes: Mutex<HashMap<String, NodeState>>,
    /// Nodes told to stop, and when: their check-ins are answered `stop`.
    stopping: Mutex<HashMap<String, Instant>>,
    /// The node autoscaler, when `[cluster.autoscale]` is enabled.
    scaler: std::sync::OnceLock<super::nodescale::NodeScaler>,
    /// This IM's campaign for the lead: the leader's name.
    leader: std::sync::OnceLock<watch::Receiver<Option<String>>>,
    registry_health: Mutex<RegistryHealth>,
}

/// What the IM knows of a node beyond its registry record.
#[derive(Default)]
struct NodeState {
    /// The watch socket is up: the node is reachable.
    connected: bool,
    /// A watcher task runs for it.
    watched: bool,
    /// Its load as of its last check-in, plus the sessions this IM opened since.
    load: NodeLoad,
}

/// A node as the IM chooses among them.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Its `draining` is the registry's flag.
    pub info: NodeInfo,
    pub reachable: bool,
}

/// A node's answer, handed back to the caller as it came.
pub struct Forwarded {
    pub status: u16,
    pub body: Vec<u8>,
}

impl ClusterIm {
    /// Fails when the HTTP client to the nodes cannot be built (no TLS backend).
    pub fn new(parts: ImParts) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                id: parts.id,
                registry: parts.registry,
                access: parts.access,
                bus: EventBus::new(),
                secret: parts.cluster_secret,
                http,
                node_ttl: parts.node_ttl,
                after_hours: parts.after_hours,
                closing: parts.closing,
                nodes: Mutex::default(),
                stopping: Mutex::default(),
                scaler: std::sync::OnceLock::new(),
                leader: std::sync::OnceLock::new(),
                registry_health: Mutex::new(RegistryHealth { reachable: true, since: Utc::now(), error: None }),
            }),
        })
    }

    /// Starts the IM's own tasks: registry changes onto the bus, the
    /// after-hours check. They end with `closing`.
    pub fn start(&self) {
        let _ = self.leader();
        tokio::spawn(self.clone().publish_registry_changes());
        tokio::spawn(self.clone().after_hours_loop());
        tokio::spawn(self.clone().registry_probe_loop());
    }

    /// The leader's name as this IM's campaign sees it (the campaign starts
    /// on the first call and runs until the IM closes). A leader that cannot
    /// renew its lease turns it to `None` before the lease can expire.
    pub fn leader(&self) -> watch::Receiver<Option<String>> {
        self.inner
            .leader
            .get_or_init(|| self.inner.registry.campaign(&self.inner.id, self.inner.closing.child_token()))
            .clone()
    }

    /// Whether this IM leads the cluster right now.
    pub fn leads(&self) -> bool {
        self.leader().borrow().as_deref() == Some(self.inner.id.as_str())
    }

    /// Whether this IM reaches its registry, as of its last probe.
    pub fn registry_health(&self) -> RegistryHealth {
        self.inner.registry_health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Probes the registry every second; logs each change once.
    async fn registry_probe_loop(self) {
        let mut tick = tokio::time::interval(REGISTRY_PROBE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.inner.closing.cancelled() => return,
                _ = tick.tick() => {}
            }
            let result = self.inner.registry.ping().await;
            let mut health = self.inner.registry_health.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(()) if !health.reachable => {
                    info!(registry = self.inner.registry.backend(), "cluster registry reachable again");
                    *health = RegistryHealth { reachable: true, since: Utc::now(), error: None };
                }
                Ok(()) => {}
                Err(e) if health.reachable => {
                    warn!(registry = self.inner.registry.backend(), error = %e,
                        "cluster registry unreachable: this IM answers /healthz 503 and takes no leader decisions until it is back");
                    *health = RegistryHealth { reachable: false, since: Utc::now(), error: Some(e.to_string()) };
                }
                Err(e) => health.error = Some(e.to_string()),
            }
        }
    }

    /// Hands the IM its node autoscaler (once), for the status route.
    pub fn set_node_scaler(&self, scaler: super::nodescale::NodeScaler) {
        let _ = self.inner.scaler.set(scaler);
    }

    pub fn node_scaler(&self) -> Option<&super::nodescale::NodeScaler> {
        self.inner.scaler.get()
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn access(&self) -> &Access {
        &self.inner.access
    }

    pub fn bus(&self) -> &EventBus {
        &self.inner.bus
    }

    pub fn cluster_secret(&self) -> &Secret {
        &self.inner.secret
    }

    pub fn closing(&self) -> &CancellationToken {
        &self.inner.closing
    }

    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.inner.registry
    }

    fn nodes_state(&self) -> MutexGuard<'_, HashMap<String, NodeState>> {
        self.inner.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopping(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.inner.stopping.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `POST /v1/nodes/checkin`: records the node, starts watching it if
    /// nobody does, and answers its drain flag and whether to stop.
    pub async fn check_in(&self, body: NodeCheckIn) -> Result<NodeCheckInReply, ApiError> {
        crate::sessions::validate_customer(&body.info.id)
            .map_err(|_| ApiError::bad_request("invalid_checkin", "a node id is 1-64 of A-Z a-z 0-9 - _ ."))?;
        if !(body.watch_url.starts_with("ws://") || body.watch_url.starts_with("wss://")) {
            return Err(ApiError::bad_request("invalid_checkin", "watch_url must be a ws:// or wss:// URL"));
        }
        // A node bound to 0.0.0.0 without --advertise-url: nobody can dial it.
        let watch_as_http = body.watch_url.replacen("ws", "http", 1);
        let watch_base = watch_as_http.strip_suffix("/v1/cluster/watch").unwrap_or(&watch_as_http);
        if let Some(why) = crate::advertise::unreachable_reason(&body.info.id, &body.info.api_url)
            .or_else(|| crate::advertise::unreachable_reason(&body.info.id, watch_base))
        {
            debug!(node = %body.info.id, api_url = %body.info.api_url, "refused a node check-in: its advertised URL cannot be dialed");
            return Err(ApiError::bad_request("advertise_url_required", why));
        }
        let id = body.info.id.clone();
        let draining = self.inner.registry.draining().await.map_err(registry_error)?.contains(&id);
        if self.is_stopping(&id) {
            return Ok(NodeCheckInReply { accepted: true, draining, stop: true });
        }
        let record = NodeRecord { info: body.info, watch_url: body.watch_url, checked_in: Utc::now() };
        self.inner.registry.check_in(&record, self.inner.node_ttl).await.map_err(registry_error)?;
        let start_watcher = {
            let mut nodes = self.nodes_state();
            let state = nodes.entry(id.clone()).or_default();
            state.load = record.info.load.clone();
            !std::mem::replace(&mut state.watched, true)
        };
        if start_watcher {
            info!(node = %id, location = %record.info.location, api_url = %record.info.api_url, "node checked in; watching it");
            tokio::spawn(self.clone().watch_node(id, record.watch_url.clone()));
        }
        Ok(NodeCheckInReply { accepted: true, draining, stop: false })
    }

    fn is_stopping(&self, id: &str) -> bool {
        let mut stopping = self.stopping();
        // A stop is remembered a while, so a late check-in does not re-add the node.
        let keep = self.inner.node_ttl * 3;
        stopping.retain(|_, at| at.elapsed() < keep);
        stopping.contains_key(id)
    }

    /// Every live node with the IM's view of it, sorted by id.
    pub async fn candidates(&self) -> Result<Vec<Candidate>, ApiError> {
        let records = self.inner.registry.nodes().await.map_err(registry_error)?;
        let draining = self.inner.registry.draining().await.map_err(registry_error)?;
        let nodes = self.nodes_state();
        let mut out: Vec<Candidate> = records
            .into_iter()
            .map(|r| {
                let state = nodes.get(&r.info.id);
                let mut info = r.info;
                info.draining = draining.contains(&info.id);
                if let Some(s) = state {
                    info.load = s.load.clone();
                }
                Candidate { reachable: state.is_some_and(|s| s.connected), info }
            })
            .collect();
        out.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        Ok(out)
    }

    pub async fn snapshot(&self) -> Result<ClusterSnapshot, ApiError> {
        let nodes = self.candidates().await?.into_iter().map(|c| c.info).collect();
        Ok(ClusterSnapshot { nodes, ts: Utc::now() })
    }

    /// The least-loaded reachable non-draining node, at `location` first if
    /// asked; 503 `no_node_available` saying why when there is none.
    pub async fn choose(&self, location: Option<&str>) -> Result<Candidate, ApiError> {
        let all = self.candidates().await?;
        pick(&all, location).cloned().ok_or_else(|| no_node(&all))
    }

    /// `POST /v1/sessions`: a MarketManager on the chosen node, and the
    /// customer's sticky TraderManager.
    pub async fn open_session(&self, req: &SessionRequest) -> Result<Session, ApiError> {
        self.open_session_by(req, None).await
    }

    /// [`Self::open_session`] for the API token `opener` (its id and
    /// expiry): the node ties the session to it, so revoking the token ends
    /// the session and it expires with the token.
    pub async fn open_session_by(
        &self,
        req: &SessionRequest,
        opener: Option<(&str, Option<chrono::DateTime<chrono::Utc>>)>,
    ) -> Result<Session, ApiError> {
        crate::sessions::validate_customer(&req.customer)?;
        // One read of the registry serves both the choice and the check of
        // the customer's TraderManager node.
        let live = self.candidates().await?;
        let chosen = pick(&live, req.location.as_deref()).cloned().ok_or_else(|| no_node(&live))?;
        let registry = &self.inner.registry;
        let mut tm = registry.assign(&req.customer, &chosen.info.id).await.map_err(registry_error)?;
        if !live.iter().any(|c| c.info.id == tm) {
            let old = tm.clone();
            tm = registry.reassign(&req.customer, &old, &chosen.info.id).await.map_err(registry_error)?;
            info!(customer = %req.customer, from = %old, to = %tm, "TraderManager node gone; customer reassigned");
            self.inner.bus.log(
                "warn",
                format!(
                    "customer {} reassigned from node {old} (gone) to node {tm} for its TraderManager",
                    req.customer
                ),
            );
        }
        let tm_url = live
            .iter()
            .find(|c| c.info.id == tm)
            .map(|c| c.info.api_url.clone())
            .unwrap_or_else(|| chosen.info.api_url.clone());
        let url = format!("{}/v1/sessions", chosen.info.api_url);
        let mut forward = self.inner.http.post(&url).header(CLUSTER_SECRET_HEADER, self.inner.secret.expose());
        if let Some((token_id, expires_at)) = opener {
            forward = forward.header(crate::auth::OPENED_BY_HEADER, token_id);
            if let Some(at) = expires_at {
                forward = forward.header(crate::auth::EXPIRES_AT_HEADER, at.to_rfc3339());
            }
        }
        let answer = forward
            .json(&serde_json::json!({ "customer": req.customer }))
            .send()
            .await
            .map_err(|e| unreachable_node(&chosen.info.id, e))?;
        let status = answer.status();
        let bytes = answer.bytes().await.map_err(|e| unreachable_node(&chosen.info.id, e))?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<lido_shared::ErrorBody>(&bytes).ok();
            let (code, message) = detail.map_or(("node_error".to_string(), format!("node answered {status}")), |b| {
                (b.error.code.clone(), b.error.message.clone())
            });
            warn!(node = %chosen.info.id, %status, %code, "node refused the session");
            return Err(ApiError::new(
                axum::http::StatusCode::from_u16(status.as_u16()).unwrap_or(axum::http::StatusCode::BAD_GATEWAY),
                static_code(&code),
                message,
            ));
        }
        let mut session: Session = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
        session.trader_manager_url = tm_url;
        if let Some(state) = self.nodes_state().get_mut(&chosen.info.id) {
            state.load.sessions += 1;
        }
        info!(customer = %req.customer, node = %session.node, trader_manager = %tm, "session placed");
        Ok(session)
    }

    /// A node by id, 404 `unknown_node` if it is not checked in.
    pub async fn node(&self, id: &str) -> Result<Candidate, ApiError> {
        let all = self.candidates().await?;
        let ids: Vec<&str> = all.iter().map(|c| c.info.id.as_str()).collect();
        let names = if ids.is_empty() { "none checked in".to_string() } else { ids.join(", ") };
        all.iter()
            .find(|c| c.info.id == id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("unknown_node", format!("no node {id:?}; this cluster has {names}")))
    }

    /// The node running the service `name`: from the nodes' last check-ins,
    /// else asked of each node (a service spawned since).
    pub async fn node_of_service(&self, name: &str) -> Result<Candidate, ApiError> {
        let all = self.candidates().await?;
        let on: Vec<&Candidate> = all.iter().filter(|c| c.info.services.iter().any(|s| s.name == name)).collect();
        match on.as_slice() {
            [one] => return Ok((*one).clone()),
            [] => {}
            many => {
                let nodes: Vec<&str> = many.iter().map(|c| c.info.id.as_str()).collect();
                return Err(ApiError::conflict(
                    "ambiguous_service",
                    format!(
                        "{name:?} runs on nodes {}: name one as {name}@{} (e.g. `lidoctl describe {name}@{}`)",
                        nodes.join(", "),
                        nodes[0],
                        nodes[0]
                    ),
                ));
            }
        }
        for c in &all {
            let path = format!("/v1/services/{name}");
            if let Ok(f) = self.forward(&c.info, reqwest::Method::GET, &path, None).await {
                if f.status == 200 {
                    return Ok(c.clone());
                }
            }
        }
        Err(ApiError::not_found("unknown_service", format!("no service named {name:?}; `lidoctl status` lists them")))
    }

    /// The node of `name`, or of `service@node`: the service's own name and
    /// its node (a name alone must be on one node only).
    pub async fn locate_service<'a>(&self, name: &'a str) -> Result<(&'a str, Candidate), ApiError> {
        match name.split_once('@') {
            Some((service, node)) => {
                let candidate = self.node(node).await?;
                Ok((service, candidate))
            }
            None => Ok((name, self.node_of_service(name).await?)),
        }
    }

    /// Sends a request to a node's REST with the cluster secret and returns
    /// its answer as it came.
    pub async fn forward(
        &self,
        node: &NodeInfo,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Forwarded, ApiError> {
        let url = format!("{}{path_and_query}", node.api_url);
        let mut req =
            self.inner.http.request(method.clone(), &url).header(CLUSTER_SECRET_HEADER, self.inner.secret.expose());
        if let Some(body) = body {
            req = req.json(body);
        }
        let answer = req.send().await.map_err(|e| unreachable_node(&node.id, e))?;
        let status = answer.status().as_u16();
        let body = answer.bytes().await.map_err(|e| unreachable_node(&node.id, e))?.to_vec();
        debug!(node = %node.id, %method, path = path_and_query, status, "forwarded to node");
        Ok(Forwarded { status, body })
    }

    /// Drains (or undrains) a node: the registry flag, then the node itself.
    pub async fn set_draining(&self, id: &str, draining: bool) -> Result<Forwarded, ApiError> {
        let node = self.node(id).await?;
        self.inner.registry.set_draining(id, draining).await.map_err(registry_error)?;
        if !draining && self.stopping().remove(id).is_some() {
            info!(node = id, "undrained: its after-hours stop is cancelled");
        }
        let verb = if draining { "drain" } else { "undrain" };
        let answer = self.forward(&node.info, reqwest::Method::POST, &format!("/v1/nodes/{id}/{verb}"), None).await;
        let load = self.nodes_state().get(id).map(|s| s.load.clone()).unwrap_or_default();
        self.inner.bus.publish(ClusterEvent::NodeChanged { id: id.to_string(), draining, load });
        answer
    }

    /// Registry changes as cluster events: NodeAdded, NodeChanged (drain or
    /// load changed), NodeRemoved.
    async fn publish_registry_changes(self) {
        let mut changes = self.inner.registry.watch();
        let mut known: HashMap<String, (bool, NodeLoad)> = HashMap::new();
        loop {
            let change = tokio::select! {
                _ = self.inner.closing.cancelled() => return,
                c = changes.recv() => c,
            };
            let change = match change {
                Ok(c) => c,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // A missed `Draining` change: take the flags afresh.
                    match self.inner.registry.draining().await {
                        Ok(draining) => known.iter_mut().for_each(|(id, k)| k.0 = draining.contains(id)),
                        Err(e) => warn!(error = %e, "cannot read the draining nodes from the cluster registry"),
                    }
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            match change {
                RegistryChange::Node(record) => {
                    let id = record.info.id.clone();
                    // A known node's flag follows `Draining` changes; a new one's is read.
                    let draining = match known.get(&id) {
                        Some((draining, _)) => *draining,
                        None => match self.inner.registry.draining().await {
                            Ok(d) => d.contains(&id),
                            Err(e) => {
                                warn!(node = %id, error = %e, "cannot read whether a new node is draining; taken as not");
                                false
                            }
                        },
                    };
                    let now = (draining, record.info.load.clone());
                    match known.insert(id.clone(), now.clone()) {
                        None => {
                            let mut node = record.info;
                            node.draining = draining;
                            self.inner.bus.log("info", format!("node {id} joined at {}", node.location));
                            self.inner.bus.publish(ClusterEvent::NodeAdded { node });
                        }
                        Some(before) if before != now => {
                            self.inner.bus.publish(ClusterEvent::NodeChanged { id, draining: now.0, load: now.1 });
                        }
                        Some(_) => {}
                    }
                }
                RegistryChange::NodeGone(id) => {
                    known.remove(&id);
                    // `connected` stays the watch socket's own: a gone node
                    // is not a candidate anyway, and one that checks in
                    // again while its socket held (a stall longer than the
                    // TTL, etcd losing its lease) is reachable at once.
                    // Clearing it here left such a node unreachable until
                    // its socket dropped: no session could be placed on it.
                    let reason = if self.stopping().contains_key(&id) {
                        "stopped: idle and draining in the after-hours window".to_string()
                    } else {
                        format!("stopped checking in (no check-in for {} ms)", self.inner.node_ttl.as_millis())
                    };
                    info!(node = %id, %reason, "node left the cluster");
                    self.inner.bus.publish(ClusterEvent::NodeRemoved { id, reason });
                }
                RegistryChange::Draining { node, draining } => {
                    if let Some(k) = known.get_mut(&node) {
                        k.0 = draining;
                    }
                }
                RegistryChange::Assigned { .. } | RegistryChange::Setting { .. } => {}
            }
        }
    }

    /// Watches one node's `/v1/cluster/watch`: forwards its events onto the
    /// IM's bus and marks it reachable while the socket is up; re-dials
    /// with backoff; ends when the node leaves the registry.
    async fn watch_node(self, id: String, watch_url: String) {
        let mut backoff = redial_backoff();
        let mut first = true;
        loop {
            if self.inner.closing.is_cancelled() || !self.in_registry(&id).await {
                break;
            }
            if !first {
                info!(node = %id, "re-dialing node {id}");
            }
            first = false;
            match self.dial(&watch_url).await {
                Ok(socket) => {
                    backoff = redial_backoff();
                    self.set_connected(&id, true);
                    debug!(node = %id, "watching node");
                    self.read_node(&id, socket).await;
                    self.set_connected(&id, false);
                    warn!(node = %id, "lost the watch socket of node {id}; it counts as unreachable until re-dialed");
                }
                Err(e) => debug!(node = %id, error = %e, "cannot dial node's watch socket"),
            }
            tokio::select! {
                _ = self.inner.closing.cancelled() => break,
                _ = tokio::time::sleep(backoff.next().unwrap_or(REDIAL_MAX)) => {}
            }
        }
        if let Some(state) = self.nodes_state().get_mut(&id) {
            state.watched = false;
            state.connected = false;
        }
        debug!(node = %id, "stopped watching node");
    }

    async fn in_registry(&self, id: &str) -> bool {
        match self.inner.registry.nodes().await {
            Ok(nodes) => nodes.iter().any(|n| n.info.id == id),
            // Unknown: keep trying rather than forget the node.
            Err(_) => true,
        }
    }

    fn set_connected(&self, id: &str, connected: bool) {
        if let Some(state) = self.nodes_state().get_mut(id) {
            state.connected = connected;
        }
    }

    async fn dial(
        &self,
        url: &str,
    ) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>
    {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(CLUSTER_SECRET_HEADER, self.inner.secret.expose().parse()?);
        let (socket, _) =
            tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(request)).await??;
        Ok(socket)
    }

    async fn read_node(
        &self,
        id: &str,
        mut socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    ) {
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let msg = tokio::select! {
                _ = self.inner.closing.cancelled() => return,
                m = socket.next() => m,
            };
            let Some(Ok(msg)) = msg else { return };
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(_) => return,
                _ => continue,
            };
            match serde_json::from_str::<WatchMessage>(text.as_str()) {
                Ok(WatchMessage::Snapshot { snapshot, .. }) => {
                    if let Some(node) = snapshot.nodes.into_iter().find(|n| n.id == id) {
                        if let Some(state) = self.nodes_state().get_mut(id) {
                            state.load = node.load;
                        }
                    }
                }
                Ok(WatchMessage::Event { event, .. }) => {
                    if let ClusterEvent::NodeChanged { load, .. } = &event {
                        if let Some(state) = self.nodes_state().get_mut(id) {
                            state.load = load.clone();
                        }
                    }
                    self.inner.bus.publish(event);
                }
                Ok(_) => {}
                Err(e) => debug!(node = %id, error = %e, "unreadable message from node"),
            }
        }
    }

    /// Once a second inside the after-hours window, while this IM leads:
    /// stops each idle draining node.
    async fn after_hours_loop(self) {
        let Some(window) = self.inner.after_hours else { return };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.inner.closing.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Only the leader stops nodes: two IMs never decide at once.
            if !window.contains(Utc::now()) || !self.leads() {
                continue;
            }
            let Ok(nodes) = self.candidates().await else { continue };
            for node in nodes.iter().filter(|c| c.info.draining && is_idle(&c.info)) {
                // Reading the nodes took time: still the leader?
                if self.is_stopping(&node.info.id) || !self.leads() {
                    continue;
                }
                self.stop_node(&node.info, &window).await;
            }
        }
    }

    async fn stop_node(&self, node: &NodeInfo, window: &AfterHours) {
        let id = node.id.clone();
        self.stopping().insert(id.clone(), Instant::now());
        let message = format!("node {id} stopped: idle and draining in the after-hours window {window}");
        info!(node = %id, "{message}");
        if let Err(e) = self.forward(node, reqwest::Method::POST, "/v1/node/shutdown", None).await {
            warn!(node = %id, error = %e.message, "cannot reach the node to stop it; it is told on its next check-in");
        }
        self.inner.bus.log("info", message);
        if let Err(e) = self.inner.registry.remove_node(&id).await {
            warn!(node = %id, error = %e, "cannot remove the stopped node from the registry");
        }
    }
}

/// Idle: no open streams, open orders or hosted traders: stopping it cuts
/// nothing. Sessions alone do not count: a session is only a token, and an
/// algo whose node is gone opens a new one at the IM on its next call (the
/// `ClusterClient` does it by itself).
pub fn is_idle(node: &NodeInfo) -> bool {
    let l = &node.load;
    l.streams == 0 && l.open_orders == 0 && !node.services.iter().any(|s| s.kind == ServiceKind::Trader)
}

/// The least-loaded (sessions + streams) reachable non-draining node, at
/// `location` first if asked; ties go to the lowest id.
pub fn pick<'a>(nodes: &'a [Candidate], location: Option<&str>) -> Option<&'a Candidate> {
    nodes.iter().filter(|c| c.reachable && !c.info.draining).min_by_key(|c| {
        let elsewhere = location.is_some_and(|l| c.info.location != l);
        (elsewhere, c.info.load.sessions + c.info.load.streams, c.info.id.clone())
    })
}

/// Why no node can take a session.
fn no_node(all: &[Candidate]) -> ApiError {
    let message = if all.is_empty() {
        "no node has checked in with this InfrastructureManager; start a node with `lidod --role node --im URL`"
            .to_string()
    } else if all.iter().all(|c| c.info.draining) {
        format!("all {} nodes are draining; undrain one with `lidoctl undrain node ID`", all.len())
    } else {
        "no non-draining node is reachable right now (their watch sockets are down); retry shortly".to_string()
    };
    ApiError::unavailable("no_node_available", message)
}

fn unreachable_node(node: &str, e: impl std::fmt::Display) -> ApiError {
    warn!(node, error = %e, "node unreachable");
    ApiError::unavailable("node_unreachable", format!("node {node} cannot be reached right now; retry shortly"))
}

pub(crate) fn registry_error(e: RegistryError) -> ApiError {
    warn!(error = %e, "cluster registry error");
    ApiError::unavailable("registry_unavailable", "the cluster registry cannot be reached; retry shortly")
}

/// Error codes are `&'static str`: keep the node's when it is a known one.
fn static_code(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "invalid_request",
        "invalid_customer",
        "no_node_available",
        "limit_exceeded",
        "too_many_sessions",
        "forbidden",
        "unauthorized",
    ];
    KNOWN.iter().find(|k| **k == code).copied().unwrap_or("node_error")
}

/// Re-dial delays: 100 ms doubling to 2 s, no jitter; rebuilt to reset.
fn redial_backoff() -> backon::ExponentialBackoff {
    ExponentialBuilder::default().with_min_delay(REDIAL_MIN).with_max_delay(REDIAL_MAX).without_max_times().build()
}

/// The union of per-node lists, for `GET /v1/sessions`.
pub fn merge_json_arrays(parts: Vec<Vec<u8>>) -> serde_json::Value {
    let mut out = Vec::new();
    for part in parts {
        if let Ok(serde_json::Value::Array(items)) = serde_json::from_slice::<serde_json::Value>(&part) {
            out.extend(items);
        }
    }
    serde_json::Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, location: &str, sessions: usize, draining: bool, reachable: bool) -> Candidate {
        let info = NodeInfo {
            id: id.into(),
            location: location.into(),
            draining,
            api_url: format!("http://{id}"),
            managers: Vec::new(),
            services: Vec::new(),
            load: NodeLoad { sessions, streams: 0, open_orders: 0 },
        };
        Candidate { info, reachable }
    }

    #[test]
    fn the_least_loaded_reachable_non_draining_node_wins_preferring_the_location() {
        let nodes = vec![node("n1", "ny", 2, false, true), node("n2", "ldn", 1, false, true)];
        assert_eq!(pick(&nodes, None).unwrap().info.id, "n2");
        assert_eq!(pick(&nodes, Some("ny")).unwrap().info.id, "n1");
        assert_eq!(pick(&nodes, Some("tokyo")).unwrap().info.id, "n2");
        let nodes = vec![node("n1", "ny", 5, false, true), node("n2", "ldn", 0, true, true)];
        assert_eq!(pick(&nodes, None).unwrap().info.id, "n1", "draining nodes are skipped");
        let nodes = vec![node("n1", "ny", 0, false, false), node("n2", "ldn", 3, false, true)];
        assert_eq!(pick(&nodes, None).unwrap().info.id, "n2", "unreachable nodes are skipped");
    }

    #[test]
    fn no_node_says_why() {
        assert!(no_node(&[]).message.contains("no node has checked in"));
        let draining = vec![node("n1", "ny", 0, true, true)];
        assert!(no_node(&draining).message.contains("draining"));
        let down = vec![node("n1", "ny", 0, false, false)];
        assert!(no_node(&down).message.contains("reachable"));
        assert_eq!(no_node(&[]).code, "no_node_available");
    }

    #[test]
    fn redial_delays_double_to_their_cap() {
        let seen: Vec<u128> = redial_backoff().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(seen, [100, 200, 400, 800, 1600, 2000]);
    }
}

//! The InfrastructureManager: the cluster view of this node's managers, and
//! the operator actions (spawn, stop, restart, drain) and sessions.
//!
//! One node and in-memory state for now; several nodes and IMs sharing
//! state in etcd come with the cluster work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::Utc;
use lido_shared::access::Secret;
use lido_shared::api::{Session, SessionRequest};
use lido_shared::client::agent::memory;
use lido_shared::cluster::{
    ClusterEvent, ClusterSnapshot, EventRecord, ManagerInfo, NodeInfo, NodeLoad, RunMode, ServiceDetail, ServiceInfo,
    ServiceKind, ServiceState, SpawnRequest,
};
use lido_shared::pipe::CheckIn;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::auth::Access;
use crate::brokers::BrokerManager;
use crate::error::ApiError;
use crate::events::EventBus;
use crate::limits::Limits;
use crate::logbuf::LogBuffer;
use crate::markets::{MarketManager, PoolSpec};
use crate::sessions::{validate_customer, Sessions};
use crate::traders::TraderManager;

#[derive(Clone)]
pub struct Infra {
    inner: Arc<Inner>,
}

/// What an [`Infra`] is made of.
pub struct InfraParts {
    pub node_id: String,
    pub location: String,
    pub api_url: String,
    pub brokers: BrokerManager,
    pub markets: MarketManager,
    pub traders: TraderManager,
    pub sessions: Sessions,
    pub bus: EventBus,
    /// Tokens, audit log and auth mode.
    pub access: Access,
    pub limits: Limits,
    /// Check-ins must prove it.
    pub cluster_secret: Secret,
    /// Cancelled when the node starts shutting down: streams close.
    pub closing: CancellationToken,
}

struct Inner {
    node_id: String,
    location: String,
    api_url: String,
    draining: AtomicBool,
    brokers: BrokerManager,
    markets: MarketManager,
    traders: TraderManager,
    sessions: Sessions,
    bus: EventBus,
    access: Access,
    limits: Limits,
    cluster_secret: Secret,
    closing: CancellationToken,
}

impl Infra {
    pub fn new(parts: InfraParts) -> Self {
        let InfraParts {
            node_id,
            location,
            api_url,
            brokers,
            markets,
            traders,
            sessions,
            bus,
            access,
            limits,
            cluster_secret,
            closing,
        } = parts;
        Self {
            inner: Arc::new(Inner {
                node_id,
                location,
                api_url,
                draining: AtomicBool::new(false),
                brokers,
                markets,
                traders,
                sessions,
                bus,
                access,
                limits,
                cluster_secret,
                closing,
            }),
        }
    }

    pub fn markets(&self) -> &MarketManager {
        &self.inner.markets
    }

    pub fn brokers(&self) -> &BrokerManager {
        &self.inner.brokers
    }

    pub fn traders(&self) -> &TraderManager {
        &self.inner.traders
    }

    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    pub fn access(&self) -> &Access {
        &self.inner.access
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn cluster_secret(&self) -> &Secret {
        &self.inner.cluster_secret
    }

    pub fn bus(&self) -> &EventBus {
        &self.inner.bus
    }

    /// Cancelled when the node shuts down; long-lived connections end on it.
    pub fn closing(&self) -> &CancellationToken {
        &self.inner.closing
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn snapshot(&self) -> ClusterSnapshot {
        ClusterSnapshot { nodes: vec![self.node_info()], ts: Utc::now() }
    }

    pub fn node_info(&self) -> NodeInfo {
        let i = &self.inner;
        let brokers: Vec<ServiceInfo> = i.brokers.list().into_iter().map(|b| self.broker_view(b)).collect();
        let markets = i.markets.services();
        let traders = i.traders.list();
        let manager =
            |kind, list: &[ServiceInfo]| ManagerInfo { kind, state: ServiceState::Running, services: list.len() };
        let managers = vec![
            manager(ServiceKind::Broker, &brokers),
            manager(ServiceKind::Market, &markets),
            manager(ServiceKind::Trader, &traders),
        ];
        NodeInfo {
            id: i.node_id.clone(),
            location: i.location.clone(),
            draining: i.draining.load(Ordering::SeqCst),
            api_url: i.api_url.clone(),
            managers,
            services: brokers.into_iter().chain(markets).chain(traders).collect(),
            load: self.load(),
        }
    }

    fn load(&self) -> NodeLoad {
        NodeLoad {
            sessions: self.inner.sessions.count(),
            streams: self.inner.markets.stream_count(),
            open_orders: self.inner.markets.open_order_count(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// `POST /v1/sessions`: the customer's MarketManager and TraderManager.
    /// `opened_by` is the token that asked, so revoking it ends the session.
    pub fn open_session(&self, req: &SessionRequest, opened_by: Option<&str>) -> Result<Session, ApiError> {
        validate_customer(&req.customer)?;
        if self.is_draining() {
            return Err(ApiError::unavailable(
                "no_node_available",
                "every node is draining; no new sessions until one is undrained",
            ));
        }
        self.inner.limits.check_sessions(&req.customer, self.inner.sessions.count_for(&req.customer))?;
        let session = self.inner.sessions.open_by(&req.customer, &self.inner.node_id, &self.inner.api_url, opened_by);
        let instance = self.inner.markets.instances().assign(&session.session_id);
        self.inner.sessions.set_instance(&session.session_id, instance);
        info!(customer = %req.customer, node = %session.node, instance, "session opened");
        Ok(session)
    }

    pub fn spawn(&self, req: SpawnRequest) -> Result<ServiceInfo, ApiError> {
        if let Some(node) = &req.node {
            self.check_node(node)?;
        }
        if self.is_draining() {
            return Err(ApiError::conflict(
                "node_draining",
                format!("node {} is draining; undrain it or pick another node", self.inner.node_id),
            ));
        }
        let name = match &req.name {
            Some(n) => {
                validate_name(n)?;
                n.clone()
            }
            None => self.free_name(match req.kind {
                ServiceKind::Broker => req.service_type.as_deref().unwrap_or("broker"),
                ServiceKind::Market => return Err(ApiError::bad_request("invalid_request", "a market needs a name")),
                ServiceKind::Trader => "trader",
            }),
        };
        if self.exists(&name) {
            return Err(ApiError::conflict(
                "service_exists",
                format!("a service named {name:?} already exists; pick another name"),
            ));
        }
        let info = match req.kind {
            ServiceKind::Broker => {
                let broker_type = req.service_type.as_deref().ok_or_else(|| {
                    ApiError::bad_request("invalid_request", "a broker needs a type, e.g. {\"type\":\"paper\"}")
                })?;
                let mut options = req.options.clone();
                let mode = match options.remove("mode").as_deref() {
                    None | Some("process") => RunMode::Process,
                    Some("task") => RunMode::Task,
                    Some(other) => {
                        return Err(ApiError::bad_request(
                            "invalid_option",
                            format!("mode must be process or task, got {other:?}"),
                        ))
                    }
                };
                self.inner.brokers.spawn_broker(broker_type, &name, mode, options)?
            }
            ServiceKind::Market => {
                if let Some(t) = req.service_type.as_deref() {
                    return Err(ApiError::bad_request(
                        "invalid_request",
                        format!("a market has no type (got {t:?}); give its brokers with options.brokers"),
                    ));
                }
                let pool = PoolSpec::from_options(&req.options)
                    .map_err(|e| ApiError::bad_request("invalid_option", format!("{e} (e.g. --set brokers=k1,k2)")))?;
                self.inner.markets.create_market(&name, pool)?
            }
            ServiceKind::Trader => {
                if let Some(t) = req.service_type.as_deref() {
                    return Err(ApiError::bad_request(
                        "invalid_request",
                        format!("a trader has no type (got {t:?}); give its program with options.exec"),
                    ));
                }
                self.inner.traders.spawn_trader(&name, &self.inner.node_id, req.options.clone())?
            }
        };
        self.inner.bus.log("info", format!("spawned {} {}", info.kind, info.name));
        Ok(info)
    }

    pub async fn stop(&self, name: &str) -> Result<ServiceInfo, ApiError> {
        let i = &self.inner;
        let info = if i.brokers.contains(name) {
            i.brokers.stop(name).await?
        } else if i.markets.contains(name) {
            i.markets.remove_market(name)?
        } else if i.traders.contains(name) {
            i.traders.stop(name).await?
        } else {
            return Err(unknown_service(name));
        };
        i.bus.log("info", format!("stopped {} {}", info.kind, info.name));
        Ok(info)
    }

    /// A service with the recent events that concern it.
    pub fn describe(&self, name: &str) -> Result<ServiceDetail, ApiError> {
        let service = self.snapshot().service(name).cloned().ok_or_else(|| unknown_service(name))?;
        let events = self
            .inner
            .bus
            .history(|e| match e {
                ClusterEvent::ServiceChanged { service } => service.name == name,
                ClusterEvent::ServiceRemoved { name: n, .. } => n == name,
                ClusterEvent::Failover { market, from, to, .. } => [market, from, to].contains(&&name.to_string()),
                ClusterEvent::Log { message, .. } => message
                    .split_whitespace()
                    .any(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '-' && c != '_') == name),
                _ => false,
            })
            .into_iter()
            .map(|n| EventRecord { seq: n.seq, ts: n.ts, event: n.event })
            .collect();
        Ok(ServiceDetail { service, events })
    }

    /// A supervised service's output buffer and run mode.
    pub fn logs(&self, name: &str) -> Result<(std::sync::Arc<LogBuffer>, RunMode), ApiError> {
        let i = &self.inner;
        if let Some(l) = i.brokers.logs(name).or_else(|| i.traders.logs(name)) {
            return Ok(l);
        }
        if i.markets.contains(name) {
            return Err(ApiError::conflict(
                "no_logs",
                format!("market {name} runs inside lidod; its lines are in lidod's own log"),
            ));
        }
        Err(unknown_service(name))
    }

    /// Samples every service's figures and publishes them (once a second).
    pub fn publish_metrics(&self, elapsed: std::time::Duration) {
        let i = &self.inner;
        let mut services = i.brokers.sample_metrics(elapsed);
        services.extend(i.traders.sample_metrics(elapsed));
        services.extend(i.markets.sample_metrics(elapsed));
        i.bus.publish(ClusterEvent::Metrics { node: i.node_id.clone(), services });
    }

    pub fn restart(&self, name: &str) -> Result<ServiceInfo, ApiError> {
        let i = &self.inner;
        if i.brokers.contains(name) {
            i.brokers.restart(name)
        } else if i.traders.contains(name) {
            i.traders.restart(name)
        } else if i.markets.contains(name) {
            Err(ApiError::conflict(
                "not_restartable",
                "a market runs inside lidod and has nothing to restart; stop and spawn it",
            ))
        } else {
            Err(unknown_service(name))
        }
    }

    /// Drains a broker (no new subscriptions or orders; its feeds move to
    /// another broker without a gap, its open orders to a sibling), or
    /// takes it out of draining.
    pub fn set_broker_draining(&self, name: &str, draining: bool) -> Result<ServiceInfo, ApiError> {
        let Some(info) = self.inner.brokers.get(name) else {
            if self.exists(name) {
                return Err(ApiError::conflict(
                    "not_drainable",
                    format!("{name} is not a broker; drain a broker by name, or a node with `drain node ID`"),
                ));
            }
            return Err(unknown_service(name));
        };
        if self.inner.markets.is_draining(name) != draining {
            self.inner.markets.set_draining(name, draining);
            let verb = if draining { "draining" } else { "undrained" };
            info!(broker = name, verb, "broker drain state changed");
            self.inner.bus.log("info", format!("broker {name} {verb}"));
        }
        let info = self.broker_view(info);
        self.inner.bus.publish(ClusterEvent::ServiceChanged { service: info.clone() });
        Ok(info)
    }

    /// A broker as the cluster view shows it: `draining` while drained and up.
    fn broker_view(&self, mut info: ServiceInfo) -> ServiceInfo {
        if info.state == ServiceState::Running && self.inner.markets.is_draining(&info.name) {
            info.state = ServiceState::Draining;
        }
        info
    }

    pub fn set_draining(&self, node: &str, draining: bool) -> Result<NodeInfo, ApiError> {
        self.check_node(node)?;
        let was = self.inner.draining.swap(draining, Ordering::SeqCst);
        if was != draining {
            let verb = if draining { "draining" } else { "undrained" };
            info!(node, verb, "node drain state changed");
            self.inner.bus.publish(ClusterEvent::NodeChanged { id: node.to_string(), draining, load: self.load() });
            self.inner.bus.log("info", format!("node {node} {verb}"));
        }
        Ok(self.node_info())
    }

    /// Routes a check-in to the manager of its kind.
    pub fn checkin(&self, checkin: CheckIn) -> Result<(), ApiError> {
        validate_name(&checkin.name)?;
        let url = checkin.ws_url.as_str();
        if memory::is_memory_url(url) {
            if !memory::is_bound(url) {
                return Err(ApiError::bad_request(
                    "invalid_checkin",
                    format!("nothing in lidod's process listens at {url}: a mem:// pipe is for a task inside it; a service of its own serves ws:// or wss://"),
                ));
            }
        } else if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(ApiError::bad_request(
                "invalid_checkin",
                "ws_url must be a ws:// or wss:// URL (or mem:// for a task in this process)",
            ));
        }
        match checkin.kind {
            ServiceKind::Broker => {
                if !crate::venue::BROKER_TYPES.contains(&checkin.service_type.as_str()) {
                    return Err(ApiError::bad_request(
                        "unknown_broker_type",
                        format!("unknown broker type {:?}", checkin.service_type),
                    ));
                }
                if self.inner.markets.contains(&checkin.name) || self.inner.traders.contains(&checkin.name) {
                    return Err(ApiError::conflict(
                        "service_exists",
                        format!("{:?} is another kind of service", checkin.name),
                    ));
                }
                self.inner.brokers.checkin(checkin)
            }
            ServiceKind::Trader => {
                if self.inner.markets.contains(&checkin.name) || self.inner.brokers.contains(&checkin.name) {
                    return Err(ApiError::conflict(
                        "service_exists",
                        format!("{:?} is another kind of service", checkin.name),
                    ));
                }
                self.inner.traders.checkin(checkin)
            }
            ServiceKind::Market => {
                Err(ApiError::bad_request("invalid_checkin", "markets run inside lidod and do not check in"))
            }
        }
    }

    fn exists(&self, name: &str) -> bool {
        let i = &self.inner;
        i.brokers.contains(name) || i.markets.contains(name) || i.traders.contains(name)
    }

    fn free_name(&self, base: &str) -> String {
        (2..).map(|n| format!("{base}-{n}")).find(|n| !self.exists(n)).expect("unbounded")
    }

    fn check_node(&self, node: &str) -> Result<(), ApiError> {
        if node != self.inner.node_id {
            return Err(ApiError::not_found(
                "unknown_node",
                format!("no node {node:?}; this cluster has {}", self.inner.node_id),
            ));
        }
        Ok(())
    }
}

/// Service names: 1-32 of `a-z 0-9 - _`, starting with a letter.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_name",
            format!("invalid service name {name:?}: use 1-32 of a-z 0-9 - _, starting with a letter"),
        ))
    }
}

fn unknown_service(name: &str) -> ApiError {
    ApiError::not_found("unknown_service", format!("no service named {name:?}; `lidoctl status` lists them"))
}

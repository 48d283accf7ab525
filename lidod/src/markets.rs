//! The MarketManager: the node's algo-facing side. It owns the markets,
//! routes orders and subscriptions to a healthy broker of each market's
//! pool, keeps the order book-keeping, and fans venue data out to streams.
//!
//! Each (market, symbol) is routed to one broker of the pool and moves when
//! that broker fails or drains (`failover.rs`, with the rules in
//! `health.rs` and `routing.rs`); only the routed broker's data reaches
//! the market's streams.
//!
//! Orders are journaled before they are sent (see [`OrderStore`]). Each time
//! a broker's pipe comes up (first connection after the node starts, a
//! reconnect, a restarted broker) its orders are reconciled with the venue
//! (`reconcile.rs`); until that is done, a market routed to that broker
//! answers new orders with `503 reconciling`.
//!
//! Market data fans out through instances (`instances.rs`): shards that
//! the autoscaler adds and releases with load, each stream on one of them.

mod failover;
mod health;
mod instances;
mod market;
mod orders;
mod reconcile;
mod routing;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use chrono::Utc;
use lido_shared::api::{Channel, MarketInfo, OrdersQuery, PlaceOrder};
use lido_shared::cluster::{ClusterEvent, MarketPool, RunMode, ServiceInfo, ServiceKind, ServiceState};
use lido_shared::model::{Balance, Book, Fill, Instrument, Order, OrderStatus, OrderType, Position, Quote, Symbol};
use lido_shared::pipe::{Command, Feed, OrderTrace, ReplyBody, ServiceEvent, VenueOrder};
use rust_decimal::Decimal;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::failover::account_of;
use self::failover::Routes;
use self::health::HealthBook;
pub use self::instances::{Client, Instance, Instances};
pub use self::market::{Market, MdMsg};
pub use self::orders::{OrderMsg, OrderStore};
use self::reconcile::Reconciled;
pub use self::routing::PoolSpec;
use crate::brokers::BrokerManager;
use crate::cluster::claims::OrderClaims;
use crate::config::AutoscaleConfig;
use crate::config::FailoverConfig;
use crate::error::ApiError;
use crate::events::EventBus;
use crate::pipe::{PipeError, PipeEvent, PipeHandle, PipeSignal};

/// How long a broker may take to answer a command.
/// The error code a broker answers when it cannot tell whether the venue
/// took an order: the order is settled like a timed-out send.
pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";
const VENUE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep settling an order whose send had no clear outcome.
const SETTLE_ATTEMPTS: u32 = 60;

/// Tells how many messages wait in one algo stream's outbound queue.
pub type QueueProbe = Box<dyn Fn() -> usize + Send + Sync>;

#[derive(Clone)]
pub struct MarketManager {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    brokers: BrokerManager,
    markets: RwLock<BTreeMap<String, Arc<Market>>>,
    orders: OrderStore,
    bus: EventBus,
    /// Open algo streams, each with a probe of its outbound queue.
    streams: std::sync::Mutex<HashMap<u64, QueueProbe>>,
    next_stream: AtomicU64,
    /// Which brokers' orders are reconciled with their venue.
    reconciled: std::sync::Mutex<Reconciled>,
    /// The fan-out instances and the autoscaler's decisions.
    instances: Instances,
    /// Each pool broker's health, as seen from here.
    health: HealthBook,
    /// The broker each (market, symbol) is routed to.
    routes: std::sync::Mutex<Routes>,
    failover: FailoverConfig,
    /// Wakes the health watcher early (a pipe signal, a drain).
    nudge: Notify,
    /// In a cluster, where this node claims each client order before it
    /// sends it (see `cluster/claims.rs`); unset on a node alone.
    claims: OnceLock<OrderClaims>,
}

/// What the router takes: every broker's events, and its pipes' signals.
pub type BrokerFeed = (mpsc::Receiver<(String, PipeEvent)>, mpsc::UnboundedReceiver<(String, PipeSignal)>);

impl MarketManager {
    /// Starts the router that takes broker events and pipe signals, and
    /// the instances with their autoscaling rules, and the health watcher
    /// that moves routes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: String,
        brokers: BrokerManager,
        orders: OrderStore,
        bus: EventBus,
        (events, signals): BrokerFeed,
        autoscale: AutoscaleConfig,
        failover: FailoverConfig,
        cancel: CancellationToken,
    ) -> Self {
        let instances = Instances::start(autoscale, bus.clone(), cancel.clone());
        let mm = Self {
            inner: Arc::new(Inner {
                node,
                brokers,
                markets: RwLock::new(BTreeMap::new()),
                orders,
                bus,
                streams: std::sync::Mutex::new(HashMap::new()),
                next_stream: AtomicU64::new(1),
                reconciled: std::sync::Mutex::new(Reconciled::default()),
                instances,
                health: HealthBook::default(),
                routes: std::sync::Mutex::new(Routes::default()),
                failover,
                nudge: Notify::new(),
                claims: OnceLock::new(),
            }),
        };
        tokio::spawn(mm.clone().watch_health(cancel.clone()));
        tokio::spawn(mm.clone().route(events, signals, cancel));
        mm
    }

    /// Makes this node claim every client order at its InfrastructureManagers
    /// before sending it, so that one client order id is placed through one
    /// node only, cluster-wide (`--role node`). Set once, at start.
    pub fn claim_orders_with(&self, claims: OrderClaims) {
        if self.inner.claims.set(claims).is_err() {
            warn!("order claims were already set up; the second set is ignored");
        }
    }

    // ---- markets -------------------------------------------------------------

    pub fn create_market(&self, name: &str, pool: PoolSpec) -> Result<ServiceInfo, ApiError> {
        self.check_brokers(name, &pool)?;
        {
            let mut markets = self.write();
            if markets.contains_key(name) {
                return Err(ApiError::conflict("service_exists", format!("a market named {name:?} already exists")));
            }
            markets.insert(name.to_string(), Arc::new(Market::with_spec(name.to_string(), pool)));
        }
        // The series exists from the start so dashboards and alerts can use it.
        metrics::counter!("lido_failovers_total", "market" => name.to_string()).absolute(0);
        let info = self.market_info(name).expect("just inserted");
        self.inner.bus.publish(ClusterEvent::ServiceChanged { service: info.clone() });
        info!(market = name, "market created");
        // Load instruments now if a broker is already up.
        let mm = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            if let Ok(m) = mm.market(&name) {
                let _ = mm.load_instruments(&m).await;
            }
        });
        Ok(info)
    }

    /// Replaces a live market's pool with `change` applied (what it leaves
    /// out stays). Validated as at creation; a refused change changes
    /// nothing. The watcher then moves routes whose broker left the pool or
    /// is no longer the best as planned moves (reason "pool changed");
    /// feeds of symbols that left the universe end with a gap marker.
    pub fn update_market(&self, name: &str, change: &MarketPool) -> Result<ServiceInfo, ApiError> {
        let m = self.market(name)?;
        let before = m.spec();
        let list = |given: &Option<String>, now: Vec<String>| match given {
            Some(v) => v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            None => now,
        };
        let brokers = list(&change.brokers, before.brokers.clone());
        let fallback = list(&change.fallback, before.fallback.clone());
        let symbols = list(&change.symbols, before.symbols.iter().map(Symbol::to_string).collect());
        let spec = PoolSpec::new(brokers, fallback, &symbols)
            .map_err(|e| ApiError::bad_request("invalid_pool", format!("market {name:?}: {e}")))?;
        self.check_brokers(name, &spec)?;
        m.set_spec(spec.clone());
        m.mark_pool_changed();
        // What streams or is routed now, not just the old list: an empty universe took every symbol.
        let mut left: Vec<Symbol> = m.active_feeds().into_iter().map(|(_, s)| s).collect();
        left.extend(self.routes().symbols(name));
        left.retain(|s| !spec.trades(s));
        left.sort();
        left.dedup();
        self.end_symbols(&m, &left);
        m.set_instruments(m.instruments().into_iter().filter(|i| spec.trades(&i.symbol)).collect());
        info!(market = name, brokers = ?spec.brokers, fallback = ?spec.fallback, symbols = spec.symbols.len(),
            "market pool changed");
        self.inner.bus.log("info", format!("market {name}: pool changed to {}", describe_pool(&spec)));
        self.nudge();
        let info = self.market_info(name).ok_or_else(|| unknown_market(name))?;
        self.inner.bus.publish(ClusterEvent::ServiceChanged { service: info.clone() });
        // A wider universe may list more instruments: reload them.
        let mm = self.clone();
        tokio::spawn(async move {
            let _ = mm.load_instruments(&m).await;
        });
        Ok(info)
    }

    /// Refuses a pool naming a broker that does not exist.
    fn check_brokers(&self, name: &str, pool: &PoolSpec) -> Result<(), ApiError> {
        match pool.all().find(|b| !self.inner.brokers.contains(b)) {
            Some(b) => Err(ApiError::bad_request(
                "unknown_broker",
                format!("market {name:?} names broker {b:?}, which does not exist; spawn it first"),
            )),
            None => Ok(()),
        }
    }

    /// Ends the feeds of symbols that left the market's universe: a gap
    /// marker saying so, the stream of them closes, the route goes and its
    /// broker is unsubscribed. New subscriptions to them are refused
    /// (`unknown_symbol`), as for any symbol the market does not trade.
    fn end_symbols(&self, m: &Arc<Market>, left: &[Symbol]) {
        for symbol in left {
            let reason = format!(
                "{symbol} was removed from market {}'s symbols by an operator; this feed ends here, no more updates",
                m.name
            );
            let feeds = m.end_feeds(symbol, &reason);
            let Some(broker) = self.routes().remove(&m.name, symbol) else { continue };
            let (mm, symbol) = (self.clone(), symbol.clone());
            tokio::spawn(async move {
                for feed in feeds {
                    mm.unsubscribe_on(&broker, feed, &symbol).await;
                }
            });
        }
    }

    pub fn remove_market(&self, name: &str) -> Result<ServiceInfo, ApiError> {
        let mut info = self.market_info(name).ok_or_else(|| unknown_market(name))?;
        self.write().remove(name);
        self.routes().forget(name);
        info.state = ServiceState::Stopped;
        self.inner.bus.publish(ClusterEvent::ServiceRemoved { name: name.to_string(), node: self.inner.node.clone() });
        Ok(info)
    }

    pub fn market(&self, name: &str) -> Result<Arc<Market>, ApiError> {
        self.read().get(name).cloned().ok_or_else(|| unknown_market(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// The broker carrying the market: its first routed symbol's, else
    /// the first routable one of the pool.
    fn active_broker(&self, m: &Market) -> Option<String> {
        let routed = self.routes_of(&m.name).into_values().next();
        routed.or_else(|| self.any_broker(m).map(|(b, _)| b))
    }

    pub fn markets(&self) -> Vec<MarketInfo> {
        let markets: Vec<Arc<Market>> = self.read().values().cloned().collect();
        markets
            .iter()
            .map(|m| {
                let up = self.any_broker(m).is_some();
                MarketInfo {
                    name: m.name.clone(),
                    symbols: m.instruments().into_iter().map(|i| i.symbol).collect(),
                    brokers: m.spec().brokers,
                    state: if up { ServiceState::Running } else { ServiceState::Degraded },
                    active_broker: self.active_broker(m),
                    fallback: m.spec().fallback,
                    routes: self.routes_of(&m.name),
                    health: self.pool_health(m),
                }
            })
            .collect()
    }

    /// Each market's figures, with its fan-out rate since the last sample.
    pub fn sample_metrics(&self, elapsed: Duration) -> BTreeMap<String, BTreeMap<String, f64>> {
        let markets: Vec<Arc<Market>> = self.read().values().cloned().collect();
        markets
            .iter()
            .map(|m| {
                let mut metrics = BTreeMap::new();
                metrics.insert("listeners".to_string(), m.listener_count() as f64);
                metrics.insert("messages_per_s".to_string(), (m.sample_rate(elapsed) * 10.0).round() / 10.0);
                (m.name.clone(), metrics)
            })
            .collect()
    }

    /// Markets as services, for the cluster view.
    pub fn services(&self) -> Vec<ServiceInfo> {
        let names: Vec<String> = self.read().keys().cloned().collect();
        names.iter().filter_map(|n| self.market_info(n)).collect()
    }

    fn market_info(&self, name: &str) -> Option<ServiceInfo> {
        let m = self.read().get(name).cloned()?;
        let up = self.any_broker(&m).is_some();
        let spec = m.spec();
        let mut options = BTreeMap::new();
        options.insert("brokers".to_string(), spec.brokers.join(","));
        if !spec.fallback.is_empty() {
            options.insert("fallback".to_string(), spec.fallback.join(","));
        }
        if !spec.symbols.is_empty() {
            options.insert("symbols".to_string(), comma(&spec.symbols));
        }
        let mut metrics = BTreeMap::new();
        metrics.insert("listeners".to_string(), m.listener_count() as f64);
        let health = self.pool_health(&m);
        let healthy = health.iter().filter(|h| h.health == "healthy").count();
        metrics.insert("brokers_healthy".to_string(), healthy as f64);
        let routes = self.routes_of(name);
        let mut detail: Vec<String> = Vec::new();
        if !routes.is_empty() {
            let list: Vec<String> = routes.iter().map(|(s, b)| format!("{s}→{b}")).collect();
            detail.push(format!("routes {}", list.join(" ")));
        }
        let pool: Vec<String> = health
            .iter()
            .map(|h| match &h.reason {
                Some(r) => format!("{} {} ({r})", h.broker, h.health),
                None => format!("{} {}", h.broker, h.health),
            })
            .collect();
        detail.push(format!("pool {}", pool.join(", ")));
        Some(ServiceInfo {
            name: m.name.clone(),
            kind: ServiceKind::Market,
            service_type: String::new(),
            state: if up { ServiceState::Running } else { ServiceState::Degraded },
            node: self.inner.node.clone(),
            mode: RunMode::Task,
            pid: None,
            ws_url: None,
            restarts: 0,
            started_at: None,
            detail: Some(detail.join("; ")),
            options,
            metrics,
        })
    }

    // ---- market data ---------------------------------------------------------

    pub async fn instruments(&self, market: &str) -> Result<Vec<Instrument>, ApiError> {
        let m = self.market(market)?;
        let list = m.instruments();
        if !list.is_empty() {
            return Ok(list);
        }
        self.load_instruments(&m).await
    }

    /// The market's instruments: what its first routable broker offers,
    /// within the market's symbol universe.
    async fn load_instruments(&self, m: &Market) -> Result<Vec<Instrument>, ApiError> {
        match self.ask(m, None, Command::Instruments).await? {
            ReplyBody::Instruments(list) => {
                let list: Vec<Instrument> = list.into_iter().filter(|i| m.spec().trades(&i.symbol)).collect();
                m.set_instruments(list.clone());
                Ok(list)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Learns what a broker offers, for routing (on each pipe up).
    async fn load_offers(&self, broker: &str) {
        for _ in 0..20 {
            if let Some(pipe) = self.inner.brokers.pipe(broker).filter(|p| p.is_up()) {
                if let Ok(ReplyBody::Instruments(list)) = pipe.request(Command::Instruments, VENUE_TIMEOUT).await {
                    self.inner.health.set_offers(broker, list.into_iter().map(|i| i.symbol));
                    self.nudge();
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        warn!(%broker, "the broker did not list its instruments; it gets no routes until it does");
    }

    /// Parses a symbol and checks the market trades it.
    pub async fn resolve(&self, market: &str, symbol: &str) -> Result<(Arc<Market>, Instrument), ApiError> {
        let m = self.market(market)?;
        let sym = Symbol::parse(symbol).map_err(|e| ApiError::bad_request("invalid_symbol", e.to_string()))?;
        // Every order comes here: test for the list, never copy it (a
        // venue such as Kraken lists hundreds of pairs).
        if !m.has_instruments() {
            self.load_instruments(&m).await?;
        }
        let instrument = m.instrument(&sym).ok_or_else(|| {
            ApiError::not_found(
                "unknown_symbol",
                format!(
                    "market {market:?} does not trade {sym}; GET /v1/instruments?market={market} lists what it does"
                ),
            )
        })?;
        Ok((m, instrument))
    }

    pub async fn quote(&self, market: &str, symbol: &str) -> Result<Quote, ApiError> {
        let (m, ins) = self.resolve(market, symbol).await?;
        match self.ask(&m, Some(&ins.symbol), Command::Quote { symbol: ins.symbol.clone() }).await? {
            ReplyBody::Quote(q) => Ok(q),
            other => Err(unexpected(other)),
        }
    }

    pub async fn book(&self, market: &str, symbol: &str, depth: usize) -> Result<Book, ApiError> {
        let (m, ins) = self.resolve(market, symbol).await?;
        match self.ask(&m, Some(&ins.symbol), Command::Book { symbol: ins.symbol.clone(), depth }).await? {
            ReplyBody::Book(b) => Ok(b.truncated(depth)),
            other => Err(unexpected(other)),
        }
    }

    /// Joins a feed on `instance`; the first listener subscribes the venue.
    pub async fn listen(
        &self,
        market: &str,
        feed: Feed,
        symbol: &Symbol,
        instance: &Arc<Instance>,
    ) -> Result<broadcast::Receiver<MdMsg>, ApiError> {
        let m = self.market(market)?;
        let (rx, first) = m.listen(feed, symbol, instance);
        if first {
            let subscribed = match self.route_for(&m, symbol) {
                None => Err(no_broker(&m)),
                Some((broker, _)) => self.subscribe_on(&broker, feed, symbol).await.map_err(venue_error),
            };
            if let Err(e) = subscribed {
                m.unlisten(feed, symbol, instance.id);
                return Err(e);
            }
        }
        Ok(rx)
    }

    /// Leaves a feed on instance `instance`; the last listener unsubscribes the venue.
    pub fn unlisten(&self, market: &str, feed: Feed, symbol: &Symbol, instance: u32) {
        let Ok(m) = self.market(market) else { return };
        if m.unlisten(feed, symbol, instance) {
            let Some(broker) = self.routed(&m.name, symbol) else { return };
            let mm = self.clone();
            let symbol = symbol.clone();
            tokio::spawn(async move { mm.unsubscribe_on(&broker, feed, &symbol).await });
        }
    }

    /// Counts an open algo stream; `queued` tells how many messages wait in
    /// its outbound queue (read when metrics are). Returns its id for
    /// [`Self::stream_closed`].
    pub fn stream_opened(&self, queued: QueueProbe) -> u64 {
        let id = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        self.streams().insert(id, queued);
        id
    }

    pub fn stream_closed(&self, id: u64) {
        self.streams().remove(&id);
    }

    pub fn stream_count(&self) -> usize {
        self.streams().len()
    }

    /// Messages waiting in all streams' outbound queues, and in the fullest one.
    pub fn stream_queues(&self) -> (usize, usize) {
        self.streams().values().map(|probe| probe()).fold((0, 0), |(sum, max), n| (sum + n, max.max(n)))
    }

    /// The fan-out instances (sessions are assigned one, streams join one).
    pub fn instances(&self) -> &Instances {
        &self.inner.instances
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<u64, QueueProbe>> {
        self.inner.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- orders --------------------------------------------------------------

    pub fn order_updates(&self) -> broadcast::Receiver<OrderMsg> {
        self.inner.orders.subscribe()
    }

    pub fn open_order_count(&self) -> usize {
        self.inner.orders.open_count()
    }

    /// How many of the customer's orders are open (read from an index).
    pub fn open_orders_of(&self, customer: &str) -> usize {
        self.inner.orders.open_count_of(customer)
    }

    /// Whether the customer has placed an order with this client order id.
    pub fn knows_client_order(&self, customer: &str, client_order_id: &str) -> bool {
        self.inner.orders.knows(customer, client_order_id)
    }

    /// Validates and places an order. `false` in the answer means the client
    /// order id was used before and the first order is returned. Runs in an
    /// `order` span with the customer, market and order ids, which the
    /// broker's span for the same order repeats (see [`OrderTrace`]).
    pub async fn place(&self, customer: &str, req: PlaceOrder) -> Result<(Order, bool), ApiError> {
        let span = tracing::info_span!(
            "order",
            %customer,
            market = %req.market,
            client_order_id = tracing::field::Empty,
            order_id = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        tracing::Instrument::instrument(self.place_in_span(customer, req, started), span).await
    }

    async fn place_in_span(
        &self,
        customer: &str,
        req: PlaceOrder,
        started: std::time::Instant,
    ) -> Result<(Order, bool), ApiError> {
        // A known client order id answers from the journal, even while the
        // venue is away or being reconciled; a malformed request never does.
        Symbol::parse(&req.symbol).map_err(|e| ApiError::bad_request("invalid_symbol", e.to_string()))?;
        if let Some(id) = &req.client_order_id {
            validate_client_id(id)?;
        }
        match (req.order_type, req.limit_price) {
            (OrderType::Limit, None) => {
                return Err(ApiError::bad_request("invalid_price", "a limit order needs limit_price"));
            }
            (OrderType::Market, Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_price",
                    "a market order takes no limit_price; use type limit",
                ));
            }
            _ => {}
        }
        if let Some(existing) = req.client_order_id.as_deref().and_then(|id| self.inner.orders.find(customer, id)) {
            return Ok((existing, false));
        }
        let (m, ins) = self.resolve(&req.market, &req.symbol).await?;
        ins.check_quantity(req.quantity).map_err(|m| ApiError::bad_request("invalid_quantity", m))?;
        if let Some(p) = req.limit_price {
            ins.check_price(p).map_err(|m| ApiError::bad_request("invalid_price", m))?;
        }
        // An id Lido makes itself is random: no other node can have it.
        let needs_claim = req.client_order_id.is_some();
        let client_order_id = match req.client_order_id {
            Some(id) => id,
            None => format!("auto-{}", uuid::Uuid::new_v4().simple()),
        };
        let active = self.route_for(&m, &ins.symbol);
        self.check_reconciled(&m, active.as_ref().map(|(b, _)| b.as_str()))?;
        let order_id = order_id_for(customer, &client_order_id);
        if needs_claim {
            if let Some(first) = self.claim(customer, &client_order_id, &order_id).await? {
                return Ok((first, false));
            }
        }
        let now = Utc::now();
        let order = Order {
            order_id,
            client_order_id,
            customer: customer.to_string(),
            market: m.name.clone(),
            symbol: ins.symbol.clone(),
            side: req.side,
            order_type: req.order_type,
            time_in_force: req.time_in_force,
            quantity: req.quantity,
            limit_price: req.limit_price,
            filled_quantity: Decimal::ZERO,
            average_price: None,
            status: OrderStatus::New,
            reason: None,
            // The intent names the broker it goes to, so a restart knows where to look.
            broker: active.as_ref().map(|(b, _)| b.clone()),
            venue_order_id: None,
            adopted: false,
            created_at: now,
            updated_at: now,
        };
        let (order, created) = self.inner.orders.insert_once(order).map_err(|e| {
            tracing::error!(error = %e, "cannot journal a new order; refused");
            ApiError::unavailable(
                "journal_unavailable",
                "the order journal cannot be written, so the order was not sent; retry, and tell the operator",
            )
        })?;
        if !created {
            return Ok((order, false));
        }
        let span = tracing::Span::current();
        span.record("client_order_id", tracing::field::display(&order.client_order_id));
        span.record("order_id", tracing::field::display(&order.order_id));
        info!(symbol = %order.symbol, side = ?order.side, quantity = %order.quantity, "order journaled");
        metrics::counter!("lido_orders_placed_total", "market" => m.name.clone()).increment(1);
        let Some((broker, pipe)) = active else {
            let reason = format!("no broker of market {} is up and routable (each is down or draining); retry shortly, or see `lidoctl describe market {}`", m.name, m.name);
            return Ok((self.inner.orders.reject(&order.order_id, reason).unwrap_or(order), true));
        };
        test_pause("after_journal", &order.order_id).await;
        let venue_order = VenueOrder {
            client_id: order.order_id.clone(),
            account: customer.to_string(),
            symbol: order.symbol.clone(),
            side: order.side,
            order_type: order.order_type,
            time_in_force: order.time_in_force,
            quantity: order.quantity,
            limit_price: order.limit_price,
            client_order_id: Some(order.client_order_id.clone()),
        };
        let order = self.send_order(&broker, &pipe, venue_order, order).await?;
        metrics::histogram!("lido_order_round_trip_seconds", "market" => order.market.clone(), "broker" => broker)
            .record(started.elapsed().as_secs_f64());
        info!(status = %order.status, filled = %order.filled_quantity, "order answered by the venue");
        Ok((order, true))
    }

    /// In a cluster, claims a client order for this node before anything is
    /// journaled or sent. `Some` is the first order when another node holds
    /// the id and the venue has it (adopted here); an id another node holds
    /// that the venue does not have yet answers `409`, and nothing is sent.
    async fn claim(&self, customer: &str, client_order_id: &str, order_id: &str) -> Result<Option<Order>, ApiError> {
        let Some(claims) = self.inner.claims.get() else {
            return Ok(None);
        };
        let holder = claims.claim(order_id).await.map_err(|e| {
            warn!(%order_id, error = %e, "cannot claim the order in the cluster; refused, nothing sent");
            ApiError::unavailable(
                "cluster_unavailable",
                format!("cannot make sure client order id {client_order_id} is placed only once in the cluster: {e}; nothing was sent, retry"),
            )
        })?;
        if holder == claims.node() {
            return Ok(None);
        }
        info!(%order_id, %holder, "client order id held by another node; looking for its order at the venue");
        self.reconcile_customer(customer, Some(order_id)).await?;
        let first = self.inner.orders.get(order_id).filter(|o| o.customer == customer);
        match first.or_else(|| self.inner.orders.find(customer, client_order_id)) {
            Some(order) => Ok(Some(order)),
            None => Err(ApiError::conflict(
                "order_placed_elsewhere",
                format!("client order id {client_order_id} was taken by node {holder}, and its venue does not have the order (yet); it is never placed twice: ask again shortly for the first order, or use a new client order id"),
            )),
        }
    }

    /// Sends a journaled order; a broker refusal that has an HTTP status of
    /// its own (see [`broker_refusal`]) is journaled as the rejection and
    /// answered as that error.
    async fn send_order(
        &self,
        broker: &str,
        pipe: &PipeHandle,
        venue_order: VenueOrder,
        order: Order,
    ) -> Result<Order, ApiError> {
        let id = order.order_id.clone();
        let trace = Some(order_trace(&order));
        let reply = pipe.request_traced(Command::PlaceOrder { order: venue_order.clone() }, trace, VENUE_TIMEOUT).await;
        self.count_reply(broker, &reply);
        test_pause("after_send", &id).await;
        Ok(match reply {
            // The fills the venue made at once were applied before this reply
            // was handed over (see `pipe.rs`), so the acknowledgement shows them.
            Ok(ReplyBody::Order(report)) => self.inner.orders.apply_report(&report, broker).unwrap_or(order),
            Ok(other) => {
                warn!(order_id = %id, reply = ?other, "unexpected reply to an order");
                order
            }
            Err(PipeError::Remote(detail)) if detail.code != OUTCOME_UNKNOWN => {
                let rejected =
                    self.inner.orders.reject(&id, format!("{}: {}", detail.code, detail.message)).unwrap_or(order);
                if let Some(e) = broker_refusal(&detail) {
                    return Err(e);
                }
                rejected
            }
            Err(PipeError::NotConnected(b)) => self
                .inner
                .orders
                .reject(&id, format!("broker {b} is not connected; nothing was sent, retry"))
                .unwrap_or(order),
            Err(e) => {
                // The venue may or may not have it: settle it in the background
                // with the same venue-side id, which can never make a second order.
                warn!(order_id = %id, error = %e, "order outcome unknown, settling");
                let updated = self
                    .inner
                    .orders
                    .annotate(&id, format!("awaiting venue confirmation: {e}"), Some(broker.to_string()))
                    .unwrap_or(order);
                tokio::spawn(self.clone().settle(broker.to_string(), venue_order));
                updated
            }
        })
    }

    /// Settles an order whose send had no clear outcome: ask the venue, and
    /// re-send with the same client id if it never arrived.
    async fn settle(self, broker: String, venue_order: VenueOrder) {
        let id = venue_order.client_id.clone();
        for _ in 0..SETTLE_ATTEMPTS {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(pipe) = self.inner.brokers.pipe(&broker).filter(|p| p.is_up()) else {
                continue;
            };
            let status = Command::OrderStatus { account: venue_order.account.clone(), client_id: id.clone() };
            let reply = match pipe.request(status, VENUE_TIMEOUT).await {
                Err(PipeError::Remote(d)) if d.code == "unknown_order" => {
                    pipe.request(Command::PlaceOrder { order: venue_order.clone() }, VENUE_TIMEOUT).await
                }
                other => other,
            };
            if let Ok(ReplyBody::Order(report)) = reply {
                self.inner.orders.apply_report(&report, &broker);
                info!(order_id = %id, status = %report.status, "order settled with the venue");
                return;
            }
        }
        warn!(order_id = %id, "order still unsettled; left open for reconciliation");
    }

    pub fn order(&self, customer: &str, order_id: &str) -> Result<Order, ApiError> {
        self.inner
            .orders
            .get(order_id)
            .filter(|o| o.customer == customer)
            .ok_or_else(|| ApiError::not_found("unknown_order", format!("no order {order_id:?} for this customer")))
    }

    /// One order; one this node's journal lacks is looked for at the venue
    /// first (placed through another node: see
    /// [`Self::reconcile_customer`]), so 404 means no venue has it either.
    pub async fn find_order(&self, customer: &str, order_id: &str) -> Result<Order, ApiError> {
        match self.order(customer, order_id) {
            Err(e) if !self.inner.orders.contains(order_id) => {
                self.reconcile_customer(customer, Some(order_id)).await?;
                self.order(customer, order_id).map_err(|_| e)
            }
            found => found,
        }
    }

    /// The customer's orders (see [`Self::orders`]), after the customer's
    /// first reconciliation with the venue on this node.
    pub async fn list_orders(&self, customer: &str, query: &OrdersQuery) -> Result<Vec<Order>, ApiError> {
        if !self.customer_reconciled(customer) {
            self.reconcile_customer(customer, None).await?;
        }
        self.orders(customer, query)
    }

    pub async fn cancel(&self, customer: &str, order_id: &str) -> Result<Order, ApiError> {
        let order = self.find_order(customer, order_id).await?;
        if order.status.is_terminal() {
            return Err(ApiError::conflict("order_not_open", format!("order {order_id} is already {}", order.status)));
        }
        // Its own broker, or a sibling on the same venue account if that one is down.
        let target = match &order.broker {
            Some(b) => self.account_broker(b),
            None => self.market(&order.market).ok().and_then(|m| self.route_for(&m, &order.symbol)),
        };
        let (broker, pipe) = target.ok_or_else(|| {
            ApiError::unavailable(
                "broker_unavailable",
                "neither the order's broker nor another on its venue account is connected; retry shortly",
            )
        })?;
        let cmd = Command::CancelOrder { account: customer.to_string(), client_id: order.order_id.clone() };
        info!(order_id = %order.order_id, client_order_id = %order.client_order_id, %customer, "cancel requested");
        let reply = pipe.request_traced(cmd, Some(order_trace(&order)), VENUE_TIMEOUT).await;
        self.count_reply(&broker, &reply);
        match reply {
            Ok(ReplyBody::Order(report)) => Ok(self.inner.orders.apply_report(&report, &broker).unwrap_or(order)),
            Ok(other) => Err(unexpected(other)),
            Err(PipeError::Remote(d)) if d.code == "order_not_open" => {
                Err(ApiError::conflict("order_not_open", d.message))
            }
            Err(PipeError::Remote(d)) if broker_refusal(&d).is_some() => Err(broker_refusal(&d).expect("checked")),
            Err(PipeError::Remote(d)) => {
                Err(ApiError::bad_request("cancel_rejected", format!("{}: {}", d.code, d.message)))
            }
            Err(e) => Err(ApiError::unavailable("broker_unavailable", e.to_string())),
        }
    }

    pub fn orders(&self, customer: &str, query: &OrdersQuery) -> Result<Vec<Order>, ApiError> {
        let wanted = match query.status.as_deref() {
            None | Some("all") => None,
            Some("open") => Some(None),
            Some(s) => Some(Some(s.parse::<OrderStatus>().map_err(|m| {
                ApiError::bad_request("invalid_query", format!("{m}; use open, all or one of new, accepted, partially_filled, filled, canceled, rejected, expired"))
            })?)),
        };
        if let Some(m) = &query.market {
            self.market(m)?;
        }
        Ok(self.inner.orders.list(|o| {
            o.customer == customer
                && query.market.as_ref().is_none_or(|m| &o.market == m)
                && match wanted {
                    None => true,
                    Some(None) => o.status.is_open(),
                    Some(Some(s)) => o.status == s,
                }
        }))
    }

    pub fn fills(&self, customer: &str) -> Vec<Fill> {
        self.inner.orders.fills(customer)
    }

    pub async fn balances(&self, customer: &str, market: Option<&str>) -> Result<Vec<Balance>, ApiError> {
        let m = self.account_market(market)?;
        match self.ask(&m, None, Command::Balances { account: customer.to_string() }).await? {
            ReplyBody::Balances(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    pub async fn positions(&self, customer: &str, market: Option<&str>) -> Result<Vec<Position>, ApiError> {
        let m = self.account_market(market)?;
        match self.ask(&m, None, Command::Positions { account: customer.to_string() }).await? {
            ReplyBody::Positions(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    fn account_market(&self, market: Option<&str>) -> Result<Arc<Market>, ApiError> {
        match market {
            Some(m) => self.market(m),
            None => self
                .read()
                .values()
                .next()
                .cloned()
                .ok_or_else(|| ApiError::not_found("unknown_market", "this node has no market")),
        }
    }

    // ---- plumbing ------------------------------------------------------------

    /// Sends a command to the broker carrying `symbol` on the market (for
    /// no symbol, its first routable broker).
    async fn ask(&self, m: &Market, symbol: Option<&Symbol>, command: Command) -> Result<ReplyBody, ApiError> {
        let target = match symbol {
            Some(s) => self.route_for(m, s),
            None => self.any_broker(m),
        };
        let (broker, pipe) = target.ok_or_else(|| no_broker(m))?;
        let reply = pipe.request(command, VENUE_TIMEOUT).await;
        self.count_reply(&broker, &reply);
        reply.map_err(venue_error)
    }

    /// Takes every broker event and pipe signal, in order, and hands each
    /// reply on once the events before it are applied.
    async fn route(
        self,
        mut events: mpsc::Receiver<(String, PipeEvent)>,
        mut signals: mpsc::UnboundedReceiver<(String, PipeSignal)>,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                ev = events.recv() => match ev {
                    Some((broker, PipeEvent::Event(event))) => self.on_event(&broker, event),
                    Some((_, PipeEvent::Reply(reply))) => reply.deliver(),
                    None => return,
                },
                sig = signals.recv() => match sig {
                    Some((broker, signal)) => self.on_signal(&broker, signal),
                    None => return,
                },
            }
        }
    }

    fn on_event(&self, broker: &str, event: ServiceEvent) {
        let (feed, symbol, data) = match &event {
            ServiceEvent::OrderUpdate(report) => {
                let owner = self.report_owner(&report.client_id, broker);
                self.inner.orders.apply_report(report, &owner);
                return;
            }
            ServiceEvent::Fill(fill) => {
                self.inner.orders.apply_fill(fill);
                return;
            }
            ServiceEvent::Metrics(figures) => {
                self.inner.brokers.record_metrics(broker, figures);
                return;
            }
            ServiceEvent::Scaled { action, reason } => {
                self.inner.instances.record(broker, action, reason);
                return;
            }
            ServiceEvent::Quote(q) => (Feed::Quotes, q.symbol.clone(), serde_json::value::to_raw_value(q)),
            ServiceEvent::Trade(t) => (Feed::Trades, t.symbol.clone(), serde_json::value::to_raw_value(t)),
            ServiceEvent::Book(b) => (Feed::Book, b.symbol.clone(), serde_json::value::to_raw_value(b)),
        };
        let Ok(data) = data else { return };
        let data: Arc<serde_json::value::RawValue> = Arc::from(data);
        self.publish_routed(broker, feed, &symbol, &data);
    }

    /// Every broker in some market's pool or fallback, once each, sorted.
    fn pooled_brokers(&self) -> Vec<String> {
        let mut brokers: Vec<String> =
            self.read().values().flat_map(|m| m.spec().all().cloned().collect::<Vec<_>>()).collect();
        brokers.sort();
        brokers.dedup();
        brokers
    }

    /// The markets whose pool or fallback includes `broker`.
    fn markets_over(&self, broker: &str) -> Vec<Arc<Market>> {
        self.read().values().filter(|m| m.uses(broker)).cloned().collect()
    }

    /// Tells the cluster view a market changed.
    fn publish_market(&self, name: &str) {
        if let Some(info) = self.market_info(name) {
            self.inner.bus.publish(ClusterEvent::ServiceChanged { service: info });
        }
    }

    fn on_signal(&self, broker: &str, signal: PipeSignal) {
        match &signal {
            PipeSignal::Up { generation } => {
                self.set_reconciled(broker, false);
                self.inner.health.reset_feeds(broker);
                tokio::spawn(self.clone().reconcile(broker.to_string(), *generation == 1));
                let mm = self.clone();
                let b = broker.to_string();
                tokio::spawn(async move { mm.load_offers(&b).await });
            }
            PipeSignal::Down { .. } => {
                self.set_reconciled(broker, false);
                self.inner.health.reset_feeds(broker);
            }
            PipeSignal::Status { .. } => {}
        }
        self.nudge();
        for m in self.markets_over(broker) {
            if let PipeSignal::Up { generation } = &signal {
                let mm = self.clone();
                let (m, broker, reconnect) = (m.clone(), broker.to_string(), *generation > 1);
                tokio::spawn(async move { mm.resubscribe(&m, &broker, reconnect).await });
            }
            self.publish_market(&m.name);
        }
    }

    /// After a (re)connect, the broker gets every feed the market routes to
    /// it (none, usually, after a failure: they moved away); on a reconnect
    /// those feeds get a gap marker.
    async fn resubscribe(&self, m: &Market, broker: &str, reconnect: bool) {
        // The supervisor marks the broker running on the same signal; give it a moment.
        for _ in 0..20 {
            if self.any_broker(m).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.load_instruments(m).await;
        let feeds: Vec<(Feed, Symbol)> =
            m.active_feeds().into_iter().filter(|(_, s)| self.routed(&m.name, s).as_deref() == Some(broker)).collect();
        for (feed, symbol) in &feeds {
            if reconnect {
                m.gap(*feed, symbol, &format!("broker {broker} reconnected; updates while it was away are missing"));
            }
            if let Err(e) = self.subscribe_on(broker, *feed, symbol).await {
                warn!(market = %m.name, %broker, %symbol, error = %e, "re-subscribe failed");
            }
        }
        if !feeds.is_empty() {
            info!(market = %m.name, %broker, feeds = feeds.len(), "feeds re-subscribed");
            self.inner.bus.log("info", format!("market {} re-subscribed {} feeds on {broker}", m.name, feeds.len()));
        }
        self.publish_market(&m.name);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Market>>> {
        self.inner.markets.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Market>>> {
        self.inner.markets.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The channel's feed, for market-data channels.
pub fn feed_of(channel: Channel) -> Option<Feed> {
    match channel {
        Channel::Quotes => Some(Feed::Quotes),
        Channel::Trades => Some(Feed::Trades),
        Channel::Book => Some(Feed::Book),
        Channel::Orders | Channel::Fills => None,
    }
}

/// The ids a broker's log lines about `order` carry.
fn order_trace(order: &Order) -> OrderTrace {
    OrderTrace {
        order_id: order.order_id.clone(),
        client_order_id: order.client_order_id.clone(),
        customer: order.customer.clone(),
        market: order.market.clone(),
    }
}

/// A comma list, as in the spawn options.
fn comma<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// A pool in one line, for the event log.
fn describe_pool(spec: &PoolSpec) -> String {
    let mut text = format!("brokers {}", spec.brokers.join(","));
    if !spec.fallback.is_empty() {
        text.push_str(&format!(", fallback {}", spec.fallback.join(",")));
    }
    if !spec.symbols.is_empty() {
        text.push_str(&format!(", symbols {}", comma(&spec.symbols)));
    }
    text
}

fn no_broker(m: &Market) -> ApiError {
    ApiError::unavailable("no_broker", format!("no broker of market {} is up and routable (each is down or draining); retry shortly, or see `lidoctl describe market {}`", m.name, m.name))
}

/// A broker refusal that has an HTTP status of its own: Lido's `429
/// rate_limited` before a venue limit, `503 venue_maintenance` while the
/// venue is down for maintenance, `503 market_cancel_only` /
/// `market_post_only` while it takes cancels or post-only orders only;
/// `400 unsupported_time_in_force` and `409 position_crossing` for an
/// order the venue cannot take as asked (Schwab).
fn broker_refusal(d: &lido_shared::ErrorDetail) -> Option<ApiError> {
    use axum::http::StatusCode;
    let (status, code) = match d.code.as_str() {
        "rate_limited" => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        "venue_maintenance" => (StatusCode::SERVICE_UNAVAILABLE, "venue_maintenance"),
        "market_cancel_only" => (StatusCode::SERVICE_UNAVAILABLE, "market_cancel_only"),
        "market_post_only" => (StatusCode::SERVICE_UNAVAILABLE, "market_post_only"),
        "unsupported_time_in_force" => (StatusCode::BAD_REQUEST, "unsupported_time_in_force"),
        "position_crossing" => (StatusCode::CONFLICT, "position_crossing"),
        _ => return None,
    };
    Some(ApiError::new(status, code, d.message.clone()))
}

/// A broker's refusal or failure, as the API answers it.
fn venue_error(e: PipeError) -> ApiError {
    match e {
        PipeError::Remote(d) if broker_refusal(&d).is_some() => broker_refusal(&d).expect("checked"),
        PipeError::Remote(d) if d.code == "unknown_symbol" => ApiError::not_found("unknown_symbol", d.message),
        PipeError::Remote(d) => ApiError::bad_request("venue_error", format!("{}: {}", d.code, d.message)),
        other => ApiError::unavailable("broker_unavailable", other.to_string()),
    }
}

fn unknown_market(name: &str) -> ApiError {
    ApiError::not_found("unknown_market", format!("no market named {name:?}; GET /v1/markets lists them"))
}

fn unexpected(body: ReplyBody) -> ApiError {
    ApiError::internal(format!("unexpected reply from broker: {body:?}"))
}

/// Test hook, honored in debug builds only: `LIDO_TEST_PAUSE_AT=after_journal`
/// (the order is journaled, not yet sent) or `after_send` (the venue has it,
/// its answer is not yet applied) holds each new order there for a minute and
/// logs it, so a test can kill the node at exactly that point. The Schwab
/// broker has `schwab_after_post` (Schwab answered the order, its id is not
/// yet in the orders file), to kill the broker process there.
pub(crate) async fn test_pause(point: &str, order_id: &str) {
    if !cfg!(debug_assertions) || std::env::var("LIDO_TEST_PAUSE_AT").ok().as_deref() != Some(point) {
        return;
    }
    warn!(point, %order_id, "test pause: order held here (LIDO_TEST_PAUSE_AT)");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

fn validate_client_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_client_order_id",
            "client_order_id must be 1-64 characters of A-Z a-z 0-9 - _ . :",
        ))
    }
}

/// The namespace of Lido's order ids (a UUIDv5 under it).
const ORDER_ID_NAMESPACE: uuid::Uuid = uuid::uuid!("6b1d0c55-8a3e-4e57-9b0f-2f1c7d4e9a10");

/// Lido's order id for a customer's client order id: a UUIDv5 of the two,
/// so every node of a cluster names the same order the same way, and the
/// venue's duplicate guard (the order id is its client id) holds across
/// nodes. Client ids never contain a newline, so the name is unambiguous.
pub fn order_id_for(customer: &str, client_order_id: &str) -> String {
    uuid::Uuid::new_v5(&ORDER_ID_NAMESPACE, format!("{customer}\n{client_order_id}").as_bytes()).to_string()
}

#[cfg(test)]
mod order_id_tests {
    use super::order_id_for;

    #[test]
    fn order_ids_are_the_same_on_every_node_and_differ_by_customer() {
        let a = order_id_for("acme", "c-1");
        assert_eq!(a, order_id_for("acme", "c-1"));
        assert_ne!(a, order_id_for("acme", "c-2"));
        assert_ne!(a, order_id_for("zenith", "c-1"));
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 5);
    }
}

#[cfg(test)]
mod refusal_tests {
    use axum::http::StatusCode;
    use lido_shared::ErrorDetail;

    use super::broker_refusal;

    fn refusal(code: &str, message: &str) -> Option<crate::error::ApiError> {
        broker_refusal(&ErrorDetail::new(code, message))
    }

    #[test]
    fn a_broker_refusal_of_the_request_is_an_error_with_its_code() {
        let e = refusal("unsupported_time_in_force", "Schwab accepts day and gtc").unwrap();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "unsupported_time_in_force"));
        let e = refusal("rate_limited", "Schwab's order limit (120 order requests a minute) is spent").unwrap();
        assert_eq!((e.status, e.code), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
        assert_eq!(refusal("position_crossing", "m").unwrap().status, StatusCode::CONFLICT);
        assert_eq!(refusal("venue_maintenance", "m").unwrap().status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(refusal("market_closed", "m").is_none(), "a rejected order, as before");
        assert!(refusal("venue_rejected", "m").is_none());
    }
}

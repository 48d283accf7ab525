//! Routes and failover: which broker carries each (market, symbol), and
//! moving it when that broker fails, drains or a better one is back.
//!
//! A watcher assesses every pool broker's health (`health.rs`) a few times a
//! second and on every pipe signal, then applies the routing rule
//! (`routing.rs`) to each routed symbol. A failure moves at once: the
//! streams get one gap marker per feed, the new broker is subscribed and
//! publishes from then on. A planned move (drain, failback) is make before
//! break: the new broker is subscribed, the route switches on its first
//! update, then the old one is unsubscribed; no gap. Only the routed
//! broker's data reaches a market's streams. Open orders of a broker that
//! is down or draining move to a sibling (a broker on the same venue
//! account), which tracks and cancels them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use lido_shared::api::BrokerHealth;
use lido_shared::cluster::{ClusterEvent, ServiceState};
use lido_shared::model::{OrderStatus, Symbol};
use lido_shared::pipe::{Command, Feed, ReplyBody};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::health::{self, feed_name, Health, Observation, Thresholds};
use super::routing::{self, Candidate, Decision};
use super::{Market, MarketManager, VENUE_TIMEOUT};
use crate::pipe::{PipeError, PipeHandle};

/// How often health is assessed and routes reconsidered (also on every pipe signal).
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// The route of every (market, symbol) that has been routed.
#[derive(Default)]
pub(super) struct Routes {
    /// By market, then symbol: looked up per venue update without allocating a key.
    map: HashMap<String, HashMap<Symbol, Route>>,
}

struct Route {
    broker: String,
    /// A move under way.
    moving: Option<Move>,
}

#[derive(Clone)]
struct Move {
    to: String,
    reason: String,
    started: Instant,
    planned: bool,
}

/// What to do with one update from a broker, for one market.
enum Delivery {
    Publish,
    Drop,
    /// The first update from the target of a planned move: switch, publish,
    /// then release the old broker.
    Switch {
        from: String,
        moved: Move,
    },
}

impl MarketManager {
    /// Publishes one venue update to the markets that route its symbol to
    /// `broker`, completing a planned move on the new broker's first update.
    pub(super) fn publish_routed(&self, broker: &str, feed: Feed, symbol: &Symbol, data: &Arc<RawValue>) {
        self.inner.health.data(broker, feed, symbol);
        // Every market: a broker that just left a pool carries its routes until they moved.
        for m in self.read().values() {
            // Publishing under the routes lock orders it with route switches and gap markers.
            let mut routes = self.routes();
            match routes.delivery(&m.name, symbol, broker) {
                Delivery::Drop => {}
                Delivery::Publish => m.publish(feed, symbol, data),
                Delivery::Switch { from, moved } => {
                    m.publish(feed, symbol, data);
                    drop(routes);
                    let mm = self.clone();
                    let (m, symbol) = (m.clone(), symbol.clone());
                    tokio::spawn(async move { mm.moved(&m, &symbol, &from, moved).await });
                }
            }
        }
    }

    /// The broker carrying `symbol` on market `m`, routing it now if it is
    /// not yet (or its broker is not routable and another is).
    pub(super) fn route_for(&self, m: &Market, symbol: &Symbol) -> Option<(String, PipeHandle)> {
        let current = self.routes().broker(&m.name, symbol);
        let broker = match routing::decide(&m.spec(), current.as_deref(), |b| self.candidate(b, symbol), self.hold()) {
            Decision::Stay => current?,
            // Moving the route is the watcher's (gap markers, events); new
            // work goes to the new broker at once when the current one is
            // down or draining, and a new route is taken here.
            Decision::Move { to, .. } => match current {
                Some(cur) if self.candidate(&cur, symbol).health.routable() => cur,
                Some(_) => to,
                None => {
                    self.routes().map.entry(m.name.clone()).or_default().insert(symbol.clone(), Route::to(&to));
                    to
                }
            },
            Decision::NoRoute => current?,
        };
        let pipe = self.inner.brokers.pipe(&broker).filter(|p| p.is_up())?;
        Some((broker, pipe))
    }

    /// The first routable broker of the pool, then its fallback, for what
    /// is not about one symbol (instruments, balances, positions).
    pub(super) fn any_broker(&self, m: &Market) -> Option<(String, PipeHandle)> {
        m.spec().all().find_map(|b| {
            let routable = self.inner.health.current(b).0.routable();
            let pipe = self.inner.brokers.pipe(b).filter(|p| p.is_up())?;
            routable.then(|| (b.clone(), pipe))
        })
    }

    /// Subscribes `broker` to a feed unless it carries it already (one venue
    /// subscription per broker, feed and symbol, whatever the markets),
    /// counting the answer in its health.
    pub(super) async fn subscribe_on(&self, broker: &str, feed: Feed, symbol: &Symbol) -> Result<(), PipeError> {
        if self.inner.health.carries(broker, feed, symbol) {
            return Ok(());
        }
        let pipe = self.inner.brokers.pipe(broker).filter(|p| p.is_up());
        let pipe = pipe.ok_or_else(|| PipeError::NotConnected(broker.to_string()))?;
        self.inner.health.subscribed(broker, feed, symbol);
        let reply = pipe.request(Command::Subscribe { feed, symbol: symbol.clone() }, VENUE_TIMEOUT).await;
        self.count_reply(broker, &reply);
        if reply.is_err() {
            self.inner.health.unsubscribed(broker, feed, symbol);
        }
        reply.map(|_| ())
    }

    /// Unsubscribes `broker` from a feed unless another market still routes it there.
    pub(super) async fn unsubscribe_on(&self, broker: &str, feed: Feed, symbol: &Symbol) {
        let still_used = self.read().values().any(|m| {
            self.routes().broker(&m.name, symbol).as_deref() == Some(broker)
                && m.active_feeds().contains(&(feed, symbol.clone()))
        });
        if still_used {
            return;
        }
        self.inner.health.unsubscribed(broker, feed, symbol);
        if let Some(pipe) = self.inner.brokers.pipe(broker).filter(|p| p.is_up()) {
            let _ = pipe.request(Command::Unsubscribe { feed, symbol: symbol.clone() }, VENUE_TIMEOUT).await;
        }
    }

    /// Counts a request's outcome in the broker's error streak: a fault of
    /// the broker or its venue counts, a refusal of the request does not.
    pub(super) fn count_reply<T>(&self, broker: &str, result: &Result<T, PipeError>) {
        match result {
            Ok(_) => self.inner.health.request_ok(broker),
            Err(e) if broker_fault(e) => self.inner.health.request_failed(broker),
            Err(_) => {}
        }
    }

    /// The broker of `market` carrying `symbol`, if routed.
    pub(super) fn routed(&self, market: &str, symbol: &Symbol) -> Option<String> {
        self.routes().broker(market, symbol)
    }

    /// A broker that can act for `broker`'s venue account: itself when it is
    /// up and not down, else a routable sibling (same `account` option),
    /// else itself if its pipe is up.
    pub(super) fn account_broker(&self, broker: &str) -> Option<(String, PipeHandle)> {
        let usable = |b: &str, need_routable: bool| {
            let health = self.inner.health.current(b).0;
            let ok = if need_routable { health.routable() } else { !matches!(health, Health::Down(_)) };
            ok.then(|| self.inner.brokers.pipe(b).filter(|p| p.is_up())).flatten()
        };
        if let Some(pipe) = usable(broker, false) {
            return Some((broker.to_string(), pipe));
        }
        let sibling = self.siblings(broker).into_iter().find_map(|s| usable(&s, true).map(|p| (s, p)));
        // Failing that, its own broker if its pipe is up at all (e.g. just restarted, not yet assessed).
        sibling.or_else(|| self.inner.brokers.pipe(broker).filter(|p| p.is_up()).map(|p| (broker.to_string(), p)))
    }

    /// The broker an order report is booked under: the order's own while it
    /// can act for it (siblings report the account's orders too), else the
    /// reporting one, which takes the order over.
    pub(super) fn report_owner(&self, order_id: &str, reporting: &str) -> String {
        match self.inner.orders.get(order_id).and_then(|o| o.broker) {
            Some(own) if own != reporting && self.account_broker(&own).is_some_and(|(b, _)| b == own) => own,
            _ => reporting.to_string(),
        }
    }

    /// Other brokers on the same venue account as `broker`.
    fn siblings(&self, broker: &str) -> Vec<String> {
        let account = |b: &str| self.inner.brokers.get(b).map(|i| account_of(b, &i.options));
        let Some(mine) = account(broker) else { return Vec::new() };
        let others = self.inner.brokers.list();
        let brokers = others.iter().filter(|i| i.name != broker);
        brokers.filter(|i| account(&i.name).as_deref() == Some(mine.as_str())).map(|i| i.name.clone()).collect()
    }

    /// Each broker of the market's pool with its health, in priority order.
    pub(super) fn pool_health(&self, m: &Market) -> Vec<BrokerHealth> {
        m.spec()
            .all()
            .map(|b| {
                let health = self.inner.health.current(b).0;
                BrokerHealth {
                    broker: b.clone(),
                    health: health.label().to_string(),
                    reason: health.reason().map(str::to_string),
                }
            })
            .collect()
    }

    /// The symbols routed on `market`, with their brokers.
    pub(super) fn routes_of(&self, market: &str) -> BTreeMap<String, String> {
        let routes = self.routes();
        routes.of(market).map(|(s, r)| (s.to_string(), r.broker.clone())).collect()
    }

    /// Marks a broker draining (no new work, work moves away without a gap) or not.
    pub fn set_draining(&self, broker: &str, draining: bool) {
        self.inner.health.set_draining(broker, draining);
        self.inner.nudge.notify_one();
    }

    pub fn is_draining(&self, broker: &str) -> bool {
        self.inner.health.draining(broker)
    }

    /// Asks the watcher to look now (a pipe went down or up).
    pub(super) fn nudge(&self) {
        self.inner.nudge.notify_one();
    }

    /// The watcher: assesses health and reconsiders routes until `cancel`.
    pub(super) async fn watch_health(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.inner.nudge.notified() => {}
            }
            self.assess_brokers();
            self.reroute();
        }
    }

    fn assess_brokers(&self) {
        let cfg = &self.inner.failover;
        let thresholds = Thresholds {
            error_threshold: cfg.error_threshold,
            slow_latency: Duration::from_millis(cfg.slow_latency_ms),
        };
        let stall_after = Duration::from_millis(cfg.stall_after_ms);
        for b in self.pooled_brokers() {
            let info = self.inner.brokers.get(&b);
            let pipe = self.inner.brokers.pipe(&b);
            let observation = Observation {
                running: info
                    .as_ref()
                    .is_some_and(|i| matches!(i.state, ServiceState::Running | ServiceState::Degraded)),
                service_degraded: info
                    .as_ref()
                    .filter(|i| i.state == ServiceState::Degraded)
                    .map(|i| i.detail.clone().unwrap_or_else(|| "degraded".into())),
                pipe_up: pipe.as_ref().is_some_and(PipeHandle::is_up),
                venue_connected: info.as_ref().and_then(|i| i.metrics.get("venue_connected")).map(|v| *v > 0.0),
                consecutive_errors: self.inner.health.consecutive_errors(&b, self.hold()),
                latency: pipe.as_ref().map(PipeHandle::rtt),
                stalled: self.inner.health.check_stall(&b, stall_after, self.hold().max(stall_after)),
                draining: self.inner.health.draining(&b),
            };
            let now = health::assess(&observation, &thresholds);
            let (Some(before), _) = self.inner.health.record(&b, now.clone()) else { continue };
            if now.routable() {
                info!(broker = %b, health = %now, was = %before, "broker health");
            } else {
                warn!(broker = %b, health = %now, was = %before, "broker health");
                tokio::spawn(self.clone().move_orders(b.clone()));
            }
            self.inner.bus.log(if now.routable() { "info" } else { "warn" }, format!("broker {b} is {now}"));
            for m in self.markets_over(&b) {
                self.publish_market(&m.name);
            }
        }
    }

    fn reroute(&self) {
        let markets: Vec<Arc<Market>> = self.read().values().cloned().collect();
        for m in markets {
            // After a pool change the operator's priorities apply at once, with no hold time.
            let pool_changed = m.take_pool_changed();
            let hold = if pool_changed { Duration::ZERO } else { self.hold() };
            let spec = m.spec();
            let symbols: Vec<(Symbol, String, Option<Move>)> = {
                let routes = self.routes();
                routes.of(&m.name).map(|(s, r)| (s.clone(), r.broker.clone(), r.moving.clone())).collect()
            };
            for (symbol, current, moving) in symbols {
                let candidate = |b: &str| self.candidate(b, &symbol);
                let decision = routing::decide(&spec, Some(&current), candidate, hold);
                match (decision, moving) {
                    (Decision::Move { to, planned: false }, moving) if moving.as_ref().is_none_or(|mv| mv.planned) => {
                        let (health, since) = self.inner.health.current(&current);
                        let reason = health.reason().unwrap_or("unhealthy").to_string();
                        let started = since.unwrap_or_else(Instant::now);
                        let mv = Move { to, reason, started, planned: false };
                        self.routes().begin(&m.name, &symbol, mv.clone());
                        tokio::spawn(self.clone().fail_over(m.clone(), symbol, current, mv));
                    }
                    (Decision::Move { to, planned: true }, None) => {
                        let reason = match self.inner.health.current(&current).0 {
                            Health::Draining => format!("{current} is draining"),
                            _ if pool_changed => "pool changed".to_string(),
                            _ => format!("failback to {to}, healthy for the hold time"),
                        };
                        let mv = Move { to, reason, started: Instant::now(), planned: true };
                        self.routes().begin(&m.name, &symbol, mv.clone());
                        tokio::spawn(self.clone().move_planned(m.clone(), symbol, current, mv));
                    }
                    (Decision::Stay, Some(mv)) if mv.planned && !self.candidate(&mv.to, &symbol).health.routable() => {
                        // The target failed before its first update: give the move up.
                        self.routes().finish(&m.name, &symbol);
                        let (mm, m) = (self.clone(), m.clone());
                        tokio::spawn(async move { mm.release(&m, &symbol, &mv.to).await });
                    }
                    _ => {}
                }
            }
        }
    }

    /// A failure: gap markers, switch, subscribe the new broker, release the old.
    async fn fail_over(self, m: Arc<Market>, symbol: Symbol, from: String, mv: Move) {
        let feeds = feeds_of(&m, &symbol);
        let note = format!("broker {from} failed ({}); moved to {}; updates in between are missing", mv.reason, mv.to);
        {
            let mut routes = self.routes();
            for feed in &feeds {
                m.gap(*feed, &symbol, &note);
            }
            routes.switch(&m.name, &symbol, &mv.to);
            // Switched: should the new broker fail too, the next move may begin.
            routes.finish(&m.name, &symbol);
        }
        for feed in &feeds {
            if let Err(e) = self.subscribe_on(&mv.to, *feed, &symbol).await {
                warn!(market = %m.name, broker = %mv.to, %symbol, error = %e, "subscribe on the new broker failed");
            }
        }
        self.moved(&m, &symbol, &from, mv).await;
    }

    /// A drain or failback: subscribe the new broker; the switch comes with
    /// its first update ([`Self::publish_routed`]), or now if nothing streams.
    async fn move_planned(self, m: Arc<Market>, symbol: Symbol, from: String, mv: Move) {
        let feeds = feeds_of(&m, &symbol);
        for feed in &feeds {
            if let Err(e) = self.subscribe_on(&mv.to, *feed, &symbol).await {
                warn!(market = %m.name, broker = %mv.to, %symbol, error = %e, "subscribe for a planned move failed");
            }
        }
        if feeds.is_empty() {
            self.routes().switch(&m.name, &symbol, &mv.to);
            self.routes().finish(&m.name, &symbol);
            self.moved(&m, &symbol, &from, mv).await;
        }
    }

    /// After a switch: release the old broker's feeds, report the move.
    async fn moved(&self, m: &Market, symbol: &Symbol, from: &str, mv: Move) {
        let to = mv.to.as_str();
        self.release(m, symbol, from).await;
        let took = mv.started.elapsed();
        let feeds: Vec<String> = feeds_of(m, symbol).iter().map(|f| format!("{} {symbol}", feed_name(*f))).collect();
        metrics::counter!("lido_failovers_total", "market" => m.name.clone()).increment(1);
        metrics::histogram!("lido_failover_seconds", "market" => m.name.clone()).record(took.as_secs_f64());
        let took_ms = took.as_millis() as u64;
        if took_ms > self.inner.failover.failover_bound_ms {
            warn!(market = %m.name, %symbol, %from, %to, took_ms, bound_ms = self.inner.failover.failover_bound_ms,
                "failover slower than its bound");
        }
        info!(market = %m.name, %symbol, %from, %to, planned = mv.planned, reason = %mv.reason, took_ms, "failover");
        self.inner.bus.publish(ClusterEvent::Failover {
            market: m.name.clone(),
            symbols: vec![symbol.to_string()],
            feeds,
            from: from.to_string(),
            to: to.to_string(),
            reason: mv.reason.clone(),
            planned: mv.planned,
            duration_ms: took_ms,
            at: Utc::now(),
        });
        self.publish_market(&m.name);
    }

    /// Unsubscribes `broker` from the market's feeds of `symbol`.
    async fn release(&self, m: &Market, symbol: &Symbol, broker: &str) {
        for feed in feeds_of(m, symbol) {
            self.unsubscribe_on(broker, feed, symbol).await;
        }
    }

    /// Moves the open orders of a broker that is down or draining to a
    /// sibling, which reports their state from the venue (journaled as
    /// the order's broker from then on).
    async fn move_orders(self, broker: String) {
        let open = self.inner.orders.list(|o| o.status.is_open() && o.broker.as_deref() == Some(broker.as_str()));
        if open.is_empty() {
            return;
        }
        let Some((sibling, pipe)) = self.siblings(&broker).into_iter().find_map(|s| {
            let routable = self.inner.health.current(&s).0.routable();
            let pipe = self.inner.brokers.pipe(&s).filter(|p| p.is_up())?;
            routable.then_some((s, pipe))
        }) else {
            warn!(%broker, orders = open.len(), "open orders wait for their broker: no sibling on its account is up");
            return;
        };
        let mut moved = 0;
        for order in open {
            let cmd = Command::OrderStatus { account: order.customer.clone(), client_id: order.order_id.clone() };
            match pipe.request(cmd, VENUE_TIMEOUT).await {
                Ok(ReplyBody::Order(report)) => {
                    self.inner.orders.apply_report(&report, &sibling);
                    moved += 1;
                }
                Ok(_) => {}
                Err(e) if order.status == OrderStatus::New => {
                    info!(order_id = %order.order_id, error = %e, "unsent order left to reconciliation")
                }
                Err(e) => {
                    warn!(order_id = %order.order_id, %sibling, error = %e, "order status through the sibling failed")
                }
            }
        }
        info!(from = %broker, to = %sibling, orders = moved, "open orders now tracked through a sibling");
        self.inner.bus.log("info", format!("{moved} open order(s) of {broker} now tracked through {sibling}"));
    }

    fn candidate(&self, broker: &str, symbol: &Symbol) -> Candidate {
        let (health, since) = self.inner.health.current(broker);
        Candidate {
            health,
            offers: self.inner.health.offers(broker, symbol),
            // A broker up for the first time is not recovering: routes may
            // move to it (by priority) at once; the hold is for one back
            // from a failure or a drain, so that a flapping broker waits.
            held_for: if self.inner.health.first_up(broker) {
                Duration::MAX
            } else {
                since.map(|s| s.elapsed()).unwrap_or_default()
            },
        }
    }

    fn hold(&self) -> Duration {
        Duration::from_millis(self.inner.failover.failback_hold_ms)
    }

    pub(super) fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.inner.routes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Route {
    fn to(broker: &str) -> Self {
        Self { broker: broker.to_string(), moving: None }
    }
}

impl Routes {
    fn broker(&self, market: &str, symbol: &Symbol) -> Option<String> {
        self.map.get(market)?.get(symbol).map(|r| r.broker.clone())
    }

    fn route_mut(&mut self, market: &str, symbol: &Symbol) -> Option<&mut Route> {
        self.map.get_mut(market)?.get_mut(symbol)
    }

    /// The routes of `market`, by symbol.
    fn of(&self, market: &str) -> impl Iterator<Item = (&Symbol, &Route)> {
        self.map.get(market).into_iter().flatten()
    }

    fn delivery(&mut self, market: &str, symbol: &Symbol, broker: &str) -> Delivery {
        let Some(route) = self.route_mut(market, symbol) else {
            return Delivery::Drop;
        };
        if route.broker == broker {
            return Delivery::Publish;
        }
        match &route.moving {
            Some(mv) if mv.planned && mv.to == broker => {
                let moved = route.moving.take().expect("checked");
                let from = std::mem::replace(&mut route.broker, broker.to_string());
                Delivery::Switch { from, moved }
            }
            _ => Delivery::Drop,
        }
    }

    fn begin(&mut self, market: &str, symbol: &Symbol, mv: Move) {
        if let Some(r) = self.route_mut(market, symbol) {
            r.moving = Some(mv);
        }
    }

    fn switch(&mut self, market: &str, symbol: &Symbol, to: &str) {
        if let Some(r) = self.route_mut(market, symbol) {
            r.broker = to.to_string();
        }
    }

    fn finish(&mut self, market: &str, symbol: &Symbol) {
        if let Some(r) = self.route_mut(market, symbol) {
            r.moving = None;
        }
    }

    /// The symbols routed on `market`.
    pub(super) fn symbols(&self, market: &str) -> Vec<Symbol> {
        self.of(market).map(|(s, _)| s.clone()).collect()
    }

    /// Drops one route; returns its broker.
    pub(super) fn remove(&mut self, market: &str, symbol: &Symbol) -> Option<String> {
        self.map.get_mut(market)?.remove(symbol).map(|r| r.broker)
    }

    /// Drops the routes of a market that is removed.
    pub(super) fn forget(&mut self, market: &str) {
        self.map.remove(market);
    }
}

/// A broker's venue account: its `account` option, else its own name.
pub fn account_of(broker: &str, options: &BTreeMap<String, String>) -> String {
    options.get("account").cloned().unwrap_or_else(|| broker.to_string())
}

fn feeds_of(m: &Market, symbol: &Symbol) -> Vec<Feed> {
    m.active_feeds().into_iter().filter(|(_, s)| s == symbol).map(|(f, _)| f).collect()
}

/// A request failure that is the broker's or its venue's fault (counted
/// in its error streak), not a refusal of the request itself.
fn broker_fault(e: &PipeError) -> bool {
    const FAULTS: &[&str] = &[
        "deadline_elapsed",
        "temporary_lockout",
        "rate_limited",
        "too_many_requests",
        "invalid_nonce",
        super::OUTCOME_UNKNOWN,
    ];
    match e {
        PipeError::Remote(d) => d.code.starts_with("venue_") || FAULTS.contains(&d.code.as_str()),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use lido_shared::ErrorDetail;

    use super::*;

    #[test]
    fn brokers_on_one_account_name_it_and_others_are_their_own() {
        let shared: BTreeMap<String, String> = [("account".to_string(), "main".to_string())].into();
        assert_eq!(account_of("k1", &shared), "main");
        assert_eq!(account_of("k2", &BTreeMap::new()), "k2");
    }

    #[test]
    fn only_the_brokers_faults_count_against_it() {
        let remote = |code: &str| PipeError::Remote(ErrorDetail::new(code, "x"));
        for fault in ["venue_unavailable", "venue_busy", "temporary_lockout", "rate_limited", "outcome_unknown"] {
            assert!(broker_fault(&remote(fault)), "{fault}");
        }
        assert!(broker_fault(&PipeError::Timeout("k1".into())));
        assert!(broker_fault(&PipeError::NotConnected("k1".into())));
        for refusal in ["insufficient_funds", "invalid_price", "unknown_symbol", "order_not_open", "unknown_order"] {
            assert!(!broker_fault(&remote(refusal)), "{refusal}");
        }
    }
}

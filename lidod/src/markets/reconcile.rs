//! Reconciling the journal with a venue, each time a broker's pipe comes up.
//!
//! 1. Every open order the journal routes to the broker is looked up at the
//!    venue (`OrderStatus`): its report is applied, and fills the venue made
//!    that never reached the node (a broker or node killed before they were
//!    delivered) are booked from the report's filled quantity and average
//!    price. An order the venue does not know ends with the reason
//!    [`NOT_FOUND`]: `rejected` if it was never acknowledged, `expired` if
//!    it had been.
//! 2. Every customer's open orders at the venue (`OpenOrders`) are compared
//!    with the journal; one the journal lacks is *adopted*: journaled with
//!    `adopted: true` and a reason, and tracked from then on.
//! 3. Only then does the broker's market take new orders again.
//!
//! Orders still `new` are left to `settle` on a reconnect (their send may be
//! in flight); on the first connection after the node starts nothing can be
//! in flight, so they are looked up too. Only pipe commands are used, so this
//! works for every broker type.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use lido_shared::model::{Fill, Order, OrderStatus};
use lido_shared::pipe::{Command, ReplyBody, VenueOrderReport};
use rust_decimal::Decimal;
use tracing::{info, warn};

use super::orders::CATCH_UP_PREFIX;
use super::{Market, MarketManager, VENUE_TIMEOUT};
use crate::error::ApiError;
use crate::pipe::{PipeError, PipeHandle};

/// Why an order the venue does not know was ended.
pub const NOT_FOUND: &str = "not found at venue after restart";
/// Why an adopted order is in the journal.
const ADOPTED: &str =
    "adopted: at the venue but missing from the journal (after a restart, or placed through another node)";
/// How often a failed reconciliation is retried while the pipe stays up.
const ATTEMPTS: u32 = 30;
/// How long a request waits for its customer's reconciliation before it
/// answers `503 reconciling` (the reconciliation goes on).
const CUSTOMER_TIMEOUT: Duration = Duration::from_secs(5);

/// Which brokers are reconciled.
#[derive(Debug, Default)]
pub(super) struct Reconciled {
    /// On their current pipe connection: only their markets take new orders.
    now: HashSet<String>,
    /// At least once since the node started: a market whose brokers are all
    /// down after that rejects orders as before, instead of `reconciling`.
    ever: HashSet<String>,
    /// Customers being reconciled now (see [`MarketManager::reconcile_customer`]).
    customers_running: HashSet<String>,
    /// Customers reconciled at least once since the node started.
    customers_done: HashSet<String>,
}

/// What one reconciliation did.
#[derive(Debug, Default)]
struct Outcome {
    checked: usize,
    resolved: usize,
    adopted: usize,
    fills_booked: usize,
}

impl MarketManager {
    /// Whether market `m`, routed to `active` (or to no broker), takes new
    /// orders: `503 reconciling` while its broker is being reconciled, or
    /// while none of its brokers has been since the node started.
    pub(super) fn check_reconciled(&self, m: &Market, active: Option<&str>) -> Result<(), ApiError> {
        let r = self.reconciled();
        let waiting = match active {
            Some(broker) => (!r.now.contains(broker)).then(|| broker.to_string()),
            None => {
                let brokers = m.spec().brokers;
                (!brokers.iter().any(|b| r.ever.contains(b))).then(|| brokers.join(", "))
            }
        };
        match waiting {
            None => Ok(()),
            Some(broker) => Err(ApiError::unavailable(
                "reconciling",
                format!(
                    "market {} is reconciling its orders with the venue of broker {broker} after a (re)connect; \
                     new orders are taken once that is done, retry shortly",
                    m.name
                ),
            )),
        }
    }

    pub(super) fn set_reconciled(&self, broker: &str, done: bool) {
        let mut r = self.reconciled();
        if done {
            r.now.insert(broker.to_string());
            r.ever.insert(broker.to_string());
        } else {
            r.now.remove(broker);
        }
    }

    fn reconciled(&self) -> std::sync::MutexGuard<'_, Reconciled> {
        self.inner.reconciled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reconciles `broker` (see the module docs), retrying while its pipe is
    /// up, then lets its markets take orders. `first`: the first connection
    /// since this node started.
    pub(super) async fn reconcile(self, broker: String, first: bool) {
        for attempt in 1..=ATTEMPTS {
            let Some(pipe) = self.inner.brokers.pipe(&broker).filter(|p| p.is_up()) else {
                return; // The next Up starts again.
            };
            match self.reconcile_once(&broker, &pipe, first).await {
                Ok(o) => {
                    if !pipe.is_up() {
                        return;
                    }
                    self.set_reconciled(&broker, true);
                    info!(%broker, checked = o.checked, resolved = o.resolved, adopted = o.adopted,
                        fills_booked = o.fills_booked, "orders reconciled with the venue; taking new orders");
                    if o.resolved + o.adopted + o.fills_booked > 0 {
                        self.inner.bus.log(
                            "warn",
                            format!(
                                "reconciled {broker}: {} order(s) resolved as missing at the venue, {} adopted, {} fill(s) booked from venue reports",
                                o.resolved, o.adopted, o.fills_booked
                            ),
                        );
                    }
                    return;
                }
                Err(e) => {
                    warn!(%broker, attempt, error = %e, "reconciliation with the venue failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        warn!(%broker, "reconciliation kept failing; its markets refuse new orders until the broker reconnects");
    }

    async fn reconcile_once(&self, broker: &str, pipe: &PipeHandle, first: bool) -> Result<Outcome, PipeError> {
        let mut outcome = Outcome::default();
        let orders = &self.inner.orders;
        let journaled = orders.list(|o| {
            o.status.is_open() && o.broker.as_deref() == Some(broker) && (first || o.status != OrderStatus::New)
        });
        for order in journaled {
            outcome.checked += 1;
            let cmd = Command::OrderStatus { account: order.customer.clone(), client_id: order.order_id.clone() };
            match pipe.request(cmd, VENUE_TIMEOUT).await {
                Ok(ReplyBody::Order(report)) => {
                    outcome.fills_booked += self.catch_up_fills(&order, &report);
                    orders.apply_report(&report, broker);
                }
                Err(PipeError::Remote(d)) if d.code == "unknown_order" => {
                    outcome.resolved += 1;
                    warn!(order_id = %order.order_id, %broker, status = %order.status, "order not found at the venue; closed");
                    if order.status == OrderStatus::New {
                        orders.reject(&order.order_id, NOT_FOUND.to_string());
                    } else {
                        orders.close_lost(&order.order_id, NOT_FOUND.to_string());
                    }
                }
                Ok(other) => warn!(order_id = %order.order_id, reply = ?other, "unexpected reply to an order status"),
                Err(e) => return Err(e),
            }
        }
        for customer in orders.customers() {
            let cmd = Command::OpenOrders { account: customer.clone() };
            let ReplyBody::Orders(reports) = pipe.request(cmd, VENUE_TIMEOUT).await? else {
                continue;
            };
            for report in reports.iter().filter(|r| !orders.contains(&r.client_id)) {
                if self.adopt(broker, &customer, report).await {
                    outcome.adopted += 1;
                }
            }
        }
        Ok(outcome)
    }

    /// Reconciles one customer with every connected broker, for a node that
    /// takes over a customer another node served (the shared paper exchange,
    /// a venue account shared by nodes): the venue's open orders of the
    /// customer that the journal lacks are adopted with their client order
    /// ids, and with `order_id` that order too, open or not, so its fills
    /// are booked. Fills the venue made beyond the journal are booked from
    /// its reports (each once: fill ids de-duplicate). One at a time per
    /// customer: `503 reconciling` while one runs, or when it takes longer
    /// than [`CUSTOMER_TIMEOUT`].
    pub async fn reconcile_customer(&self, customer: &str, order_id: Option<&str>) -> Result<(), ApiError> {
        if !self.reconciled().customers_running.insert(customer.to_string()) {
            return Err(customer_reconciling(customer));
        }
        let (mm, who, id) = (self.clone(), customer.to_string(), order_id.map(String::from));
        let task = tokio::spawn(async move {
            let adopted = mm.reconcile_customer_once(&who, id.as_deref()).await;
            let mut r = mm.reconciled();
            r.customers_running.remove(&who);
            r.customers_done.insert(who);
            adopted
        });
        match tokio::time::timeout(CUSTOMER_TIMEOUT, task).await {
            Ok(Ok(adopted)) => {
                if adopted > 0 {
                    info!(%customer, adopted, "customer reconciled with the venue: orders adopted");
                }
                Ok(())
            }
            Ok(Err(e)) => {
                warn!(%customer, error = %e, "customer reconciliation failed");
                self.reconciled().customers_running.remove(customer);
                Err(customer_reconciling(customer))
            }
            Err(_) => Err(customer_reconciling(customer)),
        }
    }

    /// Whether the customer was reconciled since the node started.
    pub fn customer_reconciled(&self, customer: &str) -> bool {
        self.reconciled().customers_done.contains(customer)
    }

    /// Returns the number of orders adopted. A broker that fails is skipped.
    async fn reconcile_customer_once(&self, customer: &str, order_id: Option<&str>) -> usize {
        let orders = &self.inner.orders;
        let mut adopted = 0;
        for broker in self.pooled_brokers() {
            let Some(pipe) = self.inner.brokers.pipe(&broker).filter(|p| p.is_up()) else {
                continue;
            };
            if let Some(id) = order_id.filter(|id| !orders.contains(id)) {
                let cmd = Command::OrderStatus { account: customer.to_string(), client_id: id.to_string() };
                match pipe.request(cmd, VENUE_TIMEOUT).await {
                    Ok(ReplyBody::Order(report)) => {
                        if self.adopt(&broker, customer, &report).await {
                            adopted += 1;
                        }
                    }
                    Ok(other) => warn!(%broker, reply = ?other, "unexpected reply to an order status"),
                    // The venue does not have it here: another broker may.
                    Err(PipeError::Remote(d)) if d.code == "unknown_order" => {}
                    Err(e) => {
                        warn!(%broker, %customer, order_id = %id, error = %e, "cannot look the order up at the venue")
                    }
                }
            }
            let cmd = Command::OpenOrders { account: customer.to_string() };
            match pipe.request(cmd, VENUE_TIMEOUT).await {
                Ok(ReplyBody::Orders(reports)) => {
                    for report in reports.iter().filter(|r| !orders.contains(&r.client_id)) {
                        if self.adopt(&broker, customer, report).await {
                            adopted += 1;
                        }
                    }
                }
                Ok(other) => warn!(%broker, reply = ?other, "unexpected reply to open orders"),
                Err(e) => warn!(%broker, %customer, error = %e, "cannot list the customer's open orders at the venue"),
            }
        }
        adopted
    }

    /// Journals an order the venue has and the journal lacks.
    async fn adopt(&self, broker: &str, customer: &str, report: &VenueOrderReport) -> bool {
        let (Some(venue_order), Some(market)) = (&report.order, self.markets_over(broker).into_iter().next()) else {
            warn!(client_id = %report.client_id, %broker, "venue lists an unknown order without its details; not adopted");
            return false;
        };
        let now = Utc::now();
        let order = Order {
            order_id: report.client_id.clone(),
            // The algo's own id when the venue kept it (and it is free here).
            client_order_id: venue_order
                .client_order_id
                .clone()
                .filter(|c| !self.inner.orders.knows(customer, c))
                .unwrap_or_else(|| format!("adopted-{}", report.client_id)),
            customer: customer.to_string(),
            market: market.name.clone(),
            symbol: venue_order.symbol.clone(),
            side: venue_order.side,
            order_type: venue_order.order_type,
            time_in_force: venue_order.time_in_force,
            quantity: venue_order.quantity,
            limit_price: venue_order.limit_price,
            filled_quantity: Decimal::ZERO,
            average_price: None,
            status: OrderStatus::Accepted,
            reason: Some(ADOPTED.to_string()),
            broker: Some(broker.to_string()),
            venue_order_id: Some(report.venue_order_id.clone()),
            adopted: true,
            created_at: now,
            updated_at: now,
        };
        let Some(order) = self.inner.orders.adopt(order) else {
            return false;
        };
        warn!(order_id = %order.order_id, %customer, %broker, "order adopted from the venue");
        self.catch_up_fills(&order, report);
        self.inner.orders.apply_report(report, broker);
        true
    }

    /// Books what the venue filled beyond what the journal has: one fill
    /// for the difference, priced from the report's average price. A broker
    /// answers an order status only after the fills it has seen are handed
    /// on (the pipe delivers them before the reply), so the difference is
    /// fills the venue made that never reached a broker's feed. The fill's
    /// id names the venue's trades it stands for ([`CATCH_UP_PREFIX`]) when
    /// the report lists them, so one of those arriving later as a fill is a
    /// duplicate; else it names the order and quantity, so a second
    /// reconciliation cannot book it again. Its fee is not in an order
    /// report and is booked as zero; the venue's balances stay the reference
    /// for fees. Returns the fills booked.
    fn catch_up_fills(&self, order: &Order, report: &VenueOrderReport) -> usize {
        let id = &order.order_id;
        let orders = &self.inner.orders;
        let current = orders.get(id).unwrap_or_else(|| order.clone());
        let missing = report.filled_quantity - current.filled_quantity;
        let Some(average) = report.average_price.filter(|_| missing > Decimal::ZERO) else {
            return 0;
        };
        let unbooked: Vec<&str> =
            report.trade_ids.iter().map(String::as_str).filter(|t| !orders.is_booked(t)).collect();
        let fill_id = if unbooked.is_empty() {
            format!("reconciled-{id}-{}", report.filled_quantity.normalize())
        } else {
            format!("{CATCH_UP_PREFIX}{}", unbooked.join("+"))
        };
        let booked = current.average_price.unwrap_or_default() * current.filled_quantity;
        let fill = Fill {
            fill_id,
            order_id: id.clone(),
            symbol: order.symbol.clone(),
            side: order.side,
            price: ((average * report.filled_quantity - booked) / missing).round_dp(12).normalize(),
            quantity: missing,
            fee: Decimal::ZERO,
            ts: report.ts,
        };
        match self.inner.orders.apply_fill(&fill) {
            Some(_) => {
                warn!(order_id = %id, quantity = %missing, "fill booked from the venue's order report");
                1
            }
            None => 0,
        }
    }
}

fn customer_reconciling(customer: &str) -> ApiError {
    ApiError::unavailable(
        "reconciling",
        format!("the orders of customer {customer} are being reconciled with the venue; retry shortly"),
    )
}

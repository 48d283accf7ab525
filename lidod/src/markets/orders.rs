//! The node's order book-keeping: every order and fill, the client order id
//! index that makes placing idempotent, and the update stream.
//!
//! In-memory for now; the durable SQLite journal replaces this store behind
//! the same methods (issue: order safety).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use lido_shared::model::{Fill, Order, OrderStatus};
use lido_shared::pipe::VenueOrderReport;
use tokio::sync::broadcast;
use tracing::warn;

/// An update on the `orders`/`fills` channels.
#[derive(Clone, Debug)]
pub enum OrderMsg {
    Order(Order),
    Fill { customer: String, market: String, fill: Fill },
}

pub struct OrderStore {
    state: Mutex<State>,
    updates: broadcast::Sender<OrderMsg>,
}

#[derive(Default)]
struct State {
    orders: HashMap<String, Order>,
    /// (customer, client order id) → order id.
    by_client: HashMap<(String, String), String>,
    fills: Vec<(String, Fill)>,
    fill_ids: HashSet<String>,
    /// Terminal reports that arrived before their fills: applied when the
    /// fills catch up, so no fill is ever refused for arriving late.
    parked: HashMap<String, VenueOrderReport>,
}

impl Default for OrderStore {
    fn default() -> Self {
        Self::new()
    }
}

impl OrderStore {
    pub fn new() -> Self {
        Self { state: Mutex::new(State::default()), updates: broadcast::channel(8192).0 }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<OrderMsg> {
        self.updates.subscribe()
    }

    /// Inserts `order` unless the customer already used its client order
    /// id; returns the order that stands and whether it is new.
    pub fn insert_once(&self, order: Order) -> (Order, bool) {
        let mut st = self.lock();
        let key = (order.customer.clone(), order.client_order_id.clone());
        if let Some(existing) = st.by_client.get(&key).and_then(|id| st.orders.get(id)) {
            return (existing.clone(), false);
        }
        st.by_client.insert(key, order.order_id.clone());
        st.orders.insert(order.order_id.clone(), order.clone());
        drop(st);
        let _ = self.updates.send(OrderMsg::Order(order.clone()));
        (order, true)
    }

    pub fn get(&self, order_id: &str) -> Option<Order> {
        self.lock().orders.get(order_id).cloned()
    }

    pub fn list(&self, filter: impl Fn(&Order) -> bool) -> Vec<Order> {
        let mut out: Vec<Order> = self.lock().orders.values().filter(|o| filter(o)).cloned().collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.order_id.cmp(&b.order_id)));
        out
    }

    pub fn fills(&self, customer: &str) -> Vec<Fill> {
        self.lock().fills.iter().filter(|(c, _)| c == customer).map(|(_, f)| f.clone()).collect()
    }

    pub fn open_count(&self) -> usize {
        self.lock().orders.values().filter(|o| o.status.is_open()).count()
    }

    /// Lido itself ends an order that never reached a venue.
    pub fn reject(&self, order_id: &str, reason: String) -> Option<Order> {
        self.modify(order_id, |o, now| {
            if o.transition(OrderStatus::Rejected, now).is_ok() {
                o.reason = Some(reason);
            }
        })
    }

    /// The venue no longer has an open order (it lost its state): the
    /// order ends as expired, with the reason.
    pub fn close_lost(&self, order_id: &str, reason: String) -> Option<Order> {
        self.modify(order_id, |o, now| {
            if o.transition(OrderStatus::Expired, now).is_ok() {
                o.reason = Some(reason);
            }
        })
    }

    /// Notes something about an order without changing its state.
    pub fn annotate(&self, order_id: &str, reason: String, broker: Option<String>) -> Option<Order> {
        self.modify(order_id, |o, now| {
            o.reason = Some(reason);
            if broker.is_some() {
                o.broker = broker;
            }
            o.updated_at = now;
        })
    }

    /// Applies the venue's view of an order. Fills move quantities (see
    /// [`Self::apply_fill`]); reports move the other states.
    pub fn apply_report(&self, report: &VenueOrderReport, broker: &str) -> Option<Order> {
        let mut st = self.lock();
        let order = st.orders.get_mut(&report.client_id)?;
        order.venue_order_id = Some(report.venue_order_id.clone());
        order.broker = Some(broker.to_string());
        let now = report.ts.max(order.updated_at);
        match report.status {
            OrderStatus::New => {}
            OrderStatus::Accepted | OrderStatus::PartiallyFilled | OrderStatus::Filled => {
                if order.status == OrderStatus::New {
                    let _ = order.transition(OrderStatus::Accepted, now);
                    order.reason = None;
                }
            }
            terminal @ (OrderStatus::Canceled | OrderStatus::Rejected | OrderStatus::Expired) => {
                if report.filled_quantity > order.filled_quantity {
                    // Its fills are still on the way.
                    if order.status == OrderStatus::New {
                        let _ = order.transition(OrderStatus::Accepted, now);
                    }
                    let id = report.client_id.clone();
                    st.parked.insert(id.clone(), report.clone());
                    let snapshot = st.orders.get(&id).cloned();
                    drop(st);
                    if let Some(o) = &snapshot {
                        let _ = self.updates.send(OrderMsg::Order(o.clone()));
                    }
                    return snapshot;
                }
                if order.status != terminal {
                    match order.transition(terminal, now) {
                        Ok(()) => order.reason = report.reason.clone(),
                        Err(e) => warn!(order_id = %report.client_id, error = %e, "venue report ignored"),
                    }
                }
            }
        }
        let snapshot = order.clone();
        drop(st);
        let _ = self.updates.send(OrderMsg::Order(snapshot.clone()));
        Some(snapshot)
    }

    /// Books a fill once (fills are deduplicated by id).
    pub fn apply_fill(&self, fill: &Fill) -> Option<Order> {
        let mut st = self.lock();
        if st.fill_ids.contains(&fill.fill_id) {
            return None;
        }
        let order = st.orders.get_mut(&fill.order_id)?;
        if let Err(e) = order.apply_fill(fill) {
            warn!(order_id = %fill.order_id, fill_id = %fill.fill_id, error = %e, "fill refused");
            return None;
        }
        let (customer, market) = (order.customer.clone(), order.market.clone());
        let filled = order.filled_quantity;
        st.fill_ids.insert(fill.fill_id.clone());
        st.fills.push((customer.clone(), fill.clone()));
        // A parked terminal report applies once its fills are all in.
        if st.parked.get(&fill.order_id).is_some_and(|r| r.filled_quantity <= filled) {
            let report = st.parked.remove(&fill.order_id).expect("checked");
            let order = st.orders.get_mut(&fill.order_id).expect("present");
            if order.status.can_become(report.status) {
                let _ = order.transition(report.status, report.ts.max(order.updated_at));
                order.reason = report.reason.clone();
            }
        }
        let snapshot = st.orders.get(&fill.order_id).cloned();
        drop(st);
        let _ = self.updates.send(OrderMsg::Fill { customer, market, fill: fill.clone() });
        if let Some(o) = &snapshot {
            let _ = self.updates.send(OrderMsg::Order(o.clone()));
        }
        snapshot
    }

    fn modify(&self, order_id: &str, f: impl FnOnce(&mut Order, DateTime<Utc>)) -> Option<Order> {
        let mut st = self.lock();
        let order = st.orders.get_mut(order_id)?;
        f(order, Utc::now());
        let snapshot = order.clone();
        drop(st);
        let _ = self.updates.send(OrderMsg::Order(snapshot.clone()));
        Some(snapshot)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use lido_shared::model::{OrderType, Side, Symbol, TimeInForce};
    use rust_decimal::Decimal;
    use rust_decimal_macros::dec;

    use super::*;

    fn order(id: &str, client: &str) -> Order {
        let now = Utc::now();
        Order {
            order_id: id.into(),
            client_order_id: client.into(),
            customer: "acme".into(),
            market: "paper".into(),
            symbol: Symbol::parse("BTC/USD").unwrap(),
            side: Side::Buy,
            order_type: OrderType::Market,
            time_in_force: TimeInForce::Ioc,
            quantity: dec!(1),
            limit_price: None,
            filled_quantity: Decimal::ZERO,
            average_price: None,
            status: OrderStatus::New,
            reason: None,
            broker: None,
            venue_order_id: None,
            created_at: now,
            updated_at: now,
        }
    }

    fn fill(id: &str, qty: Decimal) -> Fill {
        Fill {
            fill_id: id.into(),
            order_id: "o1".into(),
            symbol: Symbol::parse("BTC/USD").unwrap(),
            side: Side::Buy,
            price: dec!(100),
            quantity: qty,
            fee: Decimal::ZERO,
            ts: Utc::now(),
        }
    }

    fn report(status: OrderStatus, filled: Decimal) -> VenueOrderReport {
        VenueOrderReport {
            client_id: "o1".into(),
            venue_order_id: "P-1".into(),
            status,
            filled_quantity: filled,
            average_price: None,
            reason: Some("no liquidity for remainder".into()),
            ts: Utc::now(),
        }
    }

    #[test]
    fn same_client_id_returns_the_first_order() {
        let store = OrderStore::new();
        let (a, new_a) = store.insert_once(order("o1", "c1"));
        let (b, new_b) = store.insert_once(order("o2", "c1"));
        assert!(new_a && !new_b);
        assert_eq!(b.order_id, a.order_id);
        assert_eq!(store.list(|_| true).len(), 1);
    }

    #[test]
    fn terminal_report_before_fills_waits_for_them() {
        let store = OrderStore::new();
        store.insert_once(order("o1", "c1"));
        let o = store.apply_report(&report(OrderStatus::Canceled, dec!(0.4)), "paper").unwrap();
        assert_eq!(o.status, OrderStatus::Accepted, "cancel parked until the fill arrives");
        let o = store.apply_fill(&fill("f1", dec!(0.4))).unwrap();
        assert_eq!(o.status, OrderStatus::Canceled);
        assert_eq!(o.filled_quantity, dec!(0.4));
    }

    #[test]
    fn duplicate_fills_count_once() {
        let store = OrderStore::new();
        store.insert_once(order("o1", "c1"));
        store.apply_fill(&fill("f1", dec!(0.5))).unwrap();
        assert!(store.apply_fill(&fill("f1", dec!(0.5))).is_none());
        assert_eq!(store.get("o1").unwrap().filled_quantity, dec!(0.5));
        assert_eq!(store.fills("acme").len(), 1);
    }
}

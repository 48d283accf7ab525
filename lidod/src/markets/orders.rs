//! The node's order book-keeping: every order and fill, the client order id
//! index that makes placing idempotent, and the update stream.
//!
//! Every change is written to the durable [`Journal`] first, then to the
//! in-memory view the API reads, then announced on the update stream; so
//! nothing is acknowledged or sent that a restart would forget. On start
//! the view is rebuilt from the journal ([`OrderStore::open`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use lido_shared::model::{Fill, Order, OrderStatus};
use lido_shared::pipe::VenueOrderReport;
use tokio::sync::broadcast;
use tracing::{error, info, warn};

use crate::journal::{Durability, Journal, JournalError};

/// An update on the `orders`/`fills` channels.
#[derive(Clone, Debug)]
pub enum OrderMsg {
    Order(Order),
    Fill { customer: String, market: String, fill: Fill },
}

pub struct OrderStore {
    state: Mutex<State>,
    journal: Journal,
    updates: broadcast::Sender<OrderMsg>,
}

#[derive(Default)]
struct State {
    orders: HashMap<String, Order>,
    /// (customer, client order id) → order id.
    by_client: HashMap<(String, String), String>,
    /// Open orders per customer: the per-order limit check reads it, so
    /// placing an order never walks the whole book.
    open_by_customer: HashMap<String, usize>,
    fills: Vec<(String, Fill)>,
    fill_ids: HashSet<String>,
    /// Terminal reports that arrived before their fills: applied when the
    /// fills catch up, so no fill is ever refused for arriving late.
    parked: HashMap<String, VenueOrderReport>,
}

impl State {
    /// Keeps [`State::open_by_customer`] true as `order` replaces a version
    /// that was open or not (closed, or no version before).
    fn count_open(&mut self, was_open: bool, order: &Order) {
        match (was_open, order.status.is_open()) {
            (false, true) => *self.open_by_customer.entry(order.customer.clone()).or_default() += 1,
            (true, false) => {
                if let Some(n) = self.open_by_customer.get_mut(&order.customer) {
                    *n = n.saturating_sub(1);
                }
            }
            _ => {}
        }
    }
}

/// How a fill booked from a venue's order report (not from the venue's
/// fill stream) is named when the venue tells its trade ids: this prefix,
/// then the ids of the trades it stands for, joined by `+`.
pub const CATCH_UP_PREFIX: &str = "reconciled:";

/// The ids a booked fill settles: its own, and for a catch-up fill each
/// venue trade it stands for, so that trade's own fill arriving later is a
/// duplicate.
fn settled_ids(fill_id: &str) -> impl Iterator<Item = &str> {
    let trades = fill_id.strip_prefix(CATCH_UP_PREFIX).into_iter().flat_map(|t| t.split('+'));
    std::iter::once(fill_id).chain(trades)
}

impl OrderStore {
    /// The store over `journal`, with every order and fill it holds.
    pub fn open(journal: Journal) -> Result<Self, JournalError> {
        let replay = journal.replay()?;
        let mut st = State::default();
        for order in replay.orders {
            st.by_client.insert((order.customer.clone(), order.client_order_id.clone()), order.order_id.clone());
            st.count_open(false, &order);
            st.orders.insert(order.order_id.clone(), order);
        }
        for (customer, fill) in replay.fills {
            st.fill_ids.extend(settled_ids(&fill.fill_id).map(String::from));
            st.fills.push((customer, fill));
        }
        Ok(Self { state: Mutex::new(st), journal, updates: broadcast::channel(8192).0 })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<OrderMsg> {
        self.updates.subscribe()
    }

    /// Whether an order with this id is here (no copy of it is made).
    pub fn contains(&self, order_id: &str) -> bool {
        self.lock().orders.contains_key(order_id)
    }

    /// Whether the customer has used this client order id.
    pub fn knows(&self, customer: &str, client_order_id: &str) -> bool {
        self.lock().by_client.contains_key(&(customer.to_string(), client_order_id.to_string()))
    }

    /// How many of the customer's orders are open.
    pub fn open_count_of(&self, customer: &str) -> usize {
        self.lock().open_by_customer.get(customer).copied().unwrap_or(0)
    }

    /// The order a customer placed with this client order id, if any.
    pub fn find(&self, customer: &str, client_order_id: &str) -> Option<Order> {
        let st = self.lock();
        let id = st.by_client.get(&(customer.to_string(), client_order_id.to_string()))?;
        st.orders.get(id).cloned()
    }

    /// Journals and inserts `order` unless the customer already used its
    /// client order id; returns the order that stands and whether it is new.
    pub fn insert_once(&self, order: Order) -> Result<(Order, bool), JournalError> {
        let mut st = self.lock();
        let key = (order.customer.clone(), order.client_order_id.clone());
        if let Some(existing) = st.by_client.get(&key).and_then(|id| st.orders.get(id)) {
            return Ok((existing.clone(), false));
        }
        self.journal.insert_order(&order)?;
        st.by_client.insert(key, order.order_id.clone());
        st.count_open(false, &order);
        st.orders.insert(order.order_id.clone(), order.clone());
        drop(st);
        let _ = self.updates.send(OrderMsg::Order(order.clone()));
        Ok((order, true))
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
        self.lock().open_by_customer.values().sum()
    }

    /// Every customer that has an order here.
    pub fn customers(&self) -> BTreeSet<String> {
        self.lock().orders.values().map(|o| o.customer.clone()).collect()
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

    /// Takes on an order the venue has and the journal lacks (see
    /// [`Order::adopted`]); `None` if the order id is already known.
    pub fn adopt(&self, order: Order) -> Option<Order> {
        if self.get(&order.order_id).is_some() {
            return None;
        }
        let (order, created) =
            self.insert_once(order).map_err(|e| error!(error = %e, "cannot journal an adopted order")).ok()?;
        created.then_some(order)
    }

    /// Applies the venue's view of an order. Fills move quantities (see
    /// [`Self::apply_fill`]); reports move the other states.
    pub fn apply_report(&self, report: &VenueOrderReport, broker: &str) -> Option<Order> {
        let mut st = self.lock();
        let before = st.orders.get(&report.client_id)?.clone();
        let mut order = before.clone();
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
                    st.parked.insert(report.client_id.clone(), report.clone());
                } else if order.status != terminal {
                    match order.transition(terminal, now) {
                        Ok(()) => order.reason = report.reason.clone(),
                        Err(e) => warn!(order_id = %report.client_id, error = %e, "venue report ignored"),
                    }
                }
            }
        }
        if order != before {
            self.save(&mut st, order.clone(), None, Durability::Venue);
        }
        drop(st);
        let _ = self.updates.send(OrderMsg::Order(order.clone()));
        Some(order)
    }

    /// Whether a fill with this id (or a catch-up fill standing for the
    /// venue trade of this id) is booked.
    pub fn is_booked(&self, fill_id: &str) -> bool {
        self.lock().fill_ids.contains(fill_id)
    }

    /// Books a fill once (fills are deduplicated by id).
    pub fn apply_fill(&self, fill: &Fill) -> Option<Order> {
        let mut st = self.lock();
        if st.fill_ids.contains(&fill.fill_id) {
            return None;
        }
        let mut order = st.orders.get(&fill.order_id)?.clone();
        if let Err(e) = order.apply_fill(fill) {
            warn!(order_id = %fill.order_id, fill_id = %fill.fill_id, error = %e, "fill refused");
            return None;
        }
        // A parked terminal report applies once its fills are all in.
        if st.parked.get(&fill.order_id).is_some_and(|r| r.filled_quantity <= order.filled_quantity) {
            let report = st.parked.remove(&fill.order_id).expect("checked");
            if order.status.can_become(report.status) {
                let _ = order.transition(report.status, report.ts.max(order.updated_at));
                order.reason = report.reason.clone();
            }
        }
        let (customer, market) = (order.customer.clone(), order.market.clone());
        self.save(&mut st, order.clone(), Some(fill), Durability::Venue);
        drop(st);
        let _ = self.updates.send(OrderMsg::Fill { customer, market, fill: fill.clone() });
        let _ = self.updates.send(OrderMsg::Order(order.clone()));
        Some(order)
    }

    fn modify(&self, order_id: &str, f: impl FnOnce(&mut Order, DateTime<Utc>)) -> Option<Order> {
        let mut st = self.lock();
        let mut order = st.orders.get(order_id)?.clone();
        f(&mut order, Utc::now());
        self.save(&mut st, order.clone(), None, Durability::Own);
        drop(st);
        let _ = self.updates.send(OrderMsg::Order(order.clone()));
        Some(order)
    }

    /// Journals an order's new state (and the fill that moved it), then
    /// takes it into the in-memory view. What the venue said is journaled
    /// without waiting for the fsync, Lido's own decisions with it (see
    /// [`Durability`]). A journal that cannot be written is logged loudly:
    /// the venue's answer already happened, so the view still follows it.
    fn save(&self, st: &mut State, order: Order, fill: Option<&Fill>, durability: Durability) {
        let before = st.orders.get(&order.order_id).map(|o| o.status);
        count_change(before, &order, fill);
        if let Err(e) = self.journal.update_order(&order, fill, durability) {
            error!(order_id = %order.order_id, error = %e, "journal write failed; this change is in memory only");
            metrics::counter!("lido_journal_errors_total").increment(1);
        }
        if let Some(fill) = fill {
            st.fill_ids.extend(settled_ids(&fill.fill_id).map(String::from));
            st.fills.push((order.customer.clone(), fill.clone()));
        }
        st.count_open(before.is_some_and(|s| s.is_open()), &order);
        st.orders.insert(order.order_id.clone(), order);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts what an order's change means in `/metrics`: acknowledged (it
/// left `new` for anything but a rejection), rejected, canceled, a fill.
fn count_change(before: Option<OrderStatus>, order: &Order, fill: Option<&Fill>) {
    let market = || order.market.clone();
    if let Some(fill) = fill {
        metrics::counter!("lido_fills_total", "market" => market()).increment(1);
        info!(order_id = %order.order_id, client_order_id = %order.client_order_id, customer = %order.customer,
            fill_id = %fill.fill_id, quantity = %fill.quantity, price = %fill.price, "fill booked");
    }
    if before == Some(order.status) {
        return;
    }
    if before == Some(OrderStatus::New) && order.status != OrderStatus::Rejected {
        metrics::counter!("lido_orders_acked_total", "market" => market()).increment(1);
    }
    match order.status {
        OrderStatus::Rejected => metrics::counter!("lido_orders_rejected_total", "market" => market()).increment(1),
        OrderStatus::Canceled => metrics::counter!("lido_orders_canceled_total", "market" => market()).increment(1),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use lido_shared::model::{OrderType, Side, Symbol, TimeInForce};
    use rust_decimal::Decimal;
    use rust_decimal_macros::dec;

    use super::*;

    /// The journal tests' order, as a market IOC order with no broker yet.
    fn order(id: &str, client: &str) -> Order {
        Order {
            order_type: OrderType::Market,
            time_in_force: TimeInForce::Ioc,
            limit_price: None,
            broker: None,
            ..crate::journal::tests::order(id, client)
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
            order: None,
            trade_ids: Vec::new(),
        }
    }

    #[test]
    fn same_client_id_returns_the_first_order() {
        let store = OrderStore::open(Journal::in_memory().unwrap()).unwrap();
        let (a, new_a) = store.insert_once(order("o1", "c1")).unwrap();
        let (b, new_b) = store.insert_once(order("o2", "c1")).unwrap();
        assert!(new_a && !new_b);
        assert_eq!(b.order_id, a.order_id);
        assert_eq!(store.list(|_| true).len(), 1);
    }

    #[test]
    fn open_orders_are_counted_per_customer_through_every_change_and_a_reopen() {
        let dir = std::env::temp_dir().join(format!("lido-store-test-{}", uuid::Uuid::new_v4().simple()));
        let store = OrderStore::open(Journal::open(&dir).unwrap()).unwrap();
        store.insert_once(order("o1", "c1")).unwrap();
        store.insert_once(order("o2", "c2")).unwrap();
        store.insert_once(Order { customer: "zeta".into(), ..order("o3", "c1") }).unwrap();
        store.insert_once(order("o4", "c2")).unwrap(); // a repeat: not counted twice
        assert_eq!((store.open_count_of("acme"), store.open_count_of("zeta"), store.open_count()), (2, 1, 3));
        assert!(store.knows("acme", "c2") && !store.knows("acme", "c3") && !store.knows("zeta", "c2"));

        store.apply_report(&report(OrderStatus::Accepted, Decimal::ZERO), "paper").unwrap();
        assert_eq!(store.open_count_of("acme"), 2, "accepted is still open");
        store.apply_fill(&fill("f1", dec!(1))).unwrap();
        assert_eq!(store.open_count_of("acme"), 1, "a full fill closes o1");
        store.reject("o2", "test".into()).unwrap();
        store.annotate("o2", "a note on a closed order".into(), None).unwrap();
        assert_eq!((store.open_count_of("acme"), store.open_count()), (0, 1), "a closed order closes once");
        drop(store);

        let store = OrderStore::open(Journal::open(&dir).unwrap()).unwrap();
        assert_eq!((store.open_count_of("acme"), store.open_count_of("zeta")), (0, 1), "rebuilt from the journal");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn terminal_report_before_fills_waits_for_them() {
        let store = OrderStore::open(Journal::in_memory().unwrap()).unwrap();
        store.insert_once(order("o1", "c1")).unwrap();
        let o = store.apply_report(&report(OrderStatus::Canceled, dec!(0.4)), "paper").unwrap();
        assert_eq!(o.status, OrderStatus::Accepted, "cancel parked until the fill arrives");
        let o = store.apply_fill(&fill("f1", dec!(0.4))).unwrap();
        assert_eq!(o.status, OrderStatus::Canceled);
        assert_eq!(o.filled_quantity, dec!(0.4));
    }

    #[test]
    fn duplicate_fills_count_once() {
        let store = OrderStore::open(Journal::in_memory().unwrap()).unwrap();
        store.insert_once(order("o1", "c1")).unwrap();
        store.apply_fill(&fill("f1", dec!(0.5))).unwrap();
        assert!(store.apply_fill(&fill("f1", dec!(0.5))).is_none());
        assert_eq!(store.get("o1").unwrap().filled_quantity, dec!(0.5));
        assert_eq!(store.fills("acme").len(), 1);
    }

    #[test]
    fn the_venue_trades_a_catch_up_fill_stands_for_count_once_even_after_a_reopen() {
        let dir = std::env::temp_dir().join(format!("lido-store-test-{}", uuid::Uuid::new_v4().simple()));
        {
            let store = OrderStore::open(Journal::open(&dir).unwrap()).unwrap();
            store.insert_once(order("o1", "c1")).unwrap();
            store.apply_fill(&fill(&format!("{CATCH_UP_PREFIX}T1+T2"), dec!(0.5))).unwrap();
            assert!(store.is_booked("T1") && store.is_booked("T2") && !store.is_booked("T3"));
            assert!(store.apply_fill(&fill("T2", dec!(0.2))).is_none(), "T2's own fill is a duplicate");
        }
        let store = OrderStore::open(Journal::open(&dir).unwrap()).unwrap();
        assert!(store.apply_fill(&fill("T1", dec!(0.3))).is_none(), "still after a restart");
        store.apply_fill(&fill("T3", dec!(0.1))).unwrap();
        assert_eq!(store.get("o1").unwrap().filled_quantity, dec!(0.6));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reopened_store_has_its_orders_fills_and_client_ids_back() {
        let dir = std::env::temp_dir().join(format!("lido-store-test-{}", uuid::Uuid::new_v4().simple()));
        {
            let store = OrderStore::open(Journal::open(&dir).unwrap()).unwrap();
            store.insert_once(order("o1", "c1")).unwrap();
            store.apply_report(&report(OrderStatus::Accepted, dec!(0)), "paper").unwrap();
            store.apply_fill(&fill("f1", dec!(0.25))).unwrap();
        }
        let store = OrderStore::open(Journal::open(&dir).unwrap()).unwrap();
        let o = store.get("o1").unwrap();
        assert_eq!((o.status, o.filled_quantity), (OrderStatus::PartiallyFilled, dec!(0.25)));
        assert_eq!(o.venue_order_id.as_deref(), Some("P-1"));
        assert_eq!(store.fills("acme").len(), 1);
        assert!(store.apply_fill(&fill("f1", dec!(0.25))).is_none(), "a replayed fill still counts once");
        let (again, created) = store.insert_once(order("o9", "c1")).unwrap();
        assert!(!created);
        assert_eq!(again.order_id, "o1");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Crash recovery: a real `lidod` on a temporary data dir is killed with
//! SIGKILL at chosen points of an order's life, restarted on the same data
//! dir, and the algo's view (orders, fills, positions), the journal and the
//! venue must agree: no order lost, none doubled, and the same client order
//! id still returns the original order.
//!
//! Kill points inside `place` are reached with the debug-only test hook
//! `LIDO_TEST_PAUSE_AT` (see `lidod/src/markets.rs`), which holds the order
//! there and logs it; the test waits for that line, then kills.

use std::path::Path;
use std::time::Duration;

use lido_shared::api::PlaceOrder;
use lido_shared::client::LidoClient;
use lido_shared::model::{Order, OrderStatus, OrderType, Quote, Side, TimeInForce};
use lido_tests::{copy_journal, eventually, sigkill, temp_data_dir, TestDaemon};
use lidod::journal::Journal;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

/// One paper broker whose market only moves once a minute, so the book a
/// test reads is the book its order meets.
const SLOW_PAPER: &str = r#"
[[broker]]
name = "paper-1"
type = "paper"
[broker.options]
tick_ms = "60000"
[[market]]
name = "paper"
brokers = ["paper-1"]
"#;

const WAIT: Duration = Duration::from_secs(20);

/// Starts lidod on `dir` with the slow paper market and `env`.
fn start(dir: &Path, env: &[(&str, &str)]) -> TestDaemon {
    let config = dir.join("lido.toml");
    std::fs::write(&config, SLOW_PAPER).unwrap();
    TestDaemon::spawn_with(dir, &["--config", config.to_str().unwrap()], env)
}

/// The quote once the broker is up, and the node taking orders.
async fn ready(c: &LidoClient) -> Quote {
    eventually(WAIT, "a SOL/USD quote", || async { c.quote("paper", "SOL/USD").await.ok() }).await
}

fn sol_limit(side: Side, quantity: Decimal, price: Decimal, coid: &str) -> PlaceOrder {
    PlaceOrder {
        market: "paper".into(),
        symbol: "SOL/USD".into(),
        side,
        order_type: OrderType::Limit,
        quantity,
        limit_price: Some(price),
        time_in_force: TimeInForce::Gtc,
        client_order_id: Some(coid.into()),
    }
}

/// Places an order, retrying while the node answers `503 reconciling`.
async fn place(c: &LidoClient, order: &PlaceOrder) -> (Order, bool) {
    eventually(WAIT, "the order accepted by the node", || async {
        match c.place_order(order).await {
            Ok(p) => Some((p.order, p.created)),
            Err(e) if e.code() == Some("reconciling") => None,
            Err(e) => panic!("placing {:?} failed: {e}", order.client_order_id),
        }
    })
    .await
}

/// Every order with this client order id, as the algo sees them.
async fn by_client_id(c: &LidoClient, coid: &str) -> Vec<Order> {
    let all = c.orders(&lido_shared::api::OrdersQuery { status: Some("all".into()), market: None }).await.unwrap();
    all.into_iter().filter(|o| o.client_order_id == coid).collect()
}

/// The algo's view, the journal and the venue agree on an order: status,
/// filled quantity = its fills (once each) = the journal's record, and the
/// venue's position equals all fills of the symbol. A venue may still be
/// delivering a fill it just made, so agreement is awaited (bounded), then
/// checked on one consistent reading.
async fn assert_agree(c: &LidoClient, dir: &Path, order_id: &str) {
    let (order, fills, venue_qty) = eventually(WAIT, "the node's fills to match the venue's position", || async {
        let fills = c.fills().await.ok()?;
        let order = c.order(order_id).await.ok()?;
        let positions = c.positions(Some("paper")).await.ok()?;
        let venue_qty =
            positions.iter().find(|p| p.symbol.to_string() == "SOL/USD").map_or(Decimal::ZERO, |p| p.quantity);
        let bought: Decimal = fills.iter().filter(|f| f.symbol.to_string() == "SOL/USD").map(|f| f.quantity).sum();
        (bought == venue_qty).then_some((order, fills, venue_qty))
    })
    .await;
    let mine: Vec<_> = fills.iter().filter(|f| f.order_id == order.order_id).collect();
    let mut ids: Vec<_> = mine.iter().map(|f| f.fill_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), mine.len(), "no fill counted twice: {mine:?}");
    let filled: Decimal = mine.iter().map(|f| f.quantity).sum();
    assert_eq!(filled, order.filled_quantity, "fills add up to the order's filled quantity: {order:?}");
    assert!(venue_qty >= filled);

    let journal = Journal::open(dir).unwrap().replay().unwrap();
    let journaled = journal.orders.iter().find(|o| o.order_id == order.order_id).expect("the order is journaled");
    assert_eq!((journaled.status, journaled.filled_quantity), (order.status, order.filled_quantity));
    let journal_fills: Decimal =
        journal.fills.iter().filter(|(_, f)| f.order_id == order.order_id).map(|(_, f)| f.quantity).sum();
    assert_eq!(journal_fills, filled, "the journal holds the same fills");
}

#[tokio::test]
async fn killed_after_journaling_before_send_the_order_is_rejected_and_kept() {
    let dir = temp_data_dir();
    let mut d = start(&dir, &[("LIDO_TEST_PAUSE_AT", "after_journal")]);
    let c = d.client();
    let q = ready(&c).await;
    let order = sol_limit(Side::Buy, dec!(1), q.ask, "before-send");
    let pending = tokio::spawn({
        let (c, order) = (c.clone(), order.clone());
        async move { c.place_order(&order).await }
    });
    d.wait_for_pause("after_journal", WAIT).await;
    d.kill9();
    pending.abort();

    let d = start(&dir, &[]);
    let c = d.client();
    ready(&c).await;
    let resolved = eventually(WAIT, "the unsent order resolved", || async {
        by_client_id(&c, "before-send").await.into_iter().find(|o| o.status.is_terminal())
    })
    .await;
    assert_eq!(resolved.status, OrderStatus::Rejected);
    assert_eq!(resolved.reason.as_deref(), Some("not found at venue after restart"));
    assert_eq!(resolved.filled_quantity, Decimal::ZERO);

    // The same client order id returns the original, never a second order.
    let (again, created) = place(&c, &order).await;
    assert!(!created);
    assert_eq!(again.order_id, resolved.order_id);
    assert_eq!(by_client_id(&c, "before-send").await.len(), 1);
    assert!(c.positions(Some("paper")).await.unwrap().is_empty(), "the venue never saw it");
    assert_agree(&c, &dir, &again.order_id).await;
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn killed_after_send_before_the_answer_the_venue_fill_is_recovered() {
    let dir = temp_data_dir();
    let mut d = start(&dir, &[("LIDO_TEST_PAUSE_AT", "after_send")]);
    let c = d.client();
    let q = ready(&c).await;
    // At the ask, well within its size: fills at once at the venue.
    let order = sol_limit(Side::Buy, dec!(1), q.ask, "after-send");
    let pending = tokio::spawn({
        let (c, order) = (c.clone(), order.clone());
        async move { c.place_order(&order).await }
    });
    d.wait_for_pause("after_send", WAIT).await;
    d.kill9();
    pending.abort();

    let d = start(&dir, &[]);
    let c = d.client();
    ready(&c).await;
    let filled = eventually(WAIT, "the order filled from the venue", || async {
        by_client_id(&c, "after-send").await.into_iter().find(|o| o.status == OrderStatus::Filled)
    })
    .await;
    assert_eq!(filled.filled_quantity, dec!(1));
    assert_eq!(filled.average_price, Some(q.ask));
    let (again, created) = place(&c, &order).await;
    assert!(!created, "resubmitting returns the original");
    assert_eq!(again.order_id, filled.order_id);
    assert_eq!(by_client_id(&c, "after-send").await.len(), 1);
    assert_agree(&c, &dir, &filled.order_id).await;
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The venue's acknowledgement is journaled without waiting for the fsync
/// (`Durability::Venue`), but before the algo sees it: a `kill -9` right
/// after the answer keeps it. The journal is read before any restart, so
/// reconciliation cannot be what put it there.
#[tokio::test]
async fn killed_right_after_the_acknowledgement_the_journal_holds_it() {
    let dir = temp_data_dir();
    let mut d = start(&dir, &[]);
    let c = d.client();
    let q = ready(&c).await;
    // Far below the market: it rests, so the answer is the acknowledgement.
    let (acked, created) = place(&c, &sol_limit(Side::Buy, dec!(1), (q.bid / dec!(2)).round_dp(2), "acked")).await;
    d.kill9();
    assert!(created);
    assert_eq!(acked.status, OrderStatus::Accepted, "{acked:?}");
    let venue_order_id = acked.venue_order_id.clone().expect("the acknowledgement names the venue's order");

    let journaled = Journal::open(&dir).unwrap().order(&acked.order_id).unwrap().expect("the order is journaled");
    assert_eq!(journaled.status, OrderStatus::Accepted);
    assert_eq!(journaled.venue_order_id.as_deref(), Some(venue_order_id.as_str()));
    assert_eq!(journaled, acked, "the journal holds exactly what the algo was shown");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn killed_mid_partial_fill_the_rest_keeps_working_at_the_venue() {
    let dir = temp_data_dir();
    let mut d = start(&dir, &[]);
    let c = d.client();
    let q = ready(&c).await;
    // One lot more than the best ask holds: that level fills, a lot rests.
    let order = sol_limit(Side::Buy, q.ask_size + dec!(0.01), q.ask, "partial");
    let (placed, created) = place(&c, &order).await;
    assert!(created);
    assert_eq!(placed.status, OrderStatus::PartiallyFilled, "{placed:?}");
    assert_eq!(placed.filled_quantity, q.ask_size);
    d.kill9();

    let d = start(&dir, &[]);
    let c = d.client();
    ready(&c).await;
    // The venue kept the resting part (it may fill on the new broker's
    // first tick); either way the views agree.
    // A new order is taken only once the venue is reconciled.
    place(&c, &sol_limit(Side::Buy, dec!(0.01), dec!(1), "probe")).await;
    let now = c.order(&placed.order_id).await.unwrap();
    assert!(now.filled_quantity >= placed.filled_quantity, "{now:?}");
    assert!(matches!(now.status, OrderStatus::PartiallyFilled | OrderStatus::Filled), "{now:?}");
    assert!(!now.adopted);
    let (again, created) = place(&c, &order).await;
    assert!(!created);
    assert_eq!(again.order_id, placed.order_id);
    assert_eq!(by_client_id(&c, "partial").await.len(), 1);
    assert_agree(&c, &dir, &placed.order_id).await;
    let settled = c.order(&placed.order_id).await.unwrap();
    let open = c.open_orders().await.unwrap();
    assert_eq!(open.iter().any(|o| o.order_id == placed.order_id), settled.status.is_open(), "{settled:?}");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_killed_broker_comes_back_with_the_partial_order_and_the_views_agree() {
    let dir = temp_data_dir();
    let d = start(&dir, &[]);
    let c = d.client();
    let q = ready(&c).await;
    let order = sol_limit(Side::Buy, q.ask_size + dec!(0.01), q.ask, "partial-broker");
    let (placed, _) = place(&c, &order).await;
    assert_eq!(placed.status, OrderStatus::PartiallyFilled, "{placed:?}");
    let broker_pid = c.cluster().await.unwrap().service("paper-1").and_then(|b| b.pid).expect("broker pid");
    sigkill(broker_pid);

    // The restarted broker is reconciled before the market takes orders again.
    eventually(WAIT, "a new broker process", || async {
        let pid = c.cluster().await.ok()?.service("paper-1")?.pid?;
        (pid != broker_pid).then_some(())
    })
    .await;
    place(&c, &sol_limit(Side::Buy, dec!(0.01), dec!(1), "probe")).await;
    let now = c.order(&placed.order_id).await.unwrap();
    assert!(matches!(now.status, OrderStatus::PartiallyFilled | OrderStatus::Filled), "{now:?}");
    assert!(now.filled_quantity >= placed.filled_quantity);
    let (again, created) = place(&c, &order).await;
    assert!(!created);
    assert_eq!(again.order_id, placed.order_id);
    assert_eq!(by_client_id(&c, "partial-broker").await.len(), 1);
    assert_agree(&c, &dir, &placed.order_id).await;
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_open_venue_order_missing_from_the_journal_is_adopted() {
    let dir = temp_data_dir();
    let backup = dir.join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    let mut d = start(&dir, &[]);
    let c = d.client();
    ready(&c).await;
    // Far below the market: rests.
    let (first, _) = place(&c, &sol_limit(Side::Buy, dec!(1), dec!(1), "kept")).await;
    assert_eq!(first.status, OrderStatus::Accepted);
    d.terminate(WAIT).expect("a clean stop");
    copy_journal(&dir, &backup);

    let mut d = start(&dir, &[]);
    let c = d.client();
    ready(&c).await;
    let (second, _) = place(&c, &sol_limit(Side::Buy, dec!(2), dec!(1), "lost-from-journal")).await;
    assert_eq!(second.status, OrderStatus::Accepted);
    d.kill9();
    // The journal goes back to the backup, which never saw the second order.
    copy_journal(&backup, &dir);

    let d = start(&dir, &[]);
    let c = d.client();
    ready(&c).await;
    let adopted =
        eventually(WAIT, "the venue's order adopted", || async { c.order(&second.order_id).await.ok() }).await;
    assert!(adopted.adopted);
    assert_eq!(adopted.status, OrderStatus::Accepted);
    assert_eq!((adopted.quantity, adopted.limit_price), (dec!(2), Some(dec!(1))));
    assert!(adopted.reason.as_deref().unwrap_or_default().starts_with("adopted"), "{adopted:?}");
    let open = c.open_orders().await.unwrap();
    let ids: Vec<_> = open.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(ids, [first.order_id.as_str(), second.order_id.as_str()], "both resting orders, once each");
    assert!(d.log_text().contains("order adopted from the venue"));
    // Adopted orders are the node's to manage: cancel reaches the venue.
    assert_eq!(c.cancel_order(&second.order_id).await.unwrap().status, OrderStatus::Canceled);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

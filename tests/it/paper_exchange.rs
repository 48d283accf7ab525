//! The shared paper exchange (`lidod venue paper`): two nodes whose paper
//! brokers trade on one exchange. An algo's orders on node A outlive A's
//! `kill -9`: node B finds them (same order ids, same client order ids),
//! answers a repeat of a client order id with the first order, cancels
//! through the exchange, and books a fill made while A was dead once.

use std::path::Path;
use std::time::Duration;

use lido_shared::api::OrdersQuery;
use lido_shared::client::LidoClient;
use lido_shared::model::{Order, OrderStatus, Side};
use lido_tests::exchange::PaperExchange;
use lido_tests::{eventually, paper_limit, temp_data_dir, TestDaemon};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "paper-exchange-test-secret";

/// A node whose paper broker trades on the exchange at `url`.
fn node(config_dir: &Path, name: &str, secret_file: &Path, url: &str) -> TestDaemon {
    let config = config_dir.join(format!("{name}.toml"));
    let text = format!(
        r#"cluster_secret_file = "{}"
[[broker]]
name = "paper-1"
type = "paper"
[broker.options]
exchange = "{url}"
[[market]]
name = "paper"
brokers = ["paper-1"]
"#,
        secret_file.display()
    );
    std::fs::write(&config, text).unwrap();
    TestDaemon::spawn(&["--config", config.to_str().unwrap()])
}

/// A session for `customer` on `node`, retried while it is reconciling.
async fn session(node: &TestDaemon, customer: &str) -> LidoClient {
    let anon = node.client();
    let session = eventually(WAIT, "a session", || async {
        match anon.open_session(customer).await {
            Ok(s) => Some(s),
            Err(e) if e.code() == Some("reconciling") => None,
            Err(e) => panic!("opening a session failed: {e}"),
        }
    })
    .await;
    LidoClient::new(node.url.clone()).unwrap().with_token(&session.session_id)
}

async fn open_orders(c: &LidoClient) -> Vec<Order> {
    eventually(WAIT, "the open orders", || async {
        c.orders(&OrdersQuery { status: Some("open".into()), market: None }).await.ok()
    })
    .await
}

#[tokio::test]
async fn orders_outlive_the_node_that_placed_them() {
    let shared = temp_data_dir();
    let secret_file = shared.join("cluster-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let exchange = PaperExchange::start(&secret_file, SECRET);
    let mut a = node(&shared, "a", &secret_file, &exchange.url);
    let b = node(&shared, "b", &secret_file, &exchange.url);

    // Node A: one order far below the market (rests), one at the best bid
    // (rests until the walk brings the ask down to it).
    let ca = session(&a, "acme").await;
    let quote = eventually(WAIT, "a quote on A", || async { ca.quote("paper", "BTC/USD").await.ok() }).await;
    let far = ((quote.bid * dec!(0.8)) / dec!(0.1)).round() * dec!(0.1);
    let resting_order = paper_limit("BTC/USD", Side::Buy, dec!(0.01), far, "rest-1");
    let resting = eventually(WAIT, "the resting order placed on A", || async {
        ca.place_order(&resting_order).await.ok().map(|p| p.order)
    })
    .await;
    assert_eq!(resting.status, OrderStatus::Accepted, "{resting:?}");
    let quote = ca.quote("paper", "BTC/USD").await.unwrap();
    let near = paper_limit("BTC/USD", Side::Buy, dec!(0.02), quote.bid, "later-1");
    let later = ca.place_order(&near).await.unwrap().order;
    assert!(later.status.is_open(), "placed at the bid, so it rests first: {later:?}");

    a.kill9();

    // Node B, a new session for the same customer: the orders are found.
    let cb = session(&b, "acme").await;
    let open = open_orders(&cb).await;
    let found = open.iter().find(|o| o.order_id == resting.order_id).expect("the resting order is on B");
    assert_eq!(found.client_order_id, "rest-1");
    assert_eq!(found.status, OrderStatus::Accepted);
    if let Some(l) = open.iter().find(|o| o.order_id == later.order_id) {
        assert_eq!(l.client_order_id, "later-1");
    }

    // The same client order id again: the first order, not a second one.
    let again = eventually(WAIT, "the repeat answered", || async {
        match cb.place_order(&resting_order).await {
            Ok(p) => Some(p),
            Err(e) if e.code() == Some("reconciling") => None,
            Err(e) => panic!("repeating the order failed: {e}"),
        }
    })
    .await;
    assert!(!again.created, "200, not 201: {:?}", again.order);
    assert_eq!(again.order.order_id, resting.order_id);
    let at_exchange = exchange.open_orders("acme").await;
    let copies = at_exchange.iter().filter(|r| r.client_id == resting.order_id).count();
    assert_eq!(copies, 1, "exactly one order of that client id at the exchange: {at_exchange:?}");

    // Cancel through B, at the exchange.
    let canceled = cb.cancel_order(&resting.order_id).await.unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled);
    let at_exchange = exchange.open_orders("acme").await;
    assert!(!at_exchange.iter().any(|r| r.client_id == resting.order_id), "canceled at the exchange too");

    // The order at the bid fills while A is dead: B books it once.
    let filled = eventually(Duration::from_secs(120), "the later order filled, seen on B", || async {
        cb.order(&later.order_id).await.ok().filter(|o| o.status == OrderStatus::Filled)
    })
    .await;
    assert_eq!(filled.client_order_id, "later-1");
    assert_eq!(filled.filled_quantity, dec!(0.02));
    // A fill event arriving after a catch-up fill must not count again:
    // look once more after the exchange's next ticks.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fills: Vec<_> = cb.fills().await.unwrap().into_iter().filter(|f| f.order_id == later.order_id).collect();
    let booked: Decimal = fills.iter().map(|f| f.quantity).sum();
    assert_eq!(booked, dec!(0.02), "the fill booked once on B: {fills:?}");
    let order = cb.order(&later.order_id).await.unwrap();
    assert_eq!(order.filled_quantity, dec!(0.02));
    drop(b);
    let _ = std::fs::remove_dir_all(&shared);
}

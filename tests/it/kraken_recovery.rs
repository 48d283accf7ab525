//! Crash recovery against the Kraken fake: `lidod` (or only its Kraken
//! broker process) is killed with SIGKILL at chosen points of an order's
//! life while the fake Kraken keeps running, then restarted on the same
//! data dir; the algo's view (orders, fills), the journal and the fake's
//! own books must agree ([`KrakenNode::assert_agree`]): no order lost or
//! doubled, and the same client order id still returns the original order.
//! The paper venue's counterparts are in `recovery.rs`.

use lido_shared::cluster::ServiceState;
use lido_shared::model::{OrderStatus, Side};
use lido_tests::kraken_fake::FakeConfig;
use lido_tests::kraken_node::{btc_limit, until_status, KrakenNode, NodeOptions, WITHIN};
use lido_tests::{eventually, sigkill};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

/// Well below the fake's market (mid 65000.1): rests at Kraken.
const RESTING: Decimal = dec!(60000.0);

/// Starts a node whose order path holds at `point` (`LIDO_TEST_PAUSE_AT`),
/// places `coid` there, and kills lidod while the order is held.
async fn killed_at(point: &str, coid: &str) -> KrakenNode {
    let mut node =
        KrakenNode::start_with(FakeConfig::default(), NodeOptions::default(), &[("LIDO_TEST_PAUSE_AT", point)]).await;
    let pending = tokio::spawn({
        let algo = node.algo.clone();
        let order = btc_limit(Side::Buy, dec!(0.01), RESTING, coid);
        async move { algo.place_order(&order).await }
    });
    node.daemon.wait_for_pause(point, WITHIN).await;
    node.kill9();
    pending.abort();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_journaling_before_send_the_order_is_rejected_and_never_reaches_kraken() {
    let mut node = killed_at("after_journal", "k-before-send").await;
    assert!(node.fake.orders().is_empty(), "nothing was sent");

    node.restart(&[]).await;
    let order = btc_limit(Side::Buy, dec!(0.01), RESTING, "k-before-send");
    let (again, created) = node.place(&order).await;
    assert!(!created, "the same client order id returns the journaled order");
    let resolved = until_status(&node.algo, &again.order_id, OrderStatus::Rejected).await;
    assert_eq!(resolved.reason.as_deref(), Some("not found at venue after restart"));
    assert_eq!(resolved.filled_quantity, Decimal::ZERO);
    assert!(node.fake.orders().is_empty(), "still never sent: {:?}", node.fake.orders());
    assert_eq!(node.all_orders().await.len(), 1);
    node.assert_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_send_before_the_answer_the_order_at_kraken_is_found_not_resent() {
    let mut node = killed_at("after_send", "k-after-send").await;
    let at_kraken = node.fake.orders();
    assert_eq!(at_kraken.len(), 1, "kraken took the order before lidod died");

    node.restart(&[]).await;
    let order = btc_limit(Side::Buy, dec!(0.01), RESTING, "k-after-send");
    let (again, created) = node.place(&order).await;
    assert!(!created, "the same client order id returns the original");
    let open = until_status(&node.algo, &again.order_id, OrderStatus::Accepted).await;
    let (txid, info) = at_kraken.first_key_value().expect("one order");
    assert_eq!(info.cl_ord_id.as_deref(), Some(open.order_id.as_str()), "kraken holds it under Lido's order id");
    assert_eq!(open.venue_order_id.as_deref(), Some(txid.as_str()));
    assert!(!open.adopted, "the journal had it: found, not adopted");
    assert_eq!(node.fake.orders().len(), 1, "not sent twice");
    let (rest, ws) = node.fake.add_orders_by_transport();
    assert_eq!(rest + ws, 1, "one AddOrder in all");
    node.assert_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_fill_made_while_lidod_was_down_is_recovered() {
    let mut node = KrakenNode::start(FakeConfig::default()).await;
    let (placed, _) = node.place(&btc_limit(Side::Buy, dec!(0.02), RESTING, "k-partial")).await;
    assert_eq!(placed.status, OrderStatus::Accepted);
    node.kill9();
    let txid = placed.venue_order_id.clone().expect("kraken's id");
    node.fake.trade_against(&txid, dec!(0.005)).unwrap();

    node.restart(&[]).await;
    let now = until_status(&node.algo, &placed.order_id, OrderStatus::PartiallyFilled).await;
    assert_eq!(now.filled_quantity, dec!(0.005));
    assert_eq!(now.average_price, Some(RESTING));
    let fills: Vec<_> =
        node.algo.fills().await.unwrap().into_iter().filter(|f| f.order_id == placed.order_id).collect();
    assert_eq!(fills.iter().map(|f| f.quantity).sum::<Decimal>(), dec!(0.005), "{fills:?}");
    node.assert_agree().await;

    // The rest keeps working at Kraken, and its fills reach the algo.
    node.fake.trade_against(&txid, dec!(0.015)).unwrap();
    let filled = until_status(&node.algo, &placed.order_id, OrderStatus::Filled).await;
    assert_eq!(filled.filled_quantity, dec!(0.02));
    let (again, created) = node.place(&btc_limit(Side::Buy, dec!(0.02), RESTING, "k-partial")).await;
    assert!(!created);
    assert_eq!(again.order_id, placed.order_id);
    node.assert_agree().await;
}

/// A fill made while lidod was down reaches the restarted node twice: in
/// the order status that reconciliation asks for over REST, and in the
/// `executions` snapshot, which the fake holds back here for longer than a
/// node could wait on a timer. It is booked once: the broker answers the
/// status only after the snapshot's fills are handed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_the_executions_snapshot_replays_late_is_booked_once() {
    let mut node = KrakenNode::start(FakeConfig::default()).await;
    let (placed, _) = node.place(&btc_limit(Side::Buy, dec!(0.02), RESTING, "k-late")).await;
    node.kill9();
    let txid = placed.venue_order_id.clone().expect("kraken's id");
    node.fake.trade_against(&txid, dec!(0.005)).unwrap();
    node.fake.delay_executions_snapshot(std::time::Duration::from_secs(3));

    node.restart(&[]).await;
    until_status(&node.algo, &placed.order_id, OrderStatus::PartiallyFilled).await;
    // A later fill comes on the same socket after the snapshot: once it is
    // in, everything the snapshot carried is in too.
    node.fake.trade_against(&txid, dec!(0.005)).unwrap();
    let now = eventually(WITHIN, "the second fill booked", || async {
        node.algo.order(&placed.order_id).await.ok().filter(|o| o.filled_quantity >= dec!(0.01))
    })
    .await;
    let at_kraken = node.fake.orders()[&txid].vol_exec;
    assert_eq!(at_kraken, dec!(0.01));
    assert_eq!(now.filled_quantity, at_kraken, "booked once: {now:?}");
    let fills: Vec<_> =
        node.algo.fills().await.unwrap().into_iter().filter(|f| f.order_id == placed.order_id).collect();
    let ids: std::collections::HashSet<_> = fills.iter().map(|f| f.fill_id.as_str()).collect();
    assert_eq!(ids.len(), fills.len(), "no fill id twice: {fills:?}");
    assert_eq!(fills.iter().map(|f| f.quantity).sum::<Decimal>(), at_kraken, "{fills:?}");
    node.assert_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_kraken_broker_comes_back_with_the_resting_order_which_cancels() {
    let node = KrakenNode::start(FakeConfig::default()).await;
    let (resting, _) = node.place(&btc_limit(Side::Buy, dec!(0.01), RESTING, "k-broker")).await;
    assert_eq!(resting.status, OrderStatus::Accepted);
    let d = node.daemon.client();
    let broker_pid = d.cluster().await.unwrap().service("k1").and_then(|b| b.pid).expect("broker pid");
    sigkill(broker_pid);

    // A new process whose pipe is up: until then the market has no broker
    // and would reject the probe; after it, `place` waits out `reconciling`.
    eventually(WITHIN, "a new broker process, running", || async {
        let cluster = d.cluster().await.ok()?;
        let k1 = cluster.service("k1")?;
        (k1.pid? != broker_pid && k1.state == ServiceState::Running).then_some(())
    })
    .await;
    let (probe, _) = node.place(&btc_limit(Side::Buy, dec!(0.01), dec!(50000.0), "k-probe")).await;
    assert_eq!(probe.status, OrderStatus::Accepted);
    let still = node.algo.order(&resting.order_id).await.unwrap();
    assert_eq!(still.status, OrderStatus::Accepted, "{still:?}");
    let open = node.algo.open_orders().await.unwrap();
    assert_eq!(open.iter().filter(|o| o.order_id == resting.order_id).count(), 1, "once: {open:?}");

    let canceled = node.algo.cancel_order(&resting.order_id).await.unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled);
    let txid = resting.venue_order_id.expect("kraken's id");
    assert_eq!(node.fake.orders()[&txid].status, "canceled");
    node.assert_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_placed_at_kraken_outside_lido_are_adopted_and_flagged() {
    let mut node = KrakenNode::start(FakeConfig::default()).await;
    let (own, _) = node.place(&btc_limit(Side::Buy, dec!(0.01), RESTING, "k-own")).await;
    let limit = [("pair", "XBTUSD"), ("type", "sell"), ("ordertype", "limit"), ("volume", "0.02")];
    let with_id = [&limit[..], &[("price", "70000.0"), ("cl_ord_id", "placed-by-hand")]].concat();
    node.fake.place_elsewhere(&with_id).unwrap();
    let without_id = node.fake.place_elsewhere(&[&limit[..], &[("price", "71000.0")]].concat()).unwrap();
    node.kill9();

    node.restart(&[]).await;
    let named = eventually(WITHIN, "the order with a cl_ord_id adopted", || async {
        node.algo.order("placed-by-hand").await.ok()
    })
    .await;
    let unnamed =
        eventually(WITHIN, "the order without one adopted", || async { node.algo.order(&without_id).await.ok() }).await;
    for (adopted, price) in [(&named, dec!(70000.0)), (&unnamed, dec!(71000.0))] {
        assert!(adopted.adopted, "{adopted:?}");
        assert!(adopted.reason.as_deref().unwrap_or_default().starts_with("adopted"), "{adopted:?}");
        assert_eq!(adopted.status, OrderStatus::Accepted);
        assert_eq!((adopted.symbol.as_str(), adopted.side), ("BTC/USD", Side::Sell));
        assert_eq!((adopted.quantity, adopted.limit_price), (dec!(0.02), Some(price)));
        assert_eq!(adopted.market, "crypto");
    }
    assert_eq!(unnamed.venue_order_id.as_deref(), Some(without_id.as_str()));
    assert!(node.daemon.log_text().contains("order adopted from the venue"));
    let open = node.algo.open_orders().await.unwrap();
    assert_eq!(open.len(), 3, "own and adopted orders, once each: {open:?}");
    assert!(open.iter().any(|o| o.order_id == own.order_id && !o.adopted));
    node.assert_agree().await;

    // Adopted orders are the node's to manage: fills reach the algo, and
    // cancel reaches Kraken (by cl_ord_id, or by txid for the unnamed one).
    node.fake.trade_against(&without_id, dec!(0.005)).unwrap();
    until_status(&node.algo, &without_id, OrderStatus::PartiallyFilled).await;
    for id in ["placed-by-hand", without_id.as_str()] {
        assert_eq!(node.algo.cancel_order(id).await.unwrap().status, OrderStatus::Canceled, "{id}");
    }
    node.assert_agree().await;
}

/// Orders that close while the private socket is down are missing from
/// the next `executions` snapshot, which holds only open orders and the
/// last 50 trades: one canceled elsewhere after a partial fill, and one
/// filled by a trade that 50 later trades pushed out of the snapshot. The
/// broker looks them up over REST after it reconnects (QueryOrders,
/// QueryTrades), and the algo sees their final state and each fill once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_closed_while_the_executions_feed_was_down_get_their_final_state() {
    let node = KrakenNode::start(FakeConfig::default()).await;
    let (canceled, _) = node.place(&btc_limit(Side::Buy, dec!(0.02), RESTING, "k-gap-canceled")).await;
    let (filled, _) = node.place(&btc_limit(Side::Buy, dec!(0.01), RESTING, "k-gap-filled")).await;
    let (busy, _) = node.place(&btc_limit(Side::Sell, dec!(0.5), dec!(70000.0), "k-gap-busy")).await;
    let txid = |o: &lido_shared::model::Order| o.venue_order_id.clone().expect("kraken's id");
    let d = node.daemon.client();
    let executions = |up: f64| {
        let d = d.clone();
        async move {
            let k1 = d.describe("k1").await.ok()?;
            (k1.service.metrics.get("executions_connected") == Some(&up)).then_some(())
        }
    };
    eventually(WITHIN, "the executions feed up", || executions(1.0)).await;

    // The private socket drops and cannot come back while the key fails
    // (no GetWebSocketsToken).
    let key = FakeConfig::default().api_key;
    node.fake.fail_key(&key, Some("EService:Unavailable"));
    node.fake.drop_websockets();
    eventually(WITHIN, "the executions feed down", || executions(0.0)).await;
    node.fake.trade_against(&txid(&canceled), dec!(0.005)).unwrap();
    node.fake.cancel_elsewhere(&txid(&canceled)).unwrap();
    node.fake.trade_against(&txid(&filled), dec!(0.01)).unwrap();
    for _ in 0..50 {
        node.fake.trade_against(&txid(&busy), dec!(0.001)).unwrap();
    }
    node.fake.fail_key(&key, None);

    let gone = until_status(&node.algo, &canceled.order_id, OrderStatus::Canceled).await;
    assert_eq!(gone.filled_quantity, dec!(0.005), "{gone:?}");
    let done = until_status(&node.algo, &filled.order_id, OrderStatus::Filled).await;
    assert_eq!(done.filled_quantity, dec!(0.01), "{done:?}");
    let fills = node.algo.fills().await.unwrap();
    for (order, quantity) in [(&canceled, dec!(0.005)), (&filled, dec!(0.01))] {
        let mine: Vec<_> = fills.iter().filter(|f| f.order_id == order.order_id).collect();
        let [fill] = mine.as_slice() else { panic!("one fill for {}: {mine:?}", order.order_id) };
        assert_eq!(fill.quantity, quantity);
        let at_kraken = &node.fake.orders()[&txid(order)];
        assert_eq!(at_kraken.trades, std::slice::from_ref(&fill.fill_id), "named by kraken's trade id");
    }
    node.assert_agree().await;
}

//! An algo's view: sessions, market data, orders, fills, the stream.

use std::time::Duration;

use lido_shared::api::{Channel, PlaceOrder, ServerMessage};
use lido_shared::model::{Fill, Order, OrderStatus, OrderType, Side, TimeInForce};
use lido_tests::{eventually, TestDaemon};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn order(symbol: &str, side: Side, ty: OrderType, qty: Decimal, limit: Option<Decimal>, coid: &str) -> PlaceOrder {
    PlaceOrder {
        market: "paper".into(),
        symbol: symbol.into(),
        side,
        order_type: ty,
        quantity: qty,
        limit_price: limit,
        time_in_force: TimeInForce::Gtc,
        client_order_id: Some(coid.into()),
    }
}

#[tokio::test]
async fn marketable_limit_order_fills_arrive_on_the_stream() {
    let d = TestDaemon::spawn(&[]);
    let anon = d.client();
    let session = anon.open_session("acme").await.unwrap();
    assert!(session.session_id.starts_with("s-"));
    assert_eq!(session.market_manager_url, d.url);
    let c = lido_shared::client::LidoClient::new(session.market_manager_url.clone())
        .unwrap()
        .with_token(&session.session_id);

    let quote =
        eventually(Duration::from_secs(10), "a quote", || async { c.quote("paper", "BTC/USD").await.ok() }).await;
    assert!(quote.bid < quote.ask, "bid {} < ask {}", quote.bid, quote.ask);

    let mut stream = c.stream().await.unwrap();
    stream.subscribe(Channel::Orders, "paper", None).await.unwrap();
    stream.subscribe(Channel::Fills, "paper", None).await.unwrap();

    // Far enough above the ask to cross whatever the walk does meanwhile.
    let limit = ((quote.ask * dec!(1.02)) / dec!(0.1)).round() * dec!(0.1);
    let placed =
        c.place_order(&order("BTC/USD", Side::Buy, OrderType::Limit, dec!(0.01), Some(limit), "buy-1")).await.unwrap();
    assert!(placed.created);
    assert_eq!(placed.order.client_order_id, "buy-1");
    assert_eq!(placed.order.customer, "acme");

    let mut fill_seq = 0;
    let mut order_seq = 0;
    let mut filled = Decimal::ZERO;
    let mut final_status = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (filled < dec!(0.01) || final_status != Some(OrderStatus::Filled)) && tokio::time::Instant::now() < deadline {
        let ev = stream.next_event(Duration::from_secs(10)).await.unwrap();
        match ev.channel {
            Channel::Fills => {
                assert_eq!(ev.seq, fill_seq + 1, "fills stream has no holes");
                fill_seq = ev.seq;
                let f: Fill = ev.decode().unwrap();
                assert_eq!(f.order_id, placed.order.order_id);
                assert!(f.price <= limit);
                filled += f.quantity;
            }
            Channel::Orders => {
                assert_eq!(ev.seq, order_seq + 1, "orders stream has no holes");
                order_seq = ev.seq;
                let o: Order = ev.decode().unwrap();
                assert_eq!(o.order_id, placed.order.order_id);
                final_status = Some(o.status);
            }
            other => panic!("unexpected channel {other:?}"),
        }
    }
    assert_eq!(filled, dec!(0.01));
    assert_eq!(final_status, Some(OrderStatus::Filled));

    let fills = c.fills().await.unwrap();
    assert_eq!(fills.iter().map(|f| f.quantity).sum::<Decimal>(), dec!(0.01));
    let positions = c.positions(Some("paper")).await.unwrap();
    let btc = positions.iter().find(|p| p.symbol.as_str() == "BTC/USD").expect("a BTC position");
    assert_eq!(btc.quantity, dec!(0.01));
    let got = c.order(&placed.order.order_id).await.unwrap();
    assert_eq!(got.status, OrderStatus::Filled);
    assert_eq!(got.filled_quantity, dec!(0.01));

    // Another customer sees none of it.
    let other = anon.open_session("other").await.unwrap();
    let o = lido_shared::client::LidoClient::new(d.url.clone()).unwrap().with_token(&other.session_id);
    assert!(o.fills().await.unwrap().is_empty());
    assert_eq!(o.order(&placed.order.order_id).await.unwrap_err().status(), Some(404));
}

#[tokio::test]
async fn resting_order_is_open_until_canceled() {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    let quote = eventually(Duration::from_secs(10), "a quote", || async { c.quote("paper", "AAPL").await.ok() }).await;
    let limit = ((quote.bid * dec!(0.5)) / dec!(0.01)).round() * dec!(0.01);
    let placed =
        c.place_order(&order("AAPL", Side::Buy, OrderType::Limit, dec!(3), Some(limit), "rest-1")).await.unwrap();
    assert_eq!(placed.order.status, OrderStatus::Accepted, "{:?}", placed.order);
    let open = c.open_orders().await.unwrap();
    assert_eq!(open.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(), vec![placed.order.order_id.as_str()]);
    let canceled = c.cancel_order(&placed.order.order_id).await.unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled);
    assert!(c.open_orders().await.unwrap().is_empty());
    let again = c.cancel_order(&placed.order.order_id).await.unwrap_err();
    assert_eq!(again.status(), Some(409));
    assert_eq!(again.code(), Some("order_not_open"));

    let metrics = reqwest::get(format!("{}/metrics", d.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("lido_orders_acked_total{market=\"paper\"} 1"), "{metrics}");
    assert!(metrics.contains("lido_orders_open 0"), "{metrics}");
}

#[tokio::test]
async fn the_same_client_order_id_never_makes_a_second_order() {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    eventually(Duration::from_secs(10), "a quote", || async { c.quote("paper", "ETH/USD").await.ok() }).await;
    let req = order("ETH/USD", Side::Buy, OrderType::Limit, dec!(0.1), Some(dec!(100)), "dup-1");
    let first = c.place_order(&req).await.unwrap();
    assert!(first.created);
    let second = c.place_order(&req).await.unwrap();
    assert!(!second.created, "second placement must answer 200, not 201");
    assert_eq!(second.order.order_id, first.order.order_id);

    // Racing resubmissions of a fresh id: exactly one is created.
    let race = order("ETH/USD", Side::Buy, OrderType::Limit, dec!(0.1), Some(dec!(100)), "race-1");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (c, race) = (c.clone(), race.clone());
            tokio::spawn(async move { c.place_order(&race).await.unwrap() })
        })
        .collect();
    let mut created = 0;
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let p = t.await.unwrap();
        created += usize::from(p.created);
        ids.insert(p.order.order_id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let all = c.orders(&Default::default()).await.unwrap();
    assert_eq!(all.len(), 2, "dup-1 and race-1 only: {all:?}");
    let venue_open = c.open_orders().await.unwrap();
    assert_eq!(venue_open.len(), 2);
}

#[tokio::test]
async fn quote_stream_starts_with_a_snapshot_and_counts_without_holes() {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    eventually(Duration::from_secs(10), "the market", || async { c.quote("paper", "BTC/USD").await.ok() }).await;
    let mut s = c.stream().await.unwrap();
    s.subscribe(Channel::Quotes, "paper", Some("btc/usd")).await.unwrap();
    match s.next().await.unwrap() {
        ServerMessage::Ack(a) => {
            assert_eq!(a.op, "subscribed");
            assert_eq!(a.symbol.as_deref(), Some("BTC/USD"));
        }
        other => panic!("expected the ack first, got {other:?}"),
    }
    for expected in 1..=5u64 {
        let ev = s.next_event(Duration::from_secs(5)).await.unwrap();
        assert_eq!(ev.seq, expected);
        assert_eq!(ev.symbol.as_deref(), Some("BTC/USD"));
        let q: lido_shared::model::Quote = ev.decode().unwrap();
        assert!(q.bid < q.ask);
    }
    let book = c.book("paper", "BTC/USD", 5).await.unwrap();
    assert_eq!(book.bids.len(), 5);
    assert_eq!(book.asks.len(), 5);
    assert!(book.bids[0].price() < book.asks[0].price());
    let markets = c.markets().await.unwrap();
    assert_eq!(markets[0].name, "paper");
    assert_eq!(markets[0].active_broker.as_deref(), Some("paper-1"));
    assert!(markets[0].symbols.iter().any(|s| s.as_str() == "AAPL"));
    let doc: serde_json::Value = c.send(c.req(reqwest::Method::GET, "/v1/openapi.json")).await.unwrap();
    assert!(doc["paths"]["/v1/orders"]["post"].is_object(), "openapi lists POST /v1/orders");
}

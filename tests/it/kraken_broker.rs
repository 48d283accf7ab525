//! The `kraken` broker end to end: a real `lidod` whose market `crypto`
//! routes to a kraken broker process, pointed at the fake Kraken (REST and
//! WebSocket v2) on 127.0.0.1, with its keys in environment variables. An
//! algo drives it through the Rust client; after each fault the algo's
//! orders are compared with the fake's, one to one.

use std::time::Duration;

use lido_shared::api::Channel;
use lido_shared::client::LidoClient;
use lido_shared::model::{OrderStatus, Side};
use lido_tests::kraken_fake::{FakeConfig, FakeKraken};
use lido_tests::kraken_node::{btc_limit, until_status, KrakenNode, NodeOptions, WITHIN};
use lido_tests::{eventually, TestDaemon};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_algo_streams_quotes_places_cancels_and_gets_fills() {
    let s = KrakenNode::start(FakeConfig::default()).await;
    let instruments = s.algo.instruments("crypto").await.unwrap();
    let btc = instruments.iter().find(|i| i.symbol.as_str() == "BTC/USD").expect("BTC/USD from AssetPairs");
    assert_eq!((btc.tick_size, btc.min_quantity), (dec!(0.1), dec!(0.0001)));

    let mut stream = s.algo.stream().await.unwrap();
    stream.subscribe(Channel::Quotes, "crypto", Some("BTC/USD")).await.unwrap();
    stream.subscribe(Channel::Fills, "crypto", None).await.unwrap();
    let quote = next_on(&mut stream, Channel::Quotes).await;
    let (bid, ask) = (dec_of(&quote.data["bid"]), dec_of(&quote.data["ask"]));
    assert!(bid < ask, "{quote:?}");
    assert_eq!(Some((bid, ask)), s.fake.top_of_book("BTC/USD"));

    // Resting, then canceled by client id at Kraken.
    let resting = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "rest-1")).await.unwrap().order;
    assert_eq!(resting.status, OrderStatus::Accepted, "{resting:?}");
    let canceled = s.algo.cancel_order(&resting.order_id).await.unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled, "{canceled:?}");

    // Checked against the pair (from AssetPairs) before it leaves: off-tick
    // price, below ordermin.
    let before = s.fake.requests();
    let off_tick = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.05), "tick")).await;
    assert!(off_tick.is_err(), "{off_tick:?}");
    let tiny = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.00001), dec!(60000.0), "tiny")).await;
    assert!(tiny.is_err(), "{tiny:?}");
    assert_eq!(s.fake.requests(), before, "invalid orders never reach kraken");

    // Kraken's own refusal reaches the algo with Kraken's words.
    let broke = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.5), dec!(60000.0), "broke")).await.unwrap().order;
    assert_eq!(broke.status, OrderStatus::Rejected);
    assert!(broke.reason.as_deref().unwrap_or("").contains("EOrder:Insufficient funds"), "{broke:?}");

    // Marketable: fills come from the executions feed, with fees.
    let taker = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.15), ask + dec!(1), "take-1")).await.unwrap().order;
    let filled = until_status(&s.algo, &taker.order_id, OrderStatus::Filled).await;
    assert_eq!(filled.filled_quantity, dec!(0.15));
    let mut got = Decimal::ZERO;
    while got < dec!(0.15) {
        let fill = next_on(&mut stream, Channel::Fills).await;
        assert_eq!(fill.data["order_id"], taker.order_id.as_str());
        assert!(dec_of(&fill.data["fee"]) > Decimal::ZERO, "{fill:?}");
        got += dec_of(&fill.data["quantity"]);
    }
    assert_eq!(got, dec!(0.15));
    let fake = s.fake.orders();
    let at_kraken = fake.values().find(|o| o.cl_ord_id.as_deref() == Some(taker.order_id.as_str())).unwrap();
    assert_eq!(at_kraken.status, "closed");
    s.assert_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_websocket_drop_quotes_and_fills_resume() {
    let s = KrakenNode::start(FakeConfig::default()).await;
    let mut stream = s.algo.stream().await.unwrap();
    stream.subscribe(Channel::Quotes, "crypto", Some("BTC/USD")).await.unwrap();
    stream.subscribe(Channel::Fills, "crypto", None).await.unwrap();
    next_on(&mut stream, Channel::Quotes).await;
    let opened = s.fake.websockets_opened();

    s.fake.drop_websockets();
    // Both sockets (public and private) are dialed again.
    eventually(WITHIN, "both websockets reconnected", || async {
        (s.fake.websockets_opened() >= opened + 2).then_some(())
    })
    .await;
    let d = s.daemon.client();
    eventually(WITHIN, "the executions feed back", || async {
        let k1 = d.describe("k1").await.ok()?;
        (k1.service.metrics.get("executions_connected") == Some(&1.0)).then_some(())
    })
    .await;
    // Quotes flow again on the resubscribed ticker.
    let quote = next_on(&mut stream, Channel::Quotes).await;
    let ask = dec_of(&quote.data["ask"]);
    let taker = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.05), ask + dec!(1), "after-drop")).await.unwrap().order;
    until_status(&s.algo, &taker.order_id, OrderStatus::Filled).await;
    let fill = next_on(&mut stream, Channel::Fills).await;
    assert_eq!(fill.data["order_id"], taker.order_id.as_str());
    s.assert_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_websocket_is_dropped_and_dialed_again() {
    let s = KrakenNode::start(FakeConfig::default()).await;
    let mut stream = s.algo.stream().await.unwrap();
    stream.subscribe(Channel::Quotes, "crypto", Some("BTC/USD")).await.unwrap();
    next_on(&mut stream, Channel::Quotes).await;
    let opened = s.fake.websockets_opened();

    // No data, no heartbeats, no pongs: the broker must notice by itself.
    s.fake.stall_websockets(Duration::from_secs(10));
    eventually(WITHIN, "the silent websockets dialed again", || async {
        (s.fake.websockets_opened() >= opened + 2).then_some(())
    })
    .await;
    eventually(WITHIN, "a reconnect counted in status", || async {
        let k1 = s.daemon.client().describe("k1").await.ok()?;
        (k1.service.metrics.get("ws_reconnects").copied().unwrap_or(0.0) >= 1.0).then_some(())
    })
    .await;
    next_on(&mut stream, Channel::Quotes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_checksum_resyncs_the_book() {
    let s = KrakenNode::start(FakeConfig::default()).await;
    let mut stream = s.algo.stream().await.unwrap();
    stream.subscribe(Channel::Book, "crypto", Some("BTC/USD")).await.unwrap();
    next_on(&mut stream, Channel::Book).await;

    s.fake.corrupt_next_checksum();
    let d = s.daemon.client();
    eventually(WITHIN, "a book resync", || async {
        let k1 = d.describe("k1").await.ok()?;
        (k1.service.metrics.get("book_resyncs").copied().unwrap_or(0.0) >= 1.0).then_some(())
    })
    .await;
    // Fresh snapshot, then updates again: the book matches the fake's.
    eventually(WITHIN, "the book back in sync with kraken's", || async {
        let book = s.algo.book("crypto", "BTC/USD", 10).await.ok()?;
        let top = (book.bids.first()?.0, book.asks.first()?.0);
        (Some(top) == s.fake.top_of_book("BTC/USD")).then_some(())
    })
    .await;
    next_on(&mut stream, Channel::Book).await;
    assert!(s.daemon.log_text().contains("kraken book out of sync; resubscribing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_answer_or_a_stalled_add_order_still_makes_exactly_one_order() {
    let s = KrakenNode::start(FakeConfig::default()).await;

    // Kraken refuses the first AddOrder with its rate-limit error: the
    // broker waits for its counter and sends it again.
    s.fake.fail_next_with("EAPI:Rate limit exceeded");
    let limited = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "limited")).await.unwrap().order;
    assert_eq!(limited.status, OrderStatus::Accepted, "{limited:?}");

    // Kraken takes the order but its answer comes after the broker's
    // timeout: the broker finds it by cl_ord_id instead of resending.
    s.fake.stall(Duration::from_secs(3));
    let stalled = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "stalled")).await.unwrap().order;
    let settled = until_status(&s.algo, &stalled.order_id, OrderStatus::Accepted).await;
    assert_eq!(settled.order_id, stalled.order_id);
    // Let any late resend land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.assert_agree().await;
    assert!(s.daemon.log_text().contains("not resending"), "the broker looked the order up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_go_over_the_private_websocket_when_it_is_up() {
    let s = KrakenNode::start(FakeConfig::default()).await;
    let resting = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "ws-1")).await.unwrap().order;
    assert_eq!(resting.status, OrderStatus::Accepted, "{resting:?}");
    let canceled = s.algo.cancel_order(&resting.order_id).await.unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled, "{canceled:?}");
    // A marketable one fills, its fill reported by the executions feed.
    let taker = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(90000.0), "ws-2")).await.unwrap().order;
    until_status(&s.algo, &taker.order_id, OrderStatus::Filled).await;
    // Kraken's refusal over the socket reaches the algo in Kraken's words.
    let poor = s.algo.place_order(&btc_limit(Side::Buy, dec!(5), dec!(60000.0), "ws-3")).await.unwrap().order;
    assert_eq!(poor.status, OrderStatus::Rejected, "{poor:?}");
    assert_eq!(poor.reason.as_deref(), Some("insufficient_funds: EOrder:Insufficient funds"));

    assert_eq!(s.fake.add_orders_by_transport(), (0, 3), "(rest, websocket) add orders");
    s.assert_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_private_websocket_orders_go_by_rest() {
    let s =
        KrakenNode::start_with(FakeConfig::default(), NodeOptions { no_private_ws: true, ..Default::default() }, &[])
            .await;
    let resting =
        s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "rest-only")).await.unwrap().order;
    assert_eq!(resting.status, OrderStatus::Accepted, "{resting:?}");
    let canceled = s.algo.cancel_order(&resting.order_id).await.unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled, "{canceled:?}");
    assert_eq!(s.fake.add_orders_by_transport(), (1, 0), "(rest, websocket) add orders");
    s.assert_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_over_the_socket_is_queried_and_canceled_over_rest() {
    let s = KrakenNode::start(FakeConfig::default()).await;
    let placed = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "cross")).await.unwrap().order;
    assert!(placed.status == OrderStatus::Accepted && placed.venue_order_id.is_some(), "{placed:?}");
    assert_eq!(s.fake.add_orders_by_transport(), (0, 1), "(rest, websocket) add orders");
    // The private socket goes down and stays down (reconnects get no
    // subscription answer) while the order is canceled.
    s.fake.stall_websockets(Duration::from_secs(6));
    s.fake.drop_websockets();
    let d = s.daemon.client();
    eventually(WITHIN, "the executions feed down", || async {
        let k1 = d.describe("k1").await.ok()?;
        (k1.service.metrics.get("executions_connected") == Some(&0.0)).then_some(())
    })
    .await;
    let canceled = s.algo.cancel_order(&placed.order_id).await.unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled, "{canceled:?}");
    assert_eq!(canceled.venue_order_id, placed.venue_order_id, "the same kraken order");
    assert_eq!(s.fake.cancels_by_transport(), (1, 0), "(rest, websocket) cancels");
    s.assert_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_dropped_right_after_add_order_still_makes_exactly_one_order() {
    let s = KrakenNode::start(FakeConfig::default()).await;
    // Kraken places the order, then the socket closes before the answer:
    // the broker looks it up by cl_ord_id and does not send it again.
    s.fake.drop_after_next_add_order();
    let placed = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "dropped")).await.unwrap().order;
    let settled = until_status(&s.algo, &placed.order_id, OrderStatus::Accepted).await;
    assert_eq!(settled.order_id, placed.order_id);
    // Let any late resend land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.fake.add_orders_by_transport(), (0, 1), "(rest, websocket) add orders");
    s.assert_agree().await;
    assert!(s.daemon.log_text().contains("not resending"), "the broker looked the order up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_past_the_per_connection_limit_open_more_connections() {
    let s = KrakenNode::start_with(
        FakeConfig::default(),
        NodeOptions { extra_options: r#"max_subscriptions_per_connection = "2""#.into(), ..Default::default() },
        &[],
    )
    .await;
    let opened_before = s.fake.websockets_opened();
    let wanted = [
        (Channel::Quotes, "BTC/USD"),
        (Channel::Book, "BTC/USD"),
        (Channel::Quotes, "ETH/USD"),
        (Channel::Book, "ETH/USD"),
        (Channel::Trades, "BTC/USD"),
    ];
    let mut stream = s.algo.stream().await.unwrap();
    for (channel, symbol) in wanted {
        stream.subscribe(channel, "crypto", Some(symbol)).await.unwrap();
    }
    // Trades come from fills: take liquidity once the subscriptions are in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taker = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(90000.0), "taker")).await.unwrap().order;
    until_status(&s.algo, &taker.order_id, OrderStatus::Filled).await;
    // Every stream flows, whichever connection carries it.
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while seen.len() < wanted.len() {
        assert!(tokio::time::Instant::now() < deadline, "only {seen:?} flowed within {WITHIN:?}");
        let event = stream.next_event(WITHIN).await.unwrap();
        if event.gap.is_none() {
            seen.insert((event.channel, event.symbol.unwrap_or_default()));
        }
    }
    // One public connection was open; five subscriptions at two each need
    // three, the status says so.
    assert_eq!(s.fake.websockets_opened() - opened_before, 2, "two more public connections");
    let d = s.daemon.client();
    eventually(WITHIN, "status shows three public connections", || async {
        let k1 = d.describe("k1").await.ok()?;
        (k1.service.metrics.get("venue_connections") == Some(&3.0)).then_some(())
    })
    .await;

    // A resting order placed over the private socket is listed by REST
    // OpenOrders and canceled by cl_ord_id: the broker's order view belongs
    // to the account, not to a connection.
    let resting = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "cross-1")).await.unwrap().order;
    assert_eq!(s.fake.add_orders_by_transport(), (0, 2), "(rest, websocket) add orders");
    let canceled = s.algo.cancel_order(&resting.order_id).await.unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled, "{canceled:?}");
    s.assert_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_secret_never_appears_in_logs_or_status() {
    let config = FakeConfig {
        api_key: "PLANTED-KEY-d41d8cd98f00b204".into(),
        // base64 of "PLANTED-SECRET-e9800998ecf8427e-do-not-print"
        api_secret: "UExBTlRFRC1TRUNSRVQtZTk4MDA5OThlY2Y4NDI3ZS1kby1ub3QtcHJpbnQ=".into(),
        ..FakeConfig::default()
    };
    let s = KrakenNode::start(config.clone()).await;
    let placed = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "secret-1")).await.unwrap().order;
    assert_eq!(placed.status, OrderStatus::Accepted);
    let balances = s.algo.balances(Some("crypto")).await.unwrap();
    assert!(balances.iter().any(|b| b.asset == "USD"), "{balances:?}");

    let d = s.daemon.client();
    let status = serde_json::to_string(&d.cluster().await.unwrap()).unwrap();
    let describe = serde_json::to_string(&d.describe("k1").await.unwrap()).unwrap();
    let logs = d.logs("k1", 10_000).await.unwrap();
    let daemon_log = s.daemon.log_text();
    assert!(describe.contains("rest counter"), "status shows the call counter: {describe}");
    for (what, text) in
        [("status", &status), ("describe", &describe), ("service logs", &logs), ("lidod log", &daemon_log)]
    {
        for secret in [config.api_key.as_str(), config.api_secret.as_str(), "PLANTED-SECRET", "fake-ws-token"] {
            assert!(!text.contains(secret), "{what} contains a secret ({secret})");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_public_data_streams_and_private_calls_say_why() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    let options = [("rest_url", fake.url.clone()), ("ws_url", fake.ws_url()), ("ws_auth_url", fake.ws_auth_url())];
    let spawn = lido_shared::cluster::SpawnRequest {
        kind: lido_shared::cluster::ServiceKind::Broker,
        service_type: Some("kraken".into()),
        name: Some("k9".into()),
        node: None,
        options: options.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    };
    c.spawn(&spawn).await.unwrap();
    let market = lido_shared::cluster::SpawnRequest {
        kind: lido_shared::cluster::ServiceKind::Market,
        service_type: None,
        name: Some("kr".into()),
        node: None,
        options: [("brokers".to_string(), "k9".to_string())].into(),
    };
    c.spawn(&market).await.unwrap();
    let session = c.open_session("acme").await.unwrap();
    let algo = LidoClient::new(session.market_manager_url).unwrap().with_token(&session.session_id);
    let mut stream = eventually(WITHIN, "the kr market", || async {
        algo.quote("kr", "BTC/USD").await.ok()?;
        algo.stream().await.ok()
    })
    .await;
    stream.subscribe(Channel::Quotes, "kr", Some("BTC/USD")).await.unwrap();
    next_on(&mut stream, Channel::Quotes).await;
    let err = algo.balances(Some("kr")).await.unwrap_err().to_string();
    assert!(err.contains("no_credentials") || err.contains("no api key"), "{err}");
}

async fn next_on(stream: &mut lido_shared::client::Stream, channel: Channel) -> lido_shared::api::StreamEvent {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no {channel:?} event within {WITHIN:?}");
        let ev = stream.next_event(WITHIN).await.unwrap();
        if ev.channel == channel {
            return ev;
        }
    }
}

fn dec_of(v: &serde_json::Value) -> Decimal {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not a decimal string: {v}"))
}

/// After a reconnect the public socket subscribes again to what it
/// carried with one `subscribe` per channel listing every symbol (v2's
/// `symbol: [..]`), not one message per (channel, symbol), so a reconnect
/// spends three messages of Kraken's per-connection budget however many
/// symbols it carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_resubscribes_once_per_channel_with_every_symbol() {
    let s = KrakenNode::start(FakeConfig::default()).await;
    let mut stream = s.algo.stream().await.unwrap();
    for symbol in ["BTC/USD", "ETH/USD"] {
        for channel in [Channel::Quotes, Channel::Book, Channel::Trades] {
            stream.subscribe(channel, "crypto", Some(symbol)).await.unwrap();
        }
    }
    // Each first subscriber subscribed at Kraken: six messages so far.
    eventually(WITHIN, "six subscriptions at kraken", || async {
        (s.fake.public_subscribe_messages() == 6).then_some(())
    })
    .await;
    let before = s.fake.public_subscribe_messages();
    let opened = s.fake.websockets_opened();

    s.fake.drop_websockets();
    eventually(WITHIN, "both websockets reconnected", || async {
        (s.fake.websockets_opened() >= opened + 2).then_some(())
    })
    .await;
    eventually(WITHIN, "the subscriptions sent again", || async {
        (s.fake.public_subscribe_messages() >= before + 3).then_some(())
    })
    .await;
    // Whatever else the reconnect sends goes out at once: give it a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resent = s.fake.public_subscribe_messages() - before;
    assert_eq!(resent, 3, "one subscribe per channel (ticker, book, trade), each with both symbols");
    // Both symbols' quotes flow again.
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 2 {
        seen.insert(next_on(&mut stream, Channel::Quotes).await.symbol);
    }
}

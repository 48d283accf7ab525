//! What Lido does at Kraken's limits, end to end against the fake Kraken:
//! the algo gets Lido's own error, naming the venue limit, before Kraken
//! would refuse.

use std::time::{Duration, Instant};

use lido_shared::client::ClientError;
use lido_shared::model::{OrderStatus, Side};
use lido_tests::kraken_fake::FakeConfig;
use lido_tests::kraken_node::{btc_limit, KrakenNode, NodeOptions};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

/// Kraken's Spot Trading Limits (docs.kraken.com, "Spot Trading Limits"):
/// per pair, an add costs 1 and a cancel of an order younger than 5 s
/// costs 8; the Starter threshold is 60, decaying 1 per second. Placing and
/// at once canceling spends 9 a round, so the seventh or eighth round
/// would cross 60: Lido answers 429 `rate_limited` instead of sending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_cancels_spend_the_pair_s_trading_counter_until_lido_says_429() {
    let s = KrakenNode::start(FakeConfig::default()).await;
    let mut refused = None;
    for round in 0..12 {
        let id = format!("churn-{round}");
        let placed = match s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), &id)).await {
            Ok(p) => p.order,
            Err(e) => {
                refused = Some((round, "place", e));
                break;
            }
        };
        assert_eq!(placed.status, OrderStatus::Accepted, "{placed:?}");
        if let Err(e) = s.algo.cancel_order(&placed.order_id).await {
            refused = Some((round, "cancel", e));
            break;
        }
    }
    let (round, what, err) = refused.expect("lido refuses before 12 rounds (108 points) on a threshold of 60");
    assert!((6..=9).contains(&round), "refused at round {round} ({what})");
    let ClientError::Api { status, code, message } = err else { panic!("{what}: {err:?}") };
    assert_eq!((status, code.as_str()), (429, "rate_limited"), "{message}");
    assert!(message.contains("kraken trading rate limit for BTC/USD") && message.contains("of 60"), "{message}");
}

/// Places `BTC/USD` limit buys until Lido itself refuses one (its message
/// says `lido_says`), and returns that refusal's code and message. Orders
/// Kraken refuses before Lido knows better are tried again.
async fn until_lido_refuses(s: &KrakenNode, quantity: Decimal, price: Decimal, lido_says: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 0.. {
        let id = format!("fresh-{n}");
        let last = match s.algo.place_order(&btc_limit(Side::Buy, quantity, price, &id)).await {
            Ok(p) if p.order.status == OrderStatus::Rejected => {
                // Lido's broker refused it ("code: message"), or Kraken
                // did while Lido did not know the new limits yet.
                let reason = p.order.reason.unwrap_or_default();
                if reason.contains(lido_says) {
                    let (code, _) = reason.split_once(':').unwrap_or_default();
                    return (code.to_string(), reason);
                }
                reason
            }
            Ok(p) => panic!("{quantity} @ {price} was placed: {:?}", p.order),
            Err(ClientError::Api { code, message, .. }) if message.contains(lido_says) => return (code, message),
            Err(e) => format!("{e:?}"),
        };
        assert!(Instant::now() < deadline, "lido never refused {quantity} @ {price} itself; last: {last}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    unreachable!()
}

/// A new `ordermin` and `tick_size` in AssetPairs are honoured by Lido's
/// own checks without a restart: AssetPairs is reloaded every
/// `pairs_refresh_ms`, here one second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pair_limits_and_status_are_honoured_after_the_periodic_reload() {
    let options = NodeOptions { extra_options: "pairs_refresh_ms = \"1000\"".into(), ..NodeOptions::default() };
    let s = KrakenNode::start_with(FakeConfig::default(), options, &[]).await;
    let placed = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.5), "before")).await.unwrap();
    assert_eq!(placed.order.status, OrderStatus::Accepted);
    s.fake.set_pair_limits("XBTUSD", dec!(0.1), dec!(1.0));
    let (code, message) =
        until_lido_refuses(&s, dec!(0.01), dec!(60000.0), "checked against kraken's AssetPairs").await;
    assert_eq!(code, "invalid_order", "{message}");
    let (code, message) = until_lido_refuses(&s, dec!(0.2), dec!(60000.5), "checked against kraken's AssetPairs").await;
    assert_eq!(code, "invalid_order", "{message}");
    s.fake.set_pair_status("XBTUSD", "cancel_only");
    let (code, message) = until_lido_refuses(&s, dec!(0.2), dec!(60000.0), "the order was not sent").await;
    assert_eq!(code, "market_cancel_only", "{message}");
}

/// After the public socket reconnects AssetPairs is reloaded at once, well
/// before the default five-minute reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_reconnect_reloads_the_pairs() {
    let s = KrakenNode::start(FakeConfig::default()).await;
    // Loaded by the first order.
    let placed = s.algo.place_order(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "before")).await.unwrap();
    assert_eq!(placed.order.status, OrderStatus::Accepted);
    s.fake.set_pair_limits("XBTUSD", dec!(0.1), dec!(0.1));
    s.fake.drop_websockets();
    let (code, message) =
        until_lido_refuses(&s, dec!(0.01), dec!(60000.0), "checked against kraken's AssetPairs").await;
    assert_eq!(code, "invalid_order", "{message}");
}

/// Kraken changes BTC/USD's precision (price decimals 1 → 0, tick 1):
/// the book's checksum is then computed at the new decimals, so a book
/// kept at the old ones never verifies again. After the periodic AssetPairs
/// reload (here every second) the broker rebuilds and resubscribes the
/// live book at the new decimals, and the algo's book stream resumes with
/// prices at Kraken's new precision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_s_new_decimals_resubscribe_its_live_book() {
    use lido_shared::api::Channel;
    let options = NodeOptions { extra_options: "pairs_refresh_ms = \"1000\"".into(), ..NodeOptions::default() };
    let s = KrakenNode::start_with(FakeConfig::default(), options, &[]).await;
    let mut stream = s.algo.stream().await.unwrap();
    stream.subscribe(Channel::Book, "crypto", Some("BTC/USD")).await.unwrap();
    let best_bid = |data: &serde_json::Value| data["bids"][0][0].as_str().map(str::to_string);
    let within = Duration::from_secs(20);
    let deadline = Instant::now() + within;
    let first = loop {
        assert!(Instant::now() < deadline, "no book within {within:?}");
        let ev = stream.next_event(within).await.unwrap();
        if let Some(bid) = best_bid(&ev.data).filter(|_| ev.channel == Channel::Book) {
            break bid;
        }
    };
    assert!(first.contains('.'), "one price decimal before the change: {first}");

    s.fake.set_pair_decimals("XBTUSD", 0, 8, dec!(1));
    let deadline = Instant::now() + within;
    loop {
        assert!(Instant::now() < deadline, "the book never came back at the new decimals within {within:?}");
        let ev = stream.next_event(within).await.unwrap();
        if ev.channel != Channel::Book {
            continue;
        }
        if let Some(bid) = best_bid(&ev.data).filter(|b| !b.contains('.')) {
            assert!(bid.parse::<Decimal>().is_ok(), "{bid}");
            break;
        }
    }
}

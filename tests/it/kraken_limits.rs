//! What Lido does at Kraken's limits, end to end against the fake Kraken:
//! the algo gets Lido's own error, naming the venue limit, before Kraken
//! would refuse.

use lido_shared::client::ClientError;
use lido_shared::model::{OrderStatus, Side};
use lido_tests::kraken_fake::FakeConfig;
use lido_tests::kraken_node::{btc_limit, KrakenNode};
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

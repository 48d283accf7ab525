//! Issue 19, venue truth: what the `schwab` broker does at Schwab's limits,
//! as far as the fake Schwab (`lido_tests::schwab_fake`) can show it
//! through lidod's public API. The rest is shown by lidod's unit tests
//! (`cargo test -p lidod --lib schwab`) on Schwab's documented JSON.

use std::time::Duration;

use lido_shared::api::PlaceOrder;
use lido_shared::client::{ClientError, LidoClient};
use lido_shared::model::{OrderType, Side, TimeInForce};
use lido_tests::schwab_fake::{FakeConfig, FakeSchwab};
use lido_tests::{eventually, schwab_node, temp_data_dir, TestDaemon};
use rust_decimal_macros::dec;

const WITHIN: Duration = Duration::from_secs(20);
const MARKET: &str = "us-equities";

/// lidod with broker `s1` (extended hours on) in market `us-equities` on `fake`.
fn daemon(fake: &FakeSchwab, dir: &std::path::Path) -> TestDaemon {
    let token_file = schwab_node::token_file(fake, dir, "s1");
    let options = "symbols = \"AAPL\"\nextended_hours = \"true\"";
    let config = schwab_node::node_toml(fake, &token_file, "s1", "schwab", MARKET, options);
    let config_path = dir.join("lido.toml");
    std::fs::write(&config_path, config).unwrap();
    let env = schwab_node::env(fake);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestDaemon::spawn_with(&dir.join("data"), &["--config", config_path.to_str().unwrap()], &env)
}

fn order(side: Side, order_type: OrderType, time_in_force: TimeInForce, coid: &str) -> PlaceOrder {
    PlaceOrder {
        market: MARKET.into(),
        symbol: "AAPL".into(),
        side,
        order_type,
        quantity: dec!(2),
        limit_price: (order_type == OrderType::Limit).then_some(dec!(150)),
        time_in_force,
        client_order_id: Some(coid.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioc_is_refused_shorts_are_named_and_market_orders_go_regular() {
    let fake = FakeSchwab::start(FakeConfig::default()).await;
    let dir = temp_data_dir();
    let mut d = daemon(&fake, &dir);
    let session = d.client().open_session("acme").await.unwrap();
    let c = LidoClient::new(session.market_manager_url).unwrap().with_token(&session.session_id);
    eventually(WITHIN, "a quote through the schwab broker", || async { c.quote(MARKET, "AAPL").await.ok() }).await;

    // Schwab answers IMMEDIATE_OR_CANCEL with 400: Lido refuses it first.
    let e = c.place_order(&order(Side::Buy, OrderType::Limit, TimeInForce::Ioc, "st-ioc")).await.unwrap_err();
    let ClientError::Api { status, code, message } = e else { panic!("an API error, got {e:?}") };
    assert_eq!((status, code.as_str()), (400, "unsupported_time_in_force"), "{message}");
    assert!(message.contains("day and gtc"), "{message}");
    assert!(fake.order_posts().is_empty(), "nothing reached Schwab");

    // No shares held: a sell is a short sale (it fills at the fake's bid).
    c.place_order(&order(Side::Sell, OrderType::Limit, TimeInForce::Day, "st-short")).await.unwrap();
    // A buy against that short position covers it; a market order goes
    // NORMAL even on a broker trading extended hours.
    c.place_order(&order(Side::Buy, OrderType::Market, TimeInForce::Gtc, "st-cover")).await.unwrap();
    let posts = fake.order_posts();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[0]["orderLegCollection"][0]["instruction"], "SELL_SHORT");
    assert_eq!(posts[0]["session"], "SEAMLESS", "a limit order takes the broker's extended hours");
    assert_eq!(posts[1]["orderLegCollection"][0]["instruction"], "BUY_TO_COVER");
    assert_eq!((posts[1]["session"].as_str(), posts[1]["duration"].as_str()), (Some("NORMAL"), Some("DAY")));
    d.kill9();
    let _ = std::fs::remove_dir_all(&dir);
}

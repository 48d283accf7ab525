//! A client order id is placed at most once cluster-wide, whatever the
//! venue's own duplicate guard does: one IM, two nodes, each with a Kraken
//! broker on the same account (keys of their own) at one fake Kraken, which
//! refuses a repeated `cl_ord_id` only while the first order is open.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lido_shared::api::PlaceOrder;
use lido_shared::client::{LidoClient, Placed};
use lido_shared::cluster::RunMode;
use lido_shared::model::{OrderStatus, OrderType, Side, TimeInForce};
use lido_tests::kraken_fake::{FakeConfig, FakeKraken};
use lido_tests::kraken_node::node_toml;
use lido_tests::{eventually, temp_data_dir, TestDaemon};
use rust_decimal_macros::dec;

const WITHIN: Duration = Duration::from_secs(30);
const SECOND_KEY: &str = "fake-api-key-2";

/// The cluster secret file and the IM, with fast check-ins.
fn cluster_head(dir: &Path) -> String {
    let secret = dir.join("cluster-secret");
    std::fs::write(&secret, "cluster-test-secret-0123456789\n").expect("write the secret");
    format!("cluster_secret_file = {:?}\n", secret.display().to_string())
}

const CLUSTER_TABLE: &str = "\n[cluster]\ncheckin_interval_ms = 200\nnode_ttl_ms = 3000\n";

/// `lido.toml` of a node with broker `k1` on the fake, keys from the
/// environment variables `key_env` / `secret_env`.
fn node_config(dir: &Path, fake: &FakeKraken, id: &str, key_env: &str, secret_env: &str) -> PathBuf {
    let extra = format!("api_key_env = \"{key_env}\"\napi_secret_env = \"{secret_env}\"\n");
    let broker = node_toml(&fake.url, &fake.ws_auth_url(), &dir.join(format!("{id}.nonce")), RunMode::Task, &extra);
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, cluster_head(dir) + &broker + CLUSTER_TABLE).expect("write the node's config");
    path
}

fn node(config: &Path, im: &TestDaemon, id: &str, env: &[(&str, &str)]) -> TestDaemon {
    let data = temp_data_dir();
    let args = ["--config", config.to_str().expect("utf-8 path"), "--role", "node", "--im", &im.url, "--node-id", id];
    TestDaemon::spawn_with(&data, &args, env)
}

/// An algo session of `acme` on `node`, once its Kraken broker quotes.
async fn algo_on(node: &TestDaemon) -> LidoClient {
    let session = node.client().open_session("acme").await.expect("a session on the node");
    let algo = LidoClient::new(session.market_manager_url).expect("client").with_token(&session.session_id);
    eventually(WITHIN, "a quote through the node's kraken broker", || async {
        algo.quote("crypto", "BTC/USD").await.ok()
    })
    .await;
    algo
}

fn market_buy(client_order_id: &str) -> PlaceOrder {
    PlaceOrder {
        market: "crypto".into(),
        symbol: "BTC/USD".into(),
        side: Side::Buy,
        order_type: OrderType::Market,
        quantity: dec!(0.001),
        limit_price: None,
        time_in_force: TimeInForce::Gtc,
        client_order_id: Some(client_order_id.into()),
    }
}

/// Places through `algo`, retrying while the node is still reconciling or
/// not yet checked in.
async fn place(algo: &LidoClient, order: &PlaceOrder) -> Placed {
    eventually(WITHIN, "the order answered", || async {
        match algo.place_order(order).await {
            Ok(placed) => Some(placed),
            Err(e) if matches!(e.code(), Some("reconciling" | "cluster_unavailable")) => None,
            Err(e) => panic!("placing {:?} failed: {e}", order.client_order_id),
        }
    })
    .await
}

#[tokio::test]
async fn a_filled_order_sent_again_through_another_node_is_not_placed_twice() {
    let dir = temp_data_dir();
    let config =
        FakeConfig { more_keys: vec![(SECOND_KEY.into(), FakeConfig::default().api_secret)], ..FakeConfig::default() };
    let fake = FakeKraken::start(config.clone()).await;
    let im_config = dir.join("im.toml");
    std::fs::write(&im_config, cluster_head(&dir) + CLUSTER_TABLE).expect("write the IM's config");
    let im = TestDaemon::spawn(&["--config", im_config.to_str().expect("utf-8"), "--role", "im", "--node-id", "im1"]);
    let (k1, s1) = ("KRAKEN_API_KEY", "KRAKEN_API_SECRET");
    let (k2, s2) = ("KRAKEN_API_KEY_2", "KRAKEN_API_SECRET_2");
    let a =
        node(&node_config(&dir, &fake, "n1", k1, s1), &im, "n1", &[(k1, &config.api_key), (s1, &config.api_secret)]);
    let b = node(&node_config(&dir, &fake, "n2", k2, s2), &im, "n2", &[(k2, SECOND_KEY), (s2, &config.api_secret)]);
    let (algo_a, algo_b) = (algo_on(&a).await, algo_on(&b).await);

    let first = place(&algo_a, &market_buy("once-only")).await;
    assert!(first.created, "the first place creates the order");
    let order_id = first.order.order_id.clone();
    eventually(WITHIN, "the first order filled", || async {
        algo_a.order(&order_id).await.ok().filter(|o| o.status == OrderStatus::Filled)
    })
    .await;

    // The same client order id through the other node: Kraken would take it
    // again (its first order is closed), so only Lido can refuse.
    let again = place(&algo_b, &market_buy("once-only")).await;
    assert!(!again.created, "the repeat is answered with the first order: {again:?}");
    assert_eq!(again.order.order_id, order_id);
    assert_eq!(again.order.status, OrderStatus::Filled, "{again:?}");
    let at_kraken = fake.orders().values().filter(|o| o.cl_ord_id.as_deref() == Some(order_id.as_str())).count();
    assert_eq!(at_kraken, 1, "the order is at Kraken once");

    // A new client order id through the second node is placed as usual.
    let other = place(&algo_b, &market_buy("second")).await;
    assert!(other.created && other.order.order_id != order_id, "{other:?}");
}

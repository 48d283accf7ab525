//! A node trading at the fake Kraken: [`FakeKraken`] plus a real `lidod`
//! whose market `crypto` routes to broker `k1` (type `kraken`, pointed at
//! the fake, keys in `KRAKEN_API_KEY` / `KRAKEN_API_SECRET`), and an algo
//! session of customer `acme`. The node can be killed and restarted on the
//! same data dir (journal, nonce file) against the same fake, which keeps
//! its orders meanwhile: what the Kraken broker and recovery tests share.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lido_shared::api::{OrdersQuery, PlaceOrder};
use lido_shared::client::LidoClient;
use lido_shared::cluster::RunMode;
use lido_shared::model::{Order, OrderStatus, OrderType, Side, TimeInForce};
use lidod::journal::Journal;
use rust_decimal::Decimal;

use crate::kraken_fake::{FakeConfig, FakeKraken, FakeOrder};
use crate::{eventually, TestDaemon};

/// How long a test waits for anything the node does.
pub const WITHIN: Duration = Duration::from_secs(20);

/// How the node is started.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Point the broker's private socket at a port where nothing listens
    /// (orders then go over REST and no executions arrive).
    pub no_private_ws: bool,
    /// More `key = "value"` lines for the broker's options.
    pub extra_options: String,
    /// More TOML for `lido.toml` itself, after the market (e.g. `[autoscale]`).
    pub extra_toml: String,
}

/// The fake, the node and its algo; the node's files are removed on drop.
pub struct KrakenNode {
    pub fake: FakeKraken,
    pub daemon: TestDaemon,
    pub algo: LidoClient,
    /// Holds `lido.toml`, the nonce file and `data/` (the node's data dir).
    pub dir: PathBuf,
    config: FakeConfig,
    options: NodeOptions,
    /// More environment for lidod (kept for restarts).
    env: Vec<(String, String)>,
}

impl Drop for KrakenNode {
    fn drop(&mut self) {
        self.daemon.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `lido.toml` of a node with broker `k1` on the fake at REST base
/// `rest` (its private feed at `ws_auth`) and market `crypto` on `k1`, run
/// as `mode`; `extra` is more broker options, as TOML lines.
pub fn node_toml(rest: &str, ws_auth: &str, nonce_file: &Path, mode: RunMode, extra: &str) -> String {
    let mode = match mode {
        RunMode::Task => "task",
        RunMode::Process => "process",
        RunMode::External => "external",
    };
    format!(
        r#"
[[broker]]
name = "k1"
type = "kraken"
mode = "{mode}"
[broker.options]
rest_url = "{rest}"
ws_url = "{ws}"
ws_auth_url = "{ws_auth}"
nonce_file = "{nonce}"
{extra}

[[market]]
name = "crypto"
brokers = ["k1"]
"#,
        ws = crate::kraken_fake::ws_urls(rest).0,
        nonce = nonce_file.display(),
    )
}

impl KrakenNode {
    /// A fake with `config` and a node on it, ready: the broker answers
    /// from the fake and its executions feed is up.
    pub async fn start(config: FakeConfig) -> Self {
        Self::start_with(config, NodeOptions::default(), &[]).await
    }

    /// [`Self::start`] with options and extra environment variables for
    /// lidod (e.g. `LIDO_TEST_PAUSE_AT`).
    pub async fn start_with(config: FakeConfig, options: NodeOptions, env: &[(&str, &str)]) -> Self {
        let ws_auth = |fake: &FakeKraken| if options.no_private_ws { unreachable_ws_url() } else { fake.ws_auth_url() };
        let extra = format!("rest_timeout_ms = \"1500\"\n{}", options.extra_options);
        let toml = |fake: &FakeKraken, dir: &Path| {
            node_toml(&fake.url, &ws_auth(fake), &dir.join("k1.nonce"), RunMode::Process, &extra) + &options.extra_toml
        };
        Self::start_toml(config.clone(), options.clone(), toml, env).await
    }

    /// A node whose `lido.toml` is `toml(fake, dir)` (it must have broker
    /// `k1` on the fake, and market `crypto`); `env` is more environment
    /// for lidod, e.g. the keys of more brokers.
    pub async fn start_toml(
        config: FakeConfig,
        options: NodeOptions,
        toml: impl FnOnce(&FakeKraken, &Path) -> String,
        env: &[(&str, &str)],
    ) -> Self {
        let fake = FakeKraken::start(config.clone()).await;
        let dir = std::env::temp_dir().join(format!("lido-kraken-it-{}-{}", std::process::id(), crate::unique()));
        std::fs::create_dir_all(dir.join("data")).expect("create the node's dir");
        std::fs::write(dir.join("lido.toml"), toml(&fake, &dir)).expect("write lido.toml");
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let daemon = launch(&dir, &config, &env, &[]);
        let algo = ready(&daemon, &options).await;
        Self { fake, daemon, algo, dir, config, options, env }
    }

    /// SIGKILL of lidod (its broker process follows); files and fake stay.
    pub fn kill9(&mut self) {
        self.daemon.kill9();
    }

    /// Starts lidod again on the same data dir and fake (after
    /// [`Self::kill9`]), with `env`; ready as after [`Self::start`], and
    /// with a new algo session of the same customer.
    pub async fn restart(&mut self, env: &[(&str, &str)]) {
        self.daemon.kill9();
        self.daemon = launch(&self.dir, &self.config, &self.env, env);
        self.algo = ready(&self.daemon, &self.options).await;
    }

    /// Places an order, retrying while the node answers `503 reconciling`;
    /// any other refusal fails the test.
    pub async fn place(&self, order: &PlaceOrder) -> (Order, bool) {
        eventually(WITHIN, "the order taken by the node", || async {
            match self.algo.place_order(order).await {
                Ok(p) => Some((p.order, p.created)),
                Err(e) if e.code() == Some("reconciling") => None,
                Err(e) => panic!("placing {:?} failed: {e}", order.client_order_id),
            }
        })
        .await
    }

    /// Every order of the algo, open or not.
    pub async fn all_orders(&self) -> Vec<Order> {
        let all = OrdersQuery { status: Some("all".into()), market: None };
        self.algo.orders(&all).await.expect("the algo's orders")
    }

    /// The algo's view, the journal and Kraken agree, once fills on their
    /// way have arrived (awaited, bounded): see [`Self::disagreement`].
    pub async fn assert_agree(&self) {
        let mut last = String::new();
        let deadline = std::time::Instant::now() + WITHIN;
        while std::time::Instant::now() < deadline {
            match self.disagreement().await {
                None => return,
                Some(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the algo, the journal and kraken still disagree after {WITHIN:?}: {last}");
    }

    /// What the three views disagree on, if anything. No order lost or
    /// doubled: every order the algo holds that is not rejected is exactly
    /// one fake order (`cl_ord_id` = Lido's order id, or its txid for an
    /// order placed outside Lido) with the same status and filled quantity,
    /// and the fake has no other; each order's fills (distinct ids) add up
    /// to its filled quantity; the journal holds the same orders, states
    /// and fills.
    pub async fn disagreement(&self) -> Option<String> {
        let orders = self.all_orders().await;
        let fills = self.algo.fills().await.expect("the algo's fills");
        let fake = self.fake.orders();
        let placed: Vec<&Order> = orders.iter().filter(|o| o.status != OrderStatus::Rejected).collect();
        if placed.len() != fake.len() {
            return Some(format!(
                "{} orders at the algo, {} at kraken: {orders:#?}\n{fake:#?}",
                placed.len(),
                fake.len()
            ));
        }
        for o in placed {
            let id = o.order_id.as_str();
            let at_kraken: Vec<_> =
                fake.iter().filter(|(txid, f)| f.cl_ord_id.as_deref() == Some(id) || txid.as_str() == id).collect();
            let [(_, f)] = at_kraken.as_slice() else {
                return Some(format!("order {id} is at kraken {} times", at_kraken.len()));
            };
            if (lido_status(f), f.vol_exec) != (o.status, o.filled_quantity) {
                return Some(format!("algo {o:?}\nkraken {f:?}"));
            }
        }
        let journal = Journal::open(&self.dir.join("data")).expect("open the journal").replay().expect("replay");
        for o in &orders {
            let mine: Vec<_> = fills.iter().filter(|f| f.order_id == o.order_id).collect();
            let ids: HashSet<_> = mine.iter().map(|f| f.fill_id.as_str()).collect();
            let filled: Decimal = mine.iter().map(|f| f.quantity).sum();
            if ids.len() != mine.len() || filled != o.filled_quantity {
                return Some(format!("fills {mine:#?} do not make up {o:?}"));
            }
            let Some(j) = journal.orders.iter().find(|j| j.order_id == o.order_id) else {
                return Some(format!("order {} is not journaled", o.order_id));
            };
            let journaled: Decimal =
                journal.fills.iter().filter(|(_, f)| f.order_id == o.order_id).map(|(_, f)| f.quantity).sum();
            if (j.status, j.filled_quantity, journaled) != (o.status, o.filled_quantity, filled) {
                return Some(format!("journal {j:?} with fills of {journaled} vs algo {o:?}"));
            }
        }
        (journal.orders.len() != orders.len())
            .then(|| format!("{} orders journaled, {} at the algo", journal.orders.len(), orders.len()))
    }
}

/// The Lido status a fake Kraken order stands for (Kraken's REST `status`
/// and filled volume), as the tests compare them.
pub fn lido_status(o: &FakeOrder) -> OrderStatus {
    match o.status.as_str() {
        "pending" => OrderStatus::New,
        "open" if o.vol_exec.is_zero() => OrderStatus::Accepted,
        "open" => OrderStatus::PartiallyFilled,
        "closed" if o.vol_exec >= o.vol => OrderStatus::Filled,
        "expired" => OrderStatus::Expired,
        _ => OrderStatus::Canceled,
    }
}

/// A GTC limit order for BTC/USD on market `crypto`.
pub fn btc_limit(side: Side, quantity: Decimal, price: Decimal, client_order_id: &str) -> PlaceOrder {
    PlaceOrder {
        market: "crypto".into(),
        symbol: "BTC/USD".into(),
        side,
        order_type: OrderType::Limit,
        quantity,
        limit_price: Some(price),
        time_in_force: TimeInForce::Gtc,
        client_order_id: Some(client_order_id.into()),
    }
}

/// Waits until the algo sees `order_id` in `status`.
pub async fn until_status(algo: &LidoClient, order_id: &str, status: OrderStatus) -> Order {
    eventually(WITHIN, &format!("order {order_id} {status}"), || async {
        algo.order(order_id).await.ok().filter(|o| o.status == status)
    })
    .await
}

fn launch(dir: &std::path::Path, config: &FakeConfig, kept: &[(String, String)], env: &[(&str, &str)]) -> TestDaemon {
    let keys = [("KRAKEN_API_KEY", config.api_key.as_str()), ("KRAKEN_API_SECRET", config.api_secret.as_str())];
    let kept = kept.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let env: Vec<(&str, &str)> = keys.into_iter().chain(kept).chain(env.iter().copied()).collect();
    let toml = dir.join("lido.toml");
    TestDaemon::spawn_with(&dir.join("data"), &["--config", toml.to_str().expect("utf-8 path")], &env)
}

/// A session of `acme` once the broker answers from Kraken and, unless
/// switched off, its executions feed is up.
async fn ready(daemon: &TestDaemon, options: &NodeOptions) -> LidoClient {
    let session = daemon.client().open_session("acme").await.expect("a session");
    let algo = LidoClient::new(session.market_manager_url).expect("client").with_token(&session.session_id);
    eventually(WITHIN, "a quote through the kraken broker", || async { algo.quote("crypto", "BTC/USD").await.ok() })
        .await;
    if !options.no_private_ws {
        let d = daemon.client();
        eventually(WITHIN, "the executions feed", || async {
            let k1 = d.describe("k1").await.ok()?;
            (k1.service.metrics.get("executions_connected") == Some(&1.0)).then_some(())
        })
        .await;
    }
    algo
}

/// A WebSocket URL on a port that was just free (refused connections).
pub fn unreachable_ws_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    format!("ws://127.0.0.1:{port}/auth/v2")
}

//! The venue conformance suite: one set of cases that every broker type
//! passes, each run against that venue (the paper venue itself, the fake
//! Kraken, the fake Schwab; the fakes share no code with the adapters).
//! Adding a venue means adding it to [`Kind`] and passing every case.
//!
//! Each case is a function of the venue; [`conformance!`] makes one test per
//! (venue, case), named `conformance::<venue>::<case>`. A case that a venue
//! cannot have (the paper venue has no credentials, no socket, no rate
//! limit) says so on stderr and passes: the reason is in the output.
//!
//! What every venue must show:
//! - quotes and books in exact decimals, in the venue's units made Lido's
//!   (shares, base units), the same on REST as the venue publishes;
//! - place, cancel and status round trips;
//! - an order whose answer is lost (lidod killed after sending it) is
//!   looked up after the restart, never sent twice, never reported rejected
//!   while the venue has it;
//! - a restart of the broker, and of lidod, with orders open;
//! - a dropped venue socket: data comes back, orders go on;
//! - the venue's rate-limit answer: a clear refusal, never a blind resend;
//! - expired credentials: a clear refusal naming them, nothing sent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lido_shared::api::{Channel, OrdersQuery, PlaceOrder};
use lido_shared::client::{LidoClient, Placed};
use lido_shared::cluster::RunMode;
use lido_shared::model::{Order, OrderStatus, OrderType, Quote, Side, TimeInForce};
use lido_tests::kraken_fake::{self, FakeKraken};
use lido_tests::kraken_node::node_toml;
use lido_tests::schwab_fake::{self, FakeQuote, FakeSchwab};
use lido_tests::{eventually, schwab_node, temp_data_dir, TestDaemon};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

const WITHIN: Duration = Duration::from_secs(30);

/// The broker types under test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Paper,
    Kraken,
    Schwab,
}

/// The venue behind the broker, and its switches.
enum Fake {
    Paper,
    Kraken(FakeKraken),
    Schwab(FakeSchwab),
}

/// A venue, a node with one broker on it (`v1`) in one market, and an algo.
struct Venue {
    kind: Kind,
    fake: Fake,
    daemon: TestDaemon,
    algo: LidoClient,
    /// `lido.toml` and the node's data dir (`data/`).
    dir: PathBuf,
    /// lidod's environment (keys), kept for restarts.
    env: Vec<(String, String)>,
}

impl Drop for Venue {
    fn drop(&mut self) {
        self.daemon.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

const BROKER: &str = "v1";

/// The paper venue as a broker process whose market moves once a minute.
const PAPER: &str = r#"
[[broker]]
name = "v1"
type = "paper"
[broker.options]
tick_ms = "60000"
[[market]]
name = "paper"
brokers = ["v1"]
"#;

impl Venue {
    async fn start(kind: Kind) -> Self {
        Self::start_with(kind, &[]).await
    }

    /// The venue and a node on it; `extra` is more environment for lidod.
    async fn start_with(kind: Kind, extra: &[(&str, &str)]) -> Self {
        let dir = temp_data_dir();
        std::fs::create_dir_all(dir.join("data")).expect("the node's data dir");
        let (fake, toml, env) = match kind {
            Kind::Paper => (Fake::Paper, PAPER.to_string(), Vec::new()),
            Kind::Kraken => {
                let config = kraken_fake::FakeConfig::default();
                let fake = FakeKraken::start(config.clone()).await;
                let toml = node_toml(&fake.url, &fake.ws_auth_url(), &dir.join("v1.nonce"), RunMode::Process, "")
                    .replace("name = \"k1\"", "name = \"v1\"")
                    .replace("brokers = [\"k1\"]", "brokers = [\"v1\"]");
                let env = vec![
                    ("KRAKEN_API_KEY".to_string(), config.api_key.clone()),
                    ("KRAKEN_API_SECRET".to_string(), config.api_secret.clone()),
                ];
                (Fake::Kraken(fake), toml, env)
            }
            Kind::Schwab => {
                let fake = FakeSchwab::start(schwab_fake::FakeConfig::default()).await;
                let token_file = schwab_node::token_file(&fake, &dir, BROKER);
                let options = "symbols = \"AAPL,MSFT\"\npoll_ms = \"200\"";
                let toml = schwab_node::node_toml(&fake, &token_file, BROKER, "schwab", "us-equities", options);
                let env = schwab_node::env(&fake);
                (Fake::Schwab(fake), toml, env)
            }
        };
        std::fs::write(dir.join("lido.toml"), toml).expect("write lido.toml");
        let daemon = launch(&dir, &env, extra);
        let algo = ready(&daemon, kind).await;
        Self { kind, fake, daemon, algo, dir, env }
    }

    fn market(&self) -> &'static str {
        market_of(self.kind)
    }

    fn symbol(&self) -> &'static str {
        symbol_of(self.kind)
    }

    /// Kills lidod (its broker follows) and starts it again on the same data
    /// dir and venue, with `extra` environment; a new algo session.
    async fn restart(&mut self, extra: &[(&str, &str)]) {
        self.daemon.kill9();
        self.daemon = launch(&self.dir, &self.env, extra);
        self.algo = ready(&self.daemon, self.kind).await;
    }

    /// How many orders the venue holds for Lido's order `order` (at most one,
    /// whatever happened).
    fn copies_at_venue(&self, order: &Order) -> usize {
        match &self.fake {
            Fake::Paper => {
                let state = self.dir.join("data").join("paper").join(format!("{BROKER}.json"));
                let text = std::fs::read_to_string(&state).unwrap_or_default();
                let state: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                count_client_id(&state, &order.order_id)
            }
            Fake::Kraken(fake) => fake.orders_with_cl_ord_id(&order.order_id),
            // Schwab keeps no client id: an order is one of the fake's with
            // the same symbol, quantity and price (each case uses a quantity
            // of its own).
            Fake::Schwab(fake) => fake.orders_matching(order.symbol.as_str(), order.quantity, order.limit_price),
        }
    }

    /// A quote once it is two-sided.
    async fn quote(&self) -> Quote {
        eventually(WITHIN, "a two-sided quote", || async {
            self.algo
                .quote(self.market(), self.symbol())
                .await
                .ok()
                .filter(|q| q.bid > Decimal::ZERO && q.ask > Decimal::ZERO)
        })
        .await
    }

    /// A limit buy far below the market: it rests. `lots` sets its size
    /// (shares, or thousandths of a coin), distinct per case.
    async fn resting_buy(&self, client_order_id: &str, lots: Decimal) -> PlaceOrder {
        let quantity = if self.kind == Kind::Schwab { lots } else { lots * dec!(0.001) };
        let q = self.quote().await;
        let price = (q.bid * dec!(0.8)).round_dp(if self.kind == Kind::Schwab { 2 } else { 1 });
        self.order(Side::Buy, OrderType::Limit, quantity, Some(price), client_order_id)
    }

    fn order(
        &self,
        side: Side,
        order_type: OrderType,
        quantity: Decimal,
        limit_price: Option<Decimal>,
        client_order_id: &str,
    ) -> PlaceOrder {
        PlaceOrder {
            market: self.market().into(),
            symbol: self.symbol().into(),
            side,
            order_type,
            quantity,
            limit_price,
            time_in_force: if self.kind == Kind::Schwab { TimeInForce::Day } else { TimeInForce::Gtc },
            client_order_id: Some(client_order_id.into()),
        }
    }

    /// Places, retrying while the node reconciles.
    async fn place(&self, order: &PlaceOrder) -> Placed {
        eventually(WITHIN, "the order answered", || async {
            match self.algo.place_order(order).await {
                Ok(placed) => Some(placed),
                Err(e) if e.code() == Some("reconciling") => None,
                Err(e) => panic!("placing {:?} failed: {e}", order.client_order_id),
            }
        })
        .await
    }

    async fn until(&self, order_id: &str, what: &str, want: impl Fn(&Order) -> bool) -> Order {
        eventually(WITHIN, what, || async { self.algo.order(order_id).await.ok().filter(|o| want(o)) }).await
    }

    async fn by_client_id(&self, client_order_id: &str) -> Vec<Order> {
        let all = OrdersQuery { status: Some("all".into()), market: None };
        let orders = self.algo.orders(&all).await.unwrap_or_default();
        orders.into_iter().filter(|o| o.client_order_id == client_order_id).collect()
    }
}

fn market_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Paper => "paper",
        Kind::Kraken => "crypto",
        Kind::Schwab => "us-equities",
    }
}

fn symbol_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Paper | Kind::Kraken => "BTC/USD",
        Kind::Schwab => "AAPL",
    }
}

fn launch(dir: &Path, env: &[(String, String)], extra: &[(&str, &str)]) -> TestDaemon {
    let env: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(extra.iter().copied()).collect();
    let toml = dir.join("lido.toml");
    TestDaemon::spawn_with(&dir.join("data"), &["--config", toml.to_str().expect("utf-8 path")], &env)
}

/// An algo session of `acme` once the broker quotes.
async fn ready(daemon: &TestDaemon, kind: Kind) -> LidoClient {
    let session = daemon.client().open_session("acme").await.expect("a session");
    let algo = LidoClient::new(session.market_manager_url).expect("client").with_token(&session.session_id);
    eventually(WITHIN, "a quote through the broker", || async {
        algo.quote(market_of(kind), symbol_of(kind)).await.ok()
    })
    .await;
    algo
}

/// How many objects in `v` carry `"client_id": id`.
fn count_client_id(v: &serde_json::Value, id: &str) -> usize {
    match v {
        serde_json::Value::Object(map) => {
            let here = usize::from(map.get("client_id").and_then(|c| c.as_str()) == Some(id));
            here + map.values().map(|x| count_client_id(x, id)).sum::<usize>()
        }
        serde_json::Value::Array(items) => items.iter().map(|x| count_client_id(x, id)).sum(),
        _ => 0,
    }
}

fn skip(kind: Kind, case: &str, why: &str) {
    eprintln!("conformance: {kind:?} skips {case}: {why}");
}

// ---- the cases ---------------------------------------------------------------

/// Lido's quote is the venue's, to the last decimal, in Lido's units (coins,
/// shares), the same on REST and on the stream.
async fn quotes_are_the_venues_exactly(kind: Kind) {
    let v = Venue::start(kind).await;
    // (bid, bid size, ask, ask size) as the venue means them.
    let want = match &v.fake {
        Fake::Paper => {
            // The paper venue is its own truth: its quote is its book's top.
            let book = v.algo.book(v.market(), v.symbol(), 1).await.expect("a book");
            let (bid, ask) = (book.bids.first().expect("a bid"), book.asks.first().expect("an ask"));
            (bid.price(), bid.size(), ask.price(), ask.size())
        }
        Fake::Kraken(fake) => {
            let want = (dec!(64990.1), dec!(0.12345678), dec!(65010.2), dec!(1.5));
            fake.hold_top_of_book(v.symbol(), (want.0, want.1), (want.2, want.3));
            want
        }
        Fake::Schwab(_) => (dec!(187.1234), dec!(700), dec!(187.13), dec!(300)),
    };
    let mut stream = v.algo.stream().await.expect("a stream");
    stream.subscribe(Channel::Quotes, v.market(), Some(v.symbol())).await.expect("subscribe to quotes");
    let same = |q: &Quote| (q.bid, q.bid_size, q.ask, q.ask_size) == want;
    eventually(WITHIN, "Lido's REST quote equal to the venue's", || async {
        if let Fake::Schwab(fake) = &v.fake {
            let quote = FakeQuote { bid_size: want.1, ask_size: want.3, ..FakeQuote::new(want.0, want.2) };
            fake.set_quote(v.symbol(), quote);
        }
        v.algo.quote(v.market(), v.symbol()).await.ok().filter(same)
    })
    .await;
    // Every streamed quote at the venue's prices carries the venue's sizes
    // too (a quote from another source, e.g. a REST poll, may show them
    // alongside one in other units); at least one comes.
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut seen = 0;
    while seen < 1 {
        assert!(tokio::time::Instant::now() < deadline, "{seen} streamed quotes equal to the venue's {want:?}");
        if let Fake::Schwab(fake) = &v.fake {
            // Pushed until seen: a push may land before the subscription.
            let quote = FakeQuote { bid_size: want.1, ask_size: want.3, ..FakeQuote::new(want.0, want.2) };
            fake.set_quote(v.symbol(), quote);
        }
        let Ok(event) = stream.next_event(Duration::from_millis(500)).await else { continue };
        if event.channel != Channel::Quotes {
            continue;
        }
        let q: Quote = event.decode().expect("a quote");
        if (q.bid, q.ask) == (want.0, want.2) {
            assert!(same(&q), "a streamed quote at the venue's prices in other units: {q:?}, want {want:?}");
            seen += 1;
        }
    }
}

/// Place, status, cancel: the venue has the order once, then not open.
async fn place_status_cancel(kind: Kind) {
    let v = Venue::start(kind).await;
    let order = v.resting_buy("conf-psc", dec!(3)).await;
    let placed = v.place(&order).await;
    assert!(placed.created, "{placed:?}");
    let open = v.until(&placed.order.order_id, "the order accepted", |o| o.status == OrderStatus::Accepted).await;
    assert_eq!(v.copies_at_venue(&open), 1, "the venue has it once");
    let again = v.place(&order).await;
    assert!(!again.created && again.order.order_id == open.order_id, "the same client order id: {again:?}");
    let canceled = v.algo.cancel_order(&open.order_id).await.expect("cancel");
    assert!(matches!(canceled.status, OrderStatus::Canceled | OrderStatus::Accepted), "{canceled:?}");
    v.until(&open.order_id, "the order canceled", |o| o.status == OrderStatus::Canceled).await;
    assert_eq!(v.copies_at_venue(&open), 1, "the cancel sent no second order");
}

/// lidod killed after the order left, before its answer: after the restart
/// the order is found at the venue, never sent again, never rejected.
async fn a_lost_answer_is_looked_up_never_resent(kind: Kind) {
    let mut v = Venue::start_with(kind, &[("LIDO_TEST_PAUSE_AT", "after_send")]).await;
    let order = v.resting_buy("conf-lost", dec!(4)).await;
    let pending = tokio::spawn({
        let (algo, order) = (v.algo.clone(), order.clone());
        async move { algo.place_order(&order).await }
    });
    v.daemon.wait_for_pause("after_send", WITHIN).await;
    v.daemon.kill9();
    pending.abort();
    v.restart(&[]).await;
    let found = eventually(WITHIN, "the order found at the venue", || async {
        v.by_client_id("conf-lost").await.into_iter().find(|o| o.status == OrderStatus::Accepted)
    })
    .await;
    let again = v.place(&order).await;
    assert!(!again.created && again.order.order_id == found.order_id, "{again:?}");
    assert_ne!(again.order.status, OrderStatus::Rejected, "{again:?}");
    assert_eq!(v.copies_at_venue(&found), 1, "the venue has the order once");
    assert_eq!(v.by_client_id("conf-lost").await.len(), 1);
}

/// The broker restarted, then lidod restarted, each with an order open: the
/// order stays open, known once, and can still be canceled.
async fn restarts_keep_open_orders(kind: Kind) {
    let mut v = Venue::start(kind).await;
    let placed = v.place(&v.resting_buy("conf-restart", dec!(5)).await).await;
    let id = placed.order.order_id.clone();
    v.until(&id, "the order accepted", |o| o.status == OrderStatus::Accepted).await;
    v.daemon.client().restart_service(BROKER).await.expect("restart the broker");
    v.quote().await;
    v.until(&id, "the order still open after the broker's restart", |o| o.status == OrderStatus::Accepted).await;
    v.restart(&[]).await;
    let open = v.until(&id, "the order still open after lidod's restart", |o| o.status == OrderStatus::Accepted).await;
    assert_eq!(v.copies_at_venue(&open), 1);
    eventually(WITHIN, "the cancel taken", || async { v.algo.cancel_order(&id).await.ok() }).await;
    v.until(&id, "the order canceled", |o| o.status == OrderStatus::Canceled).await;
}

/// The venue drops its sockets: data comes back and orders go on.
async fn a_dropped_socket_comes_back(kind: Kind) {
    let v = Venue::start(kind).await;
    match &v.fake {
        Fake::Paper => return skip(kind, "a_dropped_socket_comes_back", "the paper venue has no socket to drop"),
        Fake::Kraken(fake) => fake.drop_websockets(),
        Fake::Schwab(fake) => fake.drop_streams(),
    }
    v.quote().await;
    let placed = v.place(&v.resting_buy("conf-drop", dec!(6)).await).await;
    v.until(&placed.order.order_id, "an order after the drop accepted", |o| o.status == OrderStatus::Accepted).await;
}

/// The venue answers an order with its rate-limit error: the algo gets a
/// clear refusal that names it, the order is not resent behind its back,
/// and the next order goes through once the venue takes orders again.
async fn a_venue_rate_limit_is_a_clear_refusal(kind: Kind) {
    let v = Venue::start(kind).await;
    let order = v.resting_buy("conf-rate", dec!(7)).await;
    match &v.fake {
        Fake::Paper => {
            return skip(kind, "a_venue_rate_limit_is_a_clear_refusal", "the paper venue has no rate limit");
        }
        Fake::Kraken(fake) => fake.rate_limit_next(1),
        Fake::Schwab(fake) => fake.rate_limit_next(1),
    }
    match v.algo.place_order(&order).await {
        Ok(placed) => {
            let o = placed.order;
            if o.status == OrderStatus::Rejected {
                let reason = o.reason.clone().unwrap_or_default().to_lowercase();
                assert!(reason.contains("rate"), "a rejection names the rate limit: {o:?}");
                assert_eq!(v.copies_at_venue(&o), 0, "a refused order is not at the venue");
            } else {
                // Taken after a back-off: exactly once.
                let o = v.until(&o.order_id, "the order accepted", |o| o.status == OrderStatus::Accepted).await;
                assert_eq!(v.copies_at_venue(&o), 1, "sent once");
            }
        }
        Err(e) => {
            assert_eq!(e.code(), Some("rate_limited"), "{e}");
            assert!(e.to_string().to_lowercase().contains("rate"), "{e}");
        }
    }
    // The venue's limit is a budget Lido now spends carefully: the next
    // order may be refused by Lido itself (429) until it decays.
    let next_order = v.resting_buy("conf-rate-next", dec!(8)).await;
    // A refusal is final for its client order id (the order is journaled
    // rejected, nothing sent): each try goes with a new one.
    let tries = std::sync::atomic::AtomicU32::new(0);
    let next = eventually(WITHIN, "the next order taken", || async {
        let n = tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let order = PlaceOrder { client_order_id: Some(format!("conf-rate-next-{n}")), ..next_order.clone() };
        match v.algo.place_order(&order).await {
            Ok(placed) => Some(placed),
            Err(e) if matches!(e.code(), Some("rate_limited" | "reconciling")) => None,
            Err(e) => panic!("the next order failed: {e}"),
        }
    })
    .await;
    v.until(&next.order.order_id, "the next order accepted", |o| o.status == OrderStatus::Accepted).await;
}

/// Credentials that stop working: orders are refused with a reason that
/// says so, and nothing reaches the venue.
async fn expired_credentials_are_a_clear_refusal(kind: Kind) {
    let v = Venue::start(kind).await;
    let order = v.resting_buy("conf-creds", dec!(9)).await;
    match &v.fake {
        Fake::Paper => {
            return skip(kind, "expired_credentials_are_a_clear_refusal", "the paper venue has no credentials");
        }
        Fake::Kraken(fake) => fake.fail_key(&kraken_fake::FakeConfig::default().api_key, Some("EAPI:Invalid key")),
        Fake::Schwab(fake) => fake.expire_refresh_token(),
    }
    let refused = eventually(WITHIN, "a refusal naming the credentials", || async {
        match v.algo.place_order(&order).await {
            Ok(p) if p.order.status == OrderStatus::Rejected => Some(p.order.reason.unwrap_or_default()),
            Ok(p) => panic!("an order went through with dead credentials: {:?}", p.order),
            Err(e) if e.code() == Some("reconciling") => None,
            Err(e) => Some(e.to_string()),
        }
    })
    .await
    .to_lowercase();
    assert!(
        ["key", "credential", "token", "log in", "auth"].iter().any(|w| refused.contains(w)),
        "the refusal names the credentials: {refused}"
    );
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod paper {
            $( #[tokio::test] async fn $case() { super::$case(super::Kind::Paper).await } )*
        }
        mod kraken {
            $( #[tokio::test] async fn $case() { super::$case(super::Kind::Kraken).await } )*
        }
        mod schwab {
            $( #[tokio::test] async fn $case() { super::$case(super::Kind::Schwab).await } )*
        }
    };
}

conformance!(
    quotes_are_the_venues_exactly,
    place_status_cancel,
    a_lost_answer_is_looked_up_never_resent,
    restarts_keep_open_orders,
    a_dropped_socket_comes_back,
    a_venue_rate_limit_is_a_clear_refusal,
    expired_credentials_are_a_clear_refusal,
);

//! The `schwab` broker (and its `tdameritrade` alias) as a real lidod child
//! process against the fake Schwab (`lido_tests::schwab_fake`): quotes,
//! order placement and cancel, a fill announced on the streamer, token
//! refresh mid-session, market hours, streamer reconnect, no secret in logs;
//! and the order map that survives a broker or node killed with SIGKILL
//! (orders still known, found once, never sent twice, adopted when the
//! journal lacks them).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lido_shared::api::{Channel, PlaceOrder};
use lido_shared::client::{LidoClient, Stream};
use lido_shared::model::{Fill, Order, OrderStatus, OrderType, Quote, Side, TimeInForce};
use lido_tests::schwab_fake::{FakeConfig, FakeSchwab};
use lido_tests::{copy_journal, eventually, process_alive, schwab_node, sigkill, temp_data_dir, TestDaemon};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

const WITHIN: Duration = Duration::from_secs(20);
const MARKET: &str = "us-equities";

struct Setup {
    fake: FakeSchwab,
    daemon: TestDaemon,
    token_file: PathBuf,
    /// The test's folder: token file, config, and the node's data dir (`data/`).
    dir: PathBuf,
    config_path: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.daemon.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Setup {
    /// Starts lidod on the setup's config and data dir, with `extra` environment.
    fn spawn_daemon(&self, extra: &[(&str, &str)]) -> TestDaemon {
        spawn_daemon(&self.fake, &self.dir, &self.config_path, extra)
    }

    /// The broker's process id, once it runs.
    async fn broker_pid(&self) -> u32 {
        let c = self.daemon.client();
        eventually(WITHIN, "the broker's pid", || async { c.cluster().await.ok()?.service("s1")?.pid }).await
    }

    /// Waits until the node has reconciled broker `s1` `times` times since it
    /// started (once per pipe connection), so its orders are settled.
    async fn reconciled(&self, times: usize) {
        eventually(WITHIN, "the broker reconciled", || async {
            let log = self.daemon.log_text();
            let done = log.matches("orders reconciled with the venue").count();
            (done >= times).then_some(())
        })
        .await;
    }
}

fn spawn_daemon(fake: &FakeSchwab, dir: &Path, config_path: &Path, extra: &[(&str, &str)]) -> TestDaemon {
    let (key, secret) = (fake.config().app_key.clone(), fake.config().app_secret.clone());
    let mut env = vec![("LIDO_IT_SCHWAB_KEY", key.as_str()), ("LIDO_IT_SCHWAB_SECRET", secret.as_str())];
    env.extend_from_slice(extra);
    TestDaemon::spawn_with(&dir.join("data"), &["--config", config_path.to_str().unwrap()], &env)
}

/// A fake Schwab, a token file from its login, and lidod running broker
/// `s1` of `broker_type` in market `us-equities`.
async fn start(broker_type: &str, poll_ms: u64) -> Setup {
    start_with(broker_type, poll_ms, &[]).await
}

/// As [`start`], with extra environment for lidod (and so its broker).
async fn start_with(broker_type: &str, poll_ms: u64, env: &[(&str, &str)]) -> Setup {
    let fake = FakeSchwab::start(FakeConfig::default()).await;
    let dir = temp_data_dir();
    let token_file = schwab_node::token_file(&fake, &dir, "s1");
    let options = format!("symbols = \"AAPL,MSFT\"\npoll_ms = \"{poll_ms}\"");
    let config = schwab_node::node_toml(&fake, &token_file, "s1", broker_type, MARKET, &options);
    let config_path = dir.join("lido.toml");
    std::fs::write(&config_path, config).unwrap();
    let daemon = spawn_daemon(&fake, &dir, &config_path, env);
    Setup { fake, daemon, token_file, dir, config_path }
}

async fn algo(setup: &Setup) -> LidoClient {
    let session = setup.daemon.client().open_session("acme").await.unwrap();
    LidoClient::new(session.market_manager_url).unwrap().with_token(&session.session_id)
}

async fn first_quote(c: &LidoClient, symbol: &str) -> Quote {
    eventually(WITHIN, "a quote through the schwab broker", || async { c.quote(MARKET, symbol).await.ok() }).await
}

fn limit(side: Side, quantity: Decimal, price: Decimal, coid: &str) -> PlaceOrder {
    PlaceOrder {
        market: MARKET.into(),
        symbol: "AAPL".into(),
        side,
        order_type: OrderType::Limit,
        quantity,
        limit_price: Some(price),
        time_in_force: TimeInForce::Day,
        client_order_id: Some(coid.into()),
    }
}

/// The app secret, the app key and every token the fake issued are absent from lidod's log
/// (which includes the broker child's output).
fn assert_no_secrets(setup: &Setup) {
    let log = setup.daemon.log_text();
    let (access, refresh) = setup.fake.tokens();
    for secret in [&setup.fake.config().app_secret, &setup.fake.config().app_key, &access, &refresh] {
        assert!(!log.contains(secret.as_str()), "a secret is in the log");
    }
    assert!(!log.contains("fake-access-") && !log.contains("fake-refresh-"), "a token is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_place_and_cancel_with_schwabs_order_json() {
    let setup = start("schwab", 60_000).await;
    let c = algo(&setup).await;
    let q = first_quote(&c, "AAPL").await;
    assert_eq!((q.bid, q.ask, q.bid_size, q.ask_size), (dec!(190.25), dec!(190.27), dec!(300), dec!(200)));

    let placed = c.place_order(&limit(Side::Buy, dec!(10), dec!(150), "sb-1")).await.unwrap();
    assert_eq!(placed.order.status, OrderStatus::Accepted, "{:?}", placed.order);
    let venue_id = placed.order.venue_order_id.clone().expect("Schwab's order id from the Location header");
    assert!(setup.fake.orders().contains_key(&venue_id.parse::<i64>().unwrap()));
    assert_eq!(
        setup.fake.order_posts(),
        vec![serde_json::json!({"orderType":"LIMIT","session":"NORMAL","duration":"DAY","orderStrategyType":"SINGLE",
            "price":150,"orderLegCollection":[{"instruction":"BUY","quantity":10,
            "instrument":{"symbol":"AAPL","assetType":"EQUITY"}}]})]
    );

    let again = c.place_order(&limit(Side::Buy, dec!(10), dec!(150), "sb-1")).await.unwrap();
    assert!(!again.created);
    assert_eq!(setup.fake.order_posts().len(), 1, "the same client order id never reaches Schwab twice");

    let canceled = c.cancel_order(&placed.order.order_id).await.unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled);
    let at_schwab = &setup.fake.orders()[&venue_id.parse::<i64>().unwrap()];
    assert_eq!(at_schwab["status"], "CANCELED");

    let balances = c.balances(Some(MARKET)).await.unwrap();
    assert_eq!(balances[0].asset, "USD");
    assert_eq!(balances[0].total, dec!(100000));
    assert_no_secrets(&setup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_arrives_via_the_streamer_account_activity() {
    // Polling once a ten minutes: the fill can only come from ACCT_ACTIVITY.
    let setup = start("schwab", 600_000).await;
    let c = algo(&setup).await;
    first_quote(&c, "AAPL").await;
    eventually(WITHIN, "the streamer login", || async { (setup.fake.stream_logins() >= 1).then_some(()) }).await;
    let mut stream = c.stream().await.unwrap();
    stream.subscribe(Channel::Fills, MARKET, None).await.unwrap();
    stream.subscribe(Channel::Orders, MARKET, None).await.unwrap();

    let placed = c.place_order(&limit(Side::Buy, dec!(5), dec!(150), "sb-fill")).await.unwrap();
    let schwab_id: i64 = placed.order.venue_order_id.clone().unwrap().parse().unwrap();
    setup.fake.fill(schwab_id, dec!(5), dec!(149.5));

    let mut fill = None;
    let mut status = placed.order.status;
    while fill.is_none() || status != OrderStatus::Filled {
        let ev = stream.next_event(WITHIN).await.expect("fill and order update within 20 s");
        match ev.channel {
            Channel::Fills => fill = Some(ev.decode::<Fill>().unwrap()),
            Channel::Orders => status = ev.decode::<Order>().unwrap().status,
            _ => {}
        }
    }
    let fill = fill.unwrap();
    assert_eq!(
        (fill.order_id.as_str(), fill.quantity, fill.price),
        (placed.order.order_id.as_str(), dec!(5), dec!(149.5))
    );
    let positions = c.positions(Some(MARKET)).await.unwrap();
    let aapl = positions.iter().find(|p| p.symbol.as_str() == "AAPL").expect("an AAPL position");
    assert_eq!(aapl.quantity, dec!(5));
    assert_no_secrets(&setup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_is_refreshed_mid_session() {
    let setup = start("schwab", 60_000).await;
    let c = algo(&setup).await;
    first_quote(&c, "AAPL").await;
    let before = setup.fake.tokens().0;
    setup.fake.expire_access_token();

    let q = c.quote(MARKET, "MSFT").await.expect("the quote after a refresh");
    assert_eq!(q.bid, dec!(412.10));
    assert_eq!(setup.fake.refresh_grants(), 1);
    let (access, _) = setup.fake.tokens();
    assert_ne!(access, before);
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&setup.token_file).unwrap()).unwrap();
    assert_eq!(file["access_token"], access.as_str(), "the new token is written to the token file");
    let mode = std::fs::metadata(&setup.token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(setup.daemon.log_text().contains("schwab access token refreshed"));
    assert_no_secrets(&setup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tdameritrade_alias_streams_quotes_and_resubscribes_after_a_drop() {
    let setup = start("tdameritrade", 60_000).await;
    let c = algo(&setup).await;
    first_quote(&c, "MSFT").await;
    let mut stream = c.stream().await.unwrap();
    stream.subscribe(Channel::Quotes, MARKET, Some("MSFT")).await.unwrap();
    eventually(WITHIN, "the streamer login", || async { (setup.fake.stream_logins() >= 1).then_some(()) }).await;

    // Pushed until seen: a push may land before the broker's SUBS reached the fake.
    let mut seen = false;
    for _ in 0..40 {
        setup.fake.push_quote("MSFT", dec!(400.10), dec!(400.20));
        if quote_with_bid(&mut stream, dec!(400.10)).await {
            seen = true;
            break;
        }
    }
    assert!(seen, "a streamed LEVELONE_EQUITIES quote");

    setup.fake.drop_streams();
    eventually(WITHIN, "a second streamer login", || async { (setup.fake.stream_logins() >= 2).then_some(()) }).await;
    let mut seen = false;
    for _ in 0..40 {
        setup.fake.push_quote("MSFT", dec!(401.10), dec!(401.20));
        if quote_with_bid(&mut stream, dec!(401.10)).await {
            seen = true;
            break;
        }
    }
    assert!(seen, "quotes flow again after the reconnect and resubscribe");
    let log = setup.daemon.log_text();
    assert!(log.contains("TD Ameritrade's API was retired"), "the alias says why it is Schwab");
    assert_no_secrets(&setup);
}

/// Whether a quote with `bid` arrives within half a second.
async fn quote_with_bid(stream: &mut Stream, bid: Decimal) -> bool {
    let wait = async {
        loop {
            match stream.next_event(Duration::from_millis(500)).await {
                Ok(ev) if ev.channel == Channel::Quotes && ev.decode::<Quote>().unwrap().bid == bid => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(500), wait).await.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_outside_market_hours_never_leave() {
    let setup = start("schwab", 60_000).await;
    let c = algo(&setup).await;
    first_quote(&c, "AAPL").await;
    setup.fake.close_market();
    let placed = c.place_order(&limit(Side::Buy, dec!(1), dec!(150), "sb-closed")).await.unwrap();
    assert_eq!(placed.order.status, OrderStatus::Rejected);
    let reason = placed.order.reason.unwrap_or_default();
    assert!(reason.contains("market_closed") && reason.contains("not sent"), "{reason}");
    assert!(setup.fake.order_posts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_answer_was_lost_is_found_not_sent_again() {
    let setup = start("schwab", 60_000).await;
    let c = algo(&setup).await;
    first_quote(&c, "AAPL").await;
    setup.fake.fail_next_order_after_effect();
    let placed = c.place_order(&limit(Side::Sell, dec!(2), dec!(250), "sb-lost")).await.unwrap();
    assert_eq!(placed.order.status, OrderStatus::Accepted, "{:?}", placed.order);
    let orders = setup.fake.orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(placed.order.venue_order_id, orders.keys().next().map(|id| id.to_string()));
    assert_eq!(setup.fake.order_posts().len(), 1, "looked up among recent orders, never sent twice");
    assert!(setup.daemon.log_text().contains("looking it up"));
}

// ── the order map across restarts ──

/// The order as the algo sees it among its open orders.
async fn open_order(c: &LidoClient, order_id: &str) -> Option<Order> {
    c.open_orders().await.unwrap().into_iter().find(|o| o.order_id == order_id)
}

/// The order is open with its client and Schwab ids, cancels through lidod,
/// and the fake holds it as its one and only order, posted once.
async fn assert_kept_once_and_cancel(setup: &Setup, c: &LidoClient, placed: &Order, venue_id: &str) {
    let open = open_order(c, &placed.order_id).await.expect("the order is still open after the restart");
    assert_eq!(open.client_order_id, placed.client_order_id);
    assert_eq!(open.venue_order_id.as_deref(), Some(venue_id));
    assert_eq!(open.status, OrderStatus::Accepted, "{open:?}");
    assert!(!open.adopted);
    assert_eq!(c.cancel_order(&placed.order_id).await.unwrap().status, OrderStatus::Canceled);
    let at_schwab = setup.fake.orders();
    assert_eq!(at_schwab.keys().map(|id| id.to_string()).collect::<Vec<_>>(), [venue_id], "one order, none lost");
    assert_eq!(at_schwab.values().next().unwrap()["status"], "CANCELED");
    assert_eq!(setup.fake.order_posts().len(), 1, "never sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resting_order_outlives_its_broker_killed_with_sigkill() {
    let setup = start("schwab", 60_000).await;
    let c = algo(&setup).await;
    first_quote(&c, "AAPL").await;
    setup.reconciled(1).await;
    let placed = c.place_order(&limit(Side::Buy, dec!(10), dec!(150), "sb-keep")).await.unwrap().order;
    assert_eq!(placed.status, OrderStatus::Accepted, "{placed:?}");
    let venue_id = placed.venue_order_id.clone().expect("Schwab's order id");
    let map = setup.dir.join("data").join("schwab").join("s1.orders.json");
    assert!(map.exists(), "the order map is in the node's data dir by default");

    let pid = setup.broker_pid().await;
    sigkill(pid);
    eventually(WITHIN, "a new broker process", || async { (setup.broker_pid().await != pid).then_some(()) }).await;
    // Reconciliation asks the new broker for the order: without the order
    // map it would not know it, and the order would be closed as lost.
    setup.reconciled(2).await;
    assert_kept_once_and_cancel(&setup, &c, &placed, &venue_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_between_schwabs_answer_and_its_record_finds_the_order_once() {
    let mut setup = start_with("schwab", 60_000, &[("LIDO_TEST_PAUSE_AT", "schwab_after_post")]).await;
    let c = algo(&setup).await;
    first_quote(&c, "AAPL").await;
    setup.reconciled(1).await;
    let broker = setup.broker_pid().await;
    let pending = tokio::spawn({
        let c = c.clone();
        async move { c.place_order(&limit(Side::Buy, dec!(10), dec!(150), "sb-crash")).await }
    });
    // Schwab has the order; the broker has not noted its id yet.
    setup.daemon.wait_for_pause("schwab_after_post", WITHIN).await;
    setup.daemon.kill9();
    pending.abort();
    eventually(WITHIN, "the old broker gone", || async { (!process_alive(broker)).then_some(()) }).await;
    assert_eq!(setup.fake.orders().len(), 1);

    setup.daemon = setup.spawn_daemon(&[]);
    let c = algo(&setup).await;
    setup.reconciled(1).await;
    let all = c.orders(&lido_shared::api::OrdersQuery { status: Some("all".into()), market: None }).await.unwrap();
    let [placed] = all.as_slice() else { panic!("one order after the restart: {all:?}") };
    assert_eq!(placed.client_order_id, "sb-crash");
    let venue_id = setup.fake.orders().keys().next().unwrap().to_string();
    assert_kept_once_and_cancel(&setup, &c, placed, &venue_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_between_schwabs_answer_and_its_record_is_settled_not_resent() {
    let setup = start_with("schwab", 60_000, &[("LIDO_TEST_PAUSE_AT", "schwab_after_post")]).await;
    let c = algo(&setup).await;
    first_quote(&c, "AAPL").await;
    setup.reconciled(1).await;
    let broker = setup.broker_pid().await;
    let pending = tokio::spawn({
        let c = c.clone();
        async move { c.place_order(&limit(Side::Buy, dec!(10), dec!(150), "sb-settle")).await }
    });
    setup.daemon.wait_for_pause("schwab_after_post", WITHIN).await;
    sigkill(broker);
    // The node saw the pipe drop mid-send: the order awaits confirmation and
    // is settled by asking the restarted broker, which finds it at Schwab.
    let placed = pending.await.unwrap().expect("the order is taken, its outcome unknown").order;
    assert_eq!(placed.status, OrderStatus::New, "{placed:?}");
    let settled = eventually(WITHIN, "the order settled with Schwab", || async {
        c.order(&placed.order_id).await.ok().filter(|o| o.status != OrderStatus::New)
    })
    .await;
    let venue_id = setup.fake.orders().keys().next().unwrap().to_string();
    assert_eq!(settled.venue_order_id.as_deref(), Some(venue_id.as_str()));
    assert_kept_once_and_cancel(&setup, &c, &settled, &venue_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schwab_order_the_journal_lacks_is_adopted() {
    let mut setup = start("schwab", 60_000).await;
    let backup = setup.dir.join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    let data = setup.dir.join("data");
    let c = algo(&setup).await;
    first_quote(&c, "AAPL").await;
    setup.reconciled(1).await;
    let first = c.place_order(&limit(Side::Buy, dec!(1), dec!(150), "sb-journaled")).await.unwrap().order;
    setup.daemon.terminate(WITHIN).expect("a clean stop");
    copy_journal(&data, &backup);

    setup.daemon = setup.spawn_daemon(&[]);
    let c = algo(&setup).await;
    setup.reconciled(1).await;
    let lost = c.place_order(&limit(Side::Buy, dec!(3), dec!(140), "sb-lost")).await.unwrap().order;
    assert_eq!(lost.status, OrderStatus::Accepted, "{lost:?}");
    let broker = setup.broker_pid().await;
    setup.daemon.kill9();
    eventually(WITHIN, "the old broker gone", || async { (!process_alive(broker)).then_some(()) }).await;
    // The journal goes back to the backup, which never saw the second order.
    copy_journal(&backup, &data);

    setup.daemon = setup.spawn_daemon(&[]);
    let c = algo(&setup).await;
    setup.reconciled(1).await;
    let adopted = c.order(&lost.order_id).await.expect("the order Schwab has is adopted");
    assert!(adopted.adopted, "{adopted:?}");
    assert!(adopted.reason.as_deref().unwrap_or_default().starts_with("adopted"), "{adopted:?}");
    assert_eq!(adopted.status, OrderStatus::Accepted);
    assert_eq!((adopted.symbol.as_str(), adopted.side), ("AAPL", Side::Buy));
    assert_eq!((adopted.quantity, adopted.limit_price), (dec!(3), Some(dec!(140))));
    assert_eq!(adopted.venue_order_id, lost.venue_order_id);
    let open: Vec<_> = c.open_orders().await.unwrap().into_iter().map(|o| o.order_id).collect();
    assert_eq!(open, [first.order_id.clone(), lost.order_id.clone()], "both resting orders, once each");
    assert_eq!(c.cancel_order(&lost.order_id).await.unwrap().status, OrderStatus::Canceled);
    let schwab_id: i64 = lost.venue_order_id.unwrap().parse().unwrap();
    assert_eq!(setup.fake.orders()[&schwab_id]["status"], "CANCELED");
    assert_eq!(setup.fake.orders().len(), 2);
    assert_eq!(setup.fake.order_posts().len(), 2, "never sent twice");
}

/// Schwab allows one streamer connection per login: a second LOGIN closes
/// the first with code 12. Two brokers of one login on one node take turns
/// by a lock per login: one streams, the other serves its quotes from REST
/// (and says so in its status detail), so both give quotes and Schwab sees
/// one streamer login, no eviction churn. When the holder stops, the other
/// takes the streamer over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_of_one_login_share_the_streamer_without_evicting_each_other() {
    let fake = FakeSchwab::start(FakeConfig::default()).await;
    let dir = temp_data_dir();
    let mut config = String::new();
    for (broker, market) in [("s1", "eq-1"), ("s2", "eq-2")] {
        let token = schwab_node::token_file(&fake, &dir, broker);
        let options = "symbols = \"AAPL,MSFT\"\npoll_ms = \"1000\"";
        config.push_str(&schwab_node::node_toml(&fake, &token, broker, "schwab", market, options));
    }
    let config_path = dir.join("lido.toml");
    std::fs::write(&config_path, config).unwrap();
    let daemon = spawn_daemon(&fake, &dir, &config_path, &[]);
    let session = daemon.client().open_session("acme").await.unwrap();
    let c = LidoClient::new(session.market_manager_url).unwrap().with_token(&session.session_id);
    let mut stream = c.stream().await.unwrap();
    for market in ["eq-1", "eq-2"] {
        eventually(WITHIN, "a quote from each broker", || async { c.quote(market, "AAPL").await.ok() }).await;
        stream.subscribe(Channel::Quotes, market, Some("AAPL")).await.unwrap();
    }
    eventually(WITHIN, "one streamer login", || async { (fake.stream_logins() >= 1).then_some(()) }).await;

    // Both markets see a new quote: one streamed, one polled over REST.
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while seen.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "quotes at 187.11 reached only {seen:?}");
        fake.push_quote("AAPL", dec!(187.11), dec!(187.13));
        let Ok(ev) = stream.next_event(Duration::from_millis(500)).await else { continue };
        if ev.channel == Channel::Quotes && ev.data["bid"] == "187.11" {
            seen.insert(ev.market.clone());
        }
    }
    // Give an eviction loop time to show: Schwab still saw one login.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake.stream_logins(), 1, "one streamer login for the two brokers, no code-12 churn");
    let d = daemon.client();
    let details = eventually(WITHIN, "the waiting broker says where its quotes come from", || async {
        let mut out = Vec::new();
        for name in ["s1", "s2"] {
            out.push(d.describe(name).await.ok()?.service.detail.unwrap_or_default());
        }
        out.iter().any(|d| d.contains("quotes polled from REST")).then_some(out)
    })
    .await;
    let waiting = if details[0].contains("quotes polled from REST") { "s1" } else { "s2" };
    let holder = if waiting == "s2" { "s1" } else { "s2" };
    assert!(!details.iter().all(|d| d.contains("quotes polled from REST")), "{details:?}");

    // The holder goes: the other takes the streamer over.
    d.stop_service(holder).await.unwrap();
    eventually(WITHIN, "the streamer taken over", || async { (fake.stream_logins() >= 2).then_some(()) }).await;
    eventually(WITHIN, "the new holder no longer polls", || async {
        let detail = d.describe(waiting).await.ok()?.service.detail.unwrap_or_default();
        (!detail.contains("quotes polled from REST")).then_some(())
    })
    .await;
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

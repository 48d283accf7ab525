//! Failover between the brokers of one market (issue #6): a real lidod
//! whose market `crypto` routes to Kraken brokers `k1` then `k2` (two API
//! keys of ONE account at the Kraken fake, separate nonce files, siblings
//! by `account`), with paper broker `paper-1` as the fallback. Each test
//! streams quotes to an algo while a broker fails and checks: the stream
//! goes on with continuing sequence numbers and exactly one gap marker per
//! failure (none for a planned move), every order is accounted for once,
//! and each failover took no longer than the configured bound. A pool
//! changed at run time (`lidoctl set market`) moves routes as planned moves.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lido_shared::access::AuditQuery;
use lido_shared::api::{Channel, StreamEvent};
use lido_shared::cluster::{ClusterEvent, MarketPool, ServiceInfo, ServiceState, WatchMessage};
use lido_shared::model::{OrderStatus, Side};
use lido_tests::kraken_fake::{FakeConfig, FakeKraken};
use lido_tests::kraken_node::{btc_limit, KrakenNode, NodeOptions, WITHIN};
use lido_tests::{eventually, lidoctl_path, sigkill};
use rust_decimal_macros::dec;
use tokio::task::JoinHandle;

/// The `failover_bound_ms` the node is configured with.
const BOUND_MS: u64 = 2_000;
const K2_KEY: &str = "fake-api-key-2";
/// Any 64 bytes, base64 as Kraken issues secrets.
const K2_SECRET: &str = "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRg==";

/// A node over `k1`, `k2` and `paper-1`; routes fail back after `hold_ms`.
async fn start(hold_ms: u64) -> KrakenNode {
    let config = FakeConfig { more_keys: vec![(K2_KEY.into(), K2_SECRET.into())], ..FakeConfig::default() };
    let toml = move |fake: &FakeKraken, dir: &Path| pool_toml(fake, dir, hold_ms);
    let env = [("K2_API_KEY", K2_KEY), ("K2_API_SECRET", K2_SECRET)];
    KrakenNode::start_toml(config, NodeOptions::default(), toml, &env).await
}

fn pool_toml(fake: &FakeKraken, dir: &Path, hold_ms: u64) -> String {
    let kraken = |name: &str, key_env: &str| {
        format!(
            r#"
[[broker]]
name = "{name}"
type = "kraken"
[broker.options]
rest_url = "{rest}"
ws_url = "{ws}"
ws_auth_url = "{ws_auth}"
nonce_file = "{nonce}"
api_key_env = "{key_env}_API_KEY"
api_secret_env = "{key_env}_API_SECRET"
account = "acct-1"
rest_timeout_ms = "1500"
"#,
            rest = fake.url,
            ws = fake.ws_url(),
            ws_auth = fake.ws_auth_url(),
            nonce = dir.join(format!("{name}.nonce")).display(),
        )
    };
    format!(
        r#"
[supervisor]
restart_min_ms = 3000
restart_max_ms = 3000

[failover]
stall_after_ms = 1500
error_threshold = 2
failback_hold_ms = {hold_ms}
failover_bound_ms = {BOUND_MS}
{k1}
{k2}
[[broker]]
name = "paper-1"
type = "paper"

[[market]]
name = "crypto"
symbols = ["BTC/USD", "ETH/USD"]
brokers = ["k1", "k2"]
fallback = ["paper-1"]
"#,
        k1 = kraken("k1", "KRAKEN"),
        k2 = kraken("k2", "K2"),
    )
}

/// What the algo's quote stream and the cluster watch have shown so far.
#[derive(Default)]
struct Seen {
    events: Vec<StreamEvent>,
    failovers: Vec<ClusterEvent>,
}

/// Reads the algo's BTC/USD quotes and the node's failover events in the background.
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Recorder {
    async fn start(n: &KrakenNode) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut watch = n.daemon.client().watch().await.expect("the cluster watch");
        let mut stream = n.algo.stream().await.expect("the algo stream");
        stream.subscribe(Channel::Quotes, "crypto", Some("BTC/USD")).await.expect("subscribe");
        let s = seen.clone();
        let watcher = tokio::spawn(async move {
            while let Ok(msg) = watch.next().await {
                if let WatchMessage::Event { event: e @ ClusterEvent::Failover { .. }, .. } = msg {
                    s.lock().unwrap().failovers.push(e);
                }
            }
        });
        let s = seen.clone();
        let reader = tokio::spawn(async move {
            while let Ok(ev) = stream.next_event(Duration::from_secs(60)).await {
                s.lock().unwrap().events.push(ev);
            }
        });
        let r = Self { seen, tasks: vec![watcher, reader] };
        r.data_after(0, "the first quote").await;
        r
    }

    /// Waits for `n` quotes after the last gap marker.
    async fn data_after(&self, n: usize, what: &str) {
        eventually(WITHIN, what, || async {
            let seen = self.seen.lock().unwrap();
            let since_gap = seen.events.iter().rev().take_while(|e| e.gap.is_none()).count();
            (since_gap > n).then_some(())
        })
        .await;
    }

    /// Waits for `n` more stream events than seen so far.
    async fn more(&self, n: usize, what: &str) {
        let target = self.seen.lock().unwrap().events.len() + n;
        eventually(WITHIN, what, || async { (self.seen.lock().unwrap().events.len() >= target).then_some(()) }).await;
    }

    /// Waits for a failover event that `matches`, and returns it.
    async fn failover(&self, what: &str, matches: impl Fn(&Failover) -> bool) -> Failover {
        eventually(WITHIN, what, || async {
            let seen = self.seen.lock().unwrap();
            seen.failovers.iter().filter_map(Failover::of).find(|f| matches(f))
        })
        .await
    }

    fn failovers(&self) -> Vec<Failover> {
        self.seen.lock().unwrap().failovers.iter().filter_map(Failover::of).collect()
    }

    /// The stream's invariants: sequence numbers continue without a hole,
    /// and there is exactly one gap marker per failure (unplanned failover)
    /// of the one feed, none for planned moves. Returns the gap markers.
    fn assert_stream(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        for pair in seen.events.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1, "a hole in the stream's sequence numbers: {pair:?}");
        }
        let gaps: Vec<String> = seen.events.iter().filter_map(|e| e.gap.clone()).collect();
        let failures = seen.failovers.iter().filter_map(Failover::of).filter(|f| !f.planned).count();
        assert_eq!(gaps.len(), failures, "one gap marker per failure: {gaps:?} vs {:?}", seen.failovers);
        gaps
    }
}

/// A `ClusterEvent::Failover`, flattened.
#[derive(Debug, Clone)]
struct Failover {
    from: String,
    to: String,
    reason: String,
    planned: bool,
}

impl Failover {
    fn of(e: &ClusterEvent) -> Option<Self> {
        let ClusterEvent::Failover { market, symbols, from, to, reason, planned, duration_ms, .. } = e else {
            return None;
        };
        assert_eq!((market.as_str(), symbols.as_slice()), ("crypto", &["BTC/USD".to_string()][..]));
        assert!(*duration_ms <= BOUND_MS, "failover took {duration_ms} ms, over the {BOUND_MS} ms bound: {e:?}");
        Some(Self { from: from.clone(), to: to.clone(), reason: reason.clone(), planned: *planned })
    }
}

/// The broker `crypto` routes BTC/USD to, per `GET /v1/markets`.
async fn route(n: &KrakenNode) -> Option<String> {
    let markets = n.algo.markets().await.ok()?;
    markets.into_iter().find(|m| m.name == "crypto")?.routes.get("BTC/USD").cloned()
}

/// The Kraken broker BTC/USD settles on, and its sibling: `k1`, the first
/// by priority, whichever came up first (a broker up for the first time
/// takes its routes at once; only one back from a failure waits the hold).
async fn first_route(n: &KrakenNode) -> (String, String) {
    wait_route(n, "k1").await;
    ("k1".to_string(), "k2".to_string())
}

async fn wait_route(n: &KrakenNode, broker: &str) {
    eventually(WITHIN, &format!("BTC/USD routed to {broker}"), || async {
        (route(n).await.as_deref() == Some(broker)).then_some(())
    })
    .await;
}

/// The pid of a running broker.
async fn pid(n: &KrakenNode, broker: &str) -> u32 {
    let c = n.daemon.client();
    eventually(WITHIN, &format!("{broker} running"), || async {
        let snap = c.cluster().await.ok()?;
        let b = snap.service(broker)?;
        (b.state == ServiceState::Running).then_some(b.pid?)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_fails_over_with_one_gap_and_its_orders_move_to_the_sibling() {
    let n = start(600_000).await;
    let rec = Recorder::start(&n).await;
    let (first, other) = first_route(&n).await;
    let (a, _) = n.place(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "rest-1")).await;
    let (b, _) = n.place(&btc_limit(Side::Buy, dec!(0.01), dec!(59990.0), "rest-2")).await;
    assert_eq!((a.broker.as_ref(), a.status), (Some(&first), OrderStatus::Accepted), "{a:?}");

    sigkill(pid(&n, &first).await);

    let f = rec.failover("a failover to the sibling", |f| f.from == first).await;
    assert_eq!((&f.to, f.planned), (&other, false), "{f:?}");
    wait_route(&n, &other).await;
    rec.data_after(5, "quotes from the sibling").await;
    let gaps = rec.assert_stream();
    assert!(gaps[0].contains(&first) && gaps[0].contains(&other), "the gap says from where to where: {gaps:?}");

    // The open orders are tracked through the sibling on the same account
    // (the killed broker is held down by the restart delay), and canceled through it.
    eventually(WITHIN, "open orders tracked through the sibling", || async {
        let orders = n.all_orders().await;
        orders.iter().all(|o| o.broker.as_ref() == Some(&other)).then_some(())
    })
    .await;
    for o in [&a, &b] {
        let canceled = n.algo.cancel_order(&o.order_id).await.expect("cancel through the sibling");
        assert_eq!(canceled.status, OrderStatus::Canceled, "{canceled:?}");
    }
    n.assert_agree().await;

    // The killed broker comes back; the route stays for the hold time, with no new gap.
    pid(&n, &first).await;
    rec.data_after(10, "quotes after the restart").await;
    rec.assert_stream();
    assert_eq!(rec.failovers().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_feed_fails_over() {
    let n = start(600_000).await;
    let rec = Recorder::start(&n).await;
    let (first, _) = first_route(&n).await;
    // Both Kraken brokers share the fake: both go silent, so the feed
    // moves on to the paper fallback.
    n.fake.stall_websockets(Duration::from_secs(8));
    let f = rec.failover("a failover for the stall", |f| f.from == first).await;
    assert!(f.reason.contains("silent"), "{f:?}");
    assert!(!f.planned);
    rec.failover("on to the fallback", |f| f.to == "paper-1").await;
    rec.data_after(5, "quotes after the stall").await;
    rec.assert_stream();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venue_errors_fail_over_after_the_threshold() {
    let n = start(600_000).await;
    let rec = Recorder::start(&n).await;
    let (first, other) = first_route(&n).await;
    // Kraken answers the routed broker's key with "temporary lockout";
    // the broker retries each order, then gives up. Two such orders in a
    // row (the configured threshold) and the market moves.
    let key = if first == "k1" { FakeConfig::default().api_key } else { K2_KEY.to_string() };
    n.fake.fail_key(&key, Some("EGeneral:Temporary lockout"));
    for i in 0..2 {
        let (o, _) = n.place(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), &format!("refused-{i}"))).await;
        assert_eq!(o.status, OrderStatus::Rejected, "{o:?}");
    }
    let f = rec.failover("a failover for venue errors", |f| f.from == first).await;
    assert!(f.reason.contains("errors in a row") && f.to == other && !f.planned, "{f:?}");
    let (o, _) = n.place(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "after")).await;
    assert_eq!((o.broker.as_ref(), o.status), (Some(&other), OrderStatus::Accepted), "{o:?}");
    rec.data_after(5, "quotes from the sibling").await;
    rec.assert_stream();
    n.assert_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_serves_only_while_every_primary_is_down_then_fails_back() {
    let n = start(1_000).await;
    let rec = Recorder::start(&n).await;
    first_route(&n).await;
    let (k1, k2) = (pid(&n, "k1").await, pid(&n, "k2").await);
    sigkill(k1);
    sigkill(k2);
    let to_paper = rec.failover("on to the fallback", |f| f.to == "paper-1").await;
    assert!(!to_paper.planned);
    rec.data_after(3, "quotes from paper").await;
    // Both come back after the restart delay; after the hold, the route
    // moves back to Kraken, make-before-break.
    let back = rec.failover("failback to kraken", |f| f.from == "paper-1").await;
    assert!(back.planned && back.to.starts_with('k'), "{back:?}");
    rec.data_after(5, "quotes after the failback").await;
    let failovers = rec.failovers();
    let paper_first = failovers.iter().position(|f| f.to == "paper-1").expect("to paper");
    assert!(failovers[..paper_first].iter().all(|f| f.to != "paper-1"));
    rec.assert_stream();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_broker_is_stopped_without_the_algo_noticing() {
    let n = start(600_000).await;
    let rec = Recorder::start(&n).await;
    let (first, other) = first_route(&n).await;
    let (a, _) = n.place(&btc_limit(Side::Buy, dec!(0.01), dec!(60000.0), "rest-1")).await;
    let ops = n.daemon.client();
    let drained = ops.drain_service(&first).await.expect("drain the routed broker");
    assert_eq!(drained.state, ServiceState::Draining);
    let f = rec.failover("the planned move", |f| f.from == first).await;
    assert!(f.planned && f.to == other, "{f:?}");
    eventually(WITHIN, "the open order tracked through the sibling", || async {
        let o = n.algo.order(&a.order_id).await.ok()?;
        (o.broker.as_ref() == Some(&other)).then_some(())
    })
    .await;
    // New orders go to the sibling.
    let (b, _) = n.place(&btc_limit(Side::Buy, dec!(0.01), dec!(59990.0), "rest-2")).await;
    assert_eq!(b.broker.as_ref(), Some(&other), "{b:?}");

    ops.stop_service(&first).await.expect("stop the drained broker");
    rec.more(10, "quotes after the stop").await;
    assert!(rec.assert_stream().is_empty(), "no gap marker at all");
    for o in [&a, &b] {
        let canceled = n.algo.cancel_order(&o.order_id).await.expect("cancel after the stop");
        assert_eq!(canceled.status, OrderStatus::Canceled, "{canceled:?}");
    }
    n.assert_agree().await;
}

/// The real lidoctl against the node, as an operator (the node runs open).
fn lidoctl(n: &KrakenNode, args: &[&str]) -> Output {
    let mut cmd = Command::new(lidoctl_path());
    cmd.env("NO_COLOR", "1")
        .env("LIDO_CONFIG", "/nonexistent/lidoctl-test/config.toml")
        .env_remove("LIDO_TOKEN")
        .env_remove("LIDO_CONTEXT")
        .stdin(Stdio::null())
        .args(["--url", &n.daemon.url])
        .args(args);
    cmd.output().expect("run lidoctl")
}

/// The market's pool options as the cluster view shows them.
async fn pool_options(n: &KrakenNode) -> (String, String) {
    let snap = n.daemon.client().cluster().await.expect("the cluster");
    let m = snap.service("crypto").expect("market crypto");
    (m.options["brokers"].clone(), m.options["fallback"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_changed_at_run_time_moves_the_route_without_a_gap() {
    // A long hold: only the pool change can move the route.
    let n = start(600_000).await;
    let rec = Recorder::start(&n).await;
    let (first, other) = first_route(&n).await;
    let before = pool_options(&n).await;
    assert_eq!(before, ("k1,k2".to_string(), "paper-1".to_string()));

    // A customer may not; an unknown broker is refused; neither changes anything.
    let swap = MarketPool { brokers: Some(format!("{other},{first}")), ..MarketPool::default() };
    let refused = n.algo.set_market("crypto", &swap).await.expect_err("a customer is refused");
    assert_eq!(refused.status(), Some(403), "{refused}");
    let bad = lidoctl(&n, &["set", "market", "crypto", "--set", &format!("brokers={other},k9")]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(5), "refused: {stderr}");
    assert!(stderr.contains("unknown_broker") && stderr.contains("k9"), "{stderr}");
    let twice = lidoctl(&n, &["set", "market", "crypto", "--set", &format!("brokers={first},{first}")]);
    assert_eq!(twice.status.code(), Some(5), "{}", String::from_utf8_lossy(&twice.stderr));
    assert_eq!(pool_options(&n).await, before, "a refused change changes nothing");
    assert_eq!(route(&n).await.as_deref(), Some(first.as_str()));

    // The other broker first: the route moves to it, make-before-break.
    let brokers = format!("brokers={other},{first}");
    let out = lidoctl(&n, &["set", "market", "crypto", "--set", &brokers, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let changed: ServiceInfo = serde_json::from_slice(&out.stdout).expect("a service as JSON");
    assert_eq!(changed.options["brokers"], format!("{other},{first}"));
    assert_eq!(changed.options["fallback"], "paper-1", "what the change leaves out stays");
    let f = rec.failover("the move the pool change asks for", |f| f.from == first).await;
    assert!(f.planned && f.to == other && f.reason == "pool changed", "{f:?}");
    wait_route(&n, &other).await;
    rec.more(5, "quotes after the move").await;
    assert!(rec.assert_stream().is_empty(), "no gap marker for a planned move");

    let audit = n.daemon.client().audit(&AuditQuery::default()).await.expect("the audit log");
    let results: Vec<&str> = audit.iter().filter(|r| r.action == "set_market").map(|r| r.result.as_str()).collect();
    assert!(results.contains(&"ok") && results.contains(&"unknown_broker"), "{audit:?}");
}

//! A Lido cluster on several hosts: network namespaces on a bridge (see
//! `net.rs`), one host each for three etcd members, two IMs, the shared
//! paper exchange, two nodes at two locations and the algos. It shows the
//! happy path, then four network partitions (each cut, held, healed), with
//! what the algos saw and how long until they traded again printed as a
//! table, and at the end that every client order id is one order at the
//! venue, no fill is lost or booked twice, and each sticky TraderManager
//! assignment stayed or moved once. The IM cut from etcd is the leader: the
//! other IM may lead only after it stepped down, and its `/healthz` says
//! 503 until it reaches etcd again.
//!
//! It needs root (namespaces), `ip` (iproute2) and `etcd`; without them it
//! says why and passes.

mod algo;
mod cluster;
mod net;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lido_shared::client::{ClusterClient, Placed};
use lido_shared::model::{OrderStatus, Side};
use lido_shared::pipe::{Command as VenueCommand, Reply, ReplyBody};
use lido_tests::paper_limit;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use algo::Algo;
use cluster::{Cluster, CUSTOMERS, ETCD, IMS, NODES, WAIT};

/// How long each partition is held before it is healed.
const HOLD: Duration = Duration::from_secs(8);
/// How long an algo may take to trade again after a cut (bounded loops).
const TRADE_AGAIN_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn a_cluster_on_several_hosts_rides_out_partitions() {
    if let Some(why) = net::unavailable() {
        println!("netns harness skipped: {why}");
        return;
    }
    // Built before any thread leaves the root namespace.
    lido_tests::ensure_built();
    let net = net::Net::new(&cluster::HOSTS).expect("the hosts");
    let console = net.host("console").ns.clone();
    // The test talks to the hosts from the console host: a thread in its
    // namespace, whose runtime's workers start there too.
    let body = std::thread::spawn(move || {
        net::join_namespace(&console).expect("join the console host");
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(scenario(net));
    });
    if let Err(panic) = body.join() {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(net: net::Net) {
    let started = Instant::now();
    let mut cluster = Cluster::start(net).await.expect("the cluster on its hosts");
    println!("cluster up on {} hosts in {:.1} s", cluster::HOSTS.len(), started.elapsed().as_secs_f64());
    let algo_ns = cluster.net.host("algo").ns.clone();
    let algos: Vec<Algo> = CUSTOMERS
        .iter()
        .map(|(customer, location)| {
            Algo::start(&algo_ns, customer, &cluster.tokens[*customer], location, &cluster.im_urls()).expect("an algo")
        })
        .collect();
    let mut book = Book::default();
    let mut rows = Vec::new();

    // The happy path: sessions at the IMs, orders and quote streams on the
    // nodes, all from the algo host.
    let t0 = Instant::now();
    for algo in &algos {
        let traded = trade(algo, &mut book, "happy", t0).await;
        rows.push(Row::new("happy path", algo, traded, Seen::default()));
    }
    for algo in &algos {
        let before = algo.quotes();
        cluster::wait_until(WAIT, &format!("{}'s quotes", algo.customer), || async {
            (algo.quotes() > before).then_some(())
        })
        .await
        .unwrap();
    }
    let assigned = cluster.assignments().await.expect("the assignments");
    assert_eq!(assigned.len(), CUSTOMERS.len(), "each customer has its TraderManager: {assigned:?}");
    let mut moves: BTreeMap<String, Vec<String>> = assigned.iter().map(|(c, n)| (c.clone(), vec![n.clone()])).collect();

    // a) A node cut from both IMs (it still reaches the exchange and its algos).
    let acme_node = node_of(&algos[0]).await;
    let phase = format!("a) node {acme_node} cut from the IMs");
    let cut = Cut::Routes { host: acme_node.clone(), peers: IMS.iter().map(|s| s.to_string()).collect() };
    run_phase(&mut cluster, &algos, &mut book, &mut rows, &mut moves, &phase, "a", cut).await;

    // b) The leading IM cut from etcd: split brain.
    let (leader, other) = leaders(&cluster).await;
    let phase = format!("b) leader {leader} cut from etcd");
    let cut = Cut::Routes { host: leader.clone(), peers: ETCD.iter().map(|s| s.to_string()).collect() };
    let brain = SplitBrain { leader: leader.clone(), other: other.clone() };
    let seen =
        run_phase_with(&mut cluster, &algos, &mut book, &mut rows, &mut moves, &phase, "b", cut, Some(brain)).await;
    let split = seen.split.expect("the split-brain figures");

    // c) One etcd member's link down.
    let phase = "c) etcd member etcd1 link down".to_string();
    run_phase(&mut cluster, &algos, &mut book, &mut rows, &mut moves, &phase, "c", Cut::Link("etcd1".into())).await;

    // d) The algo host cut from acme's node.
    let acme_node = node_of(&algos[0]).await;
    let phase = format!("d) algo cut from its node {acme_node}");
    let cut = Cut::Routes { host: "algo".into(), peers: vec![acme_node.clone()] };
    run_phase(&mut cluster, &algos, &mut book, &mut rows, &mut moves, &phase, "d", cut).await;

    print_table(&rows);
    println!(
        "split brain: {leader} stepped down {:.2} s after the cut (its lease lost, /healthz 503 after {:.2} s); \
         {other} led {:.2} s after the cut, {:.2} s after {leader} stepped down (by their own clocks: \
         stepped_down_at {} < leading_since {}); {leader} healthy again {:.2} s after the heal; never two leaders \
         in {} polls",
        split.stepped_down_after,
        split.unhealthy_after,
        split.other_led_after,
        split.gap,
        split.stepped_down_at,
        split.leading_since,
        split.healthy_again_after_heal,
        split.polls,
    );

    // What must hold at the end.
    check_venue(&cluster, &book).await;
    for (customer, history) in &moves {
        println!("assignment of {customer}: {}", history.join(" -> "));
    }
    println!("total run time {:.1} s", started.elapsed().as_secs_f64());
    drop(algos);
}

/// Every order an algo placed: customer → client order id → (order id, rests).
#[derive(Default)]
struct Book {
    orders: BTreeMap<String, BTreeMap<String, (String, bool)>>,
}

impl Book {
    /// Records a placement; a client order id never maps to two orders.
    fn record(&mut self, customer: &str, coid: &str, placed: &Placed, rests: bool) {
        let orders = self.orders.entry(customer.to_string()).or_default();
        if let Some((known, _)) = orders.get(coid) {
            assert_eq!(known, &placed.order.order_id, "{customer}: client order id {coid} came back as another order");
        }
        orders.insert(coid.to_string(), (placed.order.order_id.clone(), rests));
    }
}

/// What an algo's trading came to after a cut.
struct Traded {
    /// From the cut until both its orders of the phase were placed.
    after: Duration,
    /// Failed attempts, and the distinct errors (code or message).
    failures: usize,
    errors: BTreeSet<String>,
    node: String,
}

/// Places one resting and one marketable order under the phase's client
/// order ids, retrying each (the same id) until it is placed.
async fn trade(algo: &Algo, book: &mut Book, phase: &str, since: Instant) -> Traded {
    let customer = algo.customer.clone();
    let (mut failures, mut errors) = (0, BTreeSet::new());
    for rests in [true, false] {
        let coid = format!("{customer}-{phase}-{}", if rests { "rest" } else { "fill" });
        let deadline = Instant::now() + TRADE_AGAIN_WITHIN;
        loop {
            let c = coid.clone();
            let attempt = algo
                .run(move |client: Arc<ClusterClient>| async move {
                    let call = async {
                        let price = if rests {
                            dec!(1000)
                        } else {
                            let quote = client.quote("paper", "BTC/USD").await?;
                            ((quote.ask * dec!(1.01)) / dec!(0.1)).round() * dec!(0.1)
                        };
                        client.place_order(&paper_limit("BTC/USD", Side::Buy, dec!(0.01), price, &c)).await
                    };
                    match tokio::time::timeout(Duration::from_secs(20), call).await {
                        Ok(Ok(placed)) => Ok(placed),
                        Ok(Err(e)) => Err(e.code().map(str::to_string).unwrap_or_else(|| short(&e.to_string()))),
                        Err(_) => Err("no answer within 20 s".to_string()),
                    }
                })
                .await;
            match attempt {
                Ok(placed) => {
                    book.record(&customer, &coid, &placed, rests);
                    break;
                }
                Err(e) => {
                    failures += 1;
                    errors.insert(e);
                    assert!(
                        Instant::now() < deadline,
                        "{customer} could not trade within {TRADE_AGAIN_WITHIN:?}: {errors:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let after = since.elapsed();
    Traded { after, failures, errors, node: node_of(algo).await }
}

fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

/// The node of the algo's current session.
async fn node_of(algo: &Algo) -> String {
    algo.run(|c: Arc<ClusterClient>| async move {
        tokio::time::timeout(Duration::from_secs(20), c.session()).await.ok().and_then(Result::ok).map(|s| s.node)
    })
    .await
    .unwrap_or_else(|| "?".into())
}

/// The leading IM and the other one, once exactly one leads.
async fn leaders(cluster: &Cluster) -> (String, String) {
    cluster::wait_until(WAIT, "exactly one leading IM", || async {
        let mut leading = Vec::new();
        for im in IMS {
            if cluster.autoscale(im).await?.leader {
                leading.push(im);
            }
        }
        match leading[..] {
            [one] => Some((one.to_string(), IMS.iter().find(|i| **i != one)?.to_string())),
            _ => None,
        }
    })
    .await
    .expect("a leader")
}

enum Cut {
    /// The host's link down.
    Link(String),
    /// The host cut from these peers only.
    Routes { host: String, peers: Vec<String> },
}

impl Cut {
    fn set(&self, cluster: &Cluster, cut: bool) {
        let changed = match self {
            Cut::Link(host) => cluster.net.set_link(host, !cut),
            Cut::Routes { host, peers } => {
                let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
                cluster.net.set_cut(host, &peers, cut)
            }
        };
        changed.expect("change the network");
    }
}

struct SplitBrain {
    leader: String,
    other: String,
}

struct SplitFigures {
    stepped_down_after: f64,
    unhealthy_after: f64,
    other_led_after: f64,
    gap: f64,
    stepped_down_at: String,
    leading_since: String,
    healthy_again_after_heal: f64,
    polls: usize,
}

#[derive(Default)]
struct Seen {
    failovers: u64,
    streams: u64,
    quotes_during: u64,
    unhealthy: Vec<String>,
    split: Option<SplitFigures>,
}

struct Row {
    phase: String,
    customer: String,
    traded: Traded,
    seen: Seen,
}

impl Row {
    fn new(phase: &str, algo: &Algo, traded: Traded, seen: Seen) -> Row {
        Row { phase: phase.to_string(), customer: algo.customer.clone(), traded, seen }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_phase(
    cluster: &mut Cluster,
    algos: &[Algo],
    book: &mut Book,
    rows: &mut Vec<Row>,
    moves: &mut BTreeMap<String, Vec<String>>,
    phase: &str,
    tag: &str,
    cut: Cut,
) {
    run_phase_with(cluster, algos, book, rows, moves, phase, tag, cut, None).await;
}

/// Cuts, trades through the cut while watching the IMs, heals, waits for
/// the cluster to settle; records a row per algo.
#[allow(clippy::too_many_arguments)]
async fn run_phase_with(
    cluster: &mut Cluster,
    algos: &[Algo],
    book: &mut Book,
    rows: &mut Vec<Row>,
    moves: &mut BTreeMap<String, Vec<String>>,
    phase: &str,
    tag: &str,
    cut: Cut,
    brain: Option<SplitBrain>,
) -> Seen {
    println!("--- {phase}");
    let mut before = Vec::new();
    for algo in algos {
        let failovers = algo.run(|c: Arc<ClusterClient>| async move { c.failovers() }).await;
        before.push((failovers, algo.streams(), algo.quotes()));
    }
    let t0 = Instant::now();
    cut.set(cluster, true);

    // The algos trade through the cut; meanwhile the IMs are watched.
    let mut local_book = Book::default();
    let trading = async {
        let mut out = Vec::new();
        for algo in algos {
            out.push(trade(algo, &mut local_book, tag, t0).await);
        }
        out
    };
    // The watcher heals the cut after the hold, whether the algos traded or not.
    let watching = watch_ims(cluster, moves, brain.as_ref(), &cut, t0);
    let (traded, (unhealthy, mut split, healed)) = tokio::join!(trading, watching);
    for (customer, orders) in local_book.orders {
        for (coid, (id, rests)) in orders {
            let known = book.orders.entry(customer.clone()).or_default();
            if let Some((old, _)) = known.get(&coid) {
                assert_eq!(old, &id, "{customer}: {coid} became another order");
            }
            known.insert(coid, (id, rests));
        }
    }

    // Healed: wait until both IMs are healthy and see both nodes.
    if let (Some(b), Some(s)) = (brain.as_ref(), split.as_mut()) {
        cluster::wait_until(WAIT, &format!("{} healthy again", b.leader), || async {
            (cluster.healthz(&b.leader).await?.0 == 200).then_some(())
        })
        .await
        .expect("the IM recovers by itself");
        s.healthy_again_after_heal = healed.elapsed().as_secs_f64();
        let (now_leader, _) = leaders(cluster).await;
        println!("after the heal: {now_leader} leads (one leader)");
    }
    let all: Vec<&str> = NODES.iter().map(|(id, _)| *id).collect();
    for im in IMS {
        cluster::wait_until(WAIT, &format!("{im} healthy"), || async {
            (cluster.healthz(im).await?.0 == 200).then_some(())
        })
        .await
        .unwrap();
        cluster.wait_nodes(im, &all).await.expect("both nodes back in every IM's view");
    }
    cluster.check_alive().expect("every process still runs");
    track_assignments(cluster, moves).await;

    let mut seen_all = Seen::default();
    for ((algo, traded), (failovers, streams, quotes)) in algos.iter().zip(traded).zip(before) {
        let now = algo.run(|c: Arc<ClusterClient>| async move { c.failovers() }).await;
        let seen = Seen {
            failovers: now - failovers,
            streams: algo.streams() - streams,
            quotes_during: algo.quotes() - quotes,
            unhealthy: unhealthy.clone(),
            split: None,
        };
        rows.push(Row::new(phase, algo, traded, seen));
    }
    seen_all.split = split;
    // Every customer's assignment moved at most once in this phase.
    for (customer, history) in moves.iter() {
        let moved = history.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(moved <= 1, "{customer}'s TraderManager moved more than once: {history:?}");
    }
    seen_all
}

/// Polls the IMs during the hold: which ones answer `/healthz` 503, the
/// assignments, and (for a split brain) both IMs' autoscaler status; then
/// heals the cut and says when.
async fn watch_ims(
    cluster: &Cluster,
    moves: &mut BTreeMap<String, Vec<String>>,
    brain: Option<&SplitBrain>,
    cut: &Cut,
    t0: Instant,
) -> (Vec<String>, Option<SplitFigures>, Instant) {
    let mut unhealthy = BTreeSet::new();
    let mut figures = brain.map(|_| SplitFigures {
        stepped_down_after: f64::NAN,
        unhealthy_after: f64::NAN,
        other_led_after: f64::NAN,
        gap: f64::NAN,
        stepped_down_at: String::new(),
        leading_since: String::new(),
        healthy_again_after_heal: f64::NAN,
        polls: 0,
    });
    let hold_until = t0 + HOLD;
    // A split brain is watched until the other IM leads (bounded).
    let watch_until = t0 + if brain.is_some() { WAIT } else { HOLD };
    let mut done = false;
    while Instant::now() < watch_until && !(done && Instant::now() >= hold_until) {
        for im in IMS {
            if let Some((503, body)) = cluster.healthz(im).await {
                if unhealthy.insert(im.to_string()) {
                    let code = body["error"]["code"].as_str().unwrap_or("?").to_string();
                    println!("{im} /healthz 503 ({code}) {:.2} s after the cut", t0.elapsed().as_secs_f64());
                    if let (Some(b), Some(f)) = (brain, figures.as_mut()) {
                        if b.leader == im {
                            assert_eq!(code, "registry_unreachable", "{body}");
                            f.unhealthy_after = t0.elapsed().as_secs_f64();
                        }
                    }
                }
            }
        }
        track_assignments(cluster, moves).await;
        match (brain, figures.as_mut()) {
            (Some(b), Some(f)) => {
                let (l, o) = (cluster.autoscale(&b.leader).await, cluster.autoscale(&b.other).await);
                f.polls += 1;
                let at = t0.elapsed().as_secs_f64();
                let l_leads = l.as_ref().map(|s| s.leader);
                let o_leads = o.as_ref().map(|s| s.leader);
                assert!(
                    !(l_leads == Some(true) && o_leads == Some(true)),
                    "two IMs lead at once, {at:.2} s after the cut: {l:?} {o:?}"
                );
                if l_leads == Some(false) && f.stepped_down_after.is_nan() {
                    f.stepped_down_after = at;
                }
                if o_leads == Some(true) && f.other_led_after.is_nan() {
                    f.other_led_after = at;
                    let l = l.expect("the cut IM still answers its operators");
                    let o = o.expect("status");
                    let down = l.stepped_down_at.expect("the cut IM reported stepping down");
                    let up = o.leading_since.expect("the other IM says since when it leads");
                    assert!(down < up, "{} led at {up} before {} stepped down at {down}", b.other, b.leader);
                    f.gap = (up - down).num_milliseconds() as f64 / 1000.0;
                    f.stepped_down_at = down.to_rfc3339();
                    f.leading_since = up.to_rfc3339();
                    done = true;
                }
            }
            _ => done = true,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cut.set(cluster, false);
    let healed = Instant::now();
    println!("healed {:.2} s after the cut", t0.elapsed().as_secs_f64());
    if let (Some(b), Some(f)) = (brain, figures.as_ref()) {
        assert!(done, "{} never led after {} was cut from etcd", b.other, b.leader);
        assert!(!f.unhealthy_after.is_nan(), "{} never answered /healthz 503 while cut from etcd", b.leader);
    }
    (unhealthy.into_iter().collect(), figures, healed)
}

/// Appends each customer's assignment, when it changed.
async fn track_assignments(cluster: &Cluster, moves: &mut BTreeMap<String, Vec<String>>) {
    let Some(now) = cluster.assignments().await else { return };
    for (customer, node) in now {
        let history = moves.entry(customer).or_default();
        if history.last() != Some(&node) {
            history.push(node);
        }
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<38} {:<5} {:>8} {:>6} {:>5} {:>5} {:>6} {:<5} {:<10} errors seen by the algo",
        "phase", "algo", "trade s", "fails", "fovr", "strm", "quotes", "node", "IMs 503"
    );
    for r in rows {
        let errors: Vec<&str> = r.traded.errors.iter().map(String::as_str).collect();
        println!(
            "{:<38} {:<5} {:>8.2} {:>6} {:>5} {:>5} {:>6} {:<5} {:<10} {}",
            r.phase,
            r.customer,
            r.traded.after.as_secs_f64(),
            r.traded.failures,
            r.seen.failovers,
            r.seen.streams,
            r.seen.quotes_during,
            r.traded.node,
            if r.seen.unhealthy.is_empty() { "-".to_string() } else { r.seen.unhealthy.join(",") },
            if errors.is_empty() { "-".to_string() } else { errors.join("; ") },
        );
    }
    println!(
        "(trade s: from the cut until the phase's two orders were placed; fails: failed attempts; fovr: \
         ClusterClient failovers; strm: quote streams (re)opened; quotes: quotes received during the phase)"
    );
}

/// At the venue: every client order id is one order, the resting ones are
/// open once each, the position is the sum of the fills; in Lido: every
/// fill booked once, on one node, matching the venue.
async fn check_venue(cluster: &Cluster, book: &Book) {
    for (customer, orders) in &book.orders {
        // Open at the venue: exactly the resting orders, once each.
        let open = match cluster.exchange(VenueCommand::OpenOrders { account: customer.clone() }).await {
            Ok(Reply::Ok(ReplyBody::Orders(o))) => o,
            other => panic!("open orders at the exchange: {other:?}"),
        };
        let mut open_ids: Vec<String> = open.iter().map(|r| r.client_id.clone()).collect();
        open_ids.sort();
        let mut resting: Vec<String> = orders.values().filter(|(_, rests)| *rests).map(|(id, _)| id.clone()).collect();
        resting.sort();
        assert_eq!(open_ids, resting, "{customer}: the exchange holds each resting order exactly once");

        // Each marketable order: one order at the venue, filled.
        let mut venue_filled: BTreeMap<String, Decimal> = BTreeMap::new();
        for (coid, (id, rests)) in orders {
            let report = match cluster
                .exchange(VenueCommand::OrderStatus { account: customer.clone(), client_id: id.clone() })
                .await
            {
                Ok(Reply::Ok(ReplyBody::Order(r))) => r,
                other => panic!("{customer}: {coid} ({id}) at the exchange: {other:?}"),
            };
            if !rests {
                assert_eq!(report.status, OrderStatus::Filled, "{customer}: {coid} filled at the venue: {report:?}");
            }
            venue_filled.insert(id.clone(), report.filled_quantity);
        }
        let position = match cluster.exchange(VenueCommand::Positions { account: customer.clone() }).await {
            Ok(Reply::Ok(ReplyBody::Positions(p))) => {
                p.iter().filter(|p| p.symbol.to_string() == "BTC/USD").map(|p| p.quantity).sum::<Decimal>()
            }
            other => panic!("positions at the exchange: {other:?}"),
        };
        let filled: Decimal = venue_filled.values().copied().sum();
        assert_eq!(position, filled, "{customer}: the venue's position is its orders' fills (no order twice)");

        // In Lido: each fill booked once across the nodes, as the venue has it.
        let mut booked: BTreeMap<String, Decimal> = BTreeMap::new();
        let mut fill_ids = BTreeSet::new();
        for (node, _) in NODES {
            let session = cluster.node_session(node, customer).await.expect("a session on the node");
            let fills =
                cluster::wait_until(WAIT, "the node's fills", || async { session.fills().await.ok() }).await.unwrap();
            for f in fills {
                assert!(fill_ids.insert(f.fill_id.clone()), "{customer}: fill {} booked twice", f.fill_id);
                *booked.entry(f.order_id.clone()).or_default() += f.quantity;
            }
        }
        for (id, qty) in &venue_filled {
            let got = booked.get(id).copied().unwrap_or_default();
            assert_eq!(got, *qty, "{customer}: order {id}: Lido booked {got}, the venue filled {qty}");
        }
        assert!(
            booked.keys().all(|id| venue_filled.contains_key(id)),
            "{customer}: fills of orders the algo never placed: {booked:?}"
        );
        println!(
            "{customer}: {} client order ids = {} orders at the venue ({} open); position {position} = fills booked \
             in Lido {}",
            orders.len(),
            venue_filled.len(),
            open_ids.len(),
            booked.values().copied().sum::<Decimal>()
        );
    }
}

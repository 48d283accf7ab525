//! High availability on one machine, all on 127.0.0.1: a 3-member etcd
//! cluster, two InfrastructureManagers sharing it, three nodes at two
//! locations whose paper brokers trade on one shared paper exchange, and
//! algos (through `ClusterClient`) streaming quotes and holding orders.
//!
//! Each test kills or drains something, then checks what must hold: every
//! algo still finds each of its orders exactly once (same order id), the
//! exchange holds each client order id once, and the sticky TraderManager
//! assignments are what they were (but for customers of a node that died,
//! which are moved once, the same at both IMs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lido_shared::api::{Channel, PlaceOrder, ServerMessage};
use lido_shared::client::{ClusterClient, LidoClient};
use lido_shared::model::Side;
use lido_tests::etcd_cluster::EtcdCluster;
use lido_tests::exchange::PaperExchange;
use lido_tests::{eventually, lidoctl_path, paper_limit, temp_data_dir, TestDaemon};
use rust_decimal_macros::dec;

const WAIT: Duration = Duration::from_secs(40);
const SECRET: &str = "ha-test-cluster-secret-0123456789";
const NODES: [(&str, &str); 3] = [("n1", "ny"), ("n2", "ny"), ("n3", "ldn")];

/// The whole cluster; every process is killed on drop.
struct Rig {
    etcd: EtcdCluster,
    exchange: PaperExchange,
    ims: Vec<Option<TestDaemon>>,
    nodes: BTreeMap<String, Option<TestDaemon>>,
    dir: PathBuf,
    node_config: PathBuf,
}

impl Rig {
    /// `after_hours`: give the IMs a window that is always open, so a
    /// draining idle node is stopped at once.
    async fn start(after_hours: bool) -> Rig {
        let dir = temp_data_dir();
        let etcd = EtcdCluster::start(3).expect("a 3-member etcd cluster (apt-get install etcd-server)");
        let secret = dir.join("cluster-secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let exchange = PaperExchange::start(&secret, SECRET);
        let exchange_url = exchange.url.clone();

        let mut im_config = format!(
            "cluster_secret_file = {:?}\n[cluster]\nregistry = \"etcd\"\netcd_endpoints = {:?}\n\
             checkin_interval_ms = 250\nnode_ttl_ms = 3000\n",
            secret.display().to_string(),
            etcd.client_urls(),
        );
        if after_hours {
            im_config.push_str("after_hours = { start = \"00:00\", end = \"23:59\", tz = \"America/New_York\" }\n");
        }
        let im_config_path = dir.join("im.toml");
        std::fs::write(&im_config_path, im_config).unwrap();
        let node_config = dir.join("node.toml");
        std::fs::write(
            &node_config,
            format!(
                "cluster_secret_file = {:?}\n[cluster]\ncheckin_interval_ms = 250\nnode_ttl_ms = 3000\n\
                 [[broker]]\nname = \"paper-1\"\ntype = \"paper\"\n[broker.options]\nexchange = {:?}\n\
                 [[market]]\nname = \"paper\"\nbrokers = [\"paper-1\"]\n",
                secret.display().to_string(),
                exchange_url,
            ),
        )
        .unwrap();

        let ims: Vec<Option<TestDaemon>> = ["im1", "im2"]
            .iter()
            .map(|id| {
                Some(TestDaemon::spawn(&[
                    "--config",
                    im_config_path.to_str().unwrap(),
                    "--role",
                    "im",
                    "--node-id",
                    id,
                ]))
            })
            .collect();
        let mut rig = Rig { etcd, exchange, ims, nodes: BTreeMap::new(), dir, node_config };
        for (id, location) in NODES {
            let node = rig.spawn_node(id, location);
            rig.nodes.insert(id.to_string(), Some(node));
        }
        for im in rig.im_clients() {
            wait_for_nodes(&im, &["n1", "n2", "n3"]).await;
        }
        rig
    }

    fn spawn_node(&self, id: &str, location: &str) -> TestDaemon {
        let ims = self.im_urls();
        let mut args = vec!["--config", self.node_config.to_str().unwrap(), "--role", "node", "--node-id", id];
        args.extend(["--location", location]);
        for im in &ims {
            args.extend(["--im", im.as_str()]);
        }
        TestDaemon::spawn(&args)
    }

    fn im_urls(&self) -> Vec<String> {
        self.ims.iter().flatten().map(|d| d.url.clone()).collect()
    }

    /// Every IM's URL, the dead included (clients must fail over).
    fn all_im_urls(&self) -> Vec<String> {
        self.ims
            .iter()
            .enumerate()
            .map(|(i, d)| d.as_ref().map(|d| d.url.clone()).unwrap_or(format!("im{i}")))
            .collect()
    }

    fn im_clients(&self) -> Vec<LidoClient> {
        self.ims.iter().flatten().map(|d| d.client()).collect()
    }

    fn node_url(&self, id: &str) -> String {
        self.nodes[id].as_ref().expect("node alive").url.clone()
    }

    /// The sticky assignments as each live IM reads them: all the same.
    async fn assignments(&self) -> BTreeMap<String, String> {
        let mut seen: Option<BTreeMap<String, String>> = None;
        for im in self.im_clients() {
            let map: BTreeMap<String, String> =
                im.send(im.req(reqwest::Method::GET, "/v1/cluster/assignments")).await.expect("assignments");
            if let Some(first) = &seen {
                assert_eq!(first, &map, "two IMs disagree on the sticky assignments");
            }
            seen = Some(map);
        }
        seen.expect("a live IM")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.nodes.clear();
        self.ims.clear();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

async fn wait_for_nodes(im: &LidoClient, ids: &[&str]) {
    eventually(WAIT, &format!("nodes {ids:?} in the view of {}", im.base_url()), || async {
        let snapshot = im.cluster().await.ok()?;
        let seen: Vec<&str> = snapshot.nodes.iter().map(|n| n.id.as_str()).collect();
        (seen == ids).then_some(())
    })
    .await;
}

/// An algo: its cluster client, the orders it placed, and a task reading
/// its quote stream (which it re-opens, through the client, when it ends).
struct Algo {
    customer: String,
    client: std::sync::Arc<ClusterClient>,
    /// client order id → order id.
    orders: BTreeMap<String, String>,
    quotes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    streamer: tokio::task::JoinHandle<()>,
}

impl Drop for Algo {
    fn drop(&mut self) {
        self.streamer.abort();
    }
}

impl Algo {
    async fn start(rig: &Rig, i: usize) -> Algo {
        let customer = format!("algo{i}");
        let location = if i.is_multiple_of(2) { "ny" } else { "ldn" };
        let client = std::sync::Arc::new(
            ClusterClient::new(&rig.im_urls(), &customer, None, None).unwrap().prefer_location(location),
        );
        let quotes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let streamer = tokio::spawn(stream_quotes(client.clone(), quotes.clone()));
        let mut algo = Algo { customer, client, orders: BTreeMap::new(), quotes, streamer };
        for n in 0..2 {
            algo.place(&format!("{}-rest-{n}", algo.customer)).await;
        }
        algo
    }

    /// A resting buy far below the market, placed (or found) by client id.
    async fn place(&mut self, client_order_id: &str) -> lido_shared::client::Placed {
        let order: PlaceOrder = paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1000), client_order_id);
        let placed = eventually(WAIT, "an order placed", || async { self.client.place_order(&order).await.ok() }).await;
        if let Some(known) = self.orders.get(client_order_id) {
            assert_eq!(known, &placed.order.order_id, "a client order id came back with another order");
        }
        self.orders.insert(client_order_id.to_string(), placed.order.order_id.clone());
        placed
    }

    /// The quotes seen so far.
    fn quotes(&self) -> u64 {
        self.quotes.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn node(&self) -> String {
        self.client.session().await.expect("a session").node
    }

    /// Every order it placed is open, once, with the same order id.
    async fn check_orders(&self, exchange: &PaperExchange) {
        let open = eventually(WAIT, &format!("{}'s open orders", self.customer), || async {
            let open = self.client.open_orders().await.ok()?;
            (open.len() >= self.orders.len()).then_some(open)
        })
        .await;
        let mut found: BTreeMap<String, String> = BTreeMap::new();
        for o in &open {
            assert!(
                found.insert(o.client_order_id.clone(), o.order_id.clone()).is_none(),
                "{}: client order id {} listed twice",
                self.customer,
                o.client_order_id
            );
        }
        assert_eq!(found, self.orders, "{}: lost or unknown orders", self.customer);
        let at_venue = exchange.open_orders(&self.customer).await;
        let mut ids: Vec<String> = at_venue.iter().map(|r| r.client_id.clone()).collect();
        ids.sort();
        let mut want: Vec<String> = self.orders.values().cloned().collect();
        want.sort();
        assert_eq!(ids, want, "{}: the exchange holds each order exactly once", self.customer);
    }
}

/// Reads quotes on the algo's node; when the stream ends (its node died),
/// opens a new one through the cluster client and subscribes again.
async fn stream_quotes(client: std::sync::Arc<ClusterClient>, quotes: std::sync::Arc<std::sync::atomic::AtomicU64>) {
    loop {
        let Ok(mut stream) = client.stream().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if stream.subscribe(Channel::Quotes, "paper", Some("BTC/USD")).await.is_err() {
            continue;
        }
        while let Ok(message) = stream.next().await {
            if matches!(message, ServerMessage::Event(_)) {
                quotes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

async fn start_algos(rig: &Rig, n: usize) -> Vec<Algo> {
    let mut algos = Vec::new();
    for i in 0..n {
        algos.push(Algo::start(rig, i).await);
    }
    for algo in &algos {
        let before = algo.quotes();
        eventually(WAIT, "quotes streaming", || async { (algo.quotes() > before).then_some(()) }).await;
    }
    algos
}

/// Every algo's orders intact, every stream flowing again.
async fn check_all(rig: &Rig, algos: &[Algo]) {
    for algo in algos {
        algo.check_orders(&rig.exchange).await;
        let before = algo.quotes();
        eventually(WAIT, &format!("{} streaming", algo.customer), || async { (algo.quotes() > before).then_some(()) })
            .await;
    }
}

#[tokio::test]
async fn losing_an_im_or_an_etcd_member_loses_nothing() {
    let mut rig = Rig::start(false).await;
    let algos = start_algos(&rig, 4).await;
    let assigned = rig.assignments().await;
    assert_eq!(assigned.len(), algos.len(), "each customer has its TraderManager: {assigned:?}");

    // A console on both IMs, the first of which dies.
    let urls = rig.all_im_urls().join(",");
    let mut tui_clients = Vec::new();
    for url in rig.im_urls() {
        tui_clients.push(LidoClient::new(url).unwrap());
    }
    let (actions_tx, mut actions) = tokio::sync::mpsc::channel(1024);
    let (_commands_tx, commands) = tokio::sync::mpsc::channel(16);
    let cancel = tokio_util::sync::CancellationToken::new();
    let tui = tokio::spawn(lido_tui::net::run(tui_clients, actions_tx, commands, cancel.clone()));
    let im1_url = rig.im_urls()[0].clone();
    let im2_url = rig.im_urls()[1].clone();
    wait_connected(&mut actions, &im1_url).await;

    rig.ims[0].as_mut().unwrap().kill9();
    rig.ims[0] = None;

    // lido-tui's network task moves to the other IM and gets the whole cluster.
    wait_connected(&mut actions, &im2_url).await;
    let snapshot = tokio::time::timeout(WAIT, async {
        while let Some(action) = actions.recv().await {
            if let lido_tui::action::Action::Message(lido_shared::cluster::WatchMessage::Snapshot {
                snapshot, ..
            }) = action
            {
                return snapshot;
            }
        }
        panic!("the console's network task ended");
    })
    .await
    .expect("a snapshot from the second IM");
    assert_eq!(snapshot.nodes.len(), 3, "{snapshot:?}");
    cancel.cancel();
    let _ = tui.await;

    // lidoctl, given both URLs, answers from the live one.
    let out = std::process::Command::new(lidoctl_path()).args(["--url", &urls, "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "lidoctl status failed: {}", String::from_utf8_lossy(&out.stderr));
    for (id, _) in NODES {
        assert!(text.contains(id), "lidoctl status lists {id}: {text}");
    }

    // New sessions and orders go through the surviving IM.
    let mut algos = algos;
    for algo in &mut algos {
        let id = format!("{}-after-im", algo.customer);
        algo.place(&id).await;
    }
    check_all(&rig, &algos).await;
    assert_eq!(rig.assignments().await, assigned, "the sticky assignments changed");

    // One etcd member of three dies: nothing notices.
    rig.etcd.kill_member(1);
    for algo in &mut algos {
        let id = format!("{}-after-etcd", algo.customer);
        algo.place(&id).await;
    }
    let im = rig.im_clients().remove(0);
    wait_for_nodes(&im, &["n1", "n2", "n3"]).await;
    tokio::time::sleep(Duration::from_secs(4)).await; // longer than a node's ttl: check-ins keep them
    wait_for_nodes(&im, &["n1", "n2", "n3"]).await;
    let fresh = ClusterClient::new(&rig.im_urls(), "newcomer", None, None).unwrap();
    eventually(WAIT, "a new session with one etcd member down", || async { fresh.session().await.ok() }).await;
    check_all(&rig, &algos).await;
    let mut now = rig.assignments().await;
    assert!(now.remove("newcomer").is_some(), "the newcomer got a TraderManager");
    assert_eq!(now, assigned, "the sticky assignments changed");
}

async fn wait_connected(actions: &mut tokio::sync::mpsc::Receiver<lido_tui::action::Action>, url: &str) {
    tokio::time::timeout(WAIT, async {
        while let Some(action) = actions.recv().await {
            if let lido_tui::action::Action::Connected { url: u, .. } = action {
                if u == url {
                    return;
                }
            }
        }
        panic!("the console's network task ended");
    })
    .await
    .unwrap_or_else(|_| panic!("the console connected to {url}"));
}

#[tokio::test]
async fn a_killed_node_loses_no_order_and_its_algos_carry_on_elsewhere() {
    let mut rig = Rig::start(false).await;
    let mut algos = start_algos(&rig, 6).await;
    let assigned = rig.assignments().await;
    let mut on: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, algo) in algos.iter().enumerate() {
        on.entry(algo.node().await).or_default().push(i);
    }
    // The node with the most algos dies without a goodbye.
    let victim = on.iter().max_by_key(|(_, v)| v.len()).map(|(n, _)| n.clone()).unwrap();
    let moved: Vec<usize> = on[&victim].clone();
    assert!(!moved.is_empty());
    rig.nodes.get_mut(&victim).unwrap().as_mut().unwrap().kill9();
    rig.nodes.insert(victim.clone(), None);

    // Its algos' next calls find another node by themselves; their orders
    // are there (reconciled from the exchange), and a retried order is the
    // same order.
    for &i in &moved {
        let algo = &mut algos[i];
        let first = algo.orders.keys().next().unwrap().clone();
        let again = algo.place(&first).await;
        assert!(!again.created, "{}: a retried client order id made a second order", algo.customer);
        assert_ne!(algo.node().await, victim);
        assert!(algo.client.failovers() >= 1, "{} moved by itself", algo.customer);
        let id = format!("{}-after-kill", algo.customer);
        algo.place(&id).await;
    }
    check_all(&rig, &algos).await;

    // The node leaves both IMs' views; nothing new goes there.
    let live: Vec<&str> = NODES.iter().map(|(id, _)| *id).filter(|id| *id != victim).collect();
    for im in rig.im_clients() {
        wait_for_nodes(&im, &live).await;
    }
    // Sticky assignments: unchanged but for customers whose TraderManager
    // was on the dead node: once it has left the cluster, their next
    // session moves it to a live node, once, the same at both IMs.
    for (customer, node) in &assigned {
        if node == &victim {
            let again = ClusterClient::new(&rig.im_urls(), customer, None, None).unwrap();
            eventually(WAIT, "a new session", || async { again.session().await.ok() }).await;
        }
    }
    let now = rig.assignments().await;
    for (customer, node) in &assigned {
        if node == &victim {
            let moved_to = &now[customer];
            assert!(live.contains(&moved_to.as_str()), "{customer} moved to a live node: {moved_to}");
        } else {
            assert_eq!(&now[customer], node, "{customer}'s TraderManager moved without cause");
        }
    }

    // The node id comes back (a new machine, an empty journal): it doubles nothing.
    let location = NODES.iter().find(|(id, _)| *id == victim).unwrap().1;
    let back = rig.spawn_node(&victim, location);
    rig.nodes.insert(victim.clone(), Some(back));
    for im in rig.im_clients() {
        wait_for_nodes(&im, &["n1", "n2", "n3"]).await;
    }
    check_all(&rig, &algos).await;
}

#[tokio::test]
async fn a_drained_node_stops_after_hours_without_cutting_a_session() {
    let mut rig = Rig::start(true).await;
    let im = rig.im_clients().remove(0);
    // An algo holding a session and an order on n3.
    let lone = ClusterClient::new(&rig.im_urls(), "londoner", None, None).unwrap().prefer_location("ldn");
    let session = lone.session().await.unwrap();
    assert_eq!(session.node, "n3", "the ldn preference");
    let order = paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1000), "ldn-1");
    let placed = lone.place_order(&order).await.unwrap();
    let mut stream = lone.stream().await.unwrap();
    stream.subscribe(Channel::Quotes, "paper", Some("BTC/USD")).await.unwrap();
    let assigned = rig.assignments().await;

    let out = std::process::Command::new(lidoctl_path())
        .args(["--url", &rig.im_urls().join(","), "drain", "node", "n3", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "lidoctl drain node: {}", String::from_utf8_lossy(&out.stderr));

    // No new session goes there, even asked for ldn; the old one goes on.
    let newcomer = ClusterClient::new(&rig.im_urls(), "newcomer", None, None).unwrap().prefer_location("ldn");
    assert_ne!(newcomer.session().await.unwrap().node, "n3");
    for _ in 0..3 {
        let message = tokio::time::timeout(WAIT, stream.next()).await.expect("quotes go on").expect("stream open");
        assert!(matches!(message, ServerMessage::Event(_) | ServerMessage::Ack(_)), "{message:?}");
    }
    // In the window but not idle (a stream, an open order): it keeps running.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n3 = rig.node_url("n3");
    assert!(LidoClient::new(&n3).unwrap().health().await.is_ok(), "a busy draining node was stopped");

    // The algo finishes: its order canceled, its stream closed. Idle now,
    // the node stops on its own, cleanly.
    let canceled = lone.cancel_order(&placed.order.order_id).await.unwrap();
    assert_eq!(canceled.order_id, placed.order.order_id);
    stream.close().await.unwrap();
    let node = rig.nodes.get_mut("n3").unwrap().as_mut().unwrap();
    let status = node.wait_exit(WAIT).expect("the idle draining node stopped in its after-hours window");
    assert!(status.success(), "it shut down cleanly: {status:?}");
    rig.nodes.insert("n3".into(), None);
    wait_for_nodes(&im, &["n1", "n2"]).await;

    // Undrain reverses a drain before the stop: n2 drained, then undrained, keeps running.
    let drained = im.drain_node("n2").await.unwrap();
    assert!(drained.draining);
    im.undrain_node("n2").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(LidoClient::new(rig.node_url("n2")).unwrap().health().await.is_ok(), "n2 was stopped");

    // The order was canceled, not lost; assignments unchanged (the newcomer added).
    let mut now = rig.assignments().await;
    now.remove("newcomer");
    assert_eq!(now, assigned);
}

//! Registry conformance: the same checks against the in-memory backend and
//! the etcd backend (a real etcd, see `lido_tests::etcd_cluster`). Two
//! registry instances stand for two InfrastructureManagers: two clients of
//! one etcd, or one shared `MemoryRegistry` (a single IM has one).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lido_shared::cluster::{NodeInfo, NodeLoad};
use lido_tests::etcd_cluster::EtcdCluster;
use lidod::cluster::{open_registry, NodeRecord, Registry, RegistryChange, RegistryError};
use tokio::sync::{broadcast, watch};
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;

/// Bound on every wait in these tests (etcd leases count whole seconds and
/// expire on the leader's next check).
const WAIT: Duration = Duration::from_secs(20);

struct Pair {
    name: &'static str,
    a: Arc<dyn Registry>,
    b: Arc<dyn Registry>,
    _etcd: Option<EtcdCluster>,
}

async fn etcd_pair(members: usize) -> Pair {
    let etcd = EtcdCluster::start(members).expect("start etcd");
    let urls = etcd.client_urls();
    let a = open_registry("etcd", &urls, "/lido").await.expect("connect IM a to etcd");
    let b = open_registry("etcd", &urls, "/lido").await.expect("connect IM b to etcd");
    Pair { name: "etcd", a, b, _etcd: Some(etcd) }
}

/// Both backends, each as two IMs' views.
async fn pairs() -> Vec<Pair> {
    let memory = open_registry("memory", &[], "/lido").await.expect("memory registry");
    vec![Pair { name: "memory", a: memory.clone(), b: memory, _etcd: None }, etcd_pair(1).await]
}

fn record(id: &str, location: &str) -> NodeRecord {
    let info = NodeInfo {
        id: id.to_string(),
        location: location.to_string(),
        draining: false,
        api_url: format!("http://127.0.0.1:1/{id}"),
        managers: Vec::new(),
        services: Vec::new(),
        load: NodeLoad::default(),
    };
    NodeRecord { info, watch_url: format!("ws://127.0.0.1:1/{id}/v1/cluster/watch"), checked_in: Utc::now() }
}

/// The next change on `rx` that `want` accepts, within [`WAIT`].
async fn next_change(
    rx: &mut broadcast::Receiver<RegistryChange>,
    what: &str,
    want: impl Fn(&RegistryChange) -> bool,
) -> RegistryChange {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, rx.recv()).await {
            Ok(Ok(c)) if want(&c) => return c,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("watch closed while waiting for {what}: {e}"),
            Err(_) => panic!("no {what} on the watch within {WAIT:?}"),
        }
    }
}

/// Waits until the campaign receiver holds `want`.
async fn until_leader(rx: &mut watch::Receiver<Option<String>>, want: impl Fn(&Option<String>) -> bool, what: &str) {
    let seen = timeout(WAIT, async { rx.wait_for(|l| want(l)).await.is_ok() }).await;
    // Ok(false): the campaign ended; its last value must be the one.
    if !matches!(seen, Ok(true)) && !want(&rx.borrow()) {
        panic!("{what} not seen within {WAIT:?}; leader is {:?}", *rx.borrow());
    }
}

#[tokio::test]
async fn registry_check_in_then_nodes() {
    for p in pairs().await {
        let (n1, n2) = (record("n1", "ny"), record("n2", "ld"));
        p.a.check_in(&n2, Duration::from_secs(10)).await.unwrap();
        p.a.check_in(&n1, Duration::from_secs(10)).await.unwrap();
        assert_eq!(p.a.nodes().await.unwrap(), vec![n1.clone(), n2.clone()], "{}", p.name);
        assert_eq!(p.b.nodes().await.unwrap(), vec![n1.clone(), n2.clone()], "{}: the other IM", p.name);
        // Checking in again keeps one entry, with the new record.
        let mut again = n1.clone();
        again.checked_in = Utc::now();
        p.b.check_in(&again, Duration::from_secs(10)).await.unwrap();
        assert_eq!(p.a.nodes().await.unwrap(), vec![again, n2], "{}", p.name);
        p.a.remove_node("n1").await.unwrap();
        let ids: Vec<String> = p.b.nodes().await.unwrap().into_iter().map(|n| n.info.id).collect();
        assert_eq!(ids, vec!["n2".to_string()], "{}: removed", p.name);
        assert!(!p.a.backend().is_empty());
    }
}

#[tokio::test]
async fn registry_entry_vanishes_after_ttl() {
    for p in pairs().await {
        let mut changes = p.b.watch();
        let n = record("short", "ny");
        p.a.check_in(&n, Duration::from_secs(1)).await.unwrap();
        next_change(&mut changes, "the check-in", |c| matches!(c, RegistryChange::Node(r) if r.info.id == "short"))
            .await;
        let deadline = Instant::now() + WAIT;
        while !p.a.nodes().await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "{}: node still there {WAIT:?} after a 1 s ttl", p.name);
            sleep(Duration::from_millis(200)).await;
        }
        next_change(&mut changes, "NodeGone", |c| *c == RegistryChange::NodeGone("short".into())).await;
        // A check-in after expiry brings it back (a new lease on etcd).
        p.a.check_in(&n, Duration::from_secs(10)).await.unwrap();
        assert_eq!(p.b.nodes().await.unwrap().len(), 1, "{}: back after checking in again", p.name);
    }
}

#[tokio::test]
async fn registry_drain_flags() {
    for p in pairs().await {
        let mut changes = p.b.watch();
        assert!(p.a.draining().await.unwrap().is_empty());
        p.a.set_draining("n1", true).await.unwrap();
        p.a.set_draining("n1", true).await.unwrap();
        p.a.set_draining("n2", true).await.unwrap();
        assert_eq!(p.b.draining().await.unwrap(), ["n1".to_string(), "n2".into()].into(), "{}", p.name);
        p.b.set_draining("n1", false).await.unwrap();
        assert_eq!(p.a.draining().await.unwrap(), ["n2".to_string()].into(), "{}", p.name);
        let expect = [
            RegistryChange::Draining { node: "n1".into(), draining: true },
            RegistryChange::Draining { node: "n2".into(), draining: true },
            RegistryChange::Draining { node: "n1".into(), draining: false },
        ];
        for want in expect {
            // In order, and the second `true` for n1 is no change at all.
            let got = next_change(&mut changes, "a drain change", |_| true).await;
            assert_eq!(got, want, "{}", p.name);
        }
    }
}

#[tokio::test]
async fn registry_settings() {
    for p in pairs().await {
        assert_eq!(p.a.setting("min_nodes").await.unwrap(), None, "{}", p.name);
        p.a.put_setting("min_nodes", "2").await.unwrap();
        assert_eq!(p.b.setting("min_nodes").await.unwrap().as_deref(), Some("2"), "{}", p.name);
        p.b.put_setting("min_nodes", "3").await.unwrap();
        assert_eq!(p.a.setting("min_nodes").await.unwrap().as_deref(), Some("3"), "{}", p.name);
    }
}

#[tokio::test]
async fn registry_concurrent_assign_has_one_winner() {
    for p in pairs().await {
        for i in 0..5 {
            let customer = format!("c{i}");
            let (x, y) = tokio::join!(p.a.assign(&customer, "n1"), p.b.assign(&customer, "n2"));
            let (x, y) = (x.unwrap(), y.unwrap());
            assert_eq!(x, y, "{}: both IMs answer the winner", p.name);
            assert!(x == "n1" || x == "n2", "{}: {x}", p.name);
            // Sticky: a later ask gets the same node.
            assert_eq!(p.a.assign(&customer, "n3").await.unwrap(), x, "{}", p.name);
            assert_eq!(p.b.assignments().await.unwrap().get(&customer), Some(&x), "{}", p.name);
        }
    }
}

#[tokio::test]
async fn registry_order_claim_has_one_holder_for_good() {
    for p in pairs().await {
        for i in 0..5 {
            let order = format!("order-{i}");
            let (x, y) = tokio::join!(p.a.claim_order(&order, "n1"), p.b.claim_order(&order, "n2"));
            let (x, y) = (x.unwrap(), y.unwrap());
            assert_eq!(x, y, "{}: both IMs answer the one holder", p.name);
            assert!(x == "n1" || x == "n2", "{}: {x}", p.name);
            // The holder keeps it: asking again, from either side, changes nothing.
            assert_eq!(p.b.claim_order(&order, "n3").await.unwrap(), x, "{}", p.name);
            assert_eq!(p.a.claim_order(&order, &x).await.unwrap(), x, "{}", p.name);
        }
        // Claims are per order id.
        assert_eq!(p.a.claim_order("order-other", "n3").await.unwrap(), "n3", "{}", p.name);
    }
}

#[tokio::test]
async fn registry_reassign_is_compare_and_swap() {
    for p in pairs().await {
        assert_eq!(p.a.assign("alice", "n1").await.unwrap(), "n1");
        // Not on n2: nothing moves.
        assert_eq!(p.b.reassign("alice", "n2", "n3").await.unwrap(), "n1", "{}", p.name);
        assert_eq!(p.b.reassign("alice", "n1", "n3").await.unwrap(), "n3", "{}", p.name);
        assert_eq!(p.a.assignments().await.unwrap().get("alice").map(String::as_str), Some("n3"), "{}", p.name);
        // Two IMs moving the customer off n3 at once: one move wins.
        let (x, y) = tokio::join!(p.a.reassign("alice", "n3", "n4"), p.b.reassign("alice", "n3", "n5"));
        let (x, y) = (x.unwrap(), y.unwrap());
        let now = p.a.assignments().await.unwrap()["alice"].clone();
        assert!(now == "n4" || now == "n5", "{}: {now}", p.name);
        assert!(x == now || y == now, "{}: one of {x}, {y} is {now}", p.name);
        // No assignment yet: it gets `to`.
        assert_eq!(p.a.reassign("bob", "n1", "n2").await.unwrap(), "n2", "{}", p.name);
    }
}

#[tokio::test]
async fn registry_watch_sees_the_other_instance() {
    for p in pairs().await {
        let mut changes = p.b.watch();
        let n = record("n1", "ny");
        p.a.check_in(&n, Duration::from_secs(10)).await.unwrap();
        p.a.set_draining("n1", true).await.unwrap();
        p.a.assign("alice", "n1").await.unwrap();
        p.a.put_setting("max_nodes", "4").await.unwrap();
        p.a.remove_node("n1").await.unwrap();
        let expect = [
            RegistryChange::Node(n.clone()),
            RegistryChange::Draining { node: "n1".into(), draining: true },
            RegistryChange::Assigned { customer: "alice".into(), node: "n1".into() },
            RegistryChange::Setting { key: "max_nodes".into(), value: Some("4".into()) },
            RegistryChange::NodeGone("n1".into()),
        ];
        for want in expect {
            let got = next_change(&mut changes, "a change", |_| true).await;
            assert_eq!(got, want, "{}", p.name);
        }
        // The same check-in again is no change (it only renews the ttl).
        p.a.check_in(&n, Duration::from_secs(10)).await.unwrap();
        p.a.check_in(&n, Duration::from_secs(10)).await.unwrap();
        p.a.put_setting("marker", "1").await.unwrap();
        assert_eq!(next_change(&mut changes, "a change", |_| true).await, RegistryChange::Node(n.clone()));
        assert!(matches!(next_change(&mut changes, "a change", |_| true).await, RegistryChange::Setting { .. }));
    }
}

/// One IM alone leads, and stops leading when told to (both backends).
#[tokio::test]
async fn registry_campaign_alone_leads_until_stopped() {
    for p in pairs().await {
        let stop = CancellationToken::new();
        let mut rx = p.a.campaign("im-a", stop.clone());
        until_leader(&mut rx, |l| l.as_deref() == Some("im-a"), "im-a leading").await;
        stop.cancel();
        until_leader(&mut rx, Option::is_none, "no leader after stop").await;
    }
}

/// Two IMs on etcd: exactly one leads; stop it and the other takes over.
#[tokio::test]
async fn registry_campaign_two_ims_one_leader_then_failover() {
    let p = etcd_pair(1).await;
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let rx_a = p.a.campaign("im-a", stop_a.clone());
    let rx_b = p.b.campaign("im-b", stop_b.clone());
    let deadline = Instant::now() + WAIT;
    let leader = loop {
        let (la, lb) = (rx_a.borrow().clone(), rx_b.borrow().clone());
        if let (Some(la), Some(lb)) = (&la, &lb) {
            assert_eq!(la, lb, "two IMs see different leaders");
            break la.clone();
        }
        assert!(Instant::now() < deadline, "no agreed leader within {WAIT:?}: a sees {la:?}, b sees {lb:?}");
        sleep(Duration::from_millis(50)).await;
    };
    // It stays one leader for a while (both lease renewals go on).
    sleep(Duration::from_secs(2)).await;
    assert_eq!(rx_a.borrow().as_deref(), Some(leader.as_str()));
    assert_eq!(rx_b.borrow().as_deref(), Some(leader.as_str()));

    let (stop_leader, mut rx_other, other) =
        if leader == "im-a" { (stop_a, rx_b, "im-b") } else { (stop_b, rx_a, "im-a") };
    stop_leader.cancel();
    until_leader(&mut rx_other, |l| l.as_deref() == Some(other), "the other IM leading").await;
}

/// A leader that loses etcd sees no leader (never keeps acting), and leads
/// again once etcd is back.
#[tokio::test]
async fn registry_campaign_leader_loses_the_lead_with_etcd() {
    let mut p = etcd_pair(1).await;
    let stop = CancellationToken::new();
    let mut rx = p.a.campaign("im-a", stop.clone());
    until_leader(&mut rx, |l| l.as_deref() == Some("im-a"), "im-a leading").await;
    let etcd = p._etcd.as_mut().expect("etcd");
    etcd.kill_member(0);
    until_leader(&mut rx, Option::is_none, "no leader while etcd is down").await;
    etcd.restart_member(0).expect("restart etcd");
    until_leader(&mut rx, |l| l.as_deref() == Some("im-a"), "im-a leading again").await;
    stop.cancel();
}

/// Three etcd members, one killed: reads, writes, assign and the watch go on.
#[tokio::test]
async fn registry_survives_one_of_three_etcd_members() {
    let mut p = etcd_pair(3).await;
    let mut changes = p.b.watch();
    p.a.assign("alice", "n1").await.unwrap();
    let etcd = p._etcd.as_mut().expect("etcd");
    for victim in [0, 1] {
        etcd.kill_member(victim);
        let n = record(&format!("after-{victim}"), "ny");
        p.a.check_in(&n, Duration::from_secs(10)).await.expect("check in with a member down");
        assert!(p.b.nodes().await.expect("nodes with a member down").contains(&n));
        p.b.put_setting("k", &victim.to_string()).await.expect("put with a member down");
        assert_eq!(p.a.setting("k").await.unwrap(), Some(victim.to_string()));
        assert_eq!(p.b.assign("alice", "n2").await.expect("assign with a member down"), "n1");
        let customer = format!("c{victim}");
        let (x, y) = tokio::join!(p.a.assign(&customer, "x"), p.b.assign(&customer, "y"));
        assert_eq!(x.unwrap(), y.unwrap());
        let id = n.info.id.clone();
        next_change(&mut changes, "the check-in", |c| matches!(c, RegistryChange::Node(r) if r.info.id == id)).await;
        etcd.restart_member(victim).expect("restart the member");
    }
}

#[tokio::test]
async fn registry_unreachable_etcd_is_an_error_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let err = match timeout(
        WAIT,
        lidod::cluster::etcd::EtcdRegistry::connect(&[format!("http://127.0.0.1:{port}")], "/lido"),
    )
    .await
    {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("connected to nothing"),
        Err(_) => panic!("connect hung for {WAIT:?}"),
    };
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
    assert!(started.elapsed() < WAIT);
    let err = open_registry("zookeeper", &[], "/lido").await.err().expect("an unknown backend");
    assert!(err.to_string().contains("memory or etcd"), "{err}");
}

/// Three etcd members, two killed: no quorum, so every call fails with
/// `Unavailable` within its deadline (never hangs, never guesses); one
/// member back and it all works again.
#[tokio::test]
async fn registry_lost_quorum_is_unavailable_then_recovers() {
    let mut p = etcd_pair(3).await;
    p.a.put_setting("k", "1").await.unwrap();
    let etcd = p._etcd.as_mut().expect("etcd");
    etcd.kill_member(1);
    etcd.kill_member(2);
    let started = Instant::now();
    let put = timeout(WAIT, p.a.put_setting("k", "2")).await.expect("put hung without quorum");
    assert!(matches!(put, Err(RegistryError::Unavailable(_))), "{put:?}");
    let assign = timeout(WAIT, p.b.assign("alice", "n1")).await.expect("assign hung without quorum");
    assert!(matches!(assign, Err(RegistryError::Unavailable(_))), "{assign:?}");
    let read = timeout(WAIT, p.b.nodes()).await.expect("read hung without quorum");
    assert!(matches!(read, Err(RegistryError::Unavailable(_))), "{read:?}");
    assert!(started.elapsed() < WAIT * 2);
    etcd.restart_member(1).expect("restart a member");
    let deadline = Instant::now() + WAIT;
    loop {
        match p.a.put_setting("k", "3").await {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "no recovery within {WAIT:?}: {e}"),
        }
    }
    assert_eq!(p.b.setting("k").await.unwrap().as_deref(), Some("3"));
    assert_eq!(p.b.assign("alice", "n1").await.unwrap(), "n1");
}

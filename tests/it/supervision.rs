//! The service protocol under faults: a broker child killed with SIGKILL is
//! restarted, its venue state comes back, and the algo's stream goes on, on
//! the same connection.

use std::time::Duration;

use lido_shared::api::{Channel, PlaceOrder};
use lido_shared::cluster::ServiceState;
use lido_shared::model::{OrderStatus, Side};
use lido_tests::{eventually, process_alive, sigkill, TestDaemon};
use rust_decimal_macros::dec;

#[tokio::test]
async fn sigkilled_broker_is_restarted_and_the_stream_resumes() {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    let broker_pid = eventually(Duration::from_secs(10), "a running paper broker", || async {
        let snap = c.cluster().await.ok()?;
        let b = snap.service("paper-1")?;
        (b.state == ServiceState::Running).then_some(b.pid?)
    })
    .await;

    // A resting order at the venue that is about to die.
    let resting = c.place_order(&limit_buy("before-kill")).await.unwrap().order;
    assert_eq!(resting.status, OrderStatus::Accepted);

    let mut s = c.stream().await.unwrap();
    s.subscribe(Channel::Quotes, "paper", Some("BTC/USD")).await.unwrap();
    let first = s.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.seq, 1);

    sigkill(broker_pid);

    // The same connection carries on: an explicit gap, then data again, and
    // sequence numbers never skip.
    let mut last = first.seq;
    let mut saw_gap = false;
    let mut data_after_gap = 0;
    while data_after_gap < 3 {
        let ev = s.next_event(Duration::from_secs(15)).await.expect("the stream goes on after the broker restarts");
        assert_eq!(ev.seq, last + 1, "no hole in sequence numbers");
        last = ev.seq;
        if ev.gap.is_some() {
            saw_gap = true;
            assert!(ev.data.is_null());
        } else if saw_gap {
            data_after_gap += 1;
        }
    }
    assert!(saw_gap, "the restart is announced as a gap marker");

    let info = c.cluster().await.unwrap().service("paper-1").cloned().unwrap();
    assert_eq!(info.state, ServiceState::Running);
    assert_eq!(info.restarts, 1);
    let new_pid = info.pid.expect("a pid");
    assert_ne!(new_pid, broker_pid);
    assert!(process_alive(new_pid));
    assert!(!process_alive(broker_pid));

    // The paper venue keeps its state in the node's data dir: the resting
    // order outlives the process, and once the broker is reconciled new
    // orders flow again (until then the market answers `503 reconciling`).
    let placed = eventually(Duration::from_secs(10), "the market taking orders again", || async {
        match c.place_order(&limit_buy("after-restart")).await {
            Ok(p) => Some(p),
            Err(e) if e.code() == Some("reconciling") => None,
            Err(e) => panic!("placing after the restart failed: {e}"),
        }
    })
    .await;
    assert_eq!(placed.order.status, OrderStatus::Accepted, "{:?}", placed.order);
    let kept = c.order(&resting.order_id).await.unwrap();
    assert_eq!(kept.status, OrderStatus::Accepted, "the venue still has it: {kept:?}");
    assert_eq!(c.open_orders().await.unwrap().len(), 2);
}

fn limit_buy(client_order_id: &str) -> PlaceOrder {
    lido_tests::paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1000), client_order_id)
}

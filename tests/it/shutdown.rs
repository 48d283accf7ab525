//! SIGTERM stops lidod cleanly and leaves no child behind.

use std::time::Duration;

use lido_shared::cluster::ServiceState;
use lido_tests::{eventually, process_alive, TestDaemon};

#[tokio::test]
async fn sigterm_exits_cleanly_with_no_orphans() {
    let mut d = TestDaemon::spawn(&[]);
    let c = d.client();
    let pids = eventually(Duration::from_secs(10), "two running brokers", || async {
        let _ = c
            .spawn(&lido_shared::cluster::SpawnRequest {
                kind: lido_shared::cluster::ServiceKind::Broker,
                service_type: Some("paper".into()),
                name: Some("p2".into()),
                ..Default::default()
            })
            .await;
        let snap = c.cluster().await.ok()?;
        let pids: Vec<u32> =
            snap.services().filter(|s| s.state == ServiceState::Running).filter_map(|s| s.pid).collect();
        (pids.len() == 2).then_some(pids)
    })
    .await;
    let status = d.terminate(Duration::from_secs(15)).expect("lidod exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    for pid in pids {
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !process_alive(pid)
        });
        assert!(gone, "broker process {pid} outlived lidod");
    }
}

#[tokio::test]
async fn children_do_not_outlive_a_killed_lidod() {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    let pid = eventually(Duration::from_secs(10), "a running broker", || async {
        let snap = c.cluster().await.ok()?;
        snap.service("paper-1").filter(|s| s.state == ServiceState::Running).and_then(|s| s.pid)
    })
    .await;
    lido_tests::sigkill(d.pid());
    let gone = (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        !process_alive(pid)
    });
    assert!(gone, "broker {pid} must exit when its lidod dies");
}

//! The TraderManager hosts an algo process: it checks in, trades through the
//! node's API as its customer, and stops on request.

use std::time::Duration;

use lido_shared::cluster::{ServiceKind, ServiceState, SpawnRequest};
use lido_tests::{eventually, example_path, process_alive, TestDaemon};

#[tokio::test]
async fn hosted_example_trader_checks_in_trades_and_stops() {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    let exec = example_path("paper_trader");
    let req = SpawnRequest {
        kind: ServiceKind::Trader,
        name: Some("t1".into()),
        options: [
            ("exec".to_string(), exec.display().to_string()),
            ("customer".to_string(), "acme".to_string()),
            // A run of one rise buys at once: the test need not wait for a trend.
            ("run".to_string(), "1".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let info = c.spawn(&req).await.unwrap();
    assert_eq!(info.kind, ServiceKind::Trader);
    let pid = eventually(Duration::from_secs(15), "t1 checked in and running", || async {
        let s = c.cluster().await.ok()?;
        let t = s.service("t1")?;
        (t.state == ServiceState::Running && t.ws_url.is_some()).then_some(t.pid?)
    })
    .await;

    // It trades as acme: acme's orders appear, placed with its client ids.
    let acme = c.open_session("acme").await.unwrap();
    let acme = lido_shared::client::LidoClient::new(d.url.clone()).unwrap().with_token(acme.session_id);
    let orders = eventually(Duration::from_secs(30), "an order from the trader", || async {
        let orders = acme.orders(&Default::default()).await.ok()?;
        (!orders.is_empty()).then_some(orders)
    })
    .await;
    assert!(orders.iter().all(|o| o.customer == "acme" && o.client_order_id.starts_with("pt-")));
    assert!(c.orders(&Default::default()).await.unwrap().is_empty(), "the default customer saw none");

    let stopped = c.stop_service("t1").await.unwrap();
    assert_eq!(stopped.state, ServiceState::Stopped);
    let gone = (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        !process_alive(pid)
    });
    assert!(gone, "trader process {pid} must exit when stopped");
    assert!(c.cluster().await.unwrap().service("t1").is_none());

    let bad = SpawnRequest {
        kind: ServiceKind::Trader,
        options: [("exec".to_string(), "/nonexistent/algo".to_string())].into(),
        ..Default::default()
    };
    let err = c.spawn(&bad).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_option"));
}

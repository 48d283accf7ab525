//! The InfrastructureManager's operator API, and lidoctl against it.

use std::process::Command;
use std::time::Duration;

use lido_shared::cluster::{ClusterEvent, ServiceKind, ServiceState, SpawnRequest, WatchCommand, WatchMessage};
use lido_tests::{eventually, lidoctl_path, TestDaemon};

#[tokio::test]
async fn spawn_stop_and_drain_through_the_api() {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    let mut watch = c.watch().await.unwrap();
    let WatchMessage::Snapshot { seq: start, snapshot } = watch.next().await.unwrap() else { panic!("snapshot first") };
    assert_eq!(snapshot.nodes.len(), 1);
    assert_eq!(snapshot.nodes[0].id, "n1");

    let req = SpawnRequest {
        kind: ServiceKind::Broker,
        service_type: Some("paper".into()),
        name: Some("p2".into()),
        ..Default::default()
    };
    let info = c.spawn(&req).await.unwrap();
    assert_eq!(info.name, "p2");
    assert_eq!(c.spawn(&req).await.unwrap_err().status(), Some(409), "names are unique");
    eventually(Duration::from_secs(10), "p2 running", || async {
        let s = c.cluster().await.ok()?;
        (s.service("p2")?.state == ServiceState::Running).then_some(())
    })
    .await;

    // The watch stream saw it, numbered without holes.
    let mut last = start;
    let mut saw_running = false;
    while !saw_running {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap() {
            WatchMessage::Event { seq, event, .. } => {
                assert_eq!(seq, last + 1);
                last = seq;
                if let ClusterEvent::ServiceChanged { service } = event {
                    saw_running |= service.name == "p2" && service.state == ServiceState::Running;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // A market over the new broker, then commands on the watch socket.
    let market = SpawnRequest {
        kind: ServiceKind::Market,
        name: Some("crypto".into()),
        options: [("brokers".to_string(), "p2".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(c.spawn(&market).await.unwrap().kind, ServiceKind::Market);
    eventually(Duration::from_secs(10), "a quote on crypto", || async { c.quote("crypto", "ETH/USD").await.ok() })
        .await;

    watch.send(&WatchCommand::Drain { id: 7, node: "n1".into() }).await.unwrap();
    loop {
        if let WatchMessage::Reply { id, ok, .. } =
            tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap()
        {
            assert_eq!(id, 7);
            assert!(ok);
            break;
        }
    }
    let refused = c.open_session("acme").await.unwrap_err();
    assert_eq!(refused.status(), Some(503));
    assert_eq!(refused.code(), Some("no_node_available"));
    let refused = c.spawn(&SpawnRequest { name: Some("p3".into()), ..req.clone() }).await.unwrap_err();
    assert_eq!(refused.code(), Some("node_draining"));
    // Existing work goes on while draining.
    assert!(c.quote("crypto", "ETH/USD").await.is_ok());
    let node = c.undrain_node("n1").await.unwrap();
    assert!(!node.draining);
    assert!(c.open_session("acme").await.is_ok());

    c.stop_service("crypto").await.unwrap();
    let stopped = c.stop_service("p2").await.unwrap();
    assert_eq!(stopped.state, ServiceState::Stopped);
    assert!(c.cluster().await.unwrap().service("p2").is_none());
    assert_eq!(c.stop_service("p2").await.unwrap_err().status(), Some(404));
}

#[tokio::test]
async fn lidoctl_spawns_a_broker_that_status_then_shows_running() {
    let d = TestDaemon::spawn(&[]);
    let run = |args: &[&str]| {
        Command::new(lidoctl_path())
            .args(["--url", &d.url])
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("run lidoctl")
    };
    let out = run(&["spawn", "broker", "paper", "--name", "p2"]);
    assert!(out.status.success(), "spawn failed: {}", String::from_utf8_lossy(&out.stderr));
    let c = d.client();
    eventually(Duration::from_secs(10), "p2 running", || async {
        let s = c.cluster().await.ok()?;
        (s.service("p2")?.state == ServiceState::Running).then_some(())
    })
    .await;
    let out = run(&["status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("p2"))
        .unwrap_or_else(|| panic!("p2 in status:\n{text}"));
    assert!(line.contains("running"), "p2 should be running: {line}");

    let out = run(&["stop", "p2", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["stop", "p2", "--yes"]);
    assert_eq!(out.status.code(), Some(3), "not found exits 3");
}

#[tokio::test]
async fn a_broker_can_run_as_a_task_inside_lidod() {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    let req = SpawnRequest {
        kind: ServiceKind::Broker,
        service_type: Some("paper".into()),
        name: Some("pt".into()),
        options: [("mode".to_string(), "task".to_string()), ("seed".to_string(), "7".to_string())].into(),
        ..Default::default()
    };
    c.spawn(&req).await.unwrap();
    let info = eventually(Duration::from_secs(10), "pt running", || async {
        let s = c.cluster().await.ok()?;
        s.service("pt").filter(|s| s.state == ServiceState::Running).cloned()
    })
    .await;
    assert_eq!(info.mode, lido_shared::cluster::RunMode::Task);
    assert_eq!(info.pid, None, "a task has no process of its own");
    let in_memory = info.ws_url.as_deref().is_some_and(|u| u.starts_with("mem://"));
    assert!(in_memory, "a task speaks the same pipe protocol, in memory: {:?}", info.ws_url);
    let market = SpawnRequest {
        kind: ServiceKind::Market,
        name: Some("tm".into()),
        options: [("brokers".to_string(), "pt".to_string())].into(),
        ..Default::default()
    };
    c.spawn(&market).await.unwrap();
    let q = eventually(Duration::from_secs(10), "a quote via the task broker", || async {
        c.quote("tm", "SPY").await.ok()
    })
    .await;
    assert!(q.bid < q.ask);

    // Restart works for a task too: the pipe comes back.
    c.restart_service("pt").await.unwrap();
    eventually(Duration::from_secs(10), "pt restarted", || async {
        let s = c.cluster().await.ok()?;
        let pt = s.service("pt")?;
        (pt.state == ServiceState::Running && pt.restarts == 1).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "quotes after the restart", || async { c.quote("tm", "SPY").await.ok() }).await;
}

#[tokio::test]
async fn operators_see_sessions_events_logs_metrics_and_order_flow() {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    let session = c.open_session("acme").await.unwrap();
    let sessions = c.sessions().await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].customer, "acme");
    assert!(session.session_id.starts_with(&sessions[0].id));
    assert!(sessions[0].id.len() < session.session_id.len(), "the token is never shown whole");

    eventually(Duration::from_secs(10), "paper-1 running", || async {
        let s = c.cluster().await.ok()?;
        (s.service("paper-1")?.state == ServiceState::Running).then_some(())
    })
    .await;
    let detail = c.describe("paper-1").await.unwrap();
    assert_eq!(detail.service.name, "paper-1");
    assert!(detail.events.iter().any(
        |e| matches!(&e.event, ClusterEvent::ServiceChanged { service } if service.state == ServiceState::Running)
    ));
    assert_eq!(c.describe("ghost").await.unwrap_err().status(), Some(404));

    let logs = eventually(Duration::from_secs(10), "broker output", || async {
        let l = c.logs("paper-1", 50).await.ok()?;
        l.contains("paper broker started").then_some(l)
    })
    .await;
    assert!(logs.lines().count() <= 50);
    assert_eq!(c.logs("paper", 10).await.unwrap_err().code(), Some("no_logs"));
    let mut follow = c.follow_logs("paper-1", 0).await.unwrap();
    c.restart_service("paper-1").await.unwrap();
    let mut seen = String::new();
    while !seen.contains("paper broker started") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), follow.next_chunk()).await.unwrap().unwrap();
        seen.push_str(&chunk.expect("the log stays open"));
    }

    let mut watch = c.watch().await.unwrap();
    watch.send(&WatchCommand::Follow { id: 1, orders: true }).await.unwrap();
    let (mut metrics, mut followed) = (false, false);
    let mut placed = false;
    while !(metrics && followed) {
        let msg = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap();
        match msg {
            WatchMessage::Event { event: ClusterEvent::Metrics { services, .. }, .. } => {
                metrics |= services.get("paper-1").is_some_and(|m| m.contains_key("messages_per_s"));
            }
            WatchMessage::Reply { id: 1, ok, .. } => {
                assert!(ok);
                if !placed {
                    let acme =
                        lido_shared::client::LidoClient::new(d.url.clone()).unwrap().with_token(&session.session_id);
                    eventually(Duration::from_secs(10), "an order", || async {
                        let o = lido_tests::paper_limit(
                            "AAPL",
                            lido_shared::model::Side::Buy,
                            1.into(),
                            1.into(),
                            "flow-1",
                        );
                        acme.place_order(&o).await.ok()
                    })
                    .await;
                    placed = true;
                }
            }
            WatchMessage::Order { order, .. } => followed |= order.client_order_id == "flow-1",
            _ => {}
        }
    }
}

#[tokio::test]
async fn the_log_filter_changes_at_run_time_and_a_bad_one_changes_nothing() {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    let put =
        |filter: &str| c.req(reqwest::Method::PUT, "/v1/log-level").json(&serde_json::json!({ "filter": filter }));
    let bad = c.send::<serde_json::Value>(put("lidod=loud")).await.unwrap_err();
    assert_eq!(bad.code(), Some("invalid_filter"), "{bad:?}");
    assert!(!d.log_text().contains("log filter changed"), "a refused filter is not applied");

    let ok: serde_json::Value = c.send(put("info,lidod=trace")).await.unwrap();
    assert_eq!(ok["filter"], "info,lidod=trace");
    eventually(Duration::from_secs(5), "the change in lidod's log", || async {
        d.log_text().contains("log filter changed").then_some(())
    })
    .await;
}

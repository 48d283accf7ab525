//! Authentication and rights, the cluster secret, limits and risk checks,
//! secrets kept out of logs and answers, and the audit log: real `lidod`
//! processes driven through the client, raw HTTP and `lidoctl`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lido_shared::access::{AuditQuery, CreateToken, Role, CLUSTER_SECRET_HEADER};
use lido_shared::client::{ClientError, LidoClient};
use lido_shared::cluster::{MarketPool, ServiceKind, SpawnRequest};
use lido_shared::model::Side;
use lido_shared::pipe::CHECKIN_PATH;
use lido_tests::{eventually, lidoctl_path, paper_limit, TestDaemon};
use rust_decimal_macros::dec;

/// A node that requires tokens, with its data dir.
fn tokens_node(dir: &Path, env: &[(&str, &str)]) -> TestDaemon {
    TestDaemon::spawn_with(dir, &["--auth", "tokens"], env)
}

/// The bootstrap operator token, once the node has written it.
async fn bootstrap_token(dir: &Path) -> String {
    let path = dir.join("bootstrap-token");
    eventually(Duration::from_secs(10), "the bootstrap token file", || async {
        std::fs::read_to_string(&path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
    })
    .await
}

async fn token(op: &LidoClient, role: Role, customer: Option<&str>, name: Option<&str>) -> (String, String) {
    let req =
        CreateToken { role, customer: customer.map(str::to_string), name: name.map(str::to_string), expires_at: None };
    let created = op.create_token(&req).await.expect("create token");
    (created.info.id, created.token)
}

/// Waits until the paper market has a broker up.
async fn market_ready(c: &LidoClient) {
    eventually(Duration::from_secs(15), "a paper quote", || async { c.quote("paper", "BTC/USD").await.ok() }).await;
}

fn code(e: &ClientError) -> (Option<u16>, String) {
    match e {
        ClientError::Api { status, code, .. } => (Some(*status), code.clone()),
        other => (None, other.to_string()),
    }
}

#[tokio::test]
async fn tokens_rights_matrix_and_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let d = tokens_node(dir.path(), &[]);
    let anon = d.client();
    assert_eq!(anon.cluster().await.unwrap_err().status(), Some(401), "no token, no operator API");
    assert_eq!(anon.markets().await.unwrap_err().status(), Some(401), "no token, no algo API");
    assert_eq!(anon.open_session("acme").await.unwrap_err().status(), Some(401));
    let bad = d.client().with_token("lido_0000");
    assert_eq!(bad.markets().await.unwrap_err().status(), Some(401), "an unknown token is refused");

    let op = d.client().with_token(bootstrap_token(dir.path()).await);
    let (acme_id, acme_secret) = token(&op, Role::Customer, Some("acme"), None).await;
    let (_, bob_secret) = token(&op, Role::Customer, Some("bob"), None).await;
    let acme = d.client().with_token(&acme_secret);
    let bob = d.client().with_token(&bob_secret);

    // Operators read market data but have no account to trade with.
    market_ready(&op).await;
    op.quote("paper", "BTC/USD").await.expect("operators read quotes");
    let order = paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1000), "a-1");
    assert_eq!(code(&op.place_order(&order).await.unwrap_err()), (Some(403), "forbidden".into()));
    let mut op_stream = op.stream().await.expect("operators stream market data");
    let refused = op_stream.place_order(&order).await.expect_err("nor over the stream");
    assert_eq!(code(&refused), (Some(403), "forbidden".into()));
    assert_eq!(code(&op_stream.cancel_order("any").await.unwrap_err()), (Some(403), "forbidden".into()));

    // A customer sees and touches only its own orders; others' ids are 404.
    let placed = acme.place_order(&order).await.expect("acme places");
    let id = placed.order.order_id.clone();
    assert_eq!(acme.order(&id).await.unwrap().customer, "acme");
    assert_eq!(bob.order(&id).await.unwrap_err().status(), Some(404));
    assert_eq!(bob.cancel_order(&id).await.unwrap_err().status(), Some(404));
    assert!(bob.open_orders().await.unwrap().is_empty());
    assert!(bob.fills().await.unwrap().is_empty());

    // Customers get 403 on every operator action.
    let log_level = |c: &LidoClient| {
        c.req(reqwest::Method::PUT, "/v1/log-level").json(&serde_json::json!({ "filter": "info,lidod=debug" }))
    };
    let spawn = SpawnRequest {
        kind: ServiceKind::Broker,
        service_type: Some("paper".into()),
        name: Some("p9".into()),
        ..Default::default()
    };
    let refusals = [
        acme.cluster().await.map(|_| ()),
        acme.spawn(&spawn).await.map(|_| ()),
        acme.stop_service("paper-1").await.map(|_| ()),
        acme.drain_node("n1").await.map(|_| ()),
        acme.sessions().await.map(|_| ()),
        acme.tokens().await.map(|_| ()),
        acme.revoke_token(&acme_id).await.map(|_| ()),
        acme.audit(&AuditQuery::default()).await.map(|_| ()),
        acme.watch().await.map(|_| ()),
        acme.send::<serde_json::Value>(log_level(&acme)).await.map(|_| ()),
        acme.set_market("paper", &MarketPool { brokers: Some("paper-1".into()), ..Default::default() })
            .await
            .map(|_| ()),
    ];
    for (n, r) in refusals.into_iter().enumerate() {
        let e = r.expect_err("a customer is refused");
        assert!(matches!(code(&e).0, Some(403)) || matches!(e, ClientError::WebSocket(_)), "#{n}: {e}");
    }
    assert!(op.cluster().await.unwrap().service("p9").is_none(), "nothing was spawned");
    assert!(!d.log_text().contains("log filter changed"), "a customer cannot change the log level");
    let changed: serde_json::Value = op.send(log_level(&op)).await.expect("an operator can");
    assert_eq!(changed["filter"], "info,lidod=debug");
    let audit = op.audit(&AuditQuery::default()).await.unwrap();
    assert!(audit.iter().any(|r| r.action == "log_level" && r.target == "info,lidod=debug"), "audited: {audit:?}");

    // Sessions: for the token's own customer only, and they act as it.
    assert_eq!(acme.open_session("bob").await.unwrap_err().status(), Some(403));
    let session = acme.open_session("acme").await.expect("own session");
    let via_session = d.client().with_token(&session.session_id);
    assert_eq!(via_session.order(&id).await.unwrap().order_id, id);

    // Revoking ends the token and the sessions it opened, at once.
    op.revoke_token(&acme_id).await.expect("revoke");
    assert_eq!(acme.open_orders().await.unwrap_err().status(), Some(401));
    assert_eq!(via_session.open_orders().await.unwrap_err().status(), Some(401));
    assert!(bob.open_orders().await.is_ok(), "other tokens go on");
    let listed = op.tokens().await.unwrap();
    assert!(listed.iter().any(|t| t.id == acme_id && t.revoked_at.is_some()));

    // A restart keeps tokens and revocations (the store is durable).
    drop(d);
    let d = tokens_node(dir.path(), &[]);
    assert_eq!(d.client().with_token(&acme_secret).markets().await.unwrap_err().status(), Some(401));
    assert!(d.client().with_token(&bob_secret).markets().await.is_ok());
}

#[tokio::test]
async fn check_ins_without_the_cluster_secret_are_refused() {
    let d = TestDaemon::spawn_with_env(&[], &[("LIDO_CLUSTER_SECRET", "s3cret-for-this-test")]);
    let http = reqwest::Client::new();
    let url = format!("{}{CHECKIN_PATH}", d.url);
    let body = serde_json::json!({"name":"rogue","kind":"broker","type":"paper","ws_url":"ws://127.0.0.1:1/pipe","pid":null,"instance":"x"});
    let bare = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    let text = bare.text().await.unwrap();
    assert!(text.contains(CLUSTER_SECRET_HEADER), "the error names what is missing: {text}");
    let wrong = http.post(&url).header(CLUSTER_SECRET_HEADER, "guess").json(&body).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let cluster = d.client().cluster().await.unwrap();
    assert!(cluster.service("rogue").is_none(), "a refused check-in changes nothing");
    // The node's own broker got the secret from its manager and is running.
    assert!(cluster.service("paper-1").is_some());
}

#[tokio::test]
async fn limits_and_risk_checks_name_the_limit_and_affect_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lido.toml");
    std::fs::write(
        &config,
        r#"
[limits]
sessions_per_customer = 1
open_orders_per_customer = 2
orders_per_second = 1000
[limits.customers.fast]
orders_per_second = 1
[risk]
max_order_notional = 5000
[risk.customers.whale]
max_order_notional = 1000000
max_position = 0.05
"#,
    )
    .unwrap();
    let d = TestDaemon::spawn(&["--config", config.to_str().unwrap()]);
    let c = d.client();
    market_ready(&c).await;
    let err = |e: ClientError| match e {
        ClientError::Api { status, code, message } => (status, code, message),
        other => panic!("expected an API error, got {other}"),
    };

    // Sessions per customer.
    c.open_session("fast").await.unwrap();
    let (status, code, message) = err(c.open_session("fast").await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "limit_exceeded"));
    assert!(message.contains("sessions_per_customer = 1"), "{message}");
    let whale = d.client().with_token(c.open_session("whale").await.unwrap().session_id);

    // Notional, for the `default` customer of open mode.
    let small = paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1000), "d-1");
    c.place_order(&small).await.unwrap();
    let big = paper_limit("BTC/USD", Side::Buy, dec!(1), dec!(6000), "d-big");
    let (status, code, message) = err(c.place_order(&big).await.unwrap_err());
    assert_eq!((status, code.as_str()), (422, "risk_rejected"));
    assert!(message.contains("max_order_notional = 5000"), "{message}");

    // Open orders per customer; a resubmission still returns the first order.
    c.place_order(&paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1001), "d-2")).await.unwrap();
    let third = paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1002), "d-3");
    let (status, code, message) = err(c.place_order(&third).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "limit_exceeded"));
    assert!(message.contains("open_orders_per_customer = 2"), "{message}");
    let again = c.place_order(&small).await.expect("resubmission is not a new order");
    assert!(!again.created);
    assert_eq!(c.open_orders().await.unwrap().len(), 2, "the refused orders changed nothing");

    // Max position counts working orders on the same side.
    whale.place_order(&paper_limit("BTC/USD", Side::Buy, dec!(0.04), dec!(1000), "w-1")).await.unwrap();
    let over = paper_limit("BTC/USD", Side::Buy, dec!(0.02), dec!(1000), "w-2");
    let (status, code, message) = err(whale.place_order(&over).await.unwrap_err());
    assert_eq!((status, code.as_str()), (422, "risk_rejected"));
    assert!(message.contains("max_position = 0.05"), "{message}");

    // Orders per second, for one customer only.
    let fast_session = d.client().with_token(fast_token(&c).await);
    fast_session.place_order(&paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1000), "f-a")).await.unwrap();
    let (status, code, message) = err(fast_session
        .place_order(&paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1000), "f-b"))
        .await
        .unwrap_err());
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    assert!(message.contains("orders_per_second = 1"), "{message}");
    assert!(c.open_orders().await.is_ok() && whale.open_orders().await.is_ok(), "others are not affected");
}

/// Customer `fast` already holds its one session; open mode lets the local
/// operator give it a customer token instead.
async fn fast_token(c: &LidoClient) -> String {
    let req = CreateToken { role: Role::Customer, customer: Some("fast".into()), name: None, expires_at: None };
    c.create_token(&req).await.expect("token for fast").token
}

#[tokio::test]
async fn secrets_never_appear_in_logs_or_answers() {
    const CLUSTER: &str = "planted-cluster-secret-0b7e9c";
    const VENUE: &str = "planted-venue-secret-5d2a41";
    let dir = tempfile::tempdir().unwrap();
    let d = tokens_node(dir.path(), &[("LIDO_CLUSTER_SECRET", CLUSTER)]);
    let boot = bootstrap_token(dir.path()).await;
    let op = d.client().with_token(&boot);
    let (_, customer) = token(&op, Role::Customer, Some("acme"), Some("bot")).await;
    let acme = d.client().with_token(&customer);

    // Drive status, errors and the audit log; keep every answer.
    let mut answers = Vec::new();
    let mut keep = |r: Result<String, ClientError>| answers.push(r.unwrap_or_else(|e| e.to_string()));
    keep(op.cluster().await.map(|s| serde_json::to_string(&s).unwrap()));
    keep(op.describe("paper-1").await.map(|s| serde_json::to_string(&s).unwrap()));
    keep(op.logs("paper-1", 1000).await);
    keep(op.tokens().await.map(|t| serde_json::to_string(&t).unwrap()));
    let mut options = std::collections::BTreeMap::new();
    options.insert("api_secret".to_string(), VENUE.to_string());
    let spawn = SpawnRequest {
        kind: ServiceKind::Broker,
        service_type: Some("paper".into()),
        name: Some("k1".into()),
        options,
        ..Default::default()
    };
    keep(op.spawn(&spawn).await.map(|s| serde_json::to_string(&s).unwrap()));
    keep(acme.cluster().await.map(|s| serde_json::to_string(&s).unwrap()));
    keep(d.client().with_token(format!("{customer}x")).markets().await.map(|_| String::new()));
    keep(acme.place_order(&paper_limit("NOPE/USD", Side::Buy, dec!(1), dec!(1), "x")).await.map(|_| String::new()));
    keep(op.audit(&AuditQuery::default()).await.map(|a| serde_json::to_string(&a).unwrap()));
    keep(op.health().await.map(|h| h.to_string()));
    let metrics = op.req(reqwest::Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(metrics.status(), 200, "an operator reads /metrics");
    let metrics = metrics.text().await.unwrap();
    keep(Ok(metrics));

    let broker_pid = op.cluster().await.unwrap().service("paper-1").and_then(|s| s.pid).expect("paper-1 pid");
    let cmdline = std::fs::read(format!("/proc/{broker_pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(CLUSTER), "the cluster secret is not on a command line");

    let log = d.log_text();
    for (what, secret) in [
        ("cluster secret", CLUSTER),
        ("venue secret", VENUE),
        ("customer token", &customer),
        ("bootstrap token", &boot),
    ] {
        assert!(!log.contains(secret), "the {what} appears in lidod's log");
        for a in &answers {
            assert!(!a.contains(secret), "the {what} appears in an answer: {a}");
        }
    }
}

#[tokio::test]
async fn audit_records_who_did_what_in_every_output_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = tokens_node(dir.path(), &[]);
    let boot = bootstrap_token(dir.path()).await;
    let op = d.client().with_token(&boot);
    let (alice_id, alice) = token(&op, Role::Operator, None, Some("alice")).await;
    let ctl = |args: &[&str]| {
        let out = Command::new(lidoctl_path())
            .args(["--url", &d.url, "--token", &alice, "--no-color"])
            .args(args)
            .env_remove("LIDO_TOKEN")
            .env("LIDO_CONFIG", dir.path().join("no-such-config.toml"))
            .output()
            .expect("run lidoctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = ctl(&["drain", "node", "n1", "--yes"]);
    assert_eq!(code, Some(0), "{out}{err}");
    ctl(&["undrain", "n1"]);
    let (code, out, _) = ctl(&["token", "create", "--customer", "acme", "-o", "json"]);
    assert_eq!(code, Some(0));
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let acme_id = created["id"].as_str().unwrap().to_string();
    assert!(created["token"].as_str().unwrap().starts_with("lido_"));
    let (code, _, _) = ctl(&["token", "revoke", &acme_id, "--yes"]);
    assert_eq!(code, Some(0));
    let (code, _, _) = ctl(&["stop", "nope", "--yes"]);
    assert_eq!(code, Some(3), "not found");

    let (code, out, _) = ctl(&["audit", "-o", "json"]);
    assert_eq!(code, Some(0));
    let records: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let seen: Vec<(String, String, String)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().into(),
                r["target"].as_str().unwrap().into(),
                r["result"].as_str().unwrap().into(),
            )
        })
        .collect();
    let actor = format!("token:{alice_id} (alice)");
    for (action, target, result) in [
        ("drain", "n1", "ok"),
        ("undrain", "n1", "ok"),
        ("token_create", acme_id.as_str(), "ok"),
        ("token_revoke", acme_id.as_str(), "ok"),
        ("stop", "nope", "unknown_service"),
    ] {
        let found = records
            .iter()
            .zip(&seen)
            .find(|(_, s)| (s.0.as_str(), s.1.as_str(), s.2.as_str()) == (action, target, result));
        let (record, _) = found.unwrap_or_else(|| panic!("no audit record {action} {target} {result} in {seen:?}"));
        assert_eq!(record["actor"], actor.as_str());
    }
    let (_, table, _) = ctl(&["audit", "--limit", "2"]);
    assert!(table.starts_with("TIME") && table.lines().count() == 3, "{table}");
    let (_, yaml, _) = ctl(&["audit", "-o", "yaml"]);
    assert!(yaml.contains("action: drain"), "{yaml}");
    let (_, wide, _) = ctl(&["audit", "-o", "wide"]);
    assert!(wide.contains("DETAIL") && wide.contains("role customer customer acme"), "{wide}");
    let (code, list, _) = ctl(&["token", "list"]);
    assert_eq!(code, Some(0));
    assert!(list.contains(&acme_id) && list.contains("alice") && !list.contains("lido_"), "{list}");
}

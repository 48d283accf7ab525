//! API tokens against real `lidod` processes: revocation and expiry reach
//! open streams at once (close code 1008, the reason says why) and refuse
//! their orders; `/metrics` is for operators in `--auth tokens` mode (node
//! and IM); an operator token opens no session; and in a cluster on etcd a
//! token made at one IM works at the other and a revocation at either ends
//! it everywhere, the node's streams included.

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lido_shared::access::{CreateToken, Role};
use lido_shared::client::{ClientError, LidoClient};
use lido_shared::model::Side;
use lido_tests::etcd_cluster::EtcdCluster;
use lido_tests::{eventually, lidoctl_path, paper_limit, temp_data_dir, TestDaemon};
use rust_decimal_macros::dec;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Bound on every wait here.
const WAIT: Duration = Duration::from_secs(20);
/// How soon a stream must close once its credential ended.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The bootstrap operator token of the daemon whose data dir is `dir`.
async fn bootstrap_token(dir: &Path) -> String {
    let path = dir.join("bootstrap-token");
    eventually(WAIT, "the bootstrap token file", || async {
        std::fs::read_to_string(&path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
    })
    .await
}

async fn customer_token(op: &LidoClient, customer: &str, expires_in: Option<Duration>) -> (String, String) {
    let expires_at = expires_in.map(|d| chrono::Utc::now() + chrono::TimeDelta::from_std(d).unwrap());
    let req = CreateToken { role: Role::Customer, customer: Some(customer.into()), name: None, expires_at };
    let created = op.create_token(&req).await.expect("create a customer token");
    (created.info.id, created.token)
}

/// `/v1/stream` at `base` with `bearer`, raw, to read the close frame.
async fn raw_stream(base: &str, bearer: &str) -> Ws {
    let url = format!("{}/v1/stream", base.replacen("http", "ws", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await.unwrap().unwrap();
    // Up and answering.
    ws.send(Message::text(r#"{"op":"ping"}"#)).await.unwrap();
    let pong = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert!(pong.to_text().unwrap().contains("pong"), "{pong:?}");
    ws
}

/// Reads until the server's close frame (within [`CLOSE_WITHIN`]); returns
/// its code and reason, and every text frame seen before it.
async fn close_frame(ws: &mut Ws) -> (CloseCode, String, Vec<String>) {
    let mut texts = Vec::new();
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(Some(frame))) => return (frame.code, frame.reason.to_string()),
                Ok(Message::Close(None)) => return (CloseCode::Status, String::new()),
                Ok(Message::Text(t)) => texts.push(t.to_string()),
                Ok(_) => {}
                Err(e) => panic!("the stream broke without a close frame: {e}"),
            }
        }
        panic!("the stream ended without a close frame")
    };
    let (code, reason) = tokio::time::timeout(CLOSE_WITHIN, read).await.expect("the stream closes at once");
    (code, reason, texts)
}

fn status(e: &ClientError) -> Option<u16> {
    e.status()
}

async fn market_ready(c: &LidoClient) {
    eventually(WAIT, "a paper quote", || async { c.quote("paper", "BTC/USD").await.ok() }).await;
}

#[tokio::test]
async fn revoking_a_token_closes_its_streams_and_refuses_their_orders() {
    let d = TestDaemon::spawn(&["--auth", "tokens"]);
    let op = d.client().with_token(bootstrap_token(&d.data_dir).await);
    market_ready(&op).await;
    let (acme_id, acme_secret) = customer_token(&op, "acme", None).await;
    let (_, bob_secret) = customer_token(&op, "bob", None).await;
    let acme = d.client().with_token(&acme_secret);
    let session = acme.open_session("acme").await.expect("acme opens a session");

    let mut via_session = raw_stream(&d.url, &session.session_id).await;
    let mut via_token = raw_stream(&d.url, &acme_secret).await;
    let mut bob = raw_stream(&d.url, &bob_secret).await;

    op.revoke_token(&acme_id).await.expect("revoke");
    // Sent after the revocation: must not be placed.
    let order = paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1000), "after-revoke");
    let place = lido_shared::api::ClientMessage::PlaceOrder { id: "r1".into(), order };
    let _ = via_session.send(Message::text(serde_json::to_string(&place).unwrap())).await;
    for (what, ws) in [("session", &mut via_session), ("token", &mut via_token)] {
        let (code, reason, texts) = close_frame(ws).await;
        assert_eq!(code, CloseCode::Policy, "the {what} stream closes with 1008");
        assert_eq!(reason, "token revoked", "the {what} stream says why");
        assert!(texts.iter().all(|t| !t.contains("\"status\":201")), "nothing placed on the {what} stream: {texts:?}");
    }

    // Nothing was placed for acme: a new acme token sees no such order.
    let (_, acme_again) = customer_token(&op, "acme", None).await;
    let acme_again = d.client().with_token(&acme_again);
    let open = acme_again.open_orders().await.unwrap();
    assert!(open.iter().all(|o| o.client_order_id != "after-revoke"), "the order was not placed: {open:?}");
    // REST with the token or its session is refused; other customers go on.
    assert_eq!(status(&acme.open_orders().await.unwrap_err()), Some(401));
    let session_client = d.client().with_token(&session.session_id);
    assert_eq!(status(&session_client.open_orders().await.unwrap_err()), Some(401));
    bob.send(Message::text(r#"{"op":"ping"}"#)).await.unwrap();
    let pong = tokio::time::timeout(WAIT, bob.next()).await.unwrap().unwrap().unwrap();
    assert!(pong.to_text().unwrap().contains("pong"), "bob's stream goes on: {pong:?}");
}

#[tokio::test]
async fn an_expiring_token_works_until_its_time_then_ends_its_streams() {
    let d = TestDaemon::spawn(&["--auth", "tokens"]);
    let boot = bootstrap_token(&d.data_dir).await;
    let op = d.client().with_token(&boot);
    market_ready(&op).await;
    // The token expires after this instant (its expiry is set just after).
    let expired_after = tokio::time::Instant::now() + Duration::from_secs(4);
    let (id, secret) = customer_token(&op, "acme", Some(Duration::from_secs(4))).await;
    let acme = d.client().with_token(&secret);
    let session = acme.open_session("acme").await.expect("good before it expires");
    acme.open_orders().await.expect("REST works before expiry");
    let mut via_session = raw_stream(&d.url, &session.session_id).await;
    let mut via_token = raw_stream(&d.url, &secret).await;

    // `lidoctl token list` shows the expiry; `--expires-in` sets one.
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(lidoctl_path())
            .args(["--url", &d.url, "--token", &boot, "--no-color"])
            .args(args)
            .env_remove("LIDO_TOKEN")
            .env("LIDO_CONFIG", d.data_dir.join("no-such-config.toml"))
            .output()
            .expect("run lidoctl");
        assert!(out.status.success(), "lidoctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let list = ctl(&["token", "list"]);
    let header = list.lines().next().unwrap_or_default();
    assert!(header.contains("EXPIRES"), "{list}");
    let row = list.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("{id} in {list}"));
    assert!(row.contains(&chrono::Utc::now().format("%Y-%m-%dT").to_string()), "the expiry is shown: {row}");
    let created: serde_json::Value =
        serde_json::from_str(&ctl(&["token", "create", "--customer", "acme", "--expires-in", "30d", "-o", "json"]))
            .unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap()).unwrap();
    let days = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((719..=720).contains(&days), "30 days from now, got {days} hours");

    // Past its time: streams close at once saying so, REST and sessions are
    // refused.
    tokio::time::sleep_until(expired_after + Duration::from_millis(200)).await;
    for (what, ws) in [("session", &mut via_session), ("token", &mut via_token)] {
        let (code, reason, _) = close_frame(ws).await;
        assert_eq!((code, reason.as_str()), (CloseCode::Policy, "token expired"), "the {what} stream");
    }
    let e = acme.open_orders().await.unwrap_err();
    assert_eq!(status(&e), Some(401));
    assert!(e.to_string().contains("expired"), "{e}");
    let session_client = d.client().with_token(&session.session_id);
    assert_eq!(status(&session_client.open_orders().await.unwrap_err()), Some(401));
    assert_eq!(status(&acme.open_session("acme").await.unwrap_err()), Some(401));
    // A time in the past is refused and creates nothing.
    let past = CreateToken {
        role: Role::Customer,
        customer: Some("acme".into()),
        name: None,
        expires_at: Some(chrono::Utc::now() - chrono::TimeDelta::minutes(1)),
    };
    let before = op.tokens().await.unwrap().len();
    assert_eq!(status(&op.create_token(&past).await.unwrap_err()), Some(400));
    assert_eq!(op.tokens().await.unwrap().len(), before);
}

#[tokio::test]
async fn metrics_are_for_operators_in_tokens_mode_and_open_without_auth() {
    let get = |url: String, token: Option<String>| async move {
        let mut req = reqwest::Client::new().get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let answer = req.send().await.expect("GET /metrics");
        (answer.status().as_u16(), answer.text().await.unwrap())
    };
    let open = TestDaemon::spawn(&[]);
    let (code, text) = get(format!("{}/metrics", open.url), None).await;
    assert_eq!(code, 200, "open mode: no token needed");
    assert!(text.contains("lido_sessions"), "{text}");

    let node = TestDaemon::spawn(&["--auth", "tokens"]);
    let boot = bootstrap_token(&node.data_dir).await;
    let op = node.client().with_token(&boot);
    let (_, customer) = customer_token(&op, "acme", None).await;
    let url = format!("{}/metrics", node.url);
    assert_eq!(get(url.clone(), None).await.0, 401, "no token");
    assert_eq!(get(url.clone(), Some(customer)).await.0, 403, "a customer token");
    let (code, text) = get(url, Some(boot)).await;
    assert_eq!(code, 200);
    assert!(text.contains("lido_sessions"), "{text}");

    let im = TestDaemon::spawn(&["--role", "im", "--auth", "tokens"]);
    let boot = bootstrap_token(&im.data_dir).await;
    let url = format!("{}/metrics", im.url);
    assert_eq!(get(url.clone(), None).await.0, 401, "no token at the IM");
    let (code, text) = get(url, Some(boot)).await;
    assert_eq!(code, 200);
    assert!(text.contains("lido_cluster_nodes"), "{text}");
    let open_im = TestDaemon::spawn(&["--role", "im"]);
    assert_eq!(get(format!("{}/metrics", open_im.url), None).await.0, 200, "an open IM");
}

#[tokio::test]
async fn an_operator_token_opens_no_session() {
    let d = TestDaemon::spawn(&["--auth", "tokens"]);
    let op = d.client().with_token(bootstrap_token(&d.data_dir).await);
    for customer in ["acme", ""] {
        match op.open_session(customer).await {
            Err(ClientError::Api { status, code, message }) => {
                assert_eq!((status, code.as_str()), (403, "forbidden"));
                assert!(message.contains("operators have no trading account"), "{message}");
            }
            other => panic!("an operator token opened a session for {customer:?}: {other:?}"),
        }
    }
    assert!(op.sessions().await.unwrap().is_empty(), "nothing was opened");
}

/// Two IMs on one etcd, in tokens mode, and one node checked in with both.
struct Cluster {
    _etcd: EtcdCluster,
    ims: [TestDaemon; 2],
    node: TestDaemon,
    dir: std::path::PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

async fn shared_cluster() -> Cluster {
    const SECRET: &str = "tokens-test-cluster-secret-0123456789";
    let dir = temp_data_dir();
    let etcd = EtcdCluster::start(1).expect("etcd (apt-get install etcd-server)");
    let secret = dir.join("cluster-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let im_config = dir.join("im.toml");
    std::fs::write(
        &im_config,
        format!(
            "cluster_secret_file = {:?}\n[cluster]\nregistry = \"etcd\"\netcd_endpoints = {:?}\n\
             checkin_interval_ms = 250\nnode_ttl_ms = 3000\n",
            secret.display().to_string(),
            etcd.client_urls(),
        ),
    )
    .unwrap();
    let im = |id: &str| {
        let config = im_config.to_str().unwrap();
        TestDaemon::spawn(&["--config", config, "--role", "im", "--node-id", id, "--auth", "tokens"])
    };
    let first = im("im1");
    // The second starts once the first has made the bootstrap token, so the
    // cluster has one (the second finds it in etcd and makes none).
    bootstrap_token(&first.data_dir).await;
    let ims = [first, im("im2")];
    let node_config = dir.join("node.toml");
    std::fs::write(
        &node_config,
        format!(
            "cluster_secret_file = {:?}\n[cluster]\ncheckin_interval_ms = 250\nnode_ttl_ms = 3000\n",
            secret.display().to_string()
        ),
    )
    .unwrap();
    let mut args = vec!["--config", node_config.to_str().unwrap(), "--role", "node", "--node-id", "n1"];
    args.extend(["--auth", "tokens"]);
    for im in &ims {
        args.extend(["--im", im.url.as_str()]);
    }
    let node = TestDaemon::spawn(&args);
    Cluster { _etcd: etcd, ims, node, dir }
}

#[tokio::test]
async fn tokens_and_revocations_are_shared_by_every_im() {
    let c = shared_cluster().await;
    let [a, b] = &c.ims;
    let boot = bootstrap_token(&a.data_dir).await;
    assert!(!b.data_dir.join("bootstrap-token").exists(), "one bootstrap token for the cluster");
    let op_a = a.client().with_token(&boot);
    let op_b = b.client().with_token(&boot);
    for op in [&op_a, &op_b] {
        eventually(WAIT, "node n1 at both IMs", || async {
            op.cluster().await.ok()?.nodes.iter().any(|n| n.id == "n1").then_some(())
        })
        .await;
    }

    // Made at A, used at B: a session there, a stream on the node.
    let (acme_id, acme) = customer_token(&op_a, "acme", None).await;
    let at_b = b.client().with_token(&acme);
    let session =
        eventually(WAIT, "B accepts the token made at A", || async { at_b.open_session("acme").await.ok() }).await;
    assert_eq!(session.node, "n1");
    let at_a = a.client().with_token(&acme);
    let from_a = at_a.open_session("acme").await.expect("A accepts it too");
    let node_url = c.node.url.clone();
    let mut stream_b = raw_stream(&node_url, &session.session_id).await;
    let mut stream_a = raw_stream(&node_url, &from_a.session_id).await;

    // Revoked at B: refused at A within a bounded time, and the node's
    // streams of both sessions close at once.
    op_b.revoke_token(&acme_id).await.expect("revoke at B");
    for (what, ws) in [("session opened at B", &mut stream_b), ("session opened at A", &mut stream_a)] {
        let (code, reason, _) = close_frame(ws).await;
        assert_eq!((code, reason.as_str()), (CloseCode::Policy, "token revoked"), "the stream of the {what}");
    }
    eventually(Duration::from_secs(5), "A refuses the token revoked at B", || async {
        (at_a.open_session("acme").await.err()?.status() == Some(401)).then_some(())
    })
    .await;
    let listed = op_a.tokens().await.unwrap();
    assert!(listed.iter().any(|t| t.id == acme_id && t.revoked_at.is_some()), "A lists it revoked");
    let node_session = LidoClient::new(node_url).unwrap().with_token(&from_a.session_id);
    assert_eq!(status(&node_session.open_orders().await.unwrap_err()), Some(401), "the node ended the session");

    // The audit log is the cluster's: B's revocation is in A's log.
    eventually(WAIT, "B's revocation in A's audit log", || async {
        let audit = op_a.audit(&Default::default()).await.ok()?;
        audit.iter().any(|r| r.action == "token_revoke" && r.target == acme_id && r.result == "ok").then_some(())
    })
    .await;
    // A restarted IM keeps them (they live in etcd, not in its own store).
    let fresh_dir = temp_data_dir();
    let config = c.dir.join("im.toml");
    let im3 = TestDaemon::spawn_with(
        &fresh_dir,
        &["--config", config.to_str().unwrap(), "--role", "im", "--node-id", "im3", "--auth", "tokens"],
        &[],
    );
    let op3 = im3.client().with_token(&boot);
    let tokens = op3.tokens().await.expect("a new IM accepts the cluster's operator token");
    assert!(tokens.iter().any(|t| t.id == acme_id && t.revoked_at.is_some()));
    drop(im3);
    let _ = std::fs::remove_dir_all(fresh_dir);
}

//! TLS end to end: a node started with a self-signed certificate (made here
//! with rcgen) serves HTTPS and WSS only; its paper broker's pipe is `wss://`
//! and the manager still drives it; clients trust the certificate only when
//! given it as their CA; plain HTTP on the port and a certificate without
//! its key are refused with a message that says what to do; a hosted
//! trader's pipe is `wss://` with a certificate of its own, never the node's.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use lido_shared::api::Channel;
use lido_shared::client::{ClientError, LidoClient};
use lido_shared::cluster::{ServiceKind, ServiceState, SpawnRequest};
use lido_shared::model::Side;
use lido_tests::{eventually, example_path, lidoctl_path, lidod_path, paper_limit, TestDaemon};
use rust_decimal_macros::dec;

/// A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files.
struct SelfSigned {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn self_signed() -> SelfSigned {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(names).expect("make a certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key_pair.serialize_pem()).expect("write key");
    SelfSigned { _dir: dir, cert: cert_path, key: key_path }
}

fn tls_daemon(certs: &SelfSigned) -> TestDaemon {
    let (cert, key) = (certs.cert.to_str().expect("utf-8 path"), certs.key.to_str().expect("utf-8 path"));
    TestDaemon::spawn(&["--tls-cert", cert, "--tls-key", key])
}

fn lidoctl(url: &str, ca: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(lidoctl_path());
    cmd.env("NO_COLOR", "1")
        .env("LIDO_CONFIG", "/nonexistent/lidoctl-test/config.toml")
        .env_remove("LIDO_TOKEN")
        .env_remove("LIDO_CA")
        .args(["--url", url, "status"])
        .stdin(Stdio::null());
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    cmd.output().expect("run lidoctl")
}

#[tokio::test]
async fn a_tls_node_serves_https_and_wss_and_its_broker_pipe_is_tls() {
    let certs = self_signed();
    let d = tls_daemon(&certs);
    assert!(d.url.starts_with("https://"), "{}", d.url);
    let client = LidoClient::with_ca(d.url.clone(), Some(&certs.cert)).expect("client");

    // The quote comes from the paper broker process, over its pipe.
    let quote = eventually(Duration::from_secs(20), "a quote through the broker's pipe", || async {
        client.quote("paper", "BTC/USD").await.ok()
    })
    .await;
    assert!(quote.ask > quote.bid, "{quote:?}");
    let cluster = client.cluster().await.expect("cluster");
    let broker = cluster.nodes[0].services.iter().find(|s| s.name == "paper-1").expect("paper-1");
    let pipe = broker.ws_url.as_deref().unwrap_or_default();
    assert!(pipe.starts_with("wss://127.0.0.1:"), "the broker's pipe is not TLS: {pipe:?}");

    // An order placed and read back over HTTPS.
    let placed = client.place_order(&paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1000), "tls-1")).await;
    let placed = placed.expect("place an order over https");
    assert!(placed.created);
    let read = client.order(&placed.order.order_id).await.expect("read the order over https");
    assert_eq!(read.client_order_id, "tls-1");

    // A stream over WSS.
    let mut stream = client.stream().await.expect("open the stream over wss");
    stream.subscribe(Channel::Quotes, "paper", Some("BTC/USD")).await.expect("subscribe");
    let event = stream.next_event(Duration::from_secs(20)).await.expect("a quote on the stream");
    assert_eq!(event.channel, Channel::Quotes);

    let log = d.log_text();
    assert!(log.contains("TLS on"), "no TLS line in the log:\n{log}");
    assert!(!log.contains("BEGIN PRIVATE KEY"), "key material in the log");
}

#[tokio::test]
async fn clients_trust_a_private_certificate_only_when_given_it() {
    let certs = self_signed();
    let d = tls_daemon(&certs);

    let ok = lidoctl(&d.url, Some(&certs.cert));
    assert!(ok.status.success(), "lidoctl --ca failed: {}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("paper-1"));

    let refused = lidoctl(&d.url, None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("not trusted") && stderr.contains("--ca"), "unclear error: {stderr}");

    // The SDK says the same.
    let err = LidoClient::new(d.url.clone()).expect("client").health().await.unwrap_err();
    assert!(matches!(err, ClientError::Untrusted { .. }), "{err}");
    let err = LidoClient::new(d.url.clone()).expect("client").stream().await.err().expect("wss refused");
    assert!(matches!(err, ClientError::Untrusted { .. }), "{err}");
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_refused_with_what_to_do() {
    let certs = self_signed();
    let d = tls_daemon(&certs);
    let plain = d.url.replacen("https://", "http://", 1);
    let resp = reqwest::get(format!("{plain}/healthz")).await.expect("an answer");
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.expect("an error body");
    assert_eq!(body["error"]["code"], "tls_required", "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("https://"), "{body}");
}

#[test]
fn a_certificate_without_its_key_stops_lidod_with_a_clear_error() {
    let certs = self_signed();
    let data = tempfile::tempdir().expect("temp dir");
    let out = Command::new(lidod_path())
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&certs.cert)
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("LIDO_TLS_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("run lidod");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("without its key") && stderr.contains("--tls-key"), "{stderr}");
    assert!(out.stdout.is_empty(), "lidod listened anyway");
}

/// A hosted trader on a TLS node serves its pipe over `wss://` with a key
/// and certificate of its own, made by lidod for this start and trusted by
/// its manager alone, and trades through the node over HTTPS; nothing in
/// its environment or its folder is the node's key.
#[tokio::test]
async fn a_hosted_trader_pipes_over_tls_with_its_own_key_never_the_nodes() {
    let certs = self_signed();
    let d = tls_daemon(&certs);
    let c = LidoClient::with_ca(d.url.clone(), Some(&certs.cert)).expect("client");
    let req = SpawnRequest {
        kind: ServiceKind::Trader,
        name: Some("t1".into()),
        options: [
            ("exec".to_string(), example_path("paper_trader").display().to_string()),
            ("customer".to_string(), "acme".to_string()),
            ("run".to_string(), "1".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    c.spawn(&req).await.expect("spawn the trader");
    let (pid, pipe) = eventually(Duration::from_secs(30), "t1 checked in and running", || async {
        let cluster = c.cluster().await.ok()?;
        let t = cluster.service("t1")?;
        (t.state == ServiceState::Running).then_some((t.pid?, t.ws_url.clone()?))
    })
    .await;
    assert!(pipe.starts_with("wss://127.0.0.1:"), "the trader's pipe is not TLS: {pipe:?}");

    // It trades as acme over the node's HTTPS API.
    let session = c.open_session("acme").await.expect("a session");
    let acme = LidoClient::with_ca(d.url.clone(), Some(&certs.cert)).expect("client").with_token(session.session_id);
    let orders = eventually(Duration::from_secs(30), "an order from the trader", || async {
        let orders = acme.orders(&Default::default()).await.ok()?;
        (!orders.is_empty()).then_some(orders)
    })
    .await;
    assert!(orders.iter().all(|o| o.client_order_id.starts_with("pt-")), "{orders:?}");

    // Its environment names its own certificate and key, in its own folder.
    let own = d.data_dir.join("traders").join("t1");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the trader's environment");
    let environ = String::from_utf8_lossy(&environ).into_owned();
    let vars: HashMap<&str, &str> = environ.split('\0').filter_map(|kv| kv.split_once('=')).collect();
    assert_eq!(vars.get("LIDO_TLS_KEY").copied(), own.join("pipe.key").to_str());
    assert_eq!(vars.get("LIDO_TLS_CERT").copied(), own.join("pipe.crt").to_str());
    let node_key = std::fs::read_to_string(&certs.key).expect("the node's key");
    let node_key_body = node_key.lines().nth(1).expect("a PEM body line");
    assert!(!environ.contains(certs.key.to_str().expect("utf-8 path")), "the node's key path reached the trader");
    assert!(!environ.contains(node_key_body), "the node's key reached the trader");

    // Its folder (also its work dir, with its TMPDIR) holds only its own pair, private to the node's user.
    let mut files: Vec<String> = std::fs::read_dir(&own)
        .expect("the trader's folder")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["pipe.crt", "pipe.key", "tmp"]);
    let own_key = std::fs::read_to_string(own.join("pipe.key")).expect("its key");
    assert!(own_key.contains("PRIVATE KEY") && own_key != node_key);
    let mode = std::fs::metadata(own.join("pipe.key")).expect("its key's metadata").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_ne!(std::fs::read(own.join("pipe.crt")).unwrap(), std::fs::read(&certs.cert).unwrap());
    assert!(!d.log_text().contains("BEGIN PRIVATE KEY"), "key material in the log");

    c.stop_service("t1").await.expect("stop the trader");
}

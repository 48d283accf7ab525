//! TLS end to end: a node started with a self-signed certificate (made here
//! with rcgen) serves HTTPS and WSS only; its paper broker's pipe is `wss://`
//! and the manager still drives it; clients trust the certificate only when
//! given it as their CA; plain HTTP on the port and a certificate without
//! its key are refused with a message that says what to do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use lido_shared::api::Channel;
use lido_shared::client::{ClientError, LidoClient};
use lido_shared::model::Side;
use lido_tests::{eventually, lidoctl_path, lidod_path, paper_limit, TestDaemon};
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

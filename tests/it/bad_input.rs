//! Every edge refuses bad input with a 4xx and an error body, changes no
//! state, and keeps serving.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lido_shared::api::{Channel, ServerMessage};
use lido_shared::ErrorBody;
use lido_tests::{eventually, TestDaemon};
use reqwest::Method;
use serde_json::json;

/// What, method, path, body, expected status, expected error code.
type Case = (&'static str, Method, &'static str, Option<String>, u16, &'static str);

fn base_order() -> serde_json::Value {
    json!({"market":"paper","symbol":"BTC/USD","side":"buy","type":"limit","quantity":"0.01","limit_price":"50000","time_in_force":"gtc"})
}

fn with(field: &str, value: serde_json::Value) -> String {
    let mut o = base_order();
    o[field] = value;
    o.to_string()
}

#[tokio::test]
async fn rest_edges_refuse_bad_input_and_change_nothing() {
    // Check-ins prove the cluster secret first; these cases test what comes after.
    const SECRET: &str = "bad-input-cluster-secret";
    let d = TestDaemon::spawn_with_env(&[], &[(lido_shared::access::CLUSTER_SECRET_ENV, SECRET)]);
    let c = d.client();
    eventually(Duration::from_secs(10), "the market", || async { c.quote("paper", "BTC/USD").await.ok() }).await;
    // No connection reuse: after a 413 the server closes the connection it
    // did not read to the end, and a pooled client could pick it up again.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let huge = format!("{{\"market\":\"paper\",\"pad\":\"{}\"}}", "x".repeat(200_000));
    let cases: Vec<Case> = vec![
        ("negative quantity", Method::POST, "/v1/orders", Some(with("quantity", json!("-1"))), 400, "invalid_quantity"),
        ("zero quantity", Method::POST, "/v1/orders", Some(with("quantity", json!("0"))), 400, "invalid_quantity"),
        (
            "off-lot quantity",
            Method::POST,
            "/v1/orders",
            Some(with("quantity", json!("0.000001"))),
            400,
            "invalid_quantity",
        ),
        (
            "non-numeric price",
            Method::POST,
            "/v1/orders",
            Some(with("limit_price", json!("abc"))),
            400,
            "invalid_request",
        ),
        ("negative price", Method::POST, "/v1/orders", Some(with("limit_price", json!("-5"))), 400, "invalid_price"),
        (
            "off-tick price",
            Method::POST,
            "/v1/orders",
            Some(with("limit_price", json!("50000.05"))),
            400,
            "invalid_price",
        ),
        (
            "limit without price",
            Method::POST,
            "/v1/orders",
            Some(with("limit_price", json!(null))),
            400,
            "invalid_price",
        ),
        ("unknown symbol", Method::POST, "/v1/orders", Some(with("symbol", json!("NOPE/USD"))), 404, "unknown_symbol"),
        ("invalid symbol", Method::POST, "/v1/orders", Some(with("symbol", json!("BTC USD"))), 400, "invalid_symbol"),
        ("unknown market", Method::POST, "/v1/orders", Some(with("market", json!("moon"))), 404, "unknown_market"),
        ("unknown side", Method::POST, "/v1/orders", Some(with("side", json!("hold"))), 400, "invalid_request"),
        (
            "bad client order id",
            Method::POST,
            "/v1/orders",
            Some(with("client_order_id", json!("a b"))),
            400,
            "invalid_client_order_id",
        ),
        ("malformed json", Method::POST, "/v1/orders", Some("{\"market\":".into()), 400, "malformed_json"),
        ("oversized body", Method::POST, "/v1/orders", Some(huge.clone()), 413, "body_too_large"),
        ("quote without symbol", Method::GET, "/v1/quotes?market=paper", None, 400, "invalid_query"),
        ("quote unknown symbol", Method::GET, "/v1/quotes?market=paper&symbol=ZZZZ", None, 404, "unknown_symbol"),
        ("book depth zero", Method::GET, "/v1/book?market=paper&symbol=BTC/USD&depth=0", None, 400, "invalid_query"),
        (
            "book depth not a number",
            Method::GET,
            "/v1/book?market=paper&symbol=BTC/USD&depth=x",
            None,
            400,
            "invalid_query",
        ),
        ("orders bad status", Method::GET, "/v1/orders?status=bogus", None, 400, "invalid_query"),
        ("unknown order", Method::GET, "/v1/orders/nope", None, 404, "unknown_order"),
        ("cancel unknown order", Method::DELETE, "/v1/orders/nope", None, 404, "unknown_order"),
        (
            "session bad customer",
            Method::POST,
            "/v1/sessions",
            Some(json!({"customer":""}).to_string()),
            400,
            "invalid_customer",
        ),
        (
            "unknown service kind",
            Method::POST,
            "/v1/services",
            Some(json!({"kind":"rocket","type":"paper"}).to_string()),
            400,
            "invalid_request",
        ),
        (
            "unknown broker type",
            Method::POST,
            "/v1/services",
            Some(json!({"kind":"broker","type":"nasdaq"}).to_string()),
            400,
            "unknown_broker_type",
        ),
        (
            "bad broker option",
            Method::POST,
            "/v1/services",
            Some(json!({"kind":"broker","type":"paper","options":{"seed":"x"}}).to_string()),
            400,
            "invalid_option",
        ),
        (
            "bad service name",
            Method::POST,
            "/v1/services",
            Some(json!({"kind":"broker","type":"paper","name":"Bad Name"}).to_string()),
            400,
            "invalid_name",
        ),
        (
            "market with unknown broker",
            Method::POST,
            "/v1/services",
            Some(json!({"kind":"market","name":"m2","options":{"brokers":"ghost"}}).to_string()),
            400,
            "unknown_broker",
        ),
        ("stop unknown service", Method::DELETE, "/v1/services/ghost", None, 404, "unknown_service"),
        ("drain unknown node", Method::POST, "/v1/nodes/n9/drain", None, 404, "unknown_node"),
        ("check-in malformed", Method::POST, "/v1/internal/checkin", Some("{".into()), 400, "malformed_json"),
        (
            "check-in unknown kind",
            Method::POST,
            "/v1/internal/checkin",
            Some(
                json!({"name":"x","kind":"rocket","type":"paper","ws_url":"ws://127.0.0.1:1/pipe","instance":"i"})
                    .to_string(),
            ),
            400,
            "invalid_request",
        ),
        (
            "check-in bad url",
            Method::POST,
            "/v1/internal/checkin",
            Some(json!({"name":"x","kind":"broker","type":"paper","ws_url":"http://x","instance":"i"}).to_string()),
            400,
            "invalid_checkin",
        ),
        (
            "check-in of an in-memory pipe no task of the node serves",
            Method::POST,
            "/v1/internal/checkin",
            Some(
                json!({"name":"x","kind":"broker","type":"paper","ws_url":"mem://x-1/pipe","instance":"i"}).to_string(),
            ),
            400,
            "invalid_checkin",
        ),
        (
            "check-in market",
            Method::POST,
            "/v1/internal/checkin",
            Some(
                json!({"name":"x","kind":"market","type":"","ws_url":"ws://127.0.0.1:1/pipe","instance":"i"})
                    .to_string(),
            ),
            400,
            "invalid_checkin",
        ),
        ("bad bearer token", Method::GET, "/v1/orders", None, 401, "unauthorized"),
        ("unknown endpoint", Method::GET, "/v1/nothing", None, 404, "not_found"),
    ];
    for (what, method, path, body, status, code) in cases {
        let mut req = http.request(method, format!("{}{}", d.url, path));
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        if what == "bad bearer token" {
            req = req.bearer_auth("s-forged");
        }
        if path == lido_shared::pipe::CHECKIN_PATH {
            req = req.header(lido_shared::access::CLUSTER_SECRET_HEADER, SECRET);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(resp.status().as_u16(), status, "{what}: status");
        let body: ErrorBody = resp.json().await.unwrap_or_else(|e| panic!("{what}: error body: {e}"));
        assert_eq!(body.error.code, code, "{what}: code ({})", body.error.message);
        assert!(!body.error.message.is_empty(), "{what}: message");
    }
    // Nothing changed, and the daemon still serves.
    assert!(c.orders(&Default::default()).await.unwrap().is_empty());
    let snap = c.cluster().await.unwrap();
    let names: Vec<_> = snap.services().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["paper-1", "paper"]);
    assert!(c.health().await.is_ok());
}

#[tokio::test]
async fn stream_edges_answer_bad_frames_with_error_frames() {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    eventually(Duration::from_secs(10), "the market", || async { c.quote("paper", "BTC/USD").await.ok() }).await;
    let mut s = c.stream().await.unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed json", "{\"op\":".into(), "invalid_message"),
        ("unknown op", json!({"op":"dance"}).to_string(), "invalid_message"),
        (
            "unknown channel",
            json!({"op":"subscribe","channel":"gossip","market":"paper"}).to_string(),
            "invalid_message",
        ),
        (
            "unknown market",
            json!({"op":"subscribe","channel":"quotes","market":"moon","symbol":"BTC/USD"}).to_string(),
            "unknown_market",
        ),
        (
            "missing symbol",
            json!({"op":"subscribe","channel":"quotes","market":"paper"}).to_string(),
            "invalid_message",
        ),
        (
            "unknown symbol",
            json!({"op":"subscribe","channel":"trades","market":"paper","symbol":"NOPE/USD"}).to_string(),
            "unknown_symbol",
        ),
        (
            "invalid symbol",
            json!({"op":"subscribe","channel":"book","market":"paper","symbol":"a b"}).to_string(),
            "invalid_symbol",
        ),
        (
            "not subscribed",
            json!({"op":"unsubscribe","channel":"quotes","market":"paper","symbol":"BTC/USD"}).to_string(),
            "not_subscribed",
        ),
        ("oversized frame", format!("{{\"op\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(20_000)), "frame_too_large"),
    ];
    for (what, frame, code) in cases {
        s.send_raw(frame).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), s.next()).await {
            Ok(Ok(ServerMessage::Error { error })) => assert_eq!(error.code, code, "{what}: {}", error.message),
            other => panic!("{what}: expected an error frame, got {other:?}"),
        }
    }
    // The same connection still works.
    s.subscribe(Channel::Quotes, "paper", Some("BTC/USD")).await.unwrap();
    let ev = s.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev.seq, 1);

    // A frame beyond the socket limit closes that connection, not the daemon.
    let url = format!("{}/v1/stream", d.url.replace("http://", "ws://"));
    let (mut raw, _) = tokio_tungstenite_connect(&url).await;
    let _ = raw.send(tokio_tungstenite::tungstenite::Message::text("x".repeat(100_000))).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), raw.next()).await.unwrap();
    assert!(!matches!(closed, Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))));
    assert!(c.health().await.is_ok());
}

async fn tokio_tungstenite_connect(
    url: &str,
) -> (tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, ()) {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    (ws, ())
}

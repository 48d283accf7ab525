//! The fake Kraken's own rules, driven over raw HTTP and WebSocket (no
//! lidod code): the trading and REST rate counters, nonces per key,
//! `cl_ord_id` uniqueness among open orders, the engine's and a pair's
//! trading modes, WebSocket token expiry, price decimals, the executions
//! snapshot, a held top of book and a lost answer.

use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use lido_tests::kraken_fake::{FakeConfig, FakeKraken, Tier, DUPLICATE_ORDER};
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha512};
use tokio_tungstenite::tungstenite::Message;

const WITHIN: Duration = Duration::from_secs(10);

/// A bare Kraken REST client: signs as Kraken's docs say, nonces from a counter.
struct Raw {
    http: reqwest::Client,
    base: String,
    key: String,
    secret: Vec<u8>,
    nonce: u64,
}

impl Raw {
    fn new(fake: &FakeKraken) -> Self {
        let config = FakeConfig::default();
        let secret = base64::engine::general_purpose::STANDARD.decode(config.api_secret).unwrap();
        Self { http: reqwest::Client::new(), base: fake.url.clone(), key: config.api_key, secret, nonce: 1 }
    }

    async fn public(&self, method: &str, query: &str) -> Value {
        let url = format!("{}/0/public/{method}?{query}", self.base);
        let resp = tokio::time::timeout(WITHIN, self.http.get(url).send()).await.unwrap().unwrap();
        resp.json().await.unwrap()
    }

    async fn private(&mut self, method: &str, params: &[(&str, &str)]) -> Value {
        self.nonce += 1;
        self.private_with_nonce(method, params, self.nonce).await
    }

    async fn private_with_nonce(&self, method: &str, params: &[(&str, &str)], nonce: u64) -> Value {
        let nonce = nonce.to_string();
        let mut fields = vec![("nonce", nonce.as_str())];
        fields.extend_from_slice(params);
        let body = serde_urlencoded::to_string(&fields).unwrap();
        let path = format!("/0/private/{method}");
        let digest = Sha256::new().chain_update(nonce.as_bytes()).chain_update(body.as_bytes()).finalize();
        let mut mac = Hmac::<Sha512>::new_from_slice(&self.secret).unwrap();
        mac.update(path.as_bytes());
        mac.update(&digest);
        let sign = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("API-Key", &self.key)
            .header("API-Sign", sign)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        let resp = tokio::time::timeout(WITHIN, request.send()).await.unwrap().unwrap();
        resp.json().await.unwrap()
    }

    async fn add(&mut self, extra: &[(&str, &str)]) -> Value {
        let mut params = vec![
            ("pair", "XBTUSD"),
            ("type", "buy"),
            ("ordertype", "limit"),
            ("volume", "0.001"),
            ("price", "50000.0"),
        ];
        for (k, v) in extra {
            params.retain(|(name, _)| name != k);
            params.push((k, v));
        }
        self.private("AddOrder", &params).await
    }
}

fn error_of(v: &Value) -> Vec<String> {
    v["error"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect()
}

fn ok(v: &Value) -> &Value {
    assert!(error_of(v).is_empty(), "{v}");
    &v["result"]
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Socket {
    tokio::time::timeout(WITHIN, tokio_tungstenite::connect_async(url)).await.unwrap().unwrap().0
}

/// The next text frame that `pick` accepts.
async fn next_where(socket: &mut Socket, pick: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(WITHIN, async {
        loop {
            let Some(Ok(Message::Text(text))) = socket.next().await else { panic!("socket closed") };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if pick(&v) {
                return v;
            }
        }
    })
    .await
    .expect("the frame came in time")
}

#[tokio::test]
async fn add_order_counts_on_the_pairs_trading_counter_even_when_it_fails_validation() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    fake.set_tier(Tier::Starter);
    let mut raw = Raw::new(&fake);
    let mut refused_at = None;
    for i in 0..200 {
        // validate=true: checked and counted, never booked.
        let answer = raw.add(&[("validate", "true")]).await;
        if error_of(&answer) == ["EOrder:Rate limit exceeded"] {
            refused_at = Some(i);
            break;
        }
        ok(&answer);
    }
    let refused_at = refused_at.expect("the Starter threshold of 60 was reached");
    assert!(refused_at >= 60, "refused after {refused_at} orders");
    // An order failing validation counts too; another pair has its own counter.
    assert!(fake.trading_counter("XBTUSD") > dec!(50));
    assert_eq!(fake.trading_counter("ETHUSD"), dec!(0));
    let eth = raw.add(&[("pair", "ETHUSD"), ("price", "3000.00"), ("volume", "0.01"), ("validate", "true")]).await;
    ok(&eth);
    assert!(fake.orders().is_empty());
}

#[tokio::test]
async fn a_quick_cancel_costs_eight() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    fake.set_tier(Tier::Starter);
    let mut raw = Raw::new(&fake);
    let placed = raw.add(&[]).await;
    let txid = ok(&placed)["txid"][0].as_str().unwrap().to_string();
    ok(&raw.private("CancelOrder", &[("txid", &txid)]).await);
    let counter = fake.trading_counter("BTC/USD");
    // 1 for the add, 8 for a cancel under 5 s, less the decay since (1/s).
    assert!(counter > dec!(7) && counter <= dec!(9), "{counter}");
}

#[tokio::test]
async fn the_rest_call_counter_refuses_past_its_maximum_but_not_trading_calls() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    fake.set_tier(Tier::Starter);
    let mut raw = Raw::new(&fake);
    let mut refused_at = None;
    for i in 0..100 {
        if error_of(&raw.private("Balance", &[]).await) == ["EAPI:Rate limit exceeded"] {
            refused_at = Some(i);
            break;
        }
    }
    assert!(refused_at.expect("the Starter maximum of 15 was reached") >= 15);
    // AddOrder is on the trading counter, not this one.
    ok(&raw.add(&[("validate", "true")]).await);
    fake.enforce_rate_limits(false);
    ok(&raw.private("Balance", &[]).await);
}

#[tokio::test]
async fn nonces_are_checked_per_key_across_connections() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let mut first = Raw::new(&fake);
    ok(&first.private("Balance", &[]).await);
    let second = Raw::new(&fake); // another connection, the same key
    let answer = second.private_with_nonce("Balance", &[], first.nonce).await;
    assert_eq!(error_of(&answer), ["EAPI:Invalid nonce"]);
    assert_eq!(fake.last_nonce(), Some(first.nonce));
}

#[tokio::test]
async fn a_cl_ord_id_is_unique_among_open_orders_only() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let mut raw = Raw::new(&fake);
    let first = raw.add(&[("cl_ord_id", "c-1")]).await;
    let txid = ok(&first)["txid"][0].as_str().unwrap().to_string();
    assert_eq!(error_of(&raw.add(&[("cl_ord_id", "c-1")]).await), [DUPLICATE_ORDER]);
    ok(&raw.private("CancelOrder", &[("txid", &txid)]).await);
    ok(&raw.add(&[("cl_ord_id", "c-1")]).await);
    assert_eq!(fake.orders_with_cl_ord_id("c-1"), 2);
}

#[tokio::test]
async fn prices_beyond_the_pairs_decimals_are_refused_with_krakens_text() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let mut raw = Raw::new(&fake);
    assert_eq!(
        error_of(&raw.add(&[("price", "50000.05")]).await),
        ["EOrder:Invalid price:XXBTZUSD price can only be specified up to 1 decimals."]
    );
    assert_eq!(error_of(&raw.add(&[("volume", "0.00001")]).await), ["EOrder:Order minimum not met"]);
    fake.set_pair_limits("XBTUSD", dec!(0.01), dec!(1));
    assert_eq!(error_of(&raw.add(&[]).await), ["EOrder:Order minimum not met"]);
    assert_eq!(
        error_of(&raw.add(&[("volume", "0.01"), ("price", "50000.5")]).await),
        ["EOrder:Tick size check failed"]
    );
    let pairs = raw.public("AssetPairs", "pair=XBTUSD").await;
    assert_eq!(
        (&pairs["result"]["XXBTZUSD"]["ordermin"], &pairs["result"]["XXBTZUSD"]["tick_size"]),
        (&json!("0.01"), &json!("1"))
    );
}

#[tokio::test]
async fn the_engine_status_goes_out_on_every_socket_and_is_enforced() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let mut raw = Raw::new(&fake);
    let mut socket = connect(&fake.ws_url()).await;
    let first = next_where(&mut socket, |v| v["channel"] == "status").await;
    assert_eq!(first["data"][0]["system"], "online");
    let resting = raw.add(&[]).await;
    let txid = ok(&resting)["txid"][0].as_str().unwrap().to_string();

    fake.set_system_status("maintenance");
    let update = next_where(&mut socket, |v| v["channel"] == "status").await;
    assert_eq!(update["data"][0]["system"], "maintenance");
    assert_eq!(error_of(&raw.add(&[]).await), ["EService:Unavailable"]);
    assert_eq!(error_of(&raw.private("CancelOrder", &[("txid", &txid)]).await), ["EService:Unavailable"]);

    fake.set_system_status("post_only");
    assert_eq!(error_of(&raw.add(&[]).await), ["EService:Market in post_only mode"]);
    ok(&raw.add(&[("oflags", "post")]).await);

    fake.set_system_status("cancel_only");
    assert_eq!(error_of(&raw.add(&[("oflags", "post")]).await), ["EService:Market in cancel_only mode"]);
    ok(&raw.private("CancelOrder", &[("txid", &txid)]).await);
    fake.set_system_status("online");
    ok(&raw.add(&[]).await);
}

#[tokio::test]
async fn a_pairs_status_shows_in_asset_pairs_and_limits_orders() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let mut raw = Raw::new(&fake);
    fake.set_pair_status("BTC/USD", "limit_only");
    let pairs = raw.public("AssetPairs", "").await;
    assert_eq!(pairs["result"]["XXBTZUSD"]["status"], "limit_only");
    assert_eq!(pairs["result"]["XETHZUSD"]["status"], "online");
    let market = raw.add(&[("ordertype", "market")]).await;
    assert_eq!(error_of(&market), ["EService:Market in limit_only mode"]);
    ok(&raw.add(&[]).await);
    fake.set_pair_status("XBTUSD", "cancel_only");
    assert_eq!(error_of(&raw.add(&[]).await), ["EService:Market in cancel_only mode"]);
}

#[tokio::test]
async fn a_stale_ws_token_is_refused_and_a_used_one_stays_valid() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let mut raw = Raw::new(&fake);
    let token = |v: &Value| ok(v)["token"].as_str().unwrap().to_string();
    let used = token(&raw.private("GetWebSocketsToken", &[]).await);
    let stale = token(&raw.private("GetWebSocketsToken", &[]).await);
    let mut socket = connect(&fake.ws_auth_url()).await;
    let subscribe =
        |t: &str| json!({"method":"subscribe","params":{"channel":"executions","token":t},"req_id":1}).to_string();
    socket.send(Message::Text(subscribe(&used).into())).await.unwrap();
    let ack = next_where(&mut socket, |v| v["method"] == "subscribe").await;
    assert_eq!(ack["success"], true, "{ack}");

    fake.expire_ws_tokens();
    let mut other = connect(&fake.ws_auth_url()).await;
    other.send(Message::Text(subscribe(&stale).into())).await.unwrap();
    let refused = next_where(&mut other, |v| v["method"] == "subscribe").await;
    assert_eq!((&refused["success"], &refused["error"]), (&json!(false), &json!("EAccount:Invalid token")));
    // The token in use keeps working for orders on its socket.
    let add = json!({"method":"add_order","params":{"order_type":"limit","side":"buy","order_qty":0.001,
        "symbol":"BTC/USD","limit_price":50000.0,"token":used},"req_id":2});
    socket.send(Message::Text(add.to_string().into())).await.unwrap();
    let placed = next_where(&mut socket, |v| v["method"] == "add_order").await;
    assert_eq!(placed["success"], true, "{placed}");
}

#[tokio::test]
async fn the_executions_snapshot_holds_open_orders_and_trades_not_closed_orders() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let mut raw = Raw::new(&fake);
    let gone = raw.add(&[("cl_ord_id", "gone")]).await;
    let gone = ok(&gone)["txid"][0].as_str().unwrap().to_string();
    ok(&raw.private("CancelOrder", &[("txid", &gone)]).await);
    let resting = raw.add(&[("cl_ord_id", "resting")]).await;
    let resting = ok(&resting)["txid"][0].as_str().unwrap().to_string();
    ok(&raw.add(&[("ordertype", "market"), ("cl_ord_id", "taker")]).await);
    let token = ok(&raw.private("GetWebSocketsToken", &[]).await)["token"].as_str().unwrap().to_string();
    let mut socket = connect(&fake.ws_auth_url()).await;
    let subscribe = json!({"method":"subscribe","params":{"channel":"executions","token":token,"snap_trades":true}});
    socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    let snapshot = next_where(&mut socket, |v| v["channel"] == "executions" && v["type"] == "snapshot").await;
    let data = snapshot["data"].as_array().unwrap();
    let orders: Vec<&str> =
        data.iter().filter(|e| e["exec_type"] != "trade").map(|e| e["order_id"].as_str().unwrap()).collect();
    assert_eq!(orders, [resting.as_str()], "{snapshot}");
    assert!(data.iter().any(|e| e["exec_type"] == "trade" && e["cl_ord_id"] == "taker"), "{snapshot}");
    // `snap_trades` defaults to false: open orders only.
    let token = ok(&raw.private("GetWebSocketsToken", &[]).await)["token"].as_str().unwrap().to_string();
    let mut plain = connect(&fake.ws_auth_url()).await;
    let subscribe = json!({"method":"subscribe","params":{"channel":"executions","token":token}});
    plain.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    let ack = next_where(&mut plain, |v| v["method"] == "subscribe").await;
    assert_eq!((&ack["result"]["snap_orders"], &ack["result"]["snap_trades"]), (&json!(true), &json!(false)));
    let snapshot = next_where(&mut plain, |v| v["channel"] == "executions" && v["type"] == "snapshot").await;
    assert_eq!(snapshot["data"].as_array().unwrap().len(), 1, "{snapshot}");
}

#[tokio::test]
async fn a_held_top_of_book_is_exact_and_still() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let raw = Raw::new(&fake);
    fake.hold_top_of_book("BTC/USD", (dec!(61000.5), dec!(0.12345678)), (dec!(61001.0), dec!(2)));
    for _ in 0..3 {
        let ticker = raw.public("Ticker", "pair=XBTUSD").await;
        let t = &ticker["result"]["XXBTZUSD"];
        let read = |v: &Value| v.as_str().unwrap().parse::<rust_decimal::Decimal>().unwrap();
        assert_eq!((read(&t["b"][0]), read(&t["b"][2])), (dec!(61000.5), dec!(0.123)), "{t}");
        assert_eq!(read(&t["a"][0]), dec!(61001.0));
        let depth = raw.public("Depth", "pair=XBTUSD&count=1").await;
        assert_eq!(depth["result"]["XXBTZUSD"]["bids"][0][1], "0.12345678");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(fake.top_of_book("BTC/USD"), Some((dec!(61000.5), dec!(61001.0))));
    fake.release_book("BTC/USD");
}

#[tokio::test]
async fn a_lost_answer_still_places_the_order() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let mut raw = Raw::new(&fake);
    raw.http = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    fake.lose_next_answer();
    raw.nonce += 1;
    let nonce = raw.nonce.to_string();
    let body = format!("nonce={nonce}&pair=XBTUSD&type=buy&ordertype=limit&volume=0.001&price=50000.0&cl_ord_id=lost");
    let path = "/0/private/AddOrder";
    let digest = Sha256::new().chain_update(nonce.as_bytes()).chain_update(body.as_bytes()).finalize();
    let mut mac = Hmac::<Sha512>::new_from_slice(&raw.secret).unwrap();
    mac.update(path.as_bytes());
    mac.update(&digest);
    let sign = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sent = raw
        .http
        .post(format!("{}{path}", raw.base))
        .header("API-Key", &raw.key)
        .header("API-Sign", sign)
        .body(body)
        .send()
        .await;
    assert!(sent.is_err_and(|e| e.is_timeout()), "no answer comes");
    assert_eq!(fake.orders_with_cl_ord_id("lost"), 1);
}

#[tokio::test]
async fn a_rate_limit_switch_refuses_the_next_order_calls() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let mut raw = Raw::new(&fake);
    fake.rate_limit_next(2);
    assert_eq!(error_of(&raw.add(&[]).await), ["EOrder:Rate limit exceeded"]);
    assert_eq!(error_of(&raw.add(&[]).await), ["EOrder:Rate limit exceeded"]);
    ok(&raw.add(&[]).await);
    fake.fail_key(&FakeConfig::default().api_key, Some("EAPI:Invalid key"));
    assert_eq!(error_of(&raw.private("Balance", &[]).await), ["EAPI:Invalid key"]);
}

//! The fake's WebSocket v2 endpoints, in raw JSON: public (`/v2`: `status`
//! on connect and on every change, heartbeats, `ticker`, `book` snapshot +
//! updates with checksums, `trade`, `ping`) and private (`/auth/v2`:
//! `executions` behind a token from GetWebSocketsToken, with a snapshot of
//! open orders and recent trades; `add_order`, `amend_order`,
//! `cancel_order`, `cancel_all`, `cancel_all_orders_after` behind the same
//! token, checked and matched as REST is). Every frame is a documented
//! example (`tests/fixtures/kraken/ws/`) with the fake's values written in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{wire, OrderRequest, Shared};

/// A public channel change, for every socket subscribed to its symbol.
#[derive(Clone, Debug)]
pub struct PublicFrame {
    /// `book`, `ticker` or `trade`.
    pub channel: &'static str,
    pub symbol: String,
    /// The market's book sequence after this change (0 for non-book frames).
    pub seq: u64,
    pub message: Value,
}

pub async fn public(ws: WebSocketUpgrade, State(fake): State<Arc<Shared>>) -> Response {
    ws.on_upgrade(move |socket| public_socket(socket, fake))
}

pub async fn private(ws: WebSocketUpgrade, State(fake): State<Arc<Shared>>) -> Response {
    ws.on_upgrade(move |socket| private_socket(socket, fake))
}

/// What a socket is subscribed to: (channel, symbol) → book sequence of
/// the snapshot it was sent.
type Subs = HashMap<(String, String), u64>;

async fn public_socket(mut socket: WebSocket, fake: Arc<Shared>) {
    let (connection_id, system) = {
        let mut s = fake.lock();
        (s.ws_connections_opened(), s.system.clone())
    };
    let mut drops = fake.drops.subscribe();
    let mut feed = fake.public_tx.subscribe();
    let mut statuses = fake.status_tx.subscribe();
    if send(&mut socket, &status(connection_id, &system)).await.is_err() {
        return;
    }
    let mut subs = Subs::new();
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = drops.changed() => return,
            incoming = socket.recv() => {
                let Some(Ok(Message::Text(text))) = incoming else {
                    if matches!(incoming, Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_)))) { continue; }
                    return;
                };
                for out in public_request(&fake, &mut subs, text.as_str()) {
                    // A stalled Kraken answers nothing, pings included.
                    if !fake.stalled() && send(&mut socket, &out).await.is_err() {
                        return;
                    }
                }
            }
            system = statuses.recv() => {
                let Ok(system) = system else { continue };
                if send(&mut socket, &status(connection_id, &system)).await.is_err() {
                    return;
                }
            }
            frame = feed.recv() => {
                let frame = match frame {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let key = (frame.channel.to_string(), frame.symbol.clone());
                let wanted = subs.get(&key).is_some_and(|seq| frame.seq == 0 || frame.seq > *seq);
                if wanted && !fake.stalled() {
                    let message = maybe_corrupt(&fake, frame.message);
                    if send(&mut socket, &message).await.is_err() {
                        return;
                    }
                }
            }
            _ = heartbeat.tick() => {
                if !subs.is_empty() && !fake.stalled() && send(&mut socket, &wire::example("ws/heartbeat")).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The frame as sent: a book update gets a wrong checksum when asked.
fn maybe_corrupt(fake: &Shared, mut message: Value) -> Value {
    if message["channel"] != "book" || message["type"] != "update" {
        return message;
    }
    let mut s = fake.lock();
    if std::mem::take(&mut s.corrupt_next_checksum) {
        let wrong = message["data"][0]["checksum"].as_u64().unwrap_or(0) ^ 0x5a5a;
        message["data"][0]["checksum"] = json!(wrong);
    }
    message
}

/// Answers one public request; returns the frames to send, in order.
fn public_request(fake: &Shared, subs: &mut Subs, text: &str) -> Vec<Value> {
    let time_in = wire::now_text();
    let Ok(request) = serde_json::from_str::<Value>(text) else {
        return vec![refusal("unknown", &Value::Null, "EGeneral:Invalid arguments", &time_in)];
    };
    let req_id = request["req_id"].clone();
    let method = request["method"].as_str().unwrap_or("unknown").to_string();
    match method.as_str() {
        "ping" => vec![pong(&req_id, &time_in)],
        "subscribe" | "unsubscribe" => {
            if method == "subscribe" {
                fake.lock().public_subscribes += 1;
            }
            let params = &request["params"];
            let Some(symbols) = params["symbol"].as_array() else {
                return vec![refusal(&method, &req_id, "EGeneral:Invalid arguments:symbol", &time_in)];
            };
            let mut out = Vec::new();
            for symbol in symbols.iter().filter_map(Value::as_str) {
                out.extend(subscription(fake, subs, params, symbol, method == "subscribe", &req_id, &time_in));
            }
            out
        }
        other => vec![refusal(other, &req_id, "EGeneral:Invalid arguments:method", &time_in)],
    }
}

fn subscription(
    fake: &Shared,
    subs: &mut Subs,
    params: &Value,
    symbol: &str,
    subscribe: bool,
    req_id: &Value,
    time_in: &str,
) -> Vec<Value> {
    let method = if subscribe { "subscribe" } else { "unsubscribe" };
    let channel = params["channel"].as_str().unwrap_or_default().to_string();
    if !matches!(channel.as_str(), "book" | "ticker" | "trade") {
        return vec![refusal(method, req_id, "EGeneral:Invalid arguments:channel", time_in)];
    }
    let state = fake.lock();
    let Some(market) = state.markets.get(symbol) else {
        let mut r = refusal(method, req_id, &format!("Currency pair not supported {symbol}"), time_in);
        r["symbol"] = json!(symbol);
        return vec![r];
    };
    let depth = params["depth"].as_u64();
    if channel == "book" && !matches!(depth, None | Some(10 | 25 | 100 | 500 | 1000)) {
        return vec![refusal(method, req_id, "EGeneral:Invalid arguments:depth", time_in)];
    }
    let key = (channel.clone(), symbol.to_string());
    if subscribe == subs.contains_key(&key) {
        let error = if subscribe { "Already subscribed" } else { "Subscription Not Found" };
        return vec![refusal(method, req_id, error, time_in)];
    }
    let snapshot = params["snapshot"].as_bool().unwrap_or(true);
    let mut ack = wire::example("ws/subscribe");
    ack["method"] = json!(method);
    ack["req_id"] = req_id.clone();
    ack["result"] = json!({ "channel": channel, "snapshot": snapshot, "symbol": symbol });
    if channel == "book" {
        ack["result"]["depth"] = json!(depth.unwrap_or(10));
    }
    ack["time_in"] = json!(time_in);
    ack["time_out"] = json!(wire::now_text());
    strip_req_id(&mut ack);
    if !subscribe {
        subs.remove(&key);
        return vec![ack];
    }
    subs.insert(key, market.seq);
    let first = match channel.as_str() {
        "book" => Some(market.snapshot_frame()),
        "ticker" => Some(market.ticker_frame("snapshot")),
        _ => None,
    };
    std::iter::once(ack).chain(first.filter(|_| snapshot)).collect()
}

async fn private_socket(mut socket: WebSocket, fake: Arc<Shared>) {
    let (connection_id, system) = {
        let mut s = fake.lock();
        (s.ws_connections_opened(), s.system.clone())
    };
    let mut drops = fake.drops.subscribe();
    let mut executions = fake.exec_tx.subscribe();
    let mut statuses = fake.status_tx.subscribe();
    if send(&mut socket, &status(connection_id, &system)).await.is_err() {
        return;
    }
    let mut subscribed = false;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = drops.changed() => return,
            incoming = socket.recv() => {
                let Some(Ok(Message::Text(text))) = incoming else {
                    if matches!(incoming, Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_)))) { continue; }
                    return;
                };
                let answer = private_request(&fake, text.as_str(), subscribed);
                subscribed = answer.subscribed;
                if answer.hang_up {
                    return;
                }
                if let Some(delay) = answer.stall {
                    tokio::time::sleep(delay).await;
                }
                for out in answer.frames {
                    if !fake.stalled() && send(&mut socket, &out).await.is_err() {
                        return;
                    }
                }
            }
            system = statuses.recv() => {
                let Ok(system) = system else { continue };
                if send(&mut socket, &status(connection_id, &system)).await.is_err() {
                    return;
                }
            }
            entry = executions.recv() => {
                let (seq, entry) = match entry {
                    Ok(e) => e,
                    Err(_) => return,
                };
                if subscribed && !fake.stalled() {
                    let mut message = wire::example("ws/executions_update");
                    message["data"] = json!([entry]);
                    message["sequence"] = json!(seq);
                    if send(&mut socket, &message).await.is_err() {
                        return;
                    }
                }
            }
            _ = heartbeat.tick() => {
                if subscribed && !fake.stalled() && send(&mut socket, &wire::example("ws/heartbeat")).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// What one private request comes to.
struct PrivateAnswer {
    frames: Vec<Value>,
    /// Whether the socket is now subscribed to `executions`.
    subscribed: bool,
    /// Hold the frames back this long first.
    stall: Option<Duration>,
    /// Close the socket instead of answering.
    hang_up: bool,
}

/// The private methods that act on orders.
const ORDER_METHODS: [&str; 5] = ["add_order", "amend_order", "cancel_order", "cancel_all", "cancel_all_orders_after"];

fn private_request(fake: &Shared, text: &str, subscribed: bool) -> PrivateAnswer {
    let time_in = wire::now_text();
    let answer = |frames| PrivateAnswer { frames, subscribed, stall: None, hang_up: false };
    let Ok(request) = serde_json::from_str::<Value>(text) else {
        return answer(vec![refusal("unknown", &Value::Null, "EGeneral:Invalid arguments", &time_in)]);
    };
    let req_id = request["req_id"].clone();
    let method = request["method"].as_str().unwrap_or("unknown").to_string();
    let params = &request["params"];
    let token = params["token"].as_str();
    if ORDER_METHODS.contains(&method.as_str()) {
        if let Some(error) = token.and_then(|t| fake.key_failure_for_token(t)) {
            return answer(vec![refusal(&method, &req_id, &error, &time_in)]);
        }
        let (fail, stall) = fake.take_switches();
        if let Some(error) = fail {
            return PrivateAnswer { stall, ..answer(vec![refusal(&method, &req_id, &error, &time_in)]) };
        }
        let (result, hang_up) = order_method(fake, &method, params);
        let frame = match result {
            Ok(result) => {
                let mut ok = wire::example(&format!("ws/{method}"));
                ok["req_id"] = req_id.clone();
                ok["result"] = result;
                ok["time_in"] = json!(time_in);
                ok["time_out"] = json!(wire::now_text());
                strip_req_id(&mut ok);
                ok
            }
            Err(error) => refusal(&method, &req_id, &error, &time_in),
        };
        return PrivateAnswer { stall, hang_up, ..answer(vec![frame]) };
    }
    match method.as_str() {
        "ping" => answer(vec![pong(&req_id, &time_in)]),
        "subscribe" if params["channel"] == "executions" => {
            let mut state = fake.lock();
            if let Some(error) = state.token_error(token) {
                return answer(vec![refusal("subscribe", &req_id, error, &time_in)]);
            }
            if subscribed {
                return answer(vec![refusal("subscribe", &req_id, "Already subscribed", &time_in)]);
            }
            if let Some(t) = token.and_then(|t| state.tokens.get_mut(t)) {
                t.used = true;
            }
            // `snap_orders` defaults to true, `snap_trades` to false (the
            // executions reference); the deprecated `snapshot: false` asks for neither.
            let wanted = |name: &str, default: bool| {
                params[name].as_bool().unwrap_or(default) && params["snapshot"].as_bool() != Some(false)
            };
            let (snap_orders, snap_trades) = (wanted("snap_orders", true), wanted("snap_trades", false));
            let mut ack = wire::variant("ws/subscribe", "executions");
            ack["req_id"] = req_id;
            ack["result"]["maxratecount"] = json!(state.tier.trading_max().to_string().parse::<u64>().unwrap_or(0));
            ack["result"]["snap_orders"] = json!(snap_orders);
            ack["result"]["snap_trades"] = json!(snap_trades);
            ack["time_in"] = json!(time_in);
            ack["time_out"] = json!(wire::now_text());
            strip_req_id(&mut ack);
            let mut snapshot = wire::example("ws/executions_snapshot");
            snapshot["data"] = Value::Array(state.executions_snapshot(snap_orders, snap_trades));
            snapshot["sequence"] = json!(state.exec_seq);
            PrivateAnswer { frames: vec![ack, snapshot], subscribed: true, stall: state.snapshot_delay, hang_up: false }
        }
        other => answer(vec![refusal(other, &req_id, "EGeneral:Invalid arguments", &time_in)]),
    }
}

/// An order method after the switches: the token, then the REST core.
/// Returns the `result` (or Kraken's error) and whether to hang up unanswered.
fn order_method(fake: &Shared, method: &str, params: &Value) -> (Result<Value, String>, bool) {
    let mut state = fake.lock();
    if let Some(error) = state.token_error(params["token"].as_str()) {
        return (Err(error.into()), false);
    }
    let ids = |name: &str| -> Option<String> {
        match &params[name] {
            Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_string),
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    };
    match method {
        "add_order" => {
            state.ws_add_orders += 1;
            let hang_up =
                std::mem::take(&mut state.drop_after_add_order) || std::mem::take(&mut state.lose_next_answer);
            let result = OrderRequest::from_ws(params).and_then(|r| {
                let placed = fake.checked_add_order(&mut state, &r)?;
                let mut result = json!({ "order_id": placed["txid"][0] });
                if let Some(id) = &r.cl_ord_id {
                    result["cl_ord_id"] = json!(id);
                }
                if r.validate {
                    result = json!({});
                }
                Ok(result)
            });
            (result, hang_up)
        }
        "cancel_order" => {
            state.ws_cancels += 1;
            let hang_up = std::mem::take(&mut state.lose_next_answer);
            let Some(target) = ids("order_id").or_else(|| ids("cl_ord_id")) else {
                return (Err("EGeneral:Invalid arguments:order_id".into()), false);
            };
            let result = fake.checked_cancel(&mut state, &target).map(|txid| {
                let mut r = json!({ "order_id": txid });
                if let Some(id) = ids("cl_ord_id") {
                    r["cl_ord_id"] = json!(id);
                }
                r
            });
            (result, hang_up)
        }
        "amend_order" => {
            let Some(target) = params["order_id"].as_str().or(params["cl_ord_id"].as_str()).map(str::to_string) else {
                return (Err("EGeneral:Invalid arguments:order_id".into()), false);
            };
            let qty: Option<Decimal> = wire::json_decimal(&params["order_qty"]);
            let price: Option<Decimal> = wire::json_decimal(&params["limit_price"]);
            let result = fake.amend(&mut state, &target, qty, price).map(|amend_id| {
                let mut r = json!({ "amend_id": amend_id });
                if let Some(id) = params["cl_ord_id"].as_str() {
                    r["cl_ord_id"] = json!(id);
                } else {
                    r["order_id"] = json!(target);
                }
                r
            });
            (result, false)
        }
        "cancel_all" => (fake.cancel_all(&mut state).map(|count| json!({ "count": count })), false),
        "cancel_all_orders_after" => match params["timeout"].as_u64() {
            Some(timeout) => (Ok(state.dead_man(timeout)), false),
            None => (Err("EGeneral:Invalid arguments:timeout".into()), false),
        },
        other => (Err(format!("EGeneral:Invalid arguments:{other}")), false),
    }
}

/// A `status` update (sent on connect and on every change of the engine's status).
fn status(connection_id: u64, system: &str) -> Value {
    let mut v = wire::example("ws/status");
    v["data"][0]["connection_id"] = json!(connection_id);
    v["data"][0]["system"] = json!(system);
    v
}

fn pong(req_id: &Value, time_in: &str) -> Value {
    let mut v = wire::example("ws/pong");
    v["req_id"] = req_id.clone();
    v["time_in"] = json!(time_in);
    v["time_out"] = json!(wire::now_text());
    strip_req_id(&mut v);
    v
}

/// A method's error answer (the documented `add_order` error example,
/// renamed).
fn refusal(method: &str, req_id: &Value, error: &str, time_in: &str) -> Value {
    let mut v = wire::variant("ws/add_order", "error");
    v["method"] = json!(method);
    v["req_id"] = req_id.clone();
    v["error"] = json!(error);
    v["time_in"] = json!(time_in);
    v["time_out"] = json!(wire::now_text());
    strip_req_id(&mut v);
    v
}

/// `req_id` is echoed only when the request had one.
fn strip_req_id(v: &mut Value) {
    if v["req_id"].is_null() {
        if let Some(m) = v.as_object_mut() {
            m.remove("req_id");
        }
    }
}

async fn send(socket: &mut WebSocket, message: &Value) -> Result<(), ()> {
    socket.send(Message::Text(wire::render(message).into())).await.map_err(|_| ())
}

//! The fake's WebSocket v2 endpoints: public (`/v2`: status on connect,
//! heartbeats, `ticker`, `book` snapshot + updates with checksums, `trade`,
//! `ping`) and private (`/auth/v2`: `executions` behind a token from
//! GetWebSocketsToken, with a snapshot of open orders and recent fills;
//! `add_order` / `cancel_order` behind the same token, checked and matched
//! as REST AddOrder / CancelOrder are).
//! Answers use Kraken's shapes (`{"method","success","result"|"error",
//! "req_id","time_in","time_out"}`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use lido_shared::model::Symbol;
use lido_shared::model::{OrderType, TimeInForce};
use lidod::venue::kraken::messages::{
    AddOrderParams, AddOrderRequest, CancelOrderParams, Channel, KrakenOrderType, KrakenTimeInForce, MessageType,
    MethodResponse, StatusData, SubscriptionParams, WsMessage, WsRequest,
};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::Shared;

/// A public channel change, for every socket subscribed to its symbol.
#[derive(Clone, Debug)]
pub struct PublicFrame {
    pub channel: Channel,
    pub symbol: String,
    /// The market's book sequence after this change (0 for non-book frames).
    pub seq: u64,
    pub message: WsMessage,
}

pub async fn public(ws: WebSocketUpgrade, State(fake): State<Arc<Shared>>) -> Response {
    ws.on_upgrade(move |socket| public_socket(socket, fake))
}

pub async fn private(ws: WebSocketUpgrade, State(fake): State<Arc<Shared>>) -> Response {
    ws.on_upgrade(move |socket| private_socket(socket, fake))
}

/// What a socket is subscribed to: (channel, symbol) → book sequence of
/// the snapshot it was sent.
type Subs = HashMap<(Channel, String), u64>;

async fn public_socket(mut socket: WebSocket, fake: Arc<Shared>) {
    let connection_id = fake.lock().ws_connections_opened();
    let mut drops = fake.drops.subscribe();
    let mut feed = fake.public_tx.subscribe();
    if send(&mut socket, &status(connection_id)).await.is_err() {
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
            frame = feed.recv() => {
                let frame = match frame {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let wanted = subs.get(&(frame.channel, frame.symbol.clone())).is_some_and(|seq| frame.seq == 0 || frame.seq > *seq);
                if wanted && !fake.stalled() {
                    let message = fake.maybe_corrupt(frame.message);
                    if send(&mut socket, &message).await.is_err() {
                        return;
                    }
                }
            }
            _ = heartbeat.tick() => {
                if !subs.is_empty() && !fake.stalled() && send(&mut socket, &WsMessage::Heartbeat).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Answers one public request; returns the frames to send, in order.
fn public_request(fake: &Shared, subs: &mut Subs, text: &str) -> Vec<WsMessage> {
    let time_in = now_text();
    let Ok(request) = serde_json::from_str::<WsRequest<SubscriptionParams>>(text) else {
        return vec![refusal("unknown", None, "EGeneral:Invalid arguments", &time_in)];
    };
    let req_id = request.req_id;
    match request.method.as_str() {
        "ping" => vec![WsMessage::Response(MethodResponse {
            method: "pong".into(),
            success: true,
            result: None,
            error: None,
            req_id,
            symbol: None,
            time_in: Some(time_in),
            time_out: Some(now_text()),
        })],
        "subscribe" | "unsubscribe" => {
            let Some(params) = request.params else {
                return vec![refusal(&request.method, req_id, "EGeneral:Invalid arguments", &time_in)];
            };
            let subscribe = request.method == "subscribe";
            let mut out = Vec::new();
            for symbol in params.symbol.clone().unwrap_or_default() {
                out.extend(subscription(fake, subs, &params, &symbol, subscribe, req_id, &time_in));
            }
            out
        }
        other => vec![refusal(other, req_id, "EGeneral:Invalid arguments:method", &time_in)],
    }
}

fn subscription(
    fake: &Shared,
    subs: &mut Subs,
    params: &SubscriptionParams,
    symbol: &str,
    subscribe: bool,
    req_id: Option<u64>,
    time_in: &str,
) -> Vec<WsMessage> {
    let method = if subscribe { "subscribe" } else { "unsubscribe" };
    let state = fake.lock();
    let known = Symbol::parse(symbol).ok().and_then(|s| state.markets.get(s.as_str()));
    let Some(market) = known else {
        return vec![refusal(method, req_id, &format!("Currency pair not supported {symbol}"), time_in)];
    };
    if params.channel == Channel::Book && !matches!(params.depth, None | Some(10 | 25 | 100 | 500 | 1000)) {
        return vec![refusal(method, req_id, "EGeneral:Invalid arguments:depth", time_in)];
    }
    let key = (params.channel, symbol.to_string());
    if subscribe == subs.contains_key(&key) {
        let error = if subscribe { "Already subscribed" } else { "Subscription Not Found" };
        return vec![refusal(method, req_id, error, time_in)];
    }
    let ack = WsMessage::Response(MethodResponse {
        method: method.into(),
        success: true,
        result: Some(
            json!({ "channel": params.channel, "symbol": symbol, "snapshot": params.snapshot.unwrap_or(true) }),
        ),
        error: None,
        req_id,
        symbol: None,
        time_in: Some(time_in.to_string()),
        time_out: Some(now_text()),
    });
    if !subscribe {
        subs.remove(&key);
        return vec![ack];
    }
    subs.insert(key, market.seq);
    let snapshot = match params.channel {
        Channel::Book => Some(super::market::book_frame(MessageType::Snapshot, market.snapshot())),
        Channel::Ticker => Some(WsMessage::Ticker { kind: MessageType::Snapshot, data: vec![market.ticker()] }),
        Channel::Trade | Channel::Executions => None,
    };
    std::iter::once(ack).chain(snapshot).collect()
}

async fn private_socket(mut socket: WebSocket, fake: Arc<Shared>) {
    let connection_id = fake.lock().ws_connections_opened();
    let mut drops = fake.drops.subscribe();
    let mut executions = fake.exec_tx.subscribe();
    if send(&mut socket, &status(connection_id)).await.is_err() {
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
            entry = executions.recv() => {
                let entry = match entry {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if subscribed && !fake.stalled() {
                    let message = WsMessage::Executions { kind: MessageType::Update, sequence: Some(entry.0), data: vec![entry.1] };
                    if send(&mut socket, &message).await.is_err() {
                        return;
                    }
                }
            }
            _ = heartbeat.tick() => {
                if subscribed && !fake.stalled() && send(&mut socket, &WsMessage::Heartbeat).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// What one private request comes to.
struct PrivateAnswer {
    frames: Vec<WsMessage>,
    /// Whether the socket is now subscribed to `executions`.
    subscribed: bool,
    /// Hold the frames back this long first.
    stall: Option<Duration>,
    /// Close the socket instead of answering.
    hang_up: bool,
}

fn private_request(fake: &Shared, text: &str, subscribed: bool) -> PrivateAnswer {
    let time_in = now_text();
    let answer = |frames| PrivateAnswer { frames, subscribed, stall: None, hang_up: false };
    let Ok(request) = serde_json::from_str::<WsRequest<Value>>(text) else {
        return answer(vec![refusal("unknown", None, "EGeneral:Invalid arguments", &time_in)]);
    };
    let req_id = request.req_id;
    if matches!(request.method.as_str(), "add_order" | "cancel_order") {
        let token = request.params.as_ref().and_then(|p| p.get("token")).and_then(Value::as_str);
        if let Some(error) = token.and_then(|t| fake.key_failure_for_token(t)) {
            return answer(vec![refusal(&request.method, req_id, &error, &time_in)]);
        }
        let (fail, stall) = fake.take_switches();
        if let Some(error) = fail {
            return PrivateAnswer { stall, ..answer(vec![refusal(&request.method, req_id, &error, &time_in)]) };
        }
        let (result, hang_up) = order_method(fake, &request.method, request.params.unwrap_or(Value::Null));
        let frame = match result {
            Ok(ack) => WsMessage::Response(MethodResponse {
                method: request.method.clone(),
                success: true,
                result: Some(ack),
                error: None,
                req_id,
                symbol: None,
                time_in: Some(time_in),
                time_out: Some(now_text()),
            }),
            Err(error) => refusal(&request.method, req_id, &error, &time_in),
        };
        return PrivateAnswer { stall, hang_up, ..answer(vec![frame]) };
    }
    let params = request.params.map(serde_json::from_value::<SubscriptionParams>);
    let (frames, subscribed) = match (request.method.as_str(), params) {
        ("ping", _) => {
            let pong = MethodResponse {
                method: "pong".into(),
                success: true,
                result: None,
                error: None,
                req_id,
                symbol: None,
                time_in: Some(time_in),
                time_out: Some(now_text()),
            };
            (vec![WsMessage::Response(pong)], subscribed)
        }
        ("subscribe", Some(Ok(params))) if params.channel == Channel::Executions => {
            let state = fake.lock();
            let stall = state.snapshot_delay;
            let valid = params.token.as_ref().is_some_and(|t| state.tokens.contains(&t.0));
            if !valid {
                return answer(vec![refusal("subscribe", req_id, "EAccount:Invalid token", &time_in)]);
            }
            if subscribed {
                return answer(vec![refusal("subscribe", req_id, "Already subscribed", &time_in)]);
            }
            let ack = WsMessage::Response(MethodResponse {
                method: "subscribe".into(),
                success: true,
                result: Some(json!({ "channel": "executions", "snapshot": true })),
                error: None,
                req_id,
                symbol: None,
                time_in: Some(time_in),
                time_out: Some(now_text()),
            });
            let snapshot = WsMessage::Executions {
                kind: MessageType::Snapshot,
                sequence: Some(state.exec_seq),
                data: state.executions_snapshot(&fake.pairs),
            };
            return PrivateAnswer { frames: vec![ack, snapshot], subscribed: true, stall, hang_up: false };
        }
        (method, _) => (vec![refusal(method, req_id, "EGeneral:Invalid arguments", &time_in)], subscribed),
    };
    PrivateAnswer { frames, subscribed, stall: None, hang_up: false }
}

/// `add_order` or `cancel_order`: the token checked, then the REST core.
/// Returns the `result` (or Kraken's error) and whether to hang up unanswered.
fn order_method(fake: &Shared, method: &str, params: Value) -> (Result<Value, String>, bool) {
    let invalid = |e: serde_json::Error| format!("EGeneral:Invalid arguments:{e}");
    let mut state = fake.lock();
    if method == "cancel_order" {
        state.ws_cancels += 1;
        let result = serde_json::from_value::<CancelOrderParams>(params).map_err(invalid).and_then(|p| {
            if !state.tokens.contains(&p.token.0) {
                return Err("EAccount:Invalid token".into());
            }
            let by_txid = p.order_id.as_ref().and_then(|ids| ids.first()).map(String::as_str);
            let by_client = p.cl_ord_id.as_ref().and_then(|ids| ids.first()).map(String::as_str);
            let txid = fake.cancel_order(&mut state, by_txid, by_client)?;
            Ok(json!({ "order_id": txid }))
        });
        return (result, false);
    }
    let params = match serde_json::from_value::<AddOrderParams>(params) {
        Ok(p) if state.tokens.contains(&p.token.0) => p,
        Ok(_) => return (Err("EAccount:Invalid token".into()), false),
        Err(e) => return (Err(invalid(e)), false),
    };
    state.ws_add_orders += 1;
    let hang_up = std::mem::take(&mut state.drop_after_add_order);
    let result = rest_form(&params).and_then(|fields| {
        let placed = fake.add_order(&mut state, &fields)?;
        let txid = placed["txid"][0].as_str().unwrap_or_default().to_string();
        Ok(json!({ "order_id": txid, "cl_ord_id": params.cl_ord_id }))
    });
    (result, hang_up)
}

/// An `add_order`'s params as the AddOrder form the REST core checks.
fn rest_form(p: &AddOrderParams) -> Result<Vec<(String, String)>, String> {
    let time_in_force = match p.time_in_force {
        None | Some(KrakenTimeInForce::Gtc) => TimeInForce::Gtc,
        Some(KrakenTimeInForce::Ioc) => TimeInForce::Ioc,
        Some(KrakenTimeInForce::Gtd) => return Err("EGeneral:Invalid arguments:expire_time".into()),
    };
    let request = AddOrderRequest {
        pair: p.symbol.clone(),
        side: p.side,
        order_type: match p.order_type {
            KrakenOrderType::Market => OrderType::Market,
            KrakenOrderType::Limit => OrderType::Limit,
        },
        volume: p.order_qty,
        price: p.limit_price,
        time_in_force,
        post_only: p.post_only.unwrap_or(false),
        cl_ord_id: p.cl_ord_id.clone(),
        validate: p.validate.unwrap_or(false),
    };
    // No nonce on the socket; the form parser wants one.
    let fields = request.form(1).map_err(|e| format!("EGeneral:Invalid arguments:{e}"))?;
    Ok(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn status(connection_id: u64) -> WsMessage {
    WsMessage::Status(vec![StatusData {
        system: "online".into(),
        api_version: Some("v2".into()),
        connection_id: Some(connection_id),
        version: Some("2.0.0".into()),
    }])
}

fn refusal(method: &str, req_id: Option<u64>, error: &str, time_in: &str) -> WsMessage {
    WsMessage::Response(MethodResponse {
        method: method.into(),
        success: false,
        result: None,
        error: Some(error.into()),
        req_id,
        symbol: None,
        time_in: Some(time_in.to_string()),
        time_out: Some(now_text()),
    })
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn send(socket: &mut WebSocket, message: &WsMessage) -> Result<(), ()> {
    let text = message.to_json().map_err(|_| ())?;
    socket.send(Message::Text(text.into())).await.map_err(|_| ())
}

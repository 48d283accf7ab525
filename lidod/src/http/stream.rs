//! The algo stream `/v1/stream`: subscribe to quotes, trades, book, own
//! orders and fills. Each subscription is a stream with its own sequence
//! numbers starting at 1; market data starts with a snapshot; data Lido
//! could not carry (broker restart, slow consumer) becomes a gap marker.
//! Operators may stream market data; orders and fills need a customer.

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use lido_shared::api::{
    Channel, ClientMessage, ServerMessage, StreamAck, StreamEvent, StreamKey, MAX_STREAM_FRAME_BYTES,
};
use lido_shared::model::Symbol;
use lido_shared::ErrorDetail;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::infra::Infra;
use crate::markets::{feed_of, MdMsg, OrderMsg};

pub async fn upgrade(State(infra): State<Infra>, caller: Caller, ws: WebSocketUpgrade) -> Response {
    let customer = caller.customer().ok().map(str::to_string);
    // Frames up to 64 KiB are read and answered with an error when over the
    // protocol limit; anything larger closes the socket.
    ws.max_message_size(64 * 1024).max_frame_size(64 * 1024).on_upgrade(move |socket| session(infra, customer, socket))
}

/// What the writer sends: a message, or a market-data frame already
/// serialized by its forwarder (the venue data inside is serialized once
/// for all subscribers).
enum Outgoing {
    Message(ServerMessage),
    Text(String),
}

impl From<ServerMessage> for Outgoing {
    fn from(msg: ServerMessage) -> Self {
        Self::Message(msg)
    }
}

/// `StreamEvent` as written, borrowing its data as raw JSON.
#[derive(serde::Serialize)]
struct RawEvent<'a> {
    channel: Channel,
    market: &'a str,
    symbol: Option<&'a str>,
    seq: u64,
    data: &'a RawValue,
}

struct Sub {
    task: JoinHandle<()>,
    /// Market-data feed to leave on unsubscribe.
    feed: Option<(lido_shared::pipe::Feed, Symbol)>,
}

async fn session(infra: Infra, customer: Option<String>, socket: WebSocket) {
    let (mut sink, mut source) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Outgoing>(1024);
    let writer = tokio::spawn(async move {
        let delivered = metrics::counter!("lido_stream_messages_total");
        while let Some(msg) = out_rx.recv().await {
            let text = match msg {
                Outgoing::Text(text) => text,
                Outgoing::Message(msg) => {
                    let Ok(text) = serde_json::to_string(&msg) else {
                        continue;
                    };
                    text
                }
            };
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
            delivered.increment(1);
        }
        let _ = sink.close().await;
    });
    infra.markets().stream_opened();
    let mut subs: HashMap<StreamKey, Sub> = HashMap::new();
    let closing = infra.closing().clone();
    loop {
        let msg = tokio::select! {
            _ = closing.cancelled() => break,
            msg = source.next() => match msg {
                Some(Ok(msg)) => msg,
                _ => break,
            },
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                let _ = out.send(error("invalid_message", "send JSON text frames").into()).await;
                continue;
            }
            Message::Close(_) => break,
            _ => continue,
        };
        if text.len() > MAX_STREAM_FRAME_BYTES {
            let _ = out
                .send(error("frame_too_large", format!("frames are limited to {MAX_STREAM_FRAME_BYTES} bytes")).into())
                .await;
            continue;
        }
        let reply = match serde_json::from_str::<ClientMessage>(text.as_str()) {
            Err(e) => error("invalid_message", format!("cannot read message: {e}; expected {{\"op\":\"subscribe\",\"channel\":…,\"market\":…,\"symbol\":…}}")),
            Ok(ClientMessage::Ping) => ServerMessage::Ack(StreamAck { op: "pong".into(), channel: None, market: None, symbol: None }),
            Ok(ClientMessage::Subscribe { channel, market, symbol }) => {
                match subscribe(&infra, customer.as_deref(), &mut subs, &out, channel, market, symbol).await {
                    Ok(Some(ack)) => ack,
                    Ok(None) => continue,
                    Err(e) => ServerMessage::Error { error: ErrorDetail::new(e.code, e.message) },
                }
            }
            Ok(ClientMessage::Unsubscribe { channel, market, symbol }) => {
                let symbol = match symbol.as_deref().map(Symbol::parse).transpose() {
                    Ok(s) => s.map(|s| s.to_string()),
                    Err(e) => {
                        let _ = out.send(error("invalid_symbol", e.to_string()).into()).await;
                        continue;
                    }
                };
                let key = StreamKey { channel, market: market.clone(), symbol: symbol.clone() };
                match subs.remove(&key) {
                    Some(sub) => {
                        drop_sub(&infra, &key, sub);
                        ServerMessage::Ack(StreamAck { op: "unsubscribed".into(), channel: Some(channel), market: Some(market), symbol })
                    }
                    None => error("not_subscribed", "no such subscription on this connection"),
                }
            }
        };
        if out.send(reply.into()).await.is_err() {
            break;
        }
    }
    for (key, sub) in subs.drain() {
        drop_sub(&infra, &key, sub);
    }
    infra.markets().stream_closed();
    drop(out);
    let _ = writer.await;
}

fn drop_sub(infra: &Infra, key: &StreamKey, sub: Sub) {
    sub.task.abort();
    if let Some((feed, symbol)) = sub.feed {
        infra.markets().unlisten(&key.market, feed, &symbol);
    }
}

async fn subscribe(
    infra: &Infra,
    customer: Option<&str>,
    subs: &mut HashMap<StreamKey, Sub>,
    out: &mpsc::Sender<Outgoing>,
    channel: Channel,
    market: String,
    symbol: Option<String>,
) -> Result<Option<ServerMessage>, ApiError> {
    let markets = infra.markets();
    markets.market(&market)?;
    let symbol = match (channel.needs_symbol(), symbol) {
        (true, None) => {
            return Err(ApiError::bad_request(
                "invalid_message",
                format!("channel {} needs a symbol", channel.as_str()),
            ))
        }
        (_, Some(s)) => Some(markets.resolve(&market, &s).await?.1.symbol),
        (false, None) => None,
    };
    let key = StreamKey { channel, market: market.clone(), symbol: symbol.as_ref().map(|s| s.to_string()) };
    let ack = ServerMessage::Ack(StreamAck {
        op: "subscribed".into(),
        channel: Some(channel),
        market: Some(market.clone()),
        symbol: key.symbol.clone(),
    });
    if subs.contains_key(&key) {
        return Ok(Some(ack));
    }
    let private = feed_of(channel).is_none();
    let customer = match customer {
        Some(c) => c,
        None if private => {
            return Err(ApiError::forbidden(format!(
                "channel {} needs a customer; an operator token has no orders or fills",
                channel.as_str()
            )))
        }
        None => "",
    };
    infra.limits().check_subscriptions(customer, subs.len())?;
    // The ack goes out before the forwarder starts, so it precedes any data.
    let sub = match (feed_of(channel), symbol) {
        (Some(feed), Some(symbol)) => {
            let rx = markets.listen(&market, feed, &symbol).await?;
            let snapshot = match channel {
                Channel::Quotes => {
                    markets.quote(&market, symbol.as_str()).await.ok().and_then(|q| serde_json::to_value(q).ok())
                }
                Channel::Book => {
                    markets.book(&market, symbol.as_str(), 20).await.ok().and_then(|b| serde_json::to_value(b).ok())
                }
                _ => None,
            };
            let _ = out.send(ack.into()).await;
            Sub { task: tokio::spawn(forward_md(key.clone(), snapshot, rx, out.clone())), feed: Some((feed, symbol)) }
        }
        _ => {
            let rx = markets.order_updates();
            let open: Vec<_> = if channel == Channel::Orders {
                let q = lido_shared::api::OrdersQuery { status: Some("open".into()), market: Some(market.clone()) };
                markets
                    .orders(customer, &q)?
                    .into_iter()
                    .filter(|o| key.symbol.as_deref().is_none_or(|s| o.symbol.as_str() == s))
                    .collect()
            } else {
                Vec::new()
            };
            let snapshot = open.into_iter().filter_map(|o| serde_json::to_value(o).ok()).collect();
            let _ = out.send(ack.into()).await;
            Sub {
                task: tokio::spawn(forward_private(key.clone(), customer.to_string(), snapshot, rx, out.clone())),
                feed: None,
            }
        }
    };
    subs.insert(key, sub);
    Ok(None)
}

fn event(key: &StreamKey, seq: u64, data: serde_json::Value, gap: Option<String>) -> ServerMessage {
    ServerMessage::Event(StreamEvent {
        channel: key.channel,
        market: key.market.clone(),
        symbol: key.symbol.clone(),
        seq,
        data,
        gap,
    })
}

async fn forward_md(
    key: StreamKey,
    snapshot: Option<serde_json::Value>,
    mut rx: broadcast::Receiver<MdMsg>,
    out: mpsc::Sender<Outgoing>,
) {
    let mut seq = 0u64;
    if let Some(snap) = snapshot {
        seq += 1;
        if out.send(event(&key, seq, snap, None).into()).await.is_err() {
            return;
        }
    }
    loop {
        let msg = match rx.recv().await {
            Ok(MdMsg::Data(data)) => {
                let frame = RawEvent {
                    channel: key.channel,
                    market: &key.market,
                    symbol: key.symbol.as_deref(),
                    seq: seq + 1,
                    data: &data,
                };
                match serde_json::to_string(&frame) {
                    Ok(text) => Outgoing::Text(text),
                    Err(_) => continue,
                }
            }
            Ok(MdMsg::Gap(reason)) => event(&key, seq + 1, serde_json::Value::Null, Some(reason)).into(),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                event(&key, seq + 1, serde_json::Value::Null, Some(format!("slow consumer: {n} updates skipped")))
                    .into()
            }
            Err(broadcast::error::RecvError::Closed) => {
                let gap = event(&key, seq + 1, serde_json::Value::Null, Some("market closed".into()));
                let _ = out.send(gap.into()).await;
                return;
            }
        };
        seq += 1;
        if out.send(msg).await.is_err() {
            return;
        }
    }
}

async fn forward_private(
    key: StreamKey,
    customer: String,
    snapshot: Vec<serde_json::Value>,
    mut rx: broadcast::Receiver<OrderMsg>,
    out: mpsc::Sender<Outgoing>,
) {
    let mut seq = 0u64;
    for data in snapshot {
        seq += 1;
        if out.send(event(&key, seq, data, None).into()).await.is_err() {
            return;
        }
    }
    loop {
        let data = match rx.recv().await {
            Ok(OrderMsg::Order(o)) if key.channel == Channel::Orders => {
                let mine = o.customer == customer
                    && o.market == key.market
                    && key.symbol.as_deref().is_none_or(|s| o.symbol.as_str() == s);
                if !mine {
                    continue;
                }
                serde_json::to_value(&o).ok()
            }
            Ok(OrderMsg::Fill { customer: c, market, fill }) if key.channel == Channel::Fills => {
                let mine = c == customer
                    && market == key.market
                    && key.symbol.as_deref().is_none_or(|s| fill.symbol.as_str() == s);
                if !mine {
                    continue;
                }
                serde_json::to_value(&fill).ok()
            }
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                seq += 1;
                let gap = format!("slow consumer: {n} updates skipped; GET /v1/orders and /v1/fills to re-sync");
                if out.send(event(&key, seq, serde_json::Value::Null, Some(gap)).into()).await.is_err() {
                    return;
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(data) = data else { continue };
        seq += 1;
        if out.send(event(&key, seq, data, None).into()).await.is_err() {
            return;
        }
    }
}

fn error(code: &str, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error { error: ErrorDetail::new(code, message) }
}

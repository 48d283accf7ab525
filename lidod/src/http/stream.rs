//! The algo stream `/v1/stream`: subscribe to quotes, trades, book, own
//! orders and fills. Each subscription is a stream with its own sequence
//! numbers starting at 1; market data starts with a snapshot; data Lido
//! could not carry (broker restart, slow consumer) becomes a gap marker.
//! Operators may stream market data; orders and fills need a customer.
//! A connection joins its session's market instance (the least loaded one
//! without a session) and its writer measures each market-data frame's
//! fan-out time for that instance's autoscaling rules.
//!
//! A customer may also place and cancel orders here (`place_order`,
//! `cancel_order`): each goes the REST handler's way ([`super::algo::place`],
//! `MarketManager::cancel`) in a task of its own, at most
//! [`MAX_ORDER_REQUESTS_IN_FLIGHT`] per connection, and is answered with a
//! [`StreamReply`] naming the request's id, so a slow venue holds up neither
//! the connection's other requests nor its data.
//!
//! A stream lives only as long as its credential: when the API token it was
//! opened with (or that opened its session) is revoked or expires, or the
//! session is closed, the stream ends at once with a close frame of code
//! [`CLOSE_CREDENTIAL_ENDED`] (1008, policy violation) whose reason says
//! `token revoked` or `token expired`; order requests already read are
//! refused from that moment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use lido_shared::api::{
    Channel, ClientMessage, PlaceOrder, ReplyOutcome, ServerMessage, StreamAck, StreamEvent, StreamKey, StreamReply,
    MAX_STREAM_FRAME_BYTES,
};
use lido_shared::model::{Order, Symbol};
use lido_shared::ErrorDetail;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::auth::{Caller, Ended, Validity};
use crate::error::ApiError;
use crate::infra::Infra;
use crate::markets::{feed_of, Client, MdMsg, OrderMsg};

/// The close code of a stream whose credential ended (revoked, expired,
/// session closed): 1008, "policy violation" (RFC 6455 §7.4.1), which every
/// WebSocket client understands; the reason says which.
pub const CLOSE_CREDENTIAL_ENDED: u16 = 1008;

pub async fn upgrade(State(infra): State<Infra>, caller: Caller, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let client =
        infra.markets().instances().join(session_instance(&infra, &headers).as_ref().map(|(s, i)| (s.as_str(), *i)));
    let validity = super::validity(&infra, &headers, &caller);
    // Frames up to 64 KiB are read and answered with an error when over the
    // protocol limit; anything larger closes the socket.
    ws.max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| session(infra, Credential { caller, validity }, client, socket))
}

/// Who a stream acts for, and how long that holds.
#[derive(Clone)]
struct Credential {
    caller: Caller,
    validity: Validity,
}

/// The caller's session and the instance it was assigned, when the bearer
/// token is a session id.
fn session_instance(infra: &Infra, headers: &HeaderMap) -> Option<(String, u32)> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    Some((token.to_string(), infra.sessions().instance_of(token)?))
}

/// Order requests one connection may have waiting for their answer; the
/// next one is read when one is answered.
pub const MAX_ORDER_REQUESTS_IN_FLIGHT: usize = 64;

/// The most messages queued for one algo connection. A subscription whose
/// messages find it full follows its channel's [`SlowPolicy`].
const SESSION_QUEUE: usize = 1024;

/// The most frames written to an algo's socket in one go.
const WRITE_BATCH: usize = 64;

/// What happens to a subscription's updates while its algo reads slower
/// than they come. Either way the slow algo alone pays: the feeds and the
/// other algos' queues never wait for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlowPolicy {
    /// Each update is the whole state (a quote, a book): only the newest one
    /// waits for room, and it says how many older ones it replaced.
    Conflate,
    /// Each update counts (a trade, an order change, a fill): they wait for
    /// room in order; what the feed cannot hold meanwhile is skipped and a
    /// gap marker says how many, and how to re-sync.
    Gap,
}

impl SlowPolicy {
    fn of(channel: Channel) -> Self {
        match channel {
            Channel::Quotes | Channel::Book => Self::Conflate,
            Channel::Trades | Channel::Orders | Channel::Fills => Self::Gap,
        }
    }
}

/// What the writer sends: a message, or an event frame already serialized
/// by its forwarder, with when the router published its market data.
enum Outgoing {
    Message(ServerMessage),
    Text(String, Option<Instant>),
}

impl From<ServerMessage> for Outgoing {
    fn from(msg: ServerMessage) -> Self {
        Self::Message(msg)
    }
}

impl Outgoing {
    /// The frame's text and when its market data was published (none for
    /// a message that cannot be serialized, which is skipped).
    fn into_text(self) -> Option<(String, Option<Instant>)> {
        match self {
            Self::Text(text, published) => Some((text, published)),
            Self::Message(msg) => serde_json::to_string(&msg).ok().map(|text| (text, None)),
        }
    }
}

/// One subscription's event frames: the part before `seq` is the same for
/// every event, so it is serialized once, and each event only appends its
/// number and its data (already JSON, serialized once for all subscribers).
struct Envelope {
    /// `{"channel":…,"market":…,"symbol":…,"seq":`
    prefix: String,
}

impl Envelope {
    fn new(key: &StreamKey) -> Self {
        #[derive(serde::Serialize)]
        struct Head<'a> {
            channel: Channel,
            market: &'a str,
            symbol: Option<&'a str>,
        }
        let head = Head { channel: key.channel, market: &key.market, symbol: key.symbol.as_deref() };
        let mut prefix = serde_json::to_string(&head).unwrap_or_else(|_| "{".into());
        prefix.pop(); // the closing brace
        prefix.push_str(if prefix.len() > 1 { ",\"seq\":" } else { "\"seq\":" });
        Self { prefix }
    }

    /// The event frame: `{…,"seq":N,"data":DATA}`, plus `"conflated":K` when
    /// K > 0; `published` is when the router published market data.
    fn frame(&self, seq: u64, data: &RawValue, conflated: u64, published: Option<Instant>) -> Outgoing {
        use std::fmt::Write;
        let mut text = String::with_capacity(self.prefix.len() + data.get().len() + 48);
        text.push_str(&self.prefix);
        let _ = write!(text, "{seq},\"data\":{}", data.get());
        if conflated > 0 {
            let _ = write!(text, ",\"conflated\":{conflated}");
        }
        text.push('}');
        Outgoing::Text(text, published)
    }
}

/// A subscription's counters of updates a slow algo did not get one by one.
struct SlowCounters {
    conflated: metrics::Counter,
    dropped: metrics::Counter,
}

impl SlowCounters {
    fn new(key: &StreamKey) -> Self {
        let labels = [("market", key.market.clone()), ("channel", key.channel.as_str().to_string())];
        Self {
            conflated: metrics::counter!("lido_stream_conflated_total", &labels),
            dropped: metrics::counter!("lido_stream_dropped_total", &labels),
        }
    }
}

struct Sub {
    task: JoinHandle<()>,
    /// Market-data feed to leave on unsubscribe.
    feed: Option<(lido_shared::pipe::Feed, Symbol)>,
    subscriptions: metrics::Gauge,
}

async fn session(infra: Infra, credential: Credential, client: Client, socket: WebSocket) {
    let customer = credential.caller.customer().ok().map(str::to_string);
    let in_flight = Arc::new(Semaphore::new(MAX_ORDER_REQUESTS_IN_FLIGHT));
    let (mut sink, mut source) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Outgoing>(SESSION_QUEUE);
    let instance = client.instance.clone();
    // The credential's end reaches the writer directly, ahead of whatever is
    // queued: the close frame goes out at once.
    let (ended_tx, mut ended_rx) = tokio::sync::oneshot::channel::<Ended>();
    let writer = tokio::spawn(async move {
        let delivered = metrics::counter!("lido_stream_messages_total");
        // Frames waiting in the queue go out together: one write to the
        // socket per batch, not per frame, so an algo that fell behind
        // catches up with fewer system calls (the same order, the same frames).
        let mut batch: Vec<Option<Instant>> = Vec::with_capacity(WRITE_BATCH);
        // Until the reader finishes without the credential ending (then what
        // is queued still goes out).
        let mut watching = true;
        'session: loop {
            let first = tokio::select! {
                biased;
                ended = &mut ended_rx, if watching => {
                    let Ok(ended) = ended else {
                        watching = false;
                        continue;
                    };
                    let frame = CloseFrame { code: CLOSE_CREDENTIAL_ENDED, reason: ended.reason().into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break 'session;
                }
                msg = out_rx.recv() => match msg {
                    Some(msg) => msg,
                    None => break 'session,
                },
            };
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                if let Some((text, published)) = msg.into_text() {
                    if sink.feed(Message::Text(text.into())).await.is_err() {
                        break 'session;
                    }
                    batch.push(published);
                }
                if batch.len() < WRITE_BATCH {
                    next = out_rx.try_recv().ok();
                }
            }
            if sink.flush().await.is_err() {
                break;
            }
            delivered.increment(batch.len() as u64);
            for published in batch.drain(..).flatten() {
                instance.record_latency(published.elapsed());
            }
        }
        let _ = sink.close().await;
    });
    let probe = out.downgrade();
    let stream_id = infra
        .markets()
        .stream_opened(Box::new(move || probe.upgrade().map_or(0, |tx| tx.max_capacity() - tx.capacity())));
    let mut subs: HashMap<StreamKey, Sub> = HashMap::new();
    let closing = infra.closing().clone();
    let mut ended_tx = Some(ended_tx);
    let Credential { caller, validity } = credential.clone();
    // One wait for the credential's end for the whole stream, not a new
    // timer per message read.
    let credential_ended = validity.ended();
    tokio::pin!(credential_ended);
    loop {
        let msg = tokio::select! {
            _ = closing.cancelled() => break,
            ended = &mut credential_ended => {
                tracing::info!(actor = %caller.actor(), reason = ended.reason(), "stream closed: its credential ended");
                if let Some(tx) = ended_tx.take() {
                    let _ = tx.send(ended);
                }
                break;
            }
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
            Err(e) => match ClientMessage::request_id(text.as_str()) {
                Some(id) => reply(id, Err(undecodable(text.as_str(), e))),
                None => error("invalid_message", format!("cannot read message: {e}; expected {{\"op\":\"subscribe\",\"channel\":…,\"market\":…,\"symbol\":…}}")),
            },
            Ok(ClientMessage::PlaceOrder { id, order }) => {
                let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
                tokio::spawn(answer(infra.clone(), credential.clone(), out.clone(), id, OrderRequest::Place(order), permit));
                continue;
            }
            Ok(ClientMessage::CancelOrder { id, order_id }) => {
                let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
                tokio::spawn(answer(infra.clone(), credential.clone(), out.clone(), id, OrderRequest::Cancel(order_id), permit));
                continue;
            }
            Ok(ClientMessage::Ping) => ServerMessage::Ack(StreamAck { op: "pong".into(), channel: None, market: None, symbol: None }),
            Ok(ClientMessage::Subscribe { channel, market, symbol }) => {
                let at = Place { client: &client, subs: &mut subs, out: &out };
                match subscribe(&infra, customer.as_deref(), at, channel, market, symbol).await {
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
                        drop_sub(&infra, &client, &key, sub);
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
        drop_sub(&infra, &client, &key, sub);
    }
    infra.markets().stream_closed(stream_id);
    drop(out);
    drop(ended_tx);
    let _ = writer.await;
    // Leaves the instance only once nothing of the stream is left.
    drop(client);
}

/// An order request read from the stream.
enum OrderRequest {
    Place(PlaceOrder),
    Cancel(String),
}

/// Carries out an order request the REST handlers' way (customers only,
/// while the credential holds) and queues its reply; `_permit` holds its
/// place among those in flight.
async fn answer(
    infra: Infra,
    credential: Credential,
    out: mpsc::Sender<Outgoing>,
    id: String,
    request: OrderRequest,
    _permit: OwnedSemaphorePermit,
) {
    let allowed = credential.validity.check().and_then(|()| credential.caller.customer());
    let result = match (allowed, request) {
        (Err(e), _) => Err(e),
        (Ok(customer), OrderRequest::Place(order)) => super::algo::place(&infra, customer, order).await,
        (Ok(customer), OrderRequest::Cancel(order_id)) => {
            infra.markets().cancel(customer, &order_id).await.map(|o| (o, StatusCode::OK))
        }
    };
    let _ = out.send(reply(id, result).into()).await;
}

/// Why an order request does not decode, in the REST body's words (with
/// the field's path) when it is a `place_order`.
fn undecodable(text: &str, e: serde_json::Error) -> ApiError {
    match axum::Json::<PlaceOrder>::from_bytes(text.as_bytes()) {
        Err(rejection) => crate::error::json_rejection(rejection),
        Ok(_) => ApiError::bad_request(
            "invalid_request",
            format!("cannot read the order request: {e}; place_order takes the fields of POST /v1/orders, cancel_order an order_id"),
        ),
    }
}

/// The reply to order request `id`, with the status REST would answer.
fn reply(id: String, result: Result<(Order, StatusCode), ApiError>) -> ServerMessage {
    let (status, outcome) = match result {
        Ok((order, status)) => (status, ReplyOutcome::Order(Box::new(order))),
        Err(e) => (e.status, ReplyOutcome::Error(ErrorDetail::new(e.code, e.message))),
    };
    ServerMessage::Reply(StreamReply { reply_to: id, status: status.as_u16(), outcome })
}

fn drop_sub(infra: &Infra, client: &Client, key: &StreamKey, sub: Sub) {
    sub.task.abort();
    sub.subscriptions.decrement(1.0);
    if let Some((feed, symbol)) = sub.feed {
        infra.markets().unlisten(&key.market, feed, &symbol, client.instance.id);
    }
}

/// Where a new subscription goes: the connection's instance, its
/// subscriptions and its outbound queue.
struct Place<'a> {
    client: &'a Client,
    subs: &'a mut HashMap<StreamKey, Sub>,
    out: &'a mpsc::Sender<Outgoing>,
}

async fn subscribe(
    infra: &Infra,
    customer: Option<&str>,
    Place { client, subs, out }: Place<'_>,
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
    let (task, feed) = match (feed_of(channel), symbol) {
        (Some(feed), Some(symbol)) => {
            let rx = markets.listen(&market, feed, &symbol, &client.instance).await?;
            let snapshot = match channel {
                Channel::Quotes => markets.quote(&market, symbol.as_str()).await.ok().and_then(|q| to_raw(&q)),
                Channel::Book => markets.book(&market, symbol.as_str(), 20).await.ok().and_then(|b| to_raw(&b)),
                _ => None,
            };
            let _ = out.send(ack.into()).await;
            (tokio::spawn(forward_md(key.clone(), snapshot, rx, out.clone())), Some((feed, symbol)))
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
            let snapshot = open.iter().filter_map(to_raw).collect();
            let _ = out.send(ack.into()).await;
            (tokio::spawn(forward_private(key.clone(), customer.to_string(), snapshot, rx, out.clone())), None)
        }
    };
    let subscriptions =
        metrics::gauge!("lido_stream_subscriptions", "market" => key.market.clone(), "channel" => channel.as_str());
    subscriptions.increment(1.0);
    subs.insert(key, Sub { task, feed, subscriptions });
    Ok(None)
}

fn to_raw<T: serde::Serialize>(value: &T) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(value).ok()
}

/// A gap marker: nothing in `data`, and why in `gap`.
fn gap(key: &StreamKey, seq: u64, reason: String) -> Outgoing {
    ServerMessage::Event(StreamEvent {
        channel: key.channel,
        market: key.market.clone(),
        symbol: key.symbol.clone(),
        seq,
        data: serde_json::Value::Null,
        gap: Some(reason),
        conflated: None,
    })
    .into()
}

/// Carries a market-data feed to one subscriber, by its channel's
/// [`SlowPolicy`]: conflated quotes and book, trades with gap markers.
async fn forward_md(
    key: StreamKey,
    snapshot: Option<Box<RawValue>>,
    mut rx: broadcast::Receiver<MdMsg>,
    out: mpsc::Sender<Outgoing>,
) {
    let envelope = Envelope::new(&key);
    let slow = SlowCounters::new(&key);
    let conflate = SlowPolicy::of(key.channel) == SlowPolicy::Conflate;
    let mut seq = 0u64;
    if let Some(snap) = snapshot {
        seq += 1;
        if out.send(envelope.frame(seq, &snap, 0, None)).await.is_err() {
            return;
        }
    }
    // The newest update not yet queued (conflating), when it was published,
    // and how many it replaced.
    let mut pending: Option<(Arc<RawValue>, Instant)> = None;
    let mut replaced = 0u64;
    loop {
        let msg = match pending.take() {
            None => rx.recv().await,
            // Queue it as soon as there is room; meanwhile keep taking updates.
            Some((data, at)) => match room_or_update(&out, &mut rx).await {
                Room::Free(permit) => {
                    seq += 1;
                    permit.send(envelope.frame(seq, &data, std::mem::take(&mut replaced), Some(at)));
                    continue;
                }
                Room::Closed => return,
                Room::Update(msg) => {
                    pending = Some((data, at));
                    msg
                }
            },
        };
        let outgoing = match msg {
            Ok(MdMsg::Data(data, at)) if conflate => {
                if pending.replace((data, at)).is_some() {
                    replaced += 1;
                    slow.conflated.increment(1);
                }
                continue;
            }
            Ok(MdMsg::Data(data, at)) => envelope.frame(seq + 1, &data, 0, Some(at)),
            Ok(MdMsg::Gap(reason)) => {
                // What was waiting predates the gap: it goes first.
                if let Some((data, at)) = pending.take() {
                    seq += 1;
                    if out.send(envelope.frame(seq, &data, std::mem::take(&mut replaced), Some(at))).await.is_err() {
                        return;
                    }
                }
                gap(&key, seq + 1, reason)
            }
            // Conflating, the feed's own buffer overflowing is more of the
            // same: newer updates follow.
            Err(broadcast::error::RecvError::Lagged(n)) if conflate => {
                replaced += n;
                slow.conflated.increment(n);
                continue;
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                slow.dropped.increment(n);
                gap(&key, seq + 1, format!("slow consumer: {n} updates skipped"))
            }
            Err(broadcast::error::RecvError::Closed) => {
                let _ = out
                    .send(gap(
                        &key,
                        seq + 1,
                        "feed ended: the market was removed or no longer trades this symbol".into(),
                    ))
                    .await;
                return;
            }
        };
        seq += 1;
        if out.send(outgoing).await.is_err() {
            return;
        }
    }
}

/// What came first for a conflating forwarder with an update waiting.
enum Room<'a> {
    Free(mpsc::Permit<'a, Outgoing>),
    Closed,
    Update(Result<MdMsg, broadcast::error::RecvError>),
}

async fn room_or_update<'a>(out: &'a mpsc::Sender<Outgoing>, rx: &mut broadcast::Receiver<MdMsg>) -> Room<'a> {
    match out.try_reserve() {
        Ok(permit) => return Room::Free(permit),
        Err(mpsc::error::TrySendError::Closed(())) => return Room::Closed,
        Err(mpsc::error::TrySendError::Full(())) => {}
    }
    tokio::select! {
        biased;
        permit = out.reserve() => permit.map_or(Room::Closed, Room::Free),
        msg = rx.recv() => Room::Update(msg),
    }
}

/// Carries one customer's order updates or fills, never conflated: they
/// wait for room in order, and what the update stream cannot hold meanwhile
/// becomes a gap marker that says how to re-sync.
async fn forward_private(
    key: StreamKey,
    customer: String,
    snapshot: Vec<Box<RawValue>>,
    mut rx: broadcast::Receiver<OrderMsg>,
    out: mpsc::Sender<Outgoing>,
) {
    let envelope = Envelope::new(&key);
    let slow = SlowCounters::new(&key);
    let mut seq = 0u64;
    for data in snapshot {
        seq += 1;
        if out.send(envelope.frame(seq, &data, 0, None)).await.is_err() {
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
                to_raw(&o)
            }
            Ok(OrderMsg::Fill { customer: c, market, fill }) if key.channel == Channel::Fills => {
                let mine = c == customer
                    && market == key.market
                    && key.symbol.as_deref().is_none_or(|s| fill.symbol.as_str() == s);
                if !mine {
                    continue;
                }
                to_raw(&fill)
            }
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                slow.dropped.increment(n);
                seq += 1;
                let reason = format!("slow consumer: {n} updates skipped; GET /v1/orders and /v1/fills to re-sync");
                if out.send(gap(&key, seq, reason)).await.is_err() {
                    return;
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(data) = data else { continue };
        seq += 1;
        if out.send(envelope.frame(seq, &data, 0, None)).await.is_err() {
            return;
        }
    }
}

fn error(code: &str, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error { error: ErrorDetail::new(code, message) }
}

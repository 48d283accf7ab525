//! Kraken's private WebSocket v2 (`wss://ws-auth.kraken.com/v2`): order
//! updates and fills from channel `executions`, and the `add_order` /
//! `cancel_order` methods ([`SocketOrders`]), which skip REST's HTTP round
//! trip and nonce.
//!
//! A token comes from REST GetWebSocketsToken; the subscription asks for
//! open orders and recent fills in its snapshot, so after every reconnect
//! the snapshot restates what the gap may have hidden (the market drops
//! fill ids it has seen). Entries become the pipe's `OrderUpdate` and
//! `Fill` events, keyed by Lido's id (`cl_ord_id`); orders placed outside
//! Lido (no `cl_ord_id`) are left alone.
//!
//! Each connection counts as *synced* once its `executions` snapshot has
//! been read and the fills in it handed on as events: only then does the
//! broker answer order-status lookups ([`SocketOrders::synced`]), so a fill
//! the venue made while nobody listened always reaches the market before
//! the status that counts it (reconciliation would otherwise book it from
//! the status, and again when the snapshot came).
//!
//! The snapshot holds only OPEN orders and the last 50 trades, so an
//! order that closed while the socket was down (canceled elsewhere, or
//! filled by trades older than those 50) is missing from it: after each
//! snapshot, the orders the broker knew open and the snapshot lacks are
//! looked up with QueryOrders (50 ids a call, `trades=true`), their fills
//! with QueryTrades (20 ids a call) when Kraken's executed volume is more
//! than the feed reported, and their final state and fills handed on
//! ([`catch_up`]) before the connection counts as synced. Fills are named
//! by Kraken's trade id, the feed's `exec_id`, so one seen twice is booked
//! once.
//!
//! An order call is written to the socket with the session's token and a
//! fresh `req_id`, and answered by the response carrying that `req_id`. A
//! call whose caller gave up is never sent late; a call sent on a socket
//! that drops before its answer is an unknown outcome (`maybe_sent`), which
//! the broker settles by `cl_ord_id` before any resend.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use lido_shared::model::{Fill, Side, Symbol};
use lido_shared::pipe::{ServiceEvent, VenueOrderReport};
use rust_decimal::Decimal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ws::{self, Ws, DEAD_AFTER, IDLE_CHECK, PING_AFTER};
use crate::venue::kraken::envelope::KrakenError;
use crate::venue::kraken::messages::{
    parse_ws, unix_seconds, AddOrderParams, CancelOrderParams, ExecutionData, MessageType, MethodResponse, OrderAck,
    OrderInfo, QueryOrdersRequest, QueryTradesRequest, RestOrderStatus, SubscriptionParams, Token, TradeInfo,
    WsMessage, WsRequest,
};
use crate::venue::kraken::rest::KrakenRest;

/// What is known about an order from earlier entries or from placing it:
/// later entries may leave fields out.
#[derive(Clone, Debug)]
pub struct OrderMeta {
    pub client_id: String,
    pub symbol: Symbol,
    pub side: Side,
    /// When Kraken accepted the order (microseconds since the Unix epoch),
    /// when known: a cancel's trading-counter penalty depends on the
    /// order's age.
    pub placed_micros: Option<u64>,
}

/// Kraken order id → what Lido knows about it, shared by the order path
/// and the executions feed, with the latest state the feed reported for
/// each order (so a cancel or a status lookup the feed already answers
/// spends no REST call).
#[derive(Default)]
pub struct OrderIndex(Mutex<HashMap<String, OrderMeta>>, Mutex<HashMap<String, VenueOrderReport>>);

impl OrderIndex {
    /// Records what is known of `txid`; a placement time already known is
    /// kept when `meta` has none.
    pub fn remember(&self, txid: &str, mut meta: OrderMeta) {
        let mut map = self.lock();
        if meta.placed_micros.is_none() {
            meta.placed_micros = map.get(txid).and_then(|m| m.placed_micros);
        }
        map.insert(txid.to_string(), meta);
    }

    /// What is known of Lido's order `client_id`, if seen.
    pub fn meta_of(&self, client_id: &str) -> Option<OrderMeta> {
        self.lock().values().find(|m| m.client_id == client_id).cloned()
    }

    /// The Kraken id of Lido's order `client_id`, if seen.
    pub fn txid_of(&self, client_id: &str) -> Option<String> {
        self.lock().iter().find(|(_, m)| m.client_id == client_id).map(|(t, _)| t.clone())
    }

    /// Records the state the executions feed reported for an order; the
    /// filled quantity never goes down (a cancel entry may leave it out).
    pub fn record_report(&self, report: &VenueOrderReport) {
        let mut reports = self.1.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = report.clone();
        if let Some(prev) = reports.get(&report.venue_order_id) {
            report.filled_quantity = report.filled_quantity.max(prev.filled_quantity);
            report.average_price = report.average_price.or(prev.average_price);
            if prev.status.is_terminal() && !report.status.is_terminal() {
                return;
            }
        }
        reports.insert(report.venue_order_id.clone(), report);
    }

    /// The latest state the executions feed reported for Lido's order
    /// `client_id`, if it reported any.
    pub fn feed_report(&self, client_id: &str) -> Option<VenueOrderReport> {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).values().find(|r| r.client_id == client_id).cloned()
    }

    /// Whether this broker placed or listed (over REST) Lido's order
    /// `client_id`, rather than only seen it on the feed.
    pub fn knows(&self, client_id: &str) -> bool {
        self.lock().values().any(|m| m.client_id == client_id && m.placed_micros.is_some())
    }

    /// The Kraken ids of the orders this broker knows open: the feed's
    /// latest state for them is not final, or (placed or listed here) the
    /// feed never reported them.
    pub fn unsettled(&self) -> Vec<String> {
        let reports = self.1.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<String> =
            reports.values().filter(|r| !r.status.is_terminal()).map(|r| r.venue_order_id.clone()).collect();
        ids.extend(
            self.lock()
                .iter()
                .filter(|(txid, m)| m.placed_micros.is_some() && !reports.contains_key(*txid))
                .map(|(txid, _)| txid.clone()),
        );
        ids.sort();
        ids.dedup();
        ids
    }

    /// Forgets the feed's state of `txid` (no longer current), so lookups
    /// ask Kraken.
    fn forget_report(&self, txid: &str) {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).remove(txid);
    }

    fn get(&self, txid: &str) -> Option<OrderMeta> {
        self.lock().get(txid).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, OrderMeta>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A private WebSocket method call; the session puts its token in.
pub enum OrderCall {
    Add(AddOrderParams),
    Cancel(CancelOrderParams),
}

type Answer = Result<MethodResponse, KrakenError>;

struct Pending {
    call: OrderCall,
    answer: oneshot::Sender<Answer>,
}

/// The broker's side of the socket's order methods.
pub struct SocketOrders {
    calls: mpsc::Sender<Pending>,
    /// True while a session is subscribed to `executions`.
    up: Arc<AtomicBool>,
    /// True once the current session's snapshot is handed on.
    synced: watch::Receiver<bool>,
    /// How long an answer may take before the outcome counts as unknown.
    timeout: Duration,
}

impl SocketOrders {
    /// Whether order calls can go over the socket now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Waits until the current connection's `executions` snapshot has been
    /// handed on (see the module docs), at most `limit`; false if it was not.
    pub async fn synced(&self, limit: Duration) -> bool {
        let mut synced = self.synced.clone();
        let synced = tokio::time::timeout(limit, synced.wait_for(|s| *s)).await.is_ok_and(|r| r.is_ok());
        synced
    }

    /// Sends `call` and waits for Kraken's answer: the `order_id` (and
    /// `cl_ord_id`) it acted on, or its error typed like REST's.
    pub async fn call(&self, call: OrderCall) -> Result<OrderAck, KrakenError> {
        let (answer, answered) = oneshot::channel();
        let not_sent = |why: &str| KrakenError::Transport { message: why.to_string(), maybe_sent: false };
        self.calls.send(Pending { call, answer }).await.map_err(|_| not_sent("the private websocket is stopped"))?;
        match tokio::time::timeout(self.timeout, answered).await {
            Ok(Ok(answer)) => answer?.into_result(),
            Ok(Err(_)) => Err(KrakenError::Transport {
                message: "the private websocket dropped before kraken answered".into(),
                maybe_sent: true,
            }),
            Err(_) => Err(KrakenError::Transport {
                message: format!("no answer on the private websocket within {:?}", self.timeout),
                maybe_sent: true,
            }),
        }
    }
}

/// Starts the private socket (executions feed and order methods) and
/// returns its order side; `up` is true while it is subscribed.
pub fn start(
    url: String,
    rest: Arc<KrakenRest>,
    index: Arc<OrderIndex>,
    events: mpsc::Sender<ServiceEvent>,
    up: Arc<AtomicBool>,
    timeout: Duration,
    shutdown: CancellationToken,
) -> SocketOrders {
    let (calls, queue) = mpsc::channel(1024);
    let (synced_tx, synced) = watch::channel(false);
    let link = Shared { index, events, connected: up.clone(), synced: synced_tx };
    tokio::spawn(run(url, rest, link, queue, shutdown));
    SocketOrders { calls, up, synced, timeout }
}

/// Runs the socket until `shutdown`, reconnecting with backoff.
async fn run(
    url: String,
    rest: Arc<KrakenRest>,
    shared: Shared,
    mut queue: mpsc::Receiver<Pending>,
    shutdown: CancellationToken,
) {
    let mut reconnects = ws::Reconnects::default();
    while !shutdown.is_cancelled() {
        let link =
            Link { index: &shared.index, events: &shared.events, connected: &shared.connected, synced: &shared.synced };
        let started = Instant::now();
        match session(&url, &rest, link, &mut queue, &shutdown).await {
            Ok(()) => return,
            Err(e) => warn!(error = %e, "kraken executions feed lost; reconnecting"),
        }
        shared.connected.store(false, Ordering::Relaxed);
        shared.synced.send_replace(false);
        // The backoff starts over only after a connection that stayed up.
        let delay = reconnects.next_delay(Some(started.elapsed()));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// What the socket task keeps across its connections.
struct Shared {
    index: Arc<OrderIndex>,
    events: mpsc::Sender<ServiceEvent>,
    connected: Arc<AtomicBool>,
    synced: watch::Sender<bool>,
}

/// Where a session delivers what it reads.
#[derive(Clone, Copy)]
struct Link<'a> {
    index: &'a OrderIndex,
    events: &'a mpsc::Sender<ServiceEvent>,
    connected: &'a AtomicBool,
    /// Set once this connection's snapshot is handed on.
    synced: &'a watch::Sender<bool>,
}

/// One connection; `Ok` only on shutdown. Calls sent and not yet answered
/// are dropped with it (their callers see an unknown outcome).
async fn session(
    url: &str,
    rest: &KrakenRest,
    link: Link<'_>,
    queue: &mut mpsc::Receiver<Pending>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let token = rest.websockets_token().await.map_err(|e| format!("cannot get a websocket token: {e}"))?.token;
    let socket: Ws = ws::connect(url).await?;
    let (mut sink, mut stream) = socket.split();
    ws::send(&mut sink, &WsRequest::subscribe(SubscriptionParams::executions(token.clone()), 1)).await?;
    info!(%url, "kraken executions feed connected");
    let mut req_id = 1;
    let mut waiting: HashMap<u64, oneshot::Sender<Answer>> = HashMap::new();
    let mut last_heard = Instant::now();
    let mut idle = tokio::time::interval(IDLE_CHECK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = sink.close().await;
                return Ok(());
            }
            frame = stream.next() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(in_snapshot) = on_text(&text, link, &mut waiting).await? {
                            catch_up(rest, link, &in_snapshot).await?;
                            link.synced.send_replace(true);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => return Err(format!("kraken closed the connection: {frame:?}")),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("read failed: {e}")),
                    None => return Err("connection closed".into()),
                }
            }
            Some(pending) = queue.recv() => {
                // A caller that gave up has settled the order another way.
                if pending.answer.is_closed() {
                    continue;
                }
                req_id += 1;
                match send_call(&mut sink, pending.call, &token, req_id).await {
                    Ok(()) => { waiting.insert(req_id, pending.answer); }
                    Err(e) => {
                        let _ = pending.answer.send(Err(KrakenError::Transport { message: e.clone(), maybe_sent: false }));
                        return Err(e);
                    }
                }
            }
            _ = idle.tick() => {
                let silent = last_heard.elapsed();
                if silent > DEAD_AFTER {
                    return Err(format!("nothing heard for {silent:?}"));
                }
                if silent > PING_AFTER {
                    req_id += 1;
                    ws::send(&mut sink, &WsRequest::ping(req_id)).await?;
                }
            }
        }
    }
}

/// Writes one order call with the session's token.
async fn send_call<S>(sink: &mut S, call: OrderCall, token: &Token, req_id: u64) -> Result<(), String>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    match call {
        OrderCall::Add(params) => {
            ws::send(sink, &WsRequest::add_order(AddOrderParams { token: token.clone(), ..params }, req_id)).await
        }
        OrderCall::Cancel(params) => {
            ws::send(sink, &WsRequest::cancel_order(CancelOrderParams { token: token.clone(), ..params }, req_id)).await
        }
    }
}

/// Handles one frame; after an `executions` snapshot, the ids of the
/// orders it holds (the caller then settles the rest, [`catch_up`]).
async fn on_text(
    text: &str,
    link: Link<'_>,
    waiting: &mut HashMap<u64, oneshot::Sender<Answer>>,
) -> Result<Option<HashSet<String>>, String> {
    match parse_ws(text) {
        Ok(WsMessage::Executions { kind, data, .. }) => {
            for entry in &data {
                for event in to_events(entry, link.index) {
                    link.events.send(event).await.map_err(|_| "the service is stopping".to_string())?;
                }
            }
            if kind == MessageType::Snapshot {
                info!(entries = data.len(), "kraken executions snapshot handed on");
                // Its order entries: a trade entry names an order that may
                // have closed since.
                return Ok(Some(data.iter().filter(|e| !e.is_fill()).map(|e| e.order_id.clone()).collect()));
            }
        }
        Ok(WsMessage::Response(r)) if r.method == "subscribe" => {
            if !r.success {
                return Err(format!("kraken refused the executions subscription: {}", r.error.unwrap_or_default()));
            }
            link.connected.store(true, Ordering::Relaxed);
        }
        Ok(WsMessage::Response(r)) if r.req_id.is_some_and(|id| waiting.contains_key(&id)) => {
            if let Some(answer) = r.req_id.and_then(|id| waiting.remove(&id)) {
                let _ = answer.send(Ok(r));
            }
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "unreadable kraken frame ignored"),
    }
    Ok(None)
}

/// Settles the orders the broker knew open that the snapshot does not
/// hold: they closed while nobody listened. Each is looked up over REST
/// (QueryOrders, then QueryTrades for fills the feed did not report) and
/// its fills, then its final state, are handed on as events. If Kraken
/// cannot be asked, their feed state is dropped (so a status lookup asks
/// REST instead of answering "open"), and reconciliation settles them.
async fn catch_up(rest: &KrakenRest, link: Link<'_>, in_snapshot: &HashSet<String>) -> Result<(), String> {
    let missing: Vec<String> = link.index.unsettled().into_iter().filter(|t| !in_snapshot.contains(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut settled = 0;
    for chunk in missing.chunks(QueryOrdersRequest::MAX_IDS) {
        let orders = match rest.query_orders(chunk).await {
            Ok(found) => found,
            Err(e) => {
                warn!(error = %e, orders = chunk.len(), "cannot look up the kraken orders that closed while the executions feed was down; reconciliation will settle them");
                chunk.iter().for_each(|t| link.index.forget_report(t));
                continue;
            }
        };
        for (txid, info) in &orders {
            if matches!(info.status, RestOrderStatus::Open | RestOrderStatus::Pending) {
                continue;
            }
            let trades = match fills_to_fetch(link.index, txid, info) {
                Some(ids) => match query_trades(rest, &ids).await {
                    Ok(trades) => trades,
                    Err(e) => {
                        warn!(%txid, error = %e, "cannot read the trades of a kraken order closed while the executions feed was down; reconciliation will book them");
                        link.index.forget_report(txid);
                        continue;
                    }
                },
                None => Vec::new(),
            };
            for event in closed_events(link.index, txid, info, &trades) {
                link.events.send(event).await.map_err(|_| "the service is stopping".to_string())?;
            }
            settled += 1;
        }
    }
    info!(missing = missing.len(), settled, "kraken orders closed while the executions feed was down looked up");
    Ok(())
}

/// The trade ids to read for `txid`: all of its trades when Kraken
/// executed more than the feed reported (the fills already booked are
/// named the same and booked once), else none.
fn fills_to_fetch(index: &OrderIndex, txid: &str, info: &OrderInfo) -> Option<Vec<String>> {
    let reported = index.1.lock().unwrap_or_else(|p| p.into_inner()).get(txid).map(|r| r.filled_quantity);
    let trades = info.trades.clone().unwrap_or_default();
    (info.vol_exec > reported.unwrap_or_default() && !trades.is_empty()).then_some(trades)
}

/// QueryTrades for `ids`, 20 a call, oldest first.
async fn query_trades(rest: &KrakenRest, ids: &[String]) -> Result<Vec<(String, TradeInfo)>, KrakenError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(QueryTradesRequest::MAX_IDS) {
        out.extend(rest.query_trades(chunk).await?);
    }
    out.sort_by_key(|a| a.1.time);
    Ok(out)
}

/// The events for an order found closed at Kraken: its fills (named by
/// trade id), then its final state, which the index keeps.
fn closed_events(
    index: &OrderIndex,
    txid: &str,
    info: &OrderInfo,
    trades: &[(String, TradeInfo)],
) -> Vec<ServiceEvent> {
    let Some(meta) = index.get(txid) else {
        warn!(%txid, "a kraken order closed while the executions feed was down is not known here; left to reconciliation");
        return Vec::new();
    };
    let mut out: Vec<ServiceEvent> = trades
        .iter()
        .filter(|(_, t)| t.ordertxid == txid)
        .map(|(trade_id, t)| {
            ServiceEvent::Fill(Fill {
                fill_id: trade_id.clone(),
                order_id: meta.client_id.clone(),
                symbol: meta.symbol.clone(),
                side: t.side,
                price: t.price,
                quantity: t.vol,
                fee: t.fee,
                ts: unix_seconds(t.time).unwrap_or_else(Utc::now),
            })
        })
        .collect();
    let report = super::order_report(&meta.client_id, txid, info);
    info!(order_id = %meta.client_id, %txid, status = %report.status, fills = out.len(), "kraken order closed while the executions feed was down");
    index.record_report(&report);
    out.push(ServiceEvent::OrderUpdate(report));
    out
}

/// The pipe events for one executions entry: a fill (for `trade`) first,
/// then the order's new state.
pub fn to_events(entry: &ExecutionData, index: &OrderIndex) -> Vec<ServiceEvent> {
    let known = index.get(&entry.order_id);
    let client_id = entry.cl_ord_id.clone().or_else(|| known.as_ref().map(|m| m.client_id.clone()));
    let Some(client_id) = client_id else { return Vec::new() };
    let symbol = entry
        .symbol
        .as_deref()
        .and_then(|s| Symbol::parse(s).ok())
        .or_else(|| known.as_ref().map(|m| m.symbol.clone()));
    let side = entry.side.or_else(|| known.as_ref().map(|m| m.side));
    if let (Some(symbol), Some(side)) = (&symbol, side) {
        index.remember(
            &entry.order_id,
            OrderMeta { client_id: client_id.clone(), symbol: symbol.clone(), side, placed_micros: None },
        );
    }
    let ts = entry.timestamp.unwrap_or_else(Utc::now);
    let mut out = Vec::new();
    if entry.is_fill() {
        match (symbol, side, entry.last_qty, entry.last_price) {
            (Some(symbol), Some(side), Some(quantity), Some(price)) => {
                let quote = symbol.quote().unwrap_or_default().to_string();
                let fee = entry.fees.iter().flatten().filter(|f| f.asset == quote).map(|f| f.qty).sum::<Decimal>();
                let fill_id = entry
                    .exec_id
                    .clone()
                    .or_else(|| entry.trade_id.map(|t| t.to_string()))
                    .unwrap_or_else(|| format!("{}-{}", entry.order_id, ts.timestamp_micros()));
                out.push(ServiceEvent::Fill(Fill {
                    fill_id,
                    order_id: client_id.clone(),
                    symbol,
                    side,
                    price,
                    quantity,
                    fee,
                    ts,
                }));
            }
            _ => warn!(order_id = %entry.order_id, "kraken fill without symbol, side, qty or price ignored"),
        }
    }
    if let Some(status) = entry.lido_status() {
        let report = VenueOrderReport {
            client_id,
            venue_order_id: entry.order_id.clone(),
            status,
            filled_quantity: entry.cum_qty.unwrap_or_default(),
            average_price: entry.avg_price.filter(|p| !p.is_zero()),
            reason: entry.reason.clone(),
            ts,
            order: None,
            trade_ids: Vec::new(),
        };
        index.record_report(&report);
        out.push(ServiceEvent::OrderUpdate(report));
    }
    out
}

#[cfg(test)]
mod tests {
    use lido_shared::model::OrderStatus;
    use rust_decimal::Decimal;

    use super::*;
    use crate::venue::kraken::messages::parse_ws;

    // An executions update as Kraken's WebSocket v2 documentation shows it.
    const TRADE: &str = r#"{"channel":"executions","type":"update","data":[{"order_id":"OK4GJX-KSTLS-7DZZO5","order_userref":3,"cl_ord_id":"8d5f0b2c-5c2a-4a4e-9a7a-0b6c0c1f4e11","exec_id":"TBXU2V-QW3ZC-4FDSRG","exec_type":"trade","trade_id":365573,"symbol":"BTC/USD","side":"buy","last_qty":0.005,"last_price":65000.2,"liquidity_ind":"t","cost":325.001,"order_status":"partially_filled","order_type":"limit","timestamp":"2026-12-02T01:02:03.123456Z","fee_usd_equiv":0.84,"cum_qty":0.005,"cum_cost":325.001,"avg_price":65000.2,"fees":[{"asset":"USD","qty":0.845}]}],"sequence":7}"#;

    fn entry(text: &str) -> ExecutionData {
        match parse_ws(text).unwrap() {
            WsMessage::Executions { mut data, .. } => data.remove(0),
            other => panic!("not executions: {other:?}"),
        }
    }

    #[test]
    fn the_feed_s_latest_state_answers_for_the_order_and_never_goes_back() {
        let index = OrderIndex::default();
        to_events(&entry(TRADE), &index);
        let id = "8d5f0b2c-5c2a-4a4e-9a7a-0b6c0c1f4e11";
        let r = index.feed_report(id).expect("the feed reported it");
        assert_eq!((r.status, r.filled_quantity), (OrderStatus::PartiallyFilled, Decimal::new(5, 3)));
        // Kraken's cancel entry (WebSocket v2 "executions", exec_type canceled)
        // carries no cum_qty: the fill is kept.
        let canceled = r#"{"channel":"executions","type":"update","data":[{"order_id":"OK4GJX-KSTLS-7DZZO5","cl_ord_id":"8d5f0b2c-5c2a-4a4e-9a7a-0b6c0c1f4e11","exec_id":"TBXU2V-QW3ZC-4FDSRH","exec_type":"canceled","order_status":"canceled","timestamp":"2026-12-02T01:02:04.000000Z","reason":"User requested"}],"sequence":8}"#;
        to_events(&entry(canceled), &index);
        let r = index.feed_report(id).unwrap();
        assert_eq!((r.status, r.filled_quantity), (OrderStatus::Canceled, Decimal::new(5, 3)));
        // A late, older update does not reopen it.
        to_events(&entry(TRADE), &index);
        assert_eq!(index.feed_report(id).unwrap().status, OrderStatus::Canceled);
        assert!(index.feed_report("another").is_none());
    }

    #[test]
    fn a_trade_is_a_fill_then_the_order_state() {
        let index = OrderIndex::default();
        let events = to_events(&entry(TRADE), &index);
        let [ServiceEvent::Fill(fill), ServiceEvent::OrderUpdate(report)] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert_eq!(fill.order_id, "8d5f0b2c-5c2a-4a4e-9a7a-0b6c0c1f4e11");
        assert_eq!(
            (fill.price, fill.quantity, fill.fee),
            (Decimal::new(650_002, 1), Decimal::new(5, 3), Decimal::new(845, 3))
        );
        assert_eq!(fill.fill_id, "TBXU2V-QW3ZC-4FDSRG");
        assert_eq!(report.status, OrderStatus::PartiallyFilled);
        assert_eq!(report.venue_order_id, "OK4GJX-KSTLS-7DZZO5");
        // Later entries without cl_ord_id are still Lido's.
        assert_eq!(index.txid_of(&fill.order_id).as_deref(), Some("OK4GJX-KSTLS-7DZZO5"));
    }

    #[test]
    fn orders_placed_outside_lido_are_left_alone() {
        let foreign = TRADE.replace(r#""cl_ord_id":"8d5f0b2c-5c2a-4a4e-9a7a-0b6c0c1f4e11","#, "");
        assert!(to_events(&entry(&foreign), &OrderIndex::default()).is_empty());
    }
}

//! Public market data over Kraken's WebSocket v2 (`wss://ws.kraken.com/v2`):
//! `ticker` (quotes), `book` (kept from snapshot + updates and verified by
//! CRC32) and `trade`, over as many sockets as the subscriptions need.
//!
//! [`PublicFeeds`] counts subscribers per (feed, symbol), so however many
//! markets ask, Kraken sees one subscription. Where a new one goes is
//! [`choose`]'s rule: the least loaded connection below
//! `max_subscriptions_per_connection − subscription_headroom`; when every
//! one is that near the limit another connection is opened (up to
//! [`MAX_CONNECTIONS`]); an extra connection left with no subscription is
//! closed. `connections` are always open. Each open and close is one log
//! line and a `ServiceEvent::Scaled` with its reason (the MarketManager
//! makes it a cluster `Log` event and keeps it for `GET /v1/autoscale`).
//!
//! What more sockets buy: Kraken limits the subscribe / unsubscribe
//! messages of each connection, so spreading subscriptions spreads that
//! budget. They buy no order-rate headroom: the REST call counter is per
//! API key and the trading rate counter per pair and account, shared by
//! REST, WebSocket and FIX, whatever the socket (see `kraken/ratelimit.rs`);
//! the broker waits on those counters and reports their use instead.
//! Each connection task keeps its
//! own list of subscriptions and subscribes to all of them again after
//! every reconnect (capped exponential backoff), one `subscribe` per
//! channel carrying every symbol (v2's `symbol: [..]`), so a reconnect
//! costs at most three messages of the connection's budget, not one per
//! (channel, symbol); a book whose checksum does
//! not match is reset and resubscribed, so a fresh snapshot replaces it,
//! at once the first time and then at doubling, capped intervals
//! ([`super::resync`]), logged once per streak. When a reload of
//! AssetPairs changes a subscribed pair's price or lot decimals
//! ([`PublicFeeds::refresh`]), its book is rebuilt at the new decimals and
//! resubscribed, so its checksum and prices follow Kraken's new precision.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::Utc;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use lido_shared::model::{Book, Quote, Symbol};
use lido_shared::pipe::{Feed, ServiceEvent};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::options::MAX_CONNECTIONS;
use super::resync::{BookResyncs, Resync};
use super::ws::{self, Ws, DEAD_AFTER, IDLE_CHECK, PING_AFTER};
use crate::venue::kraken::book::L2Book;
use crate::venue::kraken::messages::{parse_ws, BookData, MessageType, SubscriptionParams, WsMessage, WsRequest};
use crate::venue::kraken::pairs::{PairInfo, PairMap};

/// How the public connections are opened and filled.
pub struct PublicConfig {
    pub url: String,
    /// Connections always open.
    pub connections: usize,
    pub max_subscriptions_per_connection: usize,
    /// A connection counts as full this many subscriptions before the limit.
    pub subscription_headroom: usize,
    pub book_depth: u32,
}

/// Where a new subscription goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The open connection with this index.
    Existing(usize),
    /// A new connection, for this reason.
    Open(String),
    /// Every connection is at the limit and no more may open: the least
    /// loaded one, over the limit.
    Over(usize),
}

/// The placement rule. `loads` are the open connections' (index,
/// subscriptions). The least loaded below `limit − headroom` takes it;
/// when none is, a connection is opened unless `open_max` are; at that
/// cap the headroom is used, and past the limit the least loaded goes over.
pub fn choose(loads: &[(usize, usize)], limit: usize, headroom: usize, open_max: usize) -> Choice {
    let target = limit.saturating_sub(headroom).max(1);
    let Some(&(least, load)) = loads.iter().min_by_key(|(i, load)| (*load, *i)) else {
        return Choice::Open("no connection is open".into());
    };
    if load < target {
        return Choice::Existing(least);
    }
    if loads.len() < open_max {
        return Choice::Open(format!(
            "every connection carries {load} or more subscriptions (limit {limit}, headroom {headroom})"
        ));
    }
    if load < limit {
        Choice::Existing(least)
    } else {
        Choice::Over(least)
    }
}

/// The public feeds of one broker.
pub struct PublicFeeds {
    config: PublicConfig,
    events: mpsc::Sender<ServiceEvent>,
    shutdown: CancellationToken,
    /// Subscribers per (feed, symbol), and the connections carrying them.
    placement: Mutex<Placement>,
    live: Arc<LiveData>,
    /// The AssetPairs last handed to [`Self::refresh`].
    pairs_seen: Mutex<Option<Arc<PairMap>>>,
}

#[derive(Default)]
struct Placement {
    subscribers: BTreeMap<(Feed, Symbol), usize>,
    connection_of: HashMap<(Feed, Symbol), usize>,
    /// Open connections by index; a closed extra leaves `None` for reuse.
    slots: Vec<Option<Slot>>,
}

struct Slot {
    control: mpsc::Sender<Control>,
    stop: CancellationToken,
}

impl Placement {
    fn load(&self, index: usize) -> usize {
        self.connection_of.values().filter(|c| **c == index).count()
    }

    /// (index, subscriptions) of each open connection.
    fn open_loads(&self) -> Vec<(usize, usize)> {
        (0..self.slots.len()).filter(|i| self.slots[*i].is_some()).map(|i| (i, self.load(i))).collect()
    }
}

/// The latest data the sockets brought, read by `Quote` / `Book` commands
/// and reported in status.
#[derive(Default)]
pub struct LiveData {
    quotes: Mutex<HashMap<Symbol, Quote>>,
    books: Mutex<HashMap<Symbol, L2Book>>,
    pub connected: AtomicUsize,
    pub reconnects: AtomicU64,
    /// Connections made, the first included: a change means Kraken may
    /// have changed since, so AssetPairs is reloaded.
    pub sessions: AtomicU64,
    pub book_resyncs: AtomicU64,
    /// The engine's state from the latest `status` channel message
    /// (`online`, `maintenance`, `cancel_only`, `post_only`), if any came.
    system: Mutex<Option<String>>,
}

impl LiveData {
    /// The engine's state from the `status` channel, if Kraken sent one.
    pub fn system(&self) -> Option<String> {
        lock(&self.system).clone()
    }

    /// Records the engine's state from a `status` message.
    pub fn set_system(&self, system: &str) {
        *lock(&self.system) = Some(system.to_string());
    }

    /// Drops what an ended subscription left behind.
    fn forget(&self, feed: Feed, symbol: &Symbol) {
        match feed {
            Feed::Book => lock(&self.books).remove(symbol).map(|_| ()),
            Feed::Quotes => lock(&self.quotes).remove(symbol).map(|_| ()),
            Feed::Trades => None,
        };
    }
}

enum Control {
    Subscribe(Feed, Box<PairInfo>),
    Unsubscribe(Feed, Symbol),
    /// AssetPairs was reloaded: the pair as it is now.
    Refresh(Box<PairInfo>),
}

/// What a connection sends for a control.
enum Outgoing {
    /// One subscribe (true) or unsubscribe.
    One(Feed, PairInfo, bool),
    /// The pair's book again, for a snapshot at its new decimals.
    Resync(PairInfo),
}

impl PublicFeeds {
    /// Opens the `connections` that are always open.
    pub fn start(config: PublicConfig, events: mpsc::Sender<ServiceEvent>, shutdown: CancellationToken) -> Self {
        let feeds = Self {
            config,
            events,
            shutdown,
            placement: Mutex::new(Placement::default()),
            live: Arc::new(LiveData::default()),
            pairs_seen: Mutex::new(None),
        };
        {
            let mut p = feeds.lock();
            for _ in 0..feeds.config.connections.clamp(1, MAX_CONNECTIONS) {
                feeds.open(&mut p);
            }
        }
        feeds
    }

    pub fn live(&self) -> &LiveData {
        &self.live
    }

    /// Number of distinct (feed, symbol) subscriptions held at Kraken.
    pub fn subscriptions(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// Subscriptions carried by each open connection, by index.
    pub fn loads(&self) -> Vec<usize> {
        self.lock().open_loads().into_iter().map(|(_, load)| load).collect()
    }

    pub fn config(&self) -> &PublicConfig {
        &self.config
    }

    /// Adds a subscriber; the first one subscribes at Kraken.
    pub async fn subscribe(&self, feed: Feed, pair: &PairInfo) {
        let control = {
            let mut p = self.lock();
            let key = (feed, pair.symbol.clone());
            let count = p.subscribers.entry(key.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                return;
            }
            let target = self.place(&mut p);
            p.connection_of.insert(key, target);
            p.slots[target].as_ref().map(|s| s.control.clone())
        };
        if let Some(control) = control {
            let _ = control.send(Control::Subscribe(feed, Box::new(pair.clone()))).await;
        }
    }

    /// Removes a subscriber; the last one unsubscribes at Kraken, and an
    /// extra connection left empty is closed.
    pub async fn unsubscribe(&self, feed: Feed, symbol: &Symbol) {
        let control = {
            let mut p = self.lock();
            let key = (feed, symbol.clone());
            match p.subscribers.get_mut(&key) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    return;
                }
                Some(_) => {
                    p.subscribers.remove(&key);
                }
                None => return,
            }
            let Some(target) = p.connection_of.remove(&key) else { return };
            if target >= self.config.connections && p.load(target) == 0 {
                if let Some(slot) = p.slots[target].take() {
                    let reason = format!(
                        "connection {target} is an extra one and carries no subscription (connections = {} always open)",
                        self.config.connections
                    );
                    self.decided("close_connection", &reason);
                    slot.stop.cancel();
                }
                self.live.forget(feed, symbol);
                None
            } else {
                p.slots[target].as_ref().map(|s| s.control.clone())
            }
        };
        if let Some(control) = control {
            let _ = control.send(Control::Unsubscribe(feed, symbol.clone())).await;
        }
    }

    /// Hands a (re)loaded AssetPairs to the connections carrying books:
    /// one whose pair's decimals changed rebuilds and resubscribes it. The
    /// same map again is a no-op.
    pub async fn refresh(&self, map: &Arc<PairMap>) {
        {
            let mut seen = lock(&self.pairs_seen);
            if seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, map)) {
                return;
            }
            *seen = Some(map.clone());
        }
        let targets: Vec<(mpsc::Sender<Control>, PairInfo)> = {
            let p = self.lock();
            p.connection_of
                .iter()
                .filter(|((feed, _), _)| *feed == Feed::Book)
                .filter_map(|((_, symbol), index)| {
                    let control = p.slots.get(*index)?.as_ref()?.control.clone();
                    Some((control, map.by_symbol(symbol)?.clone()))
                })
                .collect()
        };
        for (control, pair) in targets {
            let _ = control.send(Control::Refresh(Box::new(pair))).await;
        }
    }

    /// The connection for a new subscription, by [`choose`].
    fn place(&self, p: &mut Placement) -> usize {
        let limit = self.config.max_subscriptions_per_connection;
        match choose(&p.open_loads(), limit, self.config.subscription_headroom, MAX_CONNECTIONS) {
            Choice::Existing(index) => index,
            Choice::Open(reason) => {
                let index = self.open(p);
                self.decided("open_connection", &format!("connection {index} opened: {reason}"));
                index
            }
            Choice::Over(index) => {
                warn!(connection = index, limit, "every kraken public websocket is full; subscribing over the limit");
                index
            }
        }
    }

    /// One log line and a `Scaled` event for an open or close decision.
    fn decided(&self, action: &str, reason: &str) {
        info!(action, reason, "kraken public websockets scaled");
        let event = ServiceEvent::Scaled { action: action.into(), reason: reason.into() };
        if self.events.try_send(event).is_err() {
            warn!(action, "scaling event not reported: the event queue is full");
        }
    }

    /// Opens a connection in the first free slot; returns its index.
    fn open(&self, p: &mut Placement) -> usize {
        let index = p.slots.iter().position(Option::is_none).unwrap_or(p.slots.len());
        let (control, rx) = mpsc::channel(256);
        let stop = self.shutdown.child_token();
        let conn = Connection {
            index,
            url: self.config.url.clone(),
            book_depth: self.config.book_depth,
            events: self.events.clone(),
            live: self.live.clone(),
            subs: BTreeMap::new(),
            req_id: 0,
            resyncs: BookResyncs::default(),
        };
        tokio::spawn(conn.run(rx, stop.clone()));
        let slot = Some(Slot { control, stop });
        match p.slots.get_mut(index) {
            Some(free) => *free = slot,
            None => p.slots.push(slot),
        }
        index
    }

    /// The latest quote from the ticker channel, if subscribed.
    pub fn quote(&self, symbol: &Symbol) -> Option<Quote> {
        lock(&self.live.quotes).get(symbol).cloned()
    }

    /// The verified book, if subscribed and in sync.
    pub fn book(&self, symbol: &Symbol, depth: usize) -> Option<Book> {
        lock(&self.live.books).get(symbol).filter(|b| b.is_synced()).map(|b| b.to_book(depth, Utc::now()))
    }

    fn lock(&self) -> MutexGuard<'_, Placement> {
        lock(&self.placement)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere cannot leave it torn.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Sink = SplitSink<Ws, Message>;

/// One public socket and the subscriptions it carries.
struct Connection {
    index: usize,
    url: String,
    book_depth: u32,
    events: mpsc::Sender<ServiceEvent>,
    live: Arc<LiveData>,
    subs: BTreeMap<(Feed, Symbol), PairInfo>,
    req_id: u64,
    /// Pacing of book resubscriptions after checksum failures.
    resyncs: BookResyncs,
}

impl Connection {
    async fn run(mut self, mut control: mpsc::Receiver<Control>, shutdown: CancellationToken) {
        let mut reconnects = ws::Reconnects::default();
        let mut first = true;
        while !shutdown.is_cancelled() {
            if !first {
                self.live.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            first = false;
            let mut lasted = None;
            match ws::connect(&self.url).await {
                Ok(socket) => {
                    info!(connection = self.index, url = %self.url, "kraken public websocket connected");
                    let up = std::time::Instant::now();
                    self.live.connected.fetch_add(1, Ordering::Relaxed);
                    self.live.sessions.fetch_add(1, Ordering::Relaxed);
                    let why = self.session(socket, &mut control, &shutdown).await;
                    lasted = Some(up.elapsed());
                    self.live.connected.fetch_sub(1, Ordering::Relaxed);
                    if shutdown.is_cancelled() {
                        return;
                    }
                    warn!(connection = self.index, reason = %why, "kraken public websocket lost; reconnecting");
                }
                Err(e) => warn!(connection = self.index, error = %e, "kraken public websocket; retrying"),
            }
            let delay = reconnects.next_delay(lasted);
            let wake = tokio::time::sleep(delay);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut wake => break,
                    Some(c) = control.recv() => { self.note(c); }
                }
            }
        }
    }

    /// One connected session; returns why it ended.
    async fn session(
        &mut self,
        socket: Ws,
        control: &mut mpsc::Receiver<Control>,
        shutdown: &CancellationToken,
    ) -> String {
        let (mut sink, mut stream) = socket.split();
        // Only the books this connection carries: a symbol's other feeds
        // may live on other connections.
        for (_, symbol) in self.subs.keys().filter(|(feed, _)| *feed == Feed::Book) {
            if let Some(book) = lock(&self.live.books).get_mut(symbol) {
                book.reset();
            }
        }
        let mut by_feed: BTreeMap<Feed, Vec<PairInfo>> = BTreeMap::new();
        for ((feed, _), pair) in &self.subs {
            by_feed.entry(*feed).or_default().push(pair.clone());
        }
        for (feed, pairs) in by_feed {
            if let Err(e) = self.send_subs(&mut sink, feed, &pairs, true).await {
                return e;
            }
        }
        let mut last_heard = Instant::now();
        let mut idle = tokio::time::interval(IDLE_CHECK);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = sink.close().await;
                    return "shutting down".into();
                }
                Some(c) = control.recv() => {
                    let sent = match self.note(c) {
                        Some(Outgoing::One(feed, pair, on)) => self.send_sub(&mut sink, feed, &pair, on).await,
                        Some(Outgoing::Resync(pair)) => self.resync_book(&mut sink, &pair).await,
                        None => continue,
                    };
                    if let Err(e) = sent {
                        return e;
                    }
                }
                frame = stream.next() => {
                    last_heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            if let Err(e) = self.on_text(&text, &mut sink).await {
                                return e;
                            }
                        }
                        Some(Ok(Message::Close(frame))) => return format!("kraken closed the connection: {frame:?}"),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return format!("read failed: {e}"),
                        None => return "connection closed".into(),
                    }
                }
                _ = idle.tick() => {
                    for symbol in self.resyncs.due(tokio::time::Instant::now()) {
                        let Some(pair) = self.subs.get(&(Feed::Book, symbol)).cloned() else { continue };
                        if let Err(e) = self.resync_book(&mut sink, &pair).await {
                            return e;
                        }
                    }
                    let silent = last_heard.elapsed();
                    if silent > DEAD_AFTER {
                        return format!("nothing heard for {silent:?}");
                    }
                    if silent > PING_AFTER {
                        let id = self.next_id();
                        if let Err(e) = ws::send(&mut sink, &WsRequest::ping(id)).await {
                            return e;
                        }
                    }
                }
            }
        }
    }

    /// Records a control in the subscription list; returns what to send.
    fn note(&mut self, control: Control) -> Option<Outgoing> {
        match control {
            Control::Subscribe(feed, pair) => {
                let pair = *pair;
                if feed == Feed::Book {
                    let book = L2Book::new(
                        pair.symbol.clone(),
                        self.book_depth as usize,
                        pair.price_decimals,
                        pair.lot_decimals,
                    );
                    lock(&self.live.books).insert(pair.symbol.clone(), book);
                }
                self.subs.insert((feed, pair.symbol.clone()), pair.clone());
                Some(Outgoing::One(feed, pair, true))
            }
            Control::Unsubscribe(feed, symbol) => {
                let pair = self.subs.remove(&(feed, symbol.clone()))?;
                if feed == Feed::Book {
                    self.resyncs.forget(&symbol);
                }
                self.live.forget(feed, &symbol);
                Some(Outgoing::One(feed, pair, false))
            }
            Control::Refresh(pair) => {
                let pair = *pair;
                let symbol = pair.symbol.clone();
                let old = self.subs.get(&(Feed::Book, symbol.clone()))?;
                if (old.price_decimals, old.lot_decimals) == (pair.price_decimals, pair.lot_decimals) {
                    return None;
                }
                info!(connection = self.index, %symbol, price_decimals = pair.price_decimals,
                    lot_decimals = pair.lot_decimals, "kraken changed the pair's decimals; resubscribing its book");
                for feed in [Feed::Quotes, Feed::Book, Feed::Trades] {
                    if let Some(p) = self.subs.get_mut(&(feed, symbol.clone())) {
                        *p = pair.clone();
                    }
                }
                let book =
                    L2Book::new(symbol.clone(), self.book_depth as usize, pair.price_decimals, pair.lot_decimals);
                lock(&self.live.books).insert(symbol.clone(), book);
                self.resyncs.forget(&symbol);
                Some(Outgoing::Resync(pair))
            }
        }
    }

    async fn send_sub(&mut self, sink: &mut Sink, feed: Feed, pair: &PairInfo, on: bool) -> Result<(), String> {
        self.send_subs(sink, feed, std::slice::from_ref(pair), on).await
    }

    /// One `subscribe` (or `unsubscribe`) of `feed`'s channel for every
    /// pair in `pairs`.
    async fn send_subs(&mut self, sink: &mut Sink, feed: Feed, pairs: &[PairInfo], on: bool) -> Result<(), String> {
        let symbols: Vec<&str> = pairs.iter().map(PairInfo::ws_symbol).collect();
        let params = match feed {
            Feed::Quotes => SubscriptionParams::ticker(&symbols),
            Feed::Book => SubscriptionParams::book(&symbols, self.book_depth),
            Feed::Trades => SubscriptionParams::trade(&symbols),
        };
        let id = self.next_id();
        let request = if on { WsRequest::subscribe(params, id) } else { WsRequest::unsubscribe(params, id) };
        debug!(connection = self.index, method = %request.method, symbols = ?symbols, ?feed, "kraken subscription");
        ws::send(sink, &request).await
    }

    fn next_id(&mut self) -> u64 {
        self.req_id += 1;
        self.req_id
    }

    async fn on_text(&mut self, text: &str, sink: &mut Sink) -> Result<(), String> {
        let message = match parse_ws(text) {
            Ok(m) => m,
            Err(e) => {
                warn!(connection = self.index, error = %e, "unreadable kraken frame ignored");
                return Ok(());
            }
        };
        let now = Utc::now();
        match message {
            WsMessage::Ticker { data, .. } => {
                for t in data {
                    let Some(symbol) = self.subscribed(Feed::Quotes, &t.symbol) else { continue };
                    let quote = t.to_quote(symbol.clone(), now);
                    lock(&self.live.quotes).insert(symbol, quote.clone());
                    // Market data is dropped, not queued, when the pipe is slow.
                    let _ = self.events.try_send(ServiceEvent::Quote(quote));
                }
            }
            WsMessage::Trade { data, .. } => {
                for t in data {
                    let Some(symbol) = self.subscribed(Feed::Trades, &t.symbol) else { continue };
                    let _ = self.events.try_send(ServiceEvent::Trade(t.to_trade(symbol)));
                }
            }
            WsMessage::Book { kind, data } => {
                for d in data {
                    if let Some(pair) = self.on_book(kind, &d) {
                        self.resync_book(sink, &pair).await?;
                    }
                }
            }
            WsMessage::Status(status) => {
                for s in status {
                    info!(connection = self.index, system = %s.system, api_version = ?s.api_version, "kraken status");
                    self.live.set_system(&s.system);
                }
            }
            WsMessage::Response(r) if !r.success => {
                warn!(connection = self.index, method = %r.method, error = ?r.error, "kraken refused a request");
            }
            WsMessage::Response(_) | WsMessage::Heartbeat | WsMessage::Executions { .. } | WsMessage::Other { .. } => {}
        }
        Ok(())
    }

    /// Unsubscribes and subscribes `pair`'s book again, for a fresh snapshot.
    async fn resync_book(&mut self, sink: &mut Sink, pair: &PairInfo) -> Result<(), String> {
        self.live.book_resyncs.fetch_add(1, Ordering::Relaxed);
        self.send_sub(sink, Feed::Book, pair, false).await?;
        self.send_sub(sink, Feed::Book, pair, true).await
    }

    /// Applies one book message; returns the pair to resubscribe when the
    /// book fell out of sync and its resync may go now ([`BookResyncs`]).
    fn on_book(&mut self, kind: MessageType, data: &BookData) -> Option<PairInfo> {
        let symbol = self.subscribed(Feed::Book, &data.symbol)?;
        let outcome = {
            let mut books = lock(&self.live.books);
            let book = books.get_mut(&symbol)?;
            match book.apply(kind, data) {
                Ok(()) => Ok(book.to_book(self.book_depth as usize, Utc::now())),
                Err(e) => {
                    book.reset();
                    Err(e)
                }
            }
        };
        match outcome {
            Ok(book) => {
                let _ = self.events.try_send(ServiceEvent::Book(book));
                None
            }
            Err(e) => {
                match self.resyncs.out_of_sync(&symbol, tokio::time::Instant::now()) {
                    Resync::Now { first_of_streak: true } => {
                        warn!(connection = self.index, %symbol, error = %e, "kraken book out of sync; resubscribing")
                    }
                    Resync::Now { first_of_streak: false } => {
                        debug!(connection = self.index, %symbol, error = %e, "kraken book out of sync again; resubscribing")
                    }
                    Resync::Later => return None,
                }
                self.subs.get(&(Feed::Book, symbol)).cloned()
            }
        }
    }

    /// The Lido symbol of a Kraken v2 symbol this connection subscribed to.
    fn subscribed(&self, feed: Feed, ws_symbol: &str) -> Option<Symbol> {
        let symbol = Symbol::parse(ws_symbol).ok()?;
        self.subs.contains_key(&(feed, symbol.clone())).then_some(symbol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::venue::kraken::pairs::PairMap;

    const PAIRS: &str = r#"{"error":[],"result":{
      "XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","base":"XXBT","quote":"ZUSD","pair_decimals":1,"lot_decimals":8,"ordermin":"0.0001","tick_size":"0.1","status":"online"},
      "XETHZUSD":{"altname":"ETHUSD","wsname":"ETH/USD","base":"XETH","quote":"ZUSD","pair_decimals":2,"lot_decimals":8,"ordermin":"0.002","tick_size":"0.01","status":"online"}
    }}"#;

    #[tokio::test]
    async fn full_connections_get_a_new_one_and_an_idle_extra_is_closed() {
        let pairs = PairMap::from_body(PAIRS).unwrap();
        let btc = pairs.resolve("XBTUSD").unwrap().clone();
        let eth = pairs.resolve("ETHUSD").unwrap().clone();
        // Nothing listens there: the connections keep retrying, which is
        // enough for placement.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = PublicConfig {
            url: format!("ws://127.0.0.1:{port}/v2"),
            connections: 1,
            max_subscriptions_per_connection: 2,
            subscription_headroom: 0,
            book_depth: 10,
        };
        let shutdown = CancellationToken::new();
        let (events, mut decisions) = mpsc::channel(16);
        let feeds = PublicFeeds::start(config, events, shutdown.clone());
        assert_eq!(feeds.loads(), [0]);
        for (feed, pair) in
            [(Feed::Quotes, &btc), (Feed::Book, &btc), (Feed::Quotes, &eth), (Feed::Book, &eth), (Feed::Trades, &btc)]
        {
            feeds.subscribe(feed, pair).await;
        }
        // A second subscriber to the same feed costs Kraken nothing.
        feeds.subscribe(Feed::Quotes, &btc).await;
        assert_eq!(feeds.loads(), [2, 2, 1]);
        assert_eq!(feeds.subscriptions(), 5);

        feeds.unsubscribe(Feed::Trades, &btc.symbol).await;
        assert_eq!(feeds.loads(), [2, 2], "the idle extra connection is closed");
        // Its slot is reused by the next connection opened.
        feeds.subscribe(Feed::Trades, &eth).await;
        assert_eq!(feeds.loads(), [2, 2, 1]);
        // The connections always open stay, empty or not.
        feeds.unsubscribe(Feed::Quotes, &btc.symbol).await;
        feeds.unsubscribe(Feed::Quotes, &btc.symbol).await;
        feeds.unsubscribe(Feed::Book, &btc.symbol).await;
        assert_eq!(feeds.loads(), [0, 2, 1]);
        let mut actions = Vec::new();
        while let Ok(ServiceEvent::Scaled { action, reason }) = decisions.try_recv() {
            assert!(reason.contains("connection"), "{reason}");
            actions.push(action);
        }
        assert_eq!(actions, ["open_connection", "open_connection", "close_connection", "open_connection"]);
        shutdown.cancel();
    }

    #[test]
    fn a_connection_near_the_limit_makes_room_on_a_new_one() {
        // Below limit − headroom: the least loaded, the oldest on a tie.
        assert_eq!(choose(&[(0, 1), (1, 1)], 5, 2, 4), Choice::Existing(0));
        assert_eq!(choose(&[(0, 3), (1, 2)], 5, 2, 4), Choice::Existing(1));
        // Every one within the headroom of the limit: open another.
        let Choice::Open(reason) = choose(&[(0, 3), (2, 4)], 5, 2, 4) else { panic!("expected an open") };
        assert!(reason.contains("limit 5, headroom 2"), "{reason}");
        // At the cap the headroom is used, then the limit is passed.
        assert_eq!(choose(&[(0, 3), (1, 4)], 5, 2, 2), Choice::Existing(0));
        assert_eq!(choose(&[(0, 5), (1, 6)], 5, 2, 2), Choice::Over(0));
        // A headroom as large as the limit still leaves one per connection.
        assert_eq!(choose(&[(0, 0)], 3, 9, 4), Choice::Existing(0));
        assert!(matches!(choose(&[(0, 1)], 3, 9, 4), Choice::Open(_)));
        assert!(matches!(choose(&[], 3, 0, 4), Choice::Open(_)));
    }
}

//! A fake Kraken Spot API on 127.0.0.1, strict in the ways Kraken is, and
//! independent of the adapter it tests: it shares no code or types with
//! lidod, reads requests as raw forms and JSON, and builds every payload
//! from Kraken's documented examples (`tests/fixtures/kraken/`, each naming
//! its docs.kraken.com page; see [`wire`]).
//!
//! REST: Kraken's `{"error":[…],"result":…}` envelope (HTTP 200 for errors
//! too) and Kraken's error strings; `API-Key` and `API-Sign` checked by
//! recomputing the signature (HMAC-SHA512 of the URI path and SHA-256 of
//! nonce + body, keyed by the base64-decoded secret); nonces per API key,
//! across every connection. Public Time, AssetPairs, Ticker, Depth, Trades,
//! OHLC; private Balance, OpenOrders, ClosedOrders, QueryOrders, QueryTrades,
//! AddOrder,
//! AmendOrder, CancelOrder, CancelAll, CancelAllOrdersAfter,
//! GetWebSocketsToken.
//!
//! WebSocket v2 ([`ws`]): `status` on connect and on every change,
//! heartbeats, public `ticker` / `book` (CRC32 checksums) / `trade` at
//! [`FakeKraken::ws_url`]; at [`FakeKraken::ws_auth_url`] private
//! `executions` (a snapshot of open orders and the last 50 trades) and the
//! `add_order` / `amend_order` / `cancel_order` / `cancel_all` /
//! `cancel_all_orders_after` methods behind a token from
//! GetWebSocketsToken, checked and matched as REST is.
//!
//! Kraken's rules ([`limits`] and below), each switchable from a test: the
//! per-pair trading rate counter and the per-key REST call counter by
//! [`Tier`] ([`FakeKraken::set_tier`], [`FakeKraken::enforce_rate_limits`]);
//! `cl_ord_id` unique among open orders; the engine's `status`
//! ([`FakeKraken::set_system_status`]) and each pair's AssetPairs `status`,
//! `ordermin` and `tick_size` ([`FakeKraken::set_pair_status`],
//! [`FakeKraken::set_pair_limits`]); WebSocket tokens that must be used
//! within 15 minutes ([`FakeKraken::expire_ws_tokens`]); prices and volumes
//! checked against the pair's decimals.
//!
//! Switches for fault tests: [`FakeKraken::fail_next_with`],
//! [`FakeKraken::rate_limit_next`], [`FakeKraken::fail_key`],
//! [`FakeKraken::stall`], [`FakeKraken::lose_next_answer`],
//! [`FakeKraken::drop_websockets`], [`FakeKraken::drop_after_next_add_order`],
//! [`FakeKraken::stall_websockets`], [`FakeKraken::corrupt_next_checksum`],
//! [`FakeKraken::hold_top_of_book`]. For recovery tests,
//! [`FakeKraken::place_elsewhere`], [`FakeKraken::trade_against`] and
//! [`FakeKraken::cancel_elsewhere`].

mod limits;
mod market;
mod wire;
mod ws;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha512};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use limits::Tier;
use market::{Execution, FakeMarket, Pair, Side};
use wire::{num, text};
use ws::PublicFrame;

/// The answer the fake gives to a second open order with a `cl_ord_id`
/// already in use. Kraken's "Client Order Identifiers" guide says the id is
/// unique across open orders but prints no error text; this is the string
/// Kraken clients in the wild match on. Unverified.
pub const DUPLICATE_ORDER: &str = "EOrder:Duplicate order";

/// How long a WebSocket token may wait for its first use (GetWebSocketsToken:
/// "should be used within 15 minutes of creation").
pub const WS_TOKEN_VALIDITY: Duration = Duration::from_secs(900);

/// What the fake starts with.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The account's first API key (its nonces are `last_nonce`).
    pub api_key: String,
    /// Its secret, base64 as Kraken issues it.
    pub api_secret: String,
    /// More API keys (key, base64 secret) of the same account, as Kraken
    /// lets one account have several; each has its own nonce sequence and
    /// REST call counter, and all share the account's trading counters.
    pub more_keys: Vec<(String, String)>,
    /// Balances by Kraken asset code (`ZUSD`, `XXBT`, `XETH`).
    pub balances: BTreeMap<String, Decimal>,
    /// How often one level of each book changes (and the ticker goes out).
    pub tick: Duration,
    /// The account's tier, for the rate counters.
    pub tier: Tier,
    /// Whether the trading and REST rate counters refuse calls past their
    /// limits (they always count).
    pub rate_limits: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            api_key: "fake-api-key".into(),
            // Kraken's published example secret ("Spot REST Authentication").
            api_secret: "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
                .into(),
            more_keys: Vec::new(),
            balances: [
                ("ZUSD".to_string(), Decimal::from(10_000)),
                ("XXBT".to_string(), Decimal::ONE),
                ("XETH".to_string(), Decimal::from(10)),
            ]
            .into(),
            tick: Duration::from_millis(100),
            tier: Tier::Pro,
            rate_limits: true,
        }
    }
}

/// The public and private WebSocket v2 URLs of the fake whose REST base is
/// `base` (one in another process, too).
pub fn ws_urls(base: &str) -> (String, String) {
    let ws = base.replacen("http://", "ws://", 1);
    (format!("{ws}/v2"), format!("{ws}/auth/v2"))
}

/// An order as the fake holds it (its own type, in Kraken's words).
#[derive(Debug, Clone, PartialEq)]
pub struct FakeOrder {
    pub txid: String,
    /// The pair's REST altname (`XBTUSD`).
    pub pair: String,
    /// `buy` or `sell`.
    pub side: String,
    /// `limit` or `market`.
    pub ordertype: String,
    /// The limit price (the touch when placed, for a market order).
    pub price: Decimal,
    pub vol: Decimal,
    pub vol_exec: Decimal,
    pub cost: Decimal,
    pub fee: Decimal,
    /// Average fill price.
    pub avg_price: Decimal,
    /// Kraken's REST status: `pending`, `open`, `closed`, `canceled`, `expired`.
    pub status: String,
    pub cl_ord_id: Option<String>,
    pub userref: Option<i64>,
    pub post_only: bool,
    /// `GTC` or `IOC`.
    pub time_in_force: String,
    pub opentm: Decimal,
    pub closetm: Option<Decimal>,
    pub reason: Option<String>,
    /// Trade ids of its fills.
    pub trades: Vec<String>,
    /// When it was placed or last amended (for the cancel penalties).
    pub since: Instant,
}

impl FakeOrder {
    /// Volume still to fill.
    pub fn remaining(&self) -> Decimal {
        (self.vol - self.vol_exec).max(Decimal::ZERO)
    }

    pub fn is_open(&self) -> bool {
        self.status == "open"
    }
}

/// A running fake; stopped when dropped.
pub struct FakeKraken {
    /// `http://127.0.0.1:PORT`, to use as the REST base URL.
    pub url: String,
    state: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    config: FakeConfig,
    /// Every API key's decoded secret.
    secrets: BTreeMap<String, Vec<u8>>,
    state: Mutex<FakeState>,
    /// Bumped to close every WebSocket.
    drops: watch::Sender<u64>,
    public_tx: broadcast::Sender<PublicFrame>,
    /// Execution entries with their sequence number.
    exec_tx: broadcast::Sender<(u64, Value)>,
    /// `status` frames, for every socket.
    status_tx: broadcast::Sender<String>,
}

/// Taker fee of the fake (Kraken's first tier: 0.26 %).
const TAKER_FEE: Decimal = Decimal::from_parts(26, 0, 0, false, 4);
/// Trades kept for the executions snapshot (`snap_trades`: "the last 50").
const SNAP_TRADES: usize = 50;

/// One WebSocket token.
struct TokenInfo {
    key: String,
    issued: Instant,
    /// Used for a successful private subscription (then it does not expire).
    used: bool,
    /// Made stale by a test ([`FakeKraken::expire_ws_tokens`]).
    expired: bool,
}

#[derive(Default)]
struct FakeState {
    /// The last nonce per API key.
    nonces: BTreeMap<String, u64>,
    orders: BTreeMap<String, FakeOrder>,
    next_order: u64,
    fail_next: Option<String>,
    /// The next this many order calls answer `EOrder:Rate limit exceeded`.
    rate_limit_next: u32,
    /// The next order call takes effect and its answer is lost.
    lose_next_answer: bool,
    /// API keys whose private requests fail, with the error.
    failing_keys: BTreeMap<String, String>,
    tokens: BTreeMap<String, TokenInfo>,
    stall_next: Option<Duration>,
    requests: u64,
    balances: BTreeMap<String, Decimal>,
    /// Markets by WebSocket v2 symbol (`BTC/USD`).
    markets: BTreeMap<String, FakeMarket>,
    exec_seq: u64,
    /// Recent trade executions, for the executions snapshot.
    fills: VecDeque<Value>,
    /// Every trade of the account by trade id, as QueryTrades shows it.
    trades: BTreeMap<String, Value>,
    corrupt_next_checksum: bool,
    ws_stalled_until: Option<Instant>,
    ws_opened: u64,
    /// `subscribe` messages received on public sockets.
    public_subscribes: u64,
    /// AddOrder requests over REST, and `add_order` calls over the socket.
    rest_add_orders: u64,
    ws_add_orders: u64,
    /// CancelOrder requests over REST, and `cancel_order` calls over the socket.
    rest_cancels: u64,
    ws_cancels: u64,
    drop_after_add_order: bool,
    /// How long each executions subscription's answer and snapshot are held back.
    snapshot_delay: Option<Duration>,
    /// The trading engine's status (`online`, `maintenance`, `cancel_only`, `post_only`).
    system: String,
    tier: Tier,
    rate_limits: bool,
    /// The trading counter per pair key (one account).
    trading: BTreeMap<String, limits::Counter>,
    /// The REST call counter per API key.
    calls: BTreeMap<String, limits::Counter>,
    /// The dead man's switch: when every open order is canceled.
    cancel_all_at: Option<Instant>,
}

/// What an order call came to: the answer and whether it is lost.
type Answer = Result<Value, String>;

impl FakeKraken {
    /// Starts the fake on 127.0.0.1, on a free port.
    pub async fn start(config: FakeConfig) -> Self {
        let keys = std::iter::once((config.api_key.clone(), config.api_secret.clone())).chain(config.more_keys.clone());
        let b64 = base64::engine::general_purpose::STANDARD;
        let secrets = keys.map(|(k, s)| (k, b64.decode(s).expect("the fake's secrets are base64"))).collect();
        let markets =
            market::default_pairs().into_iter().map(|(p, mid)| (p.symbol.clone(), FakeMarket::new(p, mid))).collect();
        let fake_state = FakeState {
            balances: config.balances.clone(),
            markets,
            system: "online".into(),
            tier: config.tier,
            rate_limits: config.rate_limits,
            ..FakeState::default()
        };
        let state = Arc::new(Shared {
            config,
            secrets,
            state: Mutex::new(fake_state),
            drops: watch::channel(0).0,
            public_tx: broadcast::channel(4096).0,
            exec_tx: broadcast::channel(4096).0,
            status_tx: broadcast::channel(64).0,
        });
        let app = Router::new()
            .route("/0/public/{method}", get(public).post(public))
            .route("/0/private/{method}", post(private))
            .route("/v2", get(ws::public))
            .route("/auth/v2", get(ws::private))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let activity = tokio::spawn(state.clone().activity());
        Self { url, state, tasks: vec![server, activity] }
    }

    /// The public WebSocket v2 URL (Kraken's `wss://ws.kraken.com/v2`).
    pub fn ws_url(&self) -> String {
        ws_urls(&self.url).0
    }

    /// The private WebSocket v2 URL (Kraken's `wss://ws-auth.kraken.com/v2`).
    pub fn ws_auth_url(&self) -> String {
        ws_urls(&self.url).1
    }

    /// Closes every WebSocket connection, public and private.
    pub fn drop_websockets(&self) {
        self.state.drops.send_modify(|n| *n += 1);
    }

    /// Sends nothing on any WebSocket (no data, no heartbeats) for `how_long`.
    pub fn stall_websockets(&self, how_long: Duration) {
        self.state.lock().ws_stalled_until = Some(Instant::now() + how_long);
    }

    /// Sends the next book update with a wrong checksum.
    pub fn corrupt_next_checksum(&self) {
        self.state.lock().corrupt_next_checksum = true;
    }

    /// WebSocket connections accepted so far.
    pub fn websockets_opened(&self) -> u64 {
        self.state.lock().ws_opened
    }

    /// The best bid and ask of a pair (`BTC/USD`).
    pub fn top_of_book(&self, symbol: &str) -> Option<(Decimal, Decimal)> {
        let s = self.state.lock();
        let m = s.markets.get(symbol)?;
        Some((m.bids().first()?.0, m.asks().first()?.0))
    }

    /// Sets the touch of `symbol` (`BTC/USD`) to exactly `bid` × `bid_qty`
    /// and `ask` × `ask_qty` (nine more levels a side behind them) and holds
    /// the book there: no activity changes it until
    /// [`FakeKraken::release_book`] (fills still do). Subscribers get the
    /// change as a book update and a ticker.
    pub fn hold_top_of_book(&self, symbol: &str, bid: (Decimal, Decimal), ask: (Decimal, Decimal)) {
        let mut s = self.state.lock();
        let Some(m) = s.markets.get_mut(symbol) else { panic!("the fake lists no {symbol}") };
        let change = m.set_top(bid, ask);
        self.state.publish_book(m, &change);
    }

    /// Lets the book of `symbol` move again.
    pub fn release_book(&self, symbol: &str) {
        if let Some(m) = self.state.lock().markets.get_mut(symbol) {
            m.held = false;
        }
    }

    /// Answers the next request (REST public or private, or a socket
    /// order method) with this Kraken error string, without acting on it.
    pub fn fail_next_with(&self, error: &str) {
        self.state.lock().fail_next = Some(error.to_string());
    }

    /// Answers the next `n` order calls (AddOrder, CancelOrder, AmendOrder,
    /// CancelAll, on REST or the socket) with Kraken's trading rate-limit
    /// error `EOrder:Rate limit exceeded`, without acting on them.
    pub fn rate_limit_next(&self, n: u32) {
        self.state.lock().rate_limit_next = n;
    }

    /// The next order call (REST AddOrder / CancelOrder, socket `add_order`
    /// / `cancel_order`) takes effect and its answer is lost: REST never
    /// answers (the client times out), the socket is closed unanswered.
    pub fn lose_next_answer(&self) {
        self.state.lock().lose_next_answer = true;
    }

    /// While `error` is set, answers every private request made with API
    /// key `key` (REST, or a socket method behind a token issued to it) with
    /// this Kraken error string (e.g. `EAPI:Invalid key` for a revoked key),
    /// without acting on it; other keys and public requests are served.
    /// `None` heals it.
    pub fn fail_key(&self, key: &str, error: Option<&str>) {
        let mut state = self.state.lock();
        match error {
            Some(e) => state.failing_keys.insert(key.to_string(), e.to_string()),
            None => state.failing_keys.remove(key),
        };
    }

    /// Holds the next answer (REST, or a socket order method) back for
    /// `delay`, after the request took effect.
    pub fn stall(&self, delay: Duration) {
        self.state.lock().stall_next = Some(delay);
    }

    /// Closes the private socket that receives the next `add_order` right
    /// after placing the order, before answering it.
    pub fn drop_after_next_add_order(&self) {
        self.state.lock().drop_after_add_order = true;
    }

    /// Holds back the answer and snapshot of every `executions`
    /// subscription from now on for `delay` (a slow private socket).
    pub fn delay_executions_snapshot(&self, delay: Duration) {
        self.state.lock().snapshot_delay = Some(delay);
    }

    /// The account's tier for the rate counters.
    pub fn set_tier(&self, tier: Tier) {
        self.state.lock().tier = tier;
    }

    /// Whether the rate counters refuse calls past their limits.
    pub fn enforce_rate_limits(&self, on: bool) {
        self.state.lock().rate_limits = on;
    }

    /// The trading rate counter of a pair (any spelling) now.
    pub fn trading_counter(&self, pair: &str) -> Decimal {
        let s = self.state.lock();
        let Some(key) = s.markets.values().find(|m| m.pair.is_named(pair)).map(|m| m.pair.key.clone()) else {
            return Decimal::ZERO;
        };
        s.trading.get(&key).map_or(Decimal::ZERO, |c| c.level(Instant::now(), s.tier.trading_decay()))
    }

    /// The REST call counter of an API key now.
    pub fn call_counter(&self, key: &str) -> Decimal {
        let s = self.state.lock();
        s.calls.get(key).map_or(Decimal::ZERO, |c| c.level(Instant::now(), s.tier.rest_decay()))
    }

    /// Changes the trading engine's status (`online`, `maintenance`,
    /// `cancel_only`, `post_only`): every socket gets a `status` update and
    /// the fake enforces it (maintenance: no orders, no cancels; cancel_only:
    /// no new orders; post_only: only post-only limit orders; no matching in
    /// any but `online`).
    pub fn set_system_status(&self, system: &str) {
        self.state.lock().system = system.to_string();
        let _ = self.state.status_tx.send(system.to_string());
    }

    /// Changes a pair's AssetPairs `status` (`online`, `cancel_only`,
    /// `post_only`, `limit_only`, `reduce_only`, `maintenance`,
    /// `work_in_progress`, `delisted`), enforced on new orders.
    pub fn set_pair_status(&self, pair: &str, status: &str) {
        let mut s = self.state.lock();
        if let Some(m) = s.markets.values_mut().find(|m| m.pair.is_named(pair)) {
            m.pair.status = status.to_string();
        }
    }

    /// Changes a pair's `ordermin` and `tick_size` (AssetPairs shows them).
    pub fn set_pair_limits(&self, pair: &str, ordermin: Decimal, tick_size: Decimal) {
        let mut s = self.state.lock();
        if let Some(m) = s.markets.values_mut().find(|m| m.pair.is_named(pair)) {
            m.pair.ordermin = ordermin;
            m.pair.tick_size = tick_size;
        }
    }

    /// Makes every WebSocket token issued so far and not yet used for a
    /// private subscription stale, as 15 minutes would: subscribing or
    /// calling a method with it is refused.
    pub fn expire_ws_tokens(&self) {
        for t in self.state.lock().tokens.values_mut() {
            if !t.used {
                t.expired = true;
            }
        }
    }

    /// Orders asked for so far: (REST AddOrder, socket `add_order`).
    pub fn add_orders_by_transport(&self) -> (u64, u64) {
        let s = self.state.lock();
        (s.rest_add_orders, s.ws_add_orders)
    }

    /// Cancels asked for so far: (REST CancelOrder, socket `cancel_order`).
    pub fn cancels_by_transport(&self) -> (u64, u64) {
        let s = self.state.lock();
        (s.rest_cancels, s.ws_cancels)
    }

    /// How many orders the venue holds (any status) with this `cl_ord_id`.
    pub fn orders_with_cl_ord_id(&self, cl_ord_id: &str) -> usize {
        self.state.lock().orders.values().filter(|o| o.cl_ord_id.as_deref() == Some(cl_ord_id)).count()
    }

    /// Places an order at "Kraken" directly, as another app on the same
    /// account would (not through lidod): the AddOrder form fields, without
    /// the nonce. Returns the txid.
    pub fn place_elsewhere(&self, fields: &[(&str, &str)]) -> Result<String, String> {
        let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let request = OrderRequest::from_form(&fields)?;
        let mut state = self.state.lock();
        let answer = self.state.add_order(&mut state, &request)?;
        answer["txid"][0].as_str().map(str::to_string).ok_or_else(|| "no txid".to_string())
    }

    /// Another trader takes `quantity` of the open order `txid` at its
    /// limit price: a fill as Kraken books it (executions `trade`, balances),
    /// made whether or not anyone listens (e.g. while lidod is down).
    pub fn trade_against(&self, txid: &str, quantity: Decimal) -> Result<(), String> {
        let mut state = self.state.lock();
        let mut order = state.orders.get(txid).cloned().ok_or("EOrder:Unknown order")?;
        if !order.is_open() || quantity <= Decimal::ZERO || quantity > order.remaining() {
            return Err(format!("order {txid} cannot fill {quantity} more"));
        }
        let pair = state.pair(&order.pair).ok_or("EQuery:Unknown asset pair")?;
        let trade_id = state.markets.get_mut(&pair.symbol).ok_or("EQuery:Unknown asset pair")?.next_trade_id();
        let execution = Execution { price: order.price, qty: quantity, trade_id };
        self.state.fill(&mut state, &mut order, &pair, &execution, "m");
        if order.remaining().is_zero() {
            order.status = "closed".into();
            order.closetm = Some(wire::now_secs());
        }
        state.orders.insert(txid.to_string(), order);
        Ok(())
    }

    /// Another app on the account (or Kraken's web UI) cancels the open
    /// order `txid`: executions `canceled`, made whether or not anyone
    /// listens (e.g. while the private socket is down).
    pub fn cancel_elsewhere(&self, txid: &str) -> Result<(), String> {
        let mut state = self.state.lock();
        self.state.cancel_one(&mut state, txid, "User requested")
    }

    /// Kraken changes the precision of `pair` (altname or key): AssetPairs
    /// shows the new `pair_decimals`, `lot_decimals` and `tick_size`, and
    /// the live book is laid out again at them, its checksum computed at
    /// them from then on (WebSocket v2 "book", "Checksum": prices and
    /// quantities at the pair's precision).
    pub fn set_pair_decimals(&self, pair: &str, pair_decimals: u32, lot_decimals: u32, tick_size: Decimal) {
        let mut s = self.state.lock();
        let Some(m) = s.markets.values_mut().find(|m| m.pair.is_named(pair)) else { return };
        let change = m.set_precision(pair_decimals, lot_decimals, tick_size);
        self.state.publish_book(m, &change);
    }

    /// `subscribe` messages received on public sockets so far (each may
    /// carry several symbols).
    pub fn public_subscribe_messages(&self) -> u64 {
        self.state.lock().public_subscribes
    }

    /// Every order the fake holds, by txid.
    pub fn orders(&self) -> BTreeMap<String, FakeOrder> {
        self.state.lock().orders.clone()
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.state.lock().requests
    }

    /// The last nonce accepted for the first API key.
    pub fn last_nonce(&self) -> Option<u64> {
        self.state.lock().nonces.get(&self.state.config.api_key).copied()
    }
}

impl Drop for FakeKraken {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// An order request, from a REST AddOrder form or a socket `add_order`.
#[derive(Debug, Clone)]
struct OrderRequest {
    pair: String,
    side: Side,
    /// `limit` or `market`.
    ordertype: String,
    volume: Decimal,
    /// The price as written, for the decimals check.
    price: Option<Decimal>,
    /// `GTC` or `IOC`.
    time_in_force: String,
    post_only: bool,
    cl_ord_id: Option<String>,
    userref: Option<i64>,
    validate: bool,
}

impl OrderRequest {
    /// Reads an AddOrder form (docs "Add Order": `pair`, `type`,
    /// `ordertype`, `volume`, `price`, `timeinforce`, `oflags`, `cl_ord_id`,
    /// `userref`, `validate`).
    fn from_form(fields: &[(String, String)]) -> Result<Self, String> {
        let get = |name: &str| field(fields, name);
        let invalid = |name: &str| format!("EGeneral:Invalid arguments:{name}");
        let side = get("type").and_then(Side::parse).ok_or_else(|| invalid("type"))?;
        let ordertype = get("ordertype").ok_or_else(|| invalid("ordertype"))?.to_string();
        if !matches!(ordertype.as_str(), "limit" | "market") {
            return Err(invalid("ordertype"));
        }
        let volume = get("volume").and_then(wire::parse_decimal).ok_or_else(|| invalid("volume"))?;
        let price = match get("price") {
            None => None,
            Some(p) => Some(wire::parse_decimal(p).ok_or_else(|| "EOrder:Invalid price".to_string())?),
        };
        let time_in_force = match get("timeinforce").unwrap_or("GTC") {
            "GTC" => "GTC",
            "IOC" => "IOC",
            _ => return Err(invalid("timeinforce")),
        }
        .to_string();
        let userref = match get("userref") {
            None => None,
            Some(u) => Some(u.parse().map_err(|_| invalid("userref"))?),
        };
        Ok(Self {
            pair: get("pair").ok_or_else(|| invalid("pair"))?.to_string(),
            side,
            ordertype,
            volume,
            price,
            time_in_force,
            post_only: get("oflags").is_some_and(|f| f.split(',').any(|f| f == "post")),
            cl_ord_id: get("cl_ord_id").map(str::to_string),
            userref,
            validate: matches!(get("validate"), Some("true" | "1")),
        })
    }

    /// Reads a socket `add_order`'s params (WS v2 "add_order": `order_type`,
    /// `side`, `order_qty`, `symbol`, `limit_price`, `time_in_force`,
    /// `post_only`, `cl_ord_id`, `order_userref`, `validate`).
    fn from_ws(p: &Value) -> Result<Self, String> {
        let invalid = |name: &str| format!("EGeneral:Invalid arguments:{name}");
        let side = p["side"].as_str().and_then(Side::parse).ok_or_else(|| invalid("side"))?;
        let ordertype = p["order_type"].as_str().ok_or_else(|| invalid("order_type"))?.to_string();
        if !matches!(ordertype.as_str(), "limit" | "market") {
            return Err(invalid("order_type"));
        }
        let volume = wire::json_decimal(&p["order_qty"]).ok_or_else(|| invalid("order_qty"))?;
        let price = match &p["limit_price"] {
            Value::Null => None,
            v => Some(wire::json_decimal(v).ok_or_else(|| invalid("limit_price"))?),
        };
        let time_in_force = match p["time_in_force"].as_str().unwrap_or("gtc") {
            "gtc" => "GTC",
            "ioc" => "IOC",
            _ => return Err(invalid("time_in_force")),
        }
        .to_string();
        Ok(Self {
            pair: p["symbol"].as_str().ok_or_else(|| invalid("symbol"))?.to_string(),
            side,
            ordertype,
            volume,
            price,
            time_in_force,
            post_only: p["post_only"].as_bool().unwrap_or(false),
            cl_ord_id: p["cl_ord_id"].as_str().map(str::to_string),
            userref: p["order_userref"].as_i64(),
            validate: p["validate"].as_bool().unwrap_or(false),
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stalled(&self) -> bool {
        self.lock().ws_stalled_until.is_some_and(|t| Instant::now() < t)
    }

    /// The error a private request behind `token` gets while its key fails.
    fn key_failure_for_token(&self, token: &str) -> Option<String> {
        let state = self.lock();
        state.tokens.get(token).and_then(|t| state.failing_keys.get(&t.key)).cloned()
    }

    /// Every tick (100 ms by default) one level of each book changes;
    /// sockets get the book update and the new ticker. The dead man's
    /// switch fires here too.
    async fn activity(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let mut s = self.lock();
            for m in s.markets.values_mut() {
                if let Some(change) = m.tick() {
                    self.publish_book(m, &change);
                }
            }
            if s.cancel_all_at.is_some_and(|at| Instant::now() >= at) {
                s.cancel_all_at = None;
                let open: Vec<String> = s.orders.values().filter(|o| o.is_open()).map(|o| o.txid.clone()).collect();
                for txid in open {
                    let _ = self.cancel_one(&mut s, &txid, "User requested");
                }
            }
        }
    }

    fn publish_book(&self, m: &FakeMarket, change: &market::BookChange) {
        let symbol = m.pair.symbol.clone();
        let _ = self.public_tx.send(PublicFrame {
            channel: "book",
            symbol: symbol.clone(),
            seq: m.seq,
            message: m.update_frame(change),
        });
        let _ =
            self.public_tx.send(PublicFrame { channel: "ticker", symbol, seq: 0, message: m.ticker_frame("update") });
    }

    /// The switches for the request now arriving.
    fn take_switches(&self) -> (Option<String>, Option<Duration>) {
        let mut s = self.lock();
        s.requests += 1;
        (s.fail_next.take(), s.stall_next.take())
    }

    fn public_call(&self, method: &str, fields: &[(String, String)]) -> Answer {
        let state = self.lock();
        let pair = || -> Result<Pair, String> {
            let name = field(fields, "pair").ok_or("EGeneral:Invalid arguments:pair")?;
            state.pair(name).ok_or_else(|| "EQuery:Unknown asset pair".to_string())
        };
        match method {
            "Time" => {
                let now = Utc::now();
                let mut r = wire::example("rest/time")["result"].clone();
                r["unixtime"] = json!(now.timestamp());
                r["rfc1123"] = json!(now.format("%a, %d %b %y %H:%M:%S +0000").to_string());
                Ok(wire::rest_ok("rest/time", r))
            }
            "AssetPairs" => {
                let wanted: Option<Vec<&str>> = field(fields, "pair").map(|p| p.split(',').collect());
                let mut result = serde_json::Map::new();
                for m in state.markets.values() {
                    if wanted.as_ref().is_none_or(|w| w.iter().any(|n| m.pair.is_named(n))) {
                        result.insert(m.pair.key.clone(), m.pair.asset_pair());
                    }
                }
                if result.is_empty() {
                    return Err("EQuery:Unknown asset pair".into());
                }
                Ok(wire::rest_ok("rest/asset_pairs", Value::Object(result)))
            }
            "Ticker" => {
                let pair = pair()?;
                let m = &state.markets[&pair.symbol];
                let (bid, bid_qty) = m.bids().first().copied().unwrap_or_default();
                let (ask, ask_qty) = m.asks().first().copied().unwrap_or_default();
                let mut t = wire::first_entry("rest/ticker", None);
                // The docs' example writes prices with five decimals, lots as whole and exact.
                let px = |d: Decimal| text(d, 5);
                let lot = |d: Decimal| text(d, 3);
                t["a"] = json!([px(ask), ask_qty.ceil().to_string(), lot(ask_qty)]);
                t["b"] = json!([px(bid), bid_qty.ceil().to_string(), lot(bid_qty)]);
                t["c"] = json!([px(m.last()), text(Decimal::new(5, 2), pair.lot_decimals)]);
                t["p"] = json!([px(m.last()), px(m.last())]);
                t["l"] = json!([px(m.last() - Decimal::from(100)), px(m.last() - Decimal::from(200))]);
                t["h"] = json!([px(m.last() + Decimal::from(100)), px(m.last() + Decimal::from(200))]);
                t["o"] = px(m.last());
                Ok(wire::rest_ok("rest/ticker", json!({ pair.key.clone(): t })))
            }
            "Depth" => {
                let pair = pair()?;
                let count = match field(fields, "count") {
                    None => 100,
                    Some(c) => c.parse::<usize>().map_err(|_| "EGeneral:Invalid arguments:count".to_string())?,
                };
                let count = count.clamp(1, 500);
                let m = &state.markets[&pair.symbol];
                let ts = Utc::now().timestamp();
                let side = |levels: Vec<(Decimal, Decimal)>| -> Value {
                    levels
                        .into_iter()
                        .take(count)
                        .map(|(p, q)| json!([text(p, 5), text(q, pair.lot_decimals), ts]))
                        .collect()
                };
                let book = json!({ "asks": side(m.asks()), "bids": side(m.bids()) });
                Ok(wire::rest_ok("rest/depth", json!({ pair.key.clone(): book })))
            }
            "Trades" => {
                // `since` and `last` are nanosecond timestamps, as Kraken's are.
                let pair = pair()?;
                let since: i128 = match field(fields, "since") {
                    None => 0,
                    Some(v) => v.parse().map_err(|_| "EGeneral:Invalid arguments:since".to_string())?,
                };
                let m = &state.markets[&pair.symbol];
                let nanos = |t: &market::PublicTrade| {
                    (t.time * Decimal::from(1_000_000_000)).trunc().to_string().parse::<i128>().unwrap_or(0)
                };
                let trades: Vec<&market::PublicTrade> = m.history.iter().filter(|t| nanos(t) > since).collect();
                let last = trades.last().map_or(since, |t| nanos(t)).to_string();
                let rows: Vec<Value> = trades
                    .iter()
                    .map(|t| {
                        json!([
                            wire::fixed(t.price, 5),
                            wire::fixed(t.volume, pair.lot_decimals),
                            num(t.time),
                            if t.side == Side::Buy { "b" } else { "s" },
                            if t.market { "m" } else { "l" },
                            "",
                            t.trade_id
                        ])
                    })
                    .collect();
                Ok(wire::rest_ok("rest/trades", json!({ pair.key.clone(): rows, "last": last })))
            }
            "OHLC" => {
                let pair = pair()?;
                let interval: u32 = match field(fields, "interval") {
                    None => 1,
                    Some(v) => v.parse().map_err(|_| "EGeneral:Invalid arguments:interval".to_string())?,
                };
                if ![1, 5, 15, 30, 60, 240, 1440, 10080, 21600].contains(&interval) {
                    return Err("EGeneral:Invalid arguments:interval".into());
                }
                let since: i64 = match field(fields, "since") {
                    None => 0,
                    Some(v) => v.parse().map_err(|_| "EGeneral:Invalid arguments:since".to_string())?,
                };
                let candles = state.markets[&pair.symbol].candles(interval, since);
                let last = candles.last().and_then(|c| c[0].as_i64()).unwrap_or(since);
                Ok(wire::rest_ok("rest/ohlc", json!({ pair.key.clone(): candles, "last": last })))
            }
            _ => Err("EGeneral:Unknown method".into()),
        }
    }

    /// Checks `API-Key`, `API-Sign` and the nonce; returns the key.
    fn authenticate(
        &self,
        method: &str,
        headers: &HeaderMap,
        body: &str,
        fields: &[(String, String)],
    ) -> Result<String, String> {
        let key = headers.get("API-Key").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let Some(secret) = self.secrets.get(key) else {
            return Err("EAPI:Invalid key".into());
        };
        let nonce_text = field(fields, "nonce").ok_or("EAPI:Invalid nonce")?;
        let nonce = nonce_text.parse::<u64>().map_err(|_| "EAPI:Invalid nonce".to_string())?;
        let sign = headers.get("API-Sign").and_then(|v| v.to_str().ok()).ok_or("EAPI:Invalid signature")?;
        if signature(secret, &format!("/0/private/{method}"), nonce_text, body) != sign {
            return Err("EAPI:Invalid signature".into());
        }
        let mut state = self.lock();
        if state.nonces.get(key).is_some_and(|last| nonce <= *last) {
            return Err("EAPI:Invalid nonce".into());
        }
        state.nonces.insert(key.to_string(), nonce);
        Ok(key.to_string())
    }

    /// A private REST call after authentication; `lost` is set when the
    /// answer is to be lost.
    fn private_call(&self, method: &str, key: &str, fields: &[(String, String)], lost: &mut bool) -> Answer {
        let mut state = self.lock();
        if let Some(error) = state.failing_keys.get(key) {
            return Err(error.clone());
        }
        if let Some(cost) = limits::rest_cost(method) {
            let (tier, now) = (state.tier, Instant::now());
            let counter = state.calls.entry(key.to_string()).or_insert_with(|| limits::Counter::new(now));
            let level = counter.add(now, tier.rest_decay(), cost);
            if state.rate_limits && level > tier.rest_max() {
                return Err("EAPI:Rate limit exceeded".into());
            }
        }
        match method {
            "Balance" => {
                let balances: serde_json::Map<String, Value> =
                    state.balances.iter().map(|(k, v)| (k.clone(), text(*v, 4))).collect();
                Ok(wire::rest_ok("rest/balance", Value::Object(balances)))
            }
            "GetWebSocketsToken" => {
                let token = format!("fake-ws-token-{}-{}", state.tokens.len() + 1, Utc::now().timestamp_micros());
                let info = TokenInfo { key: key.to_string(), issued: Instant::now(), used: false, expired: false };
                state.tokens.insert(token.clone(), info);
                let mut r = wire::example("rest/get_websockets_token")["result"].clone();
                r["token"] = json!(token);
                r["expires"] = json!(WS_TOKEN_VALIDITY.as_secs());
                Ok(wire::rest_ok("rest/get_websockets_token", r))
            }
            "OpenOrders" | "ClosedOrders" => {
                let open = method == "OpenOrders";
                let wanted = field(fields, "cl_ord_id");
                let userref = field(fields, "userref");
                let trades = field(fields, "trades") == Some("true");
                let list: serde_json::Map<String, Value> = state
                    .orders
                    .values()
                    .filter(|o| o.is_open() == open)
                    .filter(|o| wanted.is_none() || o.cl_ord_id.as_deref() == wanted)
                    .filter(|o| userref.is_none() || o.userref.map(|u| u.to_string()).as_deref() == userref)
                    .map(|o| (o.txid.clone(), state.order_json(o, trades)))
                    .collect();
                if open {
                    Ok(wire::rest_ok("rest/open_orders", json!({ "open": list })))
                } else {
                    let count = list.len();
                    Ok(wire::rest_ok("rest/closed_orders", json!({ "closed": list, "count": count })))
                }
            }
            "QueryOrders" => {
                let txids = field(fields, "txid").filter(|t| !t.is_empty()).ok_or("EGeneral:Invalid arguments:txid")?;
                let ids: Vec<&str> = txids.split(',').collect();
                if ids.len() > 50 {
                    return Err("EGeneral:Invalid arguments:txid".into());
                }
                let trades = field(fields, "trades") == Some("true");
                let found: serde_json::Map<String, Value> = ids
                    .iter()
                    .filter_map(|id| state.orders.get(*id).map(|o| (id.to_string(), state.order_json(o, trades))))
                    .collect();
                // Unknown ids are left out of the map, no error: what ccxt's
                // kraken `fetchOrder` expects (it looks the id up in `result`).
                Ok(wire::rest_ok("rest/query_orders", Value::Object(found)))
            }
            "QueryTrades" => {
                // "Comma delimited list of transaction IDs to query info
                // about (20 maximum)"; unknown ids are left out, as QueryOrders.
                let txids = field(fields, "txid").filter(|t| !t.is_empty()).ok_or("EGeneral:Invalid arguments:txid")?;
                let ids: Vec<&str> = txids.split(',').collect();
                if ids.len() > 20 {
                    return Err("EGeneral:Invalid arguments:txid".into());
                }
                let found: serde_json::Map<String, Value> =
                    ids.iter().filter_map(|id| state.trades.get(*id).map(|t| (id.to_string(), t.clone()))).collect();
                Ok(wire::rest_ok("rest/query_trades", Value::Object(found)))
            }
            "AddOrder" => {
                state.rest_add_orders += 1;
                let request = OrderRequest::from_form(fields);
                *lost = std::mem::take(&mut state.lose_next_answer);
                let result = request.and_then(|r| self.checked_add_order(&mut state, &r))?;
                Ok(wire::rest_ok("rest/add_order", result))
            }
            "AmendOrder" => {
                let target =
                    field(fields, "txid").or(field(fields, "cl_ord_id")).ok_or("EGeneral:Invalid arguments:txid")?;
                let qty = field(fields, "order_qty")
                    .map(|q| wire::parse_decimal(q).ok_or("EGeneral:Invalid arguments:order_qty"));
                let price = field(fields, "limit_price")
                    .map(|p| wire::parse_decimal(p).ok_or("EGeneral:Invalid arguments:limit_price"));
                let amend_id = self.amend(&mut state, target, qty.transpose()?, price.transpose()?)?;
                Ok(wire::rest_ok("rest/amend_order", json!({ "amend_id": amend_id })))
            }
            "CancelOrder" => {
                state.rest_cancels += 1;
                *lost = std::mem::take(&mut state.lose_next_answer);
                let target =
                    field(fields, "txid").or(field(fields, "cl_ord_id")).ok_or("EGeneral:Invalid arguments:txid")?;
                let target = target.to_string();
                self.checked_cancel(&mut state, &target)?;
                Ok(wire::rest_ok("rest/cancel_order", json!({ "count": 1 })))
            }
            "CancelAll" => {
                let count = self.cancel_all(&mut state)?;
                Ok(wire::rest_ok("rest/cancel_all", json!({ "count": count })))
            }
            "CancelAllOrdersAfter" => {
                let timeout: u64 = field(fields, "timeout")
                    .and_then(|t| t.parse().ok())
                    .ok_or("EGeneral:Invalid arguments:timeout")?;
                Ok(wire::rest_ok("rest/cancel_all_orders_after", state.dead_man(timeout)))
            }
            _ => Err("EGeneral:Unknown method".into()),
        }
    }

    /// The engine's and the pair's trading modes, the trading counter and
    /// the test's switches, then [`Shared::add_order`].
    fn checked_add_order(&self, state: &mut FakeState, r: &OrderRequest) -> Answer {
        let pair = state.pair(&r.pair).ok_or("EQuery:Unknown asset pair")?;
        // "Fixed count: always applied on receipt of the transaction (even if
        // the transaction fails validation)."
        state.trading_add(&pair.key, Decimal::ONE, true)?;
        if state.rate_limit_next > 0 {
            state.rate_limit_next -= 1;
            return Err("EOrder:Rate limit exceeded".into());
        }
        let market = r.ordertype == "market";
        match state.system.as_str() {
            "maintenance" => return Err("EService:Unavailable".into()),
            "cancel_only" => return Err("EService:Market in cancel_only mode".into()),
            "post_only" if market || !r.post_only => return Err("EService:Market in post_only mode".into()),
            _ => {}
        }
        // Pair modes: the strings of ccxt's kraken `exceptions` map where
        // Kraken's docs print none.
        match pair.status.as_str() {
            "cancel_only" => return Err("EService:Market in cancel_only mode".into()),
            "post_only" if market || !r.post_only => return Err("EService:Market in post_only mode".into()),
            "limit_only" if market => return Err("EService:Market in limit_only mode".into()),
            // Spot orders here are never reduce-only.
            "reduce_only" => return Err("EService:Market in reduce_only mode".into()),
            "maintenance" | "work_in_progress" => return Err("EService:Unavailable".into()),
            "delisted" => return Err("EQuery:Unknown asset pair".into()),
            _ => {}
        }
        self.add_order(state, r)
    }

    /// Validates and books an order (no mode checks: also the path of
    /// orders placed "elsewhere"); returns AddOrder's `result`.
    fn add_order(&self, state: &mut FakeState, r: &OrderRequest) -> Answer {
        let pair = state.pair(&r.pair).ok_or("EQuery:Unknown asset pair")?;
        if r.volume <= Decimal::ZERO {
            return Err("EGeneral:Invalid arguments:volume".into());
        }
        if r.volume.normalize().scale() > pair.lot_decimals {
            return Err("EGeneral:Invalid arguments:volume".into());
        }
        if r.ordertype == "limit" && r.price.is_none() {
            return Err("EGeneral:Invalid arguments:price".into());
        }
        if let Some(price) = r.price {
            // The text Kraken answers (quoted in client code in the wild, e.g.
            // "EOrder:Invalid price:XXBTZEUR price can only be specified up to 1 decimals.").
            if price.normalize().scale() > pair.pair_decimals {
                return Err(format!(
                    "EOrder:Invalid price:{} price can only be specified up to {} decimals.",
                    pair.key, pair.pair_decimals
                ));
            }
            if price <= Decimal::ZERO {
                return Err("EGeneral:Invalid arguments:price".into());
            }
            if !(price % pair.tick_size).is_zero() {
                return Err("EOrder:Tick size check failed".into());
            }
        }
        if r.volume < pair.ordermin {
            return Err("EOrder:Order minimum not met".into());
        }
        let m = &state.markets[&pair.symbol];
        // A market order is priced (for funds and cost checks) at the touch.
        let touch = match r.side {
            Side::Buy => m.asks().first().map(|l| l.0),
            Side::Sell => m.bids().first().map(|l| l.0),
        };
        let price = r.price.or(touch).unwrap_or(m.last());
        if price * r.volume < pair.costmin {
            return Err("EOrder:Cost minimum not met".into());
        }
        if let Some(id) = &r.cl_ord_id {
            if state.orders.values().any(|o| o.is_open() && o.cl_ord_id.as_deref() == Some(id.as_str())) {
                return Err(DUPLICATE_ORDER.into());
            }
        }
        // Funds: what the order would hold against what is not held yet.
        let (asset, needed) = match r.side {
            Side::Buy => (&pair.quote, price * r.volume),
            Side::Sell => (&pair.base, r.volume),
        };
        let held: Decimal = state
            .orders
            .values()
            .filter(|o| o.is_open())
            .filter_map(|o| {
                let p = state.pair(&o.pair)?;
                match o.side.as_str() {
                    "buy" if &p.quote == asset => Some(o.price * o.remaining()),
                    "sell" if &p.base == asset => Some(o.remaining()),
                    _ => None,
                }
            })
            .sum();
        let balance = state.balances.get(asset).copied().unwrap_or_default();
        if needed > balance - held {
            return Err("EOrder:Insufficient funds".into());
        }
        let vol = wire::fixed(r.volume, pair.lot_decimals);
        let descr_text = match r.ordertype.as_str() {
            "limit" => {
                format!("{} {vol} {} @ limit {}", r.side.as_str(), pair.altname, wire::fixed(price, pair.pair_decimals))
            }
            _ => format!("{} {vol} {} @ market", r.side.as_str(), pair.altname),
        };
        if r.validate {
            return Ok(json!({ "descr": { "order": descr_text } }));
        }
        state.next_order += 1;
        let txid = txid(state.next_order);
        let mut order = FakeOrder {
            txid: txid.clone(),
            pair: pair.altname.clone(),
            side: r.side.as_str().into(),
            ordertype: r.ordertype.clone(),
            price,
            vol: r.volume,
            vol_exec: Decimal::ZERO,
            cost: Decimal::ZERO,
            fee: Decimal::ZERO,
            avg_price: Decimal::ZERO,
            status: "open".into(),
            cl_ord_id: r.cl_ord_id.clone(),
            userref: r.userref,
            post_only: r.post_only,
            time_in_force: r.time_in_force.clone(),
            opentm: wire::now_secs(),
            closetm: None,
            reason: None,
            trades: Vec::new(),
            since: Instant::now(),
        };
        self.emit_execution(state, state.execution(&order, &pair, "pending_new", "pending_new"));
        self.emit_execution(state, state.execution(&order, &pair, "new", "new"));
        self.match_order(state, &mut order, &pair);
        state.orders.insert(txid.clone(), order);
        Ok(json!({ "descr": { "order": descr_text }, "txid": [txid] }))
    }

    /// Fills what the order can take from the book, then rests the rest
    /// (GTC limit) or cancels it (market, IOC). A post-only order that
    /// would take is canceled instead; outside `online` nothing matches.
    fn match_order(&self, state: &mut FakeState, order: &mut FakeOrder, pair: &Pair) {
        let side = if order.side == "buy" { Side::Buy } else { Side::Sell };
        let limit = (order.ordertype == "limit").then_some(order.price);
        let matching = state.system == "online" && !matches!(pair.status.as_str(), "post_only" | "cancel_only");
        let market = state.markets.get_mut(&pair.symbol).expect("a listed pair has a market");
        if order.post_only && market.would_take(side, limit) {
            self.close(state, order, pair, "canceled", "Post only order");
            return;
        }
        let (executions, change) = if matching { market.take(side, order.vol, limit) } else { (Vec::new(), None) };
        if let Some(change) = change {
            self.publish_book(market, &change);
            let frame = market.trade_frame(side, &executions, limit.is_none());
            let _ = self.public_tx.send(PublicFrame {
                channel: "trade",
                symbol: pair.symbol.clone(),
                seq: 0,
                message: frame,
            });
        }
        for e in &executions {
            self.fill(state, order, pair, e, "t");
        }
        let rests = order.ordertype == "limit" && order.time_in_force != "IOC";
        if order.remaining().is_zero() {
            order.status = "closed".into();
            order.closetm = Some(wire::now_secs());
        } else if !rests {
            self.close(state, order, pair, "canceled", "Insufficient liquidity");
        }
    }

    /// Closes an order with a status and reason, and says so on executions.
    fn close(&self, state: &mut FakeState, order: &mut FakeOrder, pair: &Pair, status: &str, reason: &str) {
        order.status = status.into();
        order.closetm = Some(wire::now_secs());
        order.reason = Some(reason.into());
        let mut entry = state.execution(order, pair, "canceled", "canceled");
        entry["reason"] = json!(reason);
        self.emit_execution(state, entry);
    }

    /// Books one fill: the order's figures, balances, and an executions
    /// `trade` entry with its fee.
    fn fill(&self, state: &mut FakeState, order: &mut FakeOrder, pair: &Pair, e: &Execution, liquidity: &str) {
        let cost = e.price * e.qty;
        let fee = (cost * TAKER_FEE).round_dp(pair.cost_decimals);
        order.vol_exec += e.qty;
        order.cost += cost;
        order.fee += fee;
        order.avg_price = (order.cost / order.vol_exec).round_dp(pair.pair_decimals);
        let sign = if order.side == "buy" { Decimal::ONE } else { Decimal::NEGATIVE_ONE };
        *state.balances.entry(pair.base.clone()).or_default() += sign * e.qty;
        *state.balances.entry(pair.quote.clone()).or_default() -= sign * cost + fee;
        let status = if order.remaining().is_zero() { "filled" } else { "partially_filled" };
        let exec_id = format!("T{}-{}", &order.txid[..5], e.trade_id);
        order.trades.push(exec_id.clone());
        let mut entry = wire::variant("ws/executions_update", "trade");
        entry["order_id"] = json!(order.txid);
        entry["exec_id"] = json!(exec_id);
        entry["trade_id"] = json!(e.trade_id);
        entry["symbol"] = json!(pair.symbol);
        entry["side"] = json!(order.side);
        entry["last_qty"] = num(e.qty);
        entry["last_price"] = num(e.price);
        entry["liquidity_ind"] = json!(liquidity);
        entry["cost"] = num(cost);
        entry["order_userref"] = json!(order.userref.unwrap_or(0));
        entry["order_status"] = json!(status);
        entry["order_type"] = json!(order.ordertype);
        entry["fee_usd_equiv"] = num(fee);
        entry["fees"] = json!([{ "asset": pair.quote_ws, "qty": num(fee) }]);
        entry["timestamp"] = json!(wire::now_text());
        // Documented in the executions reference (not in the example):
        // `cl_ord_id` when set, and the order's running totals.
        if let Some(id) = &order.cl_ord_id {
            entry["cl_ord_id"] = json!(id);
        }
        entry["cum_qty"] = num(order.vol_exec);
        entry["cum_cost"] = num(order.cost);
        entry["avg_price"] = num(order.avg_price);
        let mut trade = wire::first_entry("rest/query_trades", None);
        trade["ordertxid"] = json!(order.txid);
        trade["pair"] = json!(pair.key);
        trade["time"] = num(wire::now_secs());
        trade["type"] = json!(order.side);
        trade["ordertype"] = json!(order.ordertype);
        trade["price"] = text(e.price, pair.pair_decimals);
        trade["cost"] = text(cost, pair.cost_decimals);
        trade["fee"] = text(fee, pair.cost_decimals);
        trade["vol"] = text(e.qty, pair.lot_decimals);
        trade["trade_id"] = json!(e.trade_id);
        trade["maker"] = json!(liquidity == "m");
        if let Some(m) = trade.as_object_mut() {
            m.remove("postxid");
        }
        state.trades.insert(exec_id.clone(), trade);
        state.fills.push_back(entry.clone());
        while state.fills.len() > SNAP_TRADES {
            state.fills.pop_front();
        }
        self.emit_execution(state, entry);
    }

    fn emit_execution(&self, state: &mut FakeState, entry: Value) {
        state.exec_seq += 1;
        let _ = self.exec_tx.send((state.exec_seq, entry));
    }

    /// A cancel through the engine's mode, the counter and the switches.
    fn checked_cancel(&self, state: &mut FakeState, target: &str) -> Result<String, String> {
        if state.system == "maintenance" {
            return Err("EService:Unavailable".into());
        }
        if state.rate_limit_next > 0 {
            state.rate_limit_next -= 1;
            return Err("EOrder:Rate limit exceeded".into());
        }
        let order = state.find_open(target).ok_or("EOrder:Unknown order")?;
        let pair = state.pair(&order.pair).ok_or("EQuery:Unknown asset pair")?;
        state.trading_add(&pair.key, limits::cancel_penalty(order.since.elapsed()), false)?;
        let txid = order.txid.clone();
        self.cancel_one(state, &txid, "User requested")?;
        Ok(txid)
    }

    /// Cancels one open order by txid.
    fn cancel_one(&self, state: &mut FakeState, txid: &str, reason: &str) -> Result<(), String> {
        let mut order = state.orders.get(txid).filter(|o| o.is_open()).cloned().ok_or("EOrder:Unknown order")?;
        let pair = state.pair(&order.pair).ok_or("EQuery:Unknown asset pair")?;
        self.close(state, &mut order, &pair, "canceled", reason);
        state.orders.insert(txid.to_string(), order);
        Ok(())
    }

    /// Cancels every open order; returns how many.
    fn cancel_all(&self, state: &mut FakeState) -> Result<usize, String> {
        if state.system == "maintenance" {
            return Err("EService:Unavailable".into());
        }
        let open: Vec<(String, String, Duration)> = state
            .orders
            .values()
            .filter(|o| o.is_open())
            .map(|o| (o.txid.clone(), o.pair.clone(), o.since.elapsed()))
            .collect();
        for (txid, pair, age) in &open {
            if let Some(key) = state.pair(pair).map(|p| p.key) {
                // Counted, never refused: CancelAll is one call.
                let _ = state.trading_add(&key, limits::cancel_penalty(*age), false);
            }
            self.cancel_one(state, txid, "User requested")?;
        }
        Ok(open.len())
    }

    /// Amends an open order's quantity and/or limit price; returns an amend id.
    fn amend(
        &self,
        state: &mut FakeState,
        target: &str,
        qty: Option<Decimal>,
        price: Option<Decimal>,
    ) -> Result<String, String> {
        if state.system == "maintenance" {
            return Err("EService:Unavailable".into());
        }
        if state.rate_limit_next > 0 {
            state.rate_limit_next -= 1;
            return Err("EOrder:Rate limit exceeded".into());
        }
        let mut order = state.find_open(target).ok_or("EOrder:Unknown order")?;
        let pair = state.pair(&order.pair).ok_or("EQuery:Unknown asset pair")?;
        state.trading_add(&pair.key, limits::amend_penalty(order.since.elapsed()), true)?;
        if let Some(p) = price {
            if p.normalize().scale() > pair.pair_decimals {
                return Err(format!(
                    "EOrder:Invalid price:{} price can only be specified up to {} decimals.",
                    pair.key, pair.pair_decimals
                ));
            }
            order.price = p;
        }
        if let Some(q) = qty {
            if q <= order.vol_exec || q.normalize().scale() > pair.lot_decimals {
                return Err("EGeneral:Invalid arguments:order_qty".into());
            }
            order.vol = q;
        }
        order.since = Instant::now();
        state.next_order += 1;
        let amend_id = txid(state.next_order + 1_000_000);
        let mut entry = state.execution(&order, &pair, "amended", "new");
        entry["amended"] = json!(true);
        self.emit_execution(state, entry);
        state.orders.insert(order.txid.clone(), order);
        Ok(amend_id)
    }
}

impl FakeState {
    /// A pair by any of its names.
    fn pair(&self, name: &str) -> Option<Pair> {
        self.markets.values().find(|m| m.pair.is_named(name)).map(|m| m.pair.clone())
    }

    /// An open order by txid or `cl_ord_id` (Kraken's CancelOrder `txid`
    /// takes either).
    fn find_open(&self, target: &str) -> Option<FakeOrder> {
        self.orders
            .values()
            .find(|o| o.is_open() && (o.txid == target || o.cl_ord_id.as_deref() == Some(target)))
            .cloned()
    }

    /// Adds `n` to the pair's trading counter; past the threshold the call
    /// is refused (`refuse_over`: the count stays, as Kraken counts on
    /// receipt).
    fn trading_add(&mut self, pair_key: &str, n: Decimal, refuse_over: bool) -> Result<(), String> {
        let (tier, now, enforce) = (self.tier, Instant::now(), self.rate_limits);
        let counter = self.trading.entry(pair_key.to_string()).or_insert_with(|| limits::Counter::new(now));
        let before = counter.level(now, tier.trading_decay());
        if enforce && !refuse_over && before >= tier.trading_max() {
            return Err("EOrder:Rate limit exceeded".into());
        }
        let level = counter.add(now, tier.trading_decay(), n);
        if enforce && refuse_over && level > tier.trading_max() {
            return Err("EOrder:Rate limit exceeded".into());
        }
        Ok(())
    }

    /// Arms (or with 0 disarms) the dead man's switch; CancelAllOrdersAfter's `result`.
    fn dead_man(&mut self, timeout: u64) -> Value {
        let now = Utc::now();
        self.cancel_all_at = (timeout > 0).then(|| Instant::now() + Duration::from_secs(timeout));
        let trigger = if timeout > 0 { now + chrono::Duration::seconds(timeout as i64) } else { now };
        let fmt = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        json!({ "currentTime": fmt(now), "triggerTime": if timeout > 0 { json!(fmt(trigger)) } else { json!("0") } })
    }

    fn ws_connections_opened(&mut self) -> u64 {
        self.ws_opened += 1;
        self.ws_opened
    }

    /// A token's standing: `None` if usable, else Kraken's error.
    fn token_error(&self, token: Option<&str>) -> Option<&'static str> {
        let Some(info) = token.and_then(|t| self.tokens.get(t)) else { return Some("EAccount:Invalid token") };
        let stale = info.expired || (!info.used && info.issued.elapsed() > WS_TOKEN_VALIDITY);
        stale.then_some("EAccount:Invalid token")
    }

    /// An order as OpenOrders, ClosedOrders and QueryOrders show it (the
    /// documented order object), with the ids of its trades only when the
    /// request says `trades=true`.
    fn order_json(&self, o: &FakeOrder, with_trades: bool) -> Value {
        let template = if o.is_open() { "rest/open_orders" } else { "rest/closed_orders" };
        let mut v = wire::first_entry(template, Some(if o.is_open() { "open" } else { "closed" }));
        let (pd, ld, cd) = self.pair(&o.pair).map_or((1, 8, 5), |p| (p.pair_decimals, p.lot_decimals, p.cost_decimals));
        v["refid"] = Value::Null;
        v["userref"] = json!(o.userref.unwrap_or(0));
        // Documented in the OpenOrders/ClosedOrders reference, not in the example.
        if let Some(id) = &o.cl_ord_id {
            v["cl_ord_id"] = json!(id);
        }
        v["status"] = json!(o.status);
        v["opentm"] = num(o.opentm);
        match o.closetm {
            Some(t) => v["closetm"] = num(t),
            None => {
                v.as_object_mut().map(|m| m.remove("closetm"));
            }
        }
        match &o.reason {
            Some(r) => v["reason"] = json!(r),
            None => v["reason"] = Value::Null,
        }
        let descr_price = if o.ordertype == "limit" { wire::fixed(o.price, pd) } else { "0".into() };
        let vol = wire::fixed(o.vol, ld);
        v["descr"]["pair"] = json!(o.pair);
        v["descr"]["type"] = json!(o.side);
        v["descr"]["ordertype"] = json!(o.ordertype);
        v["descr"]["price"] = json!(descr_price);
        v["descr"]["price2"] = json!("0");
        v["descr"]["order"] = json!(match o.ordertype.as_str() {
            "limit" => format!("{} {vol} {} @ limit {descr_price}", o.side, o.pair),
            _ => format!("{} {vol} {} @ market", o.side, o.pair),
        });
        v["vol"] = json!(vol);
        v["vol_exec"] = text(o.vol_exec, ld);
        v["cost"] = text(o.cost, cd);
        v["fee"] = text(o.fee, cd);
        v["price"] = text(o.avg_price, pd);
        v["oflags"] = json!(if o.post_only { "post,fciq" } else { "fciq" });
        if let Some(m) = v.as_object_mut() {
            m.remove("trigger");
            m.remove("trades");
        }
        if with_trades && !o.trades.is_empty() {
            v["trades"] = json!(o.trades);
        }
        v
    }

    /// An executions entry for the order as it stands (the documented
    /// `pending_new` example with this order's values).
    fn execution(&self, o: &FakeOrder, pair: &Pair, exec_type: &str, status: &str) -> Value {
        let mut v = wire::example("ws/executions_update")["data"][0].clone();
        v["order_id"] = json!(o.txid);
        v["symbol"] = json!(pair.symbol);
        v["order_qty"] = num(o.vol);
        v["cum_cost"] = num(o.cost);
        v["time_in_force"] = json!(o.time_in_force);
        v["exec_type"] = json!(exec_type);
        v["side"] = json!(o.side);
        v["order_type"] = json!(o.ordertype);
        v["order_userref"] = json!(o.userref.unwrap_or(0));
        if o.ordertype == "limit" {
            v["limit_price"] = num(o.price);
        } else if let Some(m) = v.as_object_mut() {
            m.remove("limit_price");
            m.remove("limit_price_type");
        }
        v["order_status"] = json!(status);
        v["timestamp"] = json!(wire::now_text());
        // Documented in the executions reference, not in the example.
        if let Some(id) = &o.cl_ord_id {
            v["cl_ord_id"] = json!(id);
        }
        if o.post_only {
            v["post_only"] = json!(true);
        }
        v["cum_qty"] = num(o.vol_exec);
        v["avg_price"] = num(o.avg_price);
        if let Some(r) = &o.reason {
            v["reason"] = json!(r);
        }
        v
    }

    /// The executions snapshot: open orders (`snap_orders`), then the last
    /// 50 trades (`snap_trades`); never closed orders.
    fn executions_snapshot(&self, snap_orders: bool, snap_trades: bool) -> Vec<Value> {
        let open = self.orders.values().filter(|o| o.is_open() && snap_orders).filter_map(|o| {
            let pair = self.pair(&o.pair)?;
            let status = if o.vol_exec.is_zero() { "new" } else { "partially_filled" };
            Some(self.execution(o, &pair, "new", status))
        });
        open.chain(self.fills.iter().filter(|_| snap_trades).cloned()).collect()
    }
}

/// Kraken's `API-Sign`: base64(HMAC-SHA512(secret, uri_path +
/// SHA256(nonce + postdata))) ("Spot REST Authentication").
fn signature(secret: &[u8], path: &str, nonce: &str, body: &str) -> String {
    let digest = Sha256::new().chain_update(nonce.as_bytes()).chain_update(body.as_bytes()).finalize();
    let mut mac = Hmac::<Sha512>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(path.as_bytes());
    mac.update(&digest);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn reply(answer: Answer) -> Response {
    let body = match answer {
        Ok(v) => v,
        Err(error) => wire::rest_error(&[error.as_str()]),
    };
    ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], wire::render(&body)).into_response()
}

async fn finish(answer: Answer, stall: Option<Duration>) -> Response {
    if let Some(delay) = stall {
        tokio::time::sleep(delay).await;
    }
    reply(answer)
}

async fn public(State(fake): State<Arc<Shared>>, Path(method): Path<String>, RawQuery(query): RawQuery) -> Response {
    let (fail, stall) = fake.take_switches();
    if let Some(error) = fail {
        return finish(Err(error), stall).await;
    }
    let answer = wire::form(query.as_deref().unwrap_or("")).and_then(|fields| fake.public_call(&method, &fields));
    finish(answer, stall).await
}

async fn private(
    State(fake): State<Arc<Shared>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (fail, stall) = fake.take_switches();
    if let Some(error) = fail {
        return finish(Err(error), stall).await;
    }
    let mut lost = false;
    let answer = wire::form(&body).and_then(|fields| {
        let key = fake.authenticate(&method, &headers, &body, &fields)?;
        fake.private_call(&method, &key, &fields, &mut lost)
    });
    if lost {
        // Took effect; the answer never comes (the client's timeout ends it).
        std::future::pending::<()>().await;
    }
    finish(answer, stall).await
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A Kraken-looking order id (`OQCLML-BW3P3-BUCMWZ`: 6, 5 and 6 letters)
/// from a counter.
fn txid(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut letters = String::from("O");
    while letters.len() < 17 {
        letters.push(char::from(b'A' + (x % 26) as u8));
        x = x / 26 + n;
    }
    format!("{}-{}-{}", &letters[..6], &letters[6..11], &letters[11..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of "Spot REST Authentication" (docs.kraken.com): this
    /// secret, path, nonce and body sign to this API-Sign.
    #[test]
    fn the_signature_matches_krakens_worked_example() {
        let secret = base64::engine::general_purpose::STANDARD.decode(FakeConfig::default().api_secret).unwrap();
        let body = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25";
        assert_eq!(
            signature(&secret, "/0/private/AddOrder", "1616492376594", body),
            "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
        );
    }

    #[test]
    fn order_ids_look_like_krakens() {
        let id = txid(7);
        assert_eq!(id.len(), 19, "{id}");
        assert_eq!((&id[6..7], &id[12..13]), ("-", "-"), "{id}");
    }
}

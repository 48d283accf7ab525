//! A fake Kraken Spot API on 127.0.0.1, strict in the ways Kraken is.
//!
//! REST: Kraken's `{"error":[…],"result":…}` envelope (HTTP 200 for errors
//! too) and Kraken's error strings; `API-Key` and `API-Sign` checked by
//! recomputing the signature with the known secret; a nonce not above the
//! last one accepted for the key refused; AddOrder forms read with the
//! parser the protocol core documents ([`AddOrderRequest::from_form`]);
//! orders the balances cannot cover refused. Public Time, AssetPairs,
//! Ticker, Depth; private Balance, OpenOrders, ClosedOrders, QueryOrders,
//! AddOrder, CancelOrder, CancelAll, GetWebSocketsToken.
//!
//! WebSocket v2 ([`ws`]): public `ticker` / `book` / `trade` at
//! [`FakeKraken::ws_url`] and, at [`FakeKraken::ws_auth_url`], private
//! `executions` and the `add_order` / `cancel_order` methods (token
//! checked, then the same checks and matching as REST AddOrder /
//! CancelOrder). Each pair has a ten-level book
//! ([`market`]) that changes every 100 ms; a marketable order takes
//! liquidity from it, and its fills go out as executions (with trade ids
//! and fees), public trades and book updates.
//!
//! For recovery tests, [`FakeKraken::place_elsewhere`] places an order as
//! another app on the account would, and [`FakeKraken::trade_against`]
//! fills a resting order as another trader would, whoever is listening.
//!
//! Switches for fault tests: [`FakeKraken::fail_next_with`] answers the
//! next REST request or socket order method with a given error string;
//! [`FakeKraken::stall`] holds the next such answer back (after the request
//! took effect, as a slow Kraken does); [`FakeKraken::drop_websockets`]
//! closes every socket; [`FakeKraken::drop_after_next_add_order`] closes
//! the private socket right after it placed an `add_order`, unanswered;
//! [`FakeKraken::stall_websockets`] stops sending on them for a while;
//! [`FakeKraken::corrupt_next_checksum`] sends one book update with a wrong
//! checksum.

mod market;
mod ws;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use lido_shared::model::{OrderType, Side};
use lidod::venue::kraken::envelope::{error_body, success_body};
use lidod::venue::kraken::messages::{
    AddOrderDescr, AddOrderRequest, AddOrderResult, CancelResult, Channel, ClosedOrdersResult, DepthBook, DepthLevel,
    ExecType, ExecutionData, FeeData, LastTrade, MessageType, OhlcResult, OpenOrdersResult, OrderDescr, OrderInfo,
    PublicTrade, RestOrderStatus, ServerTime, TickerInfo, TickerLevel, TodayAnd24h, Token, TradesResult,
    WebSocketsToken, WsMessage, WsOrderStatus,
};
use lidod::venue::kraken::pairs::{AssetPair, PairInfo, PairMap};
use lidod::venue::kraken::sign::{form_decode, Signer};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::json;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use market::{book_frame, Execution, FakeMarket};
use ws::PublicFrame;

/// The answer Kraken gives, as far as this fake knows, to a second open
/// order with a `cl_ord_id` already in use. Kraken's documentation says
/// the id is unique across open orders but does not print the error text;
/// this is the string used by Kraken clients in the wild. Unverified.
pub const DUPLICATE_ORDER: &str = "EOrder:Duplicate order";

/// AssetPairs as Kraken returns them (docs.kraken.com "Get Tradable Asset
/// Pairs"), BTC/USD and ETH/USD, fee tables shortened.
pub const ASSET_PAIRS: &str = r#"{
  "XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","aclass_base":"currency","base":"XXBT","aclass_quote":"currency","quote":"ZUSD","lot":"unit","cost_decimals":5,"pair_decimals":1,"lot_decimals":8,"lot_multiplier":1,"leverage_buy":[2,3,4,5],"leverage_sell":[2,3,4,5],"fees":[[0,0.26],[50000,0.24]],"fees_maker":[[0,0.16],[50000,0.14]],"fee_volume_currency":"ZUSD","margin_call":80,"margin_stop":40,"ordermin":"0.0001","costmin":"0.5","tick_size":"0.1","status":"online","long_position_limit":250,"short_position_limit":200},
  "XETHZUSD":{"altname":"ETHUSD","wsname":"ETH/USD","aclass_base":"currency","base":"XETH","aclass_quote":"currency","quote":"ZUSD","lot":"unit","cost_decimals":5,"pair_decimals":2,"lot_decimals":8,"lot_multiplier":1,"leverage_buy":[2,3,4,5],"leverage_sell":[2,3,4,5],"fees":[[0,0.26],[50000,0.24]],"fees_maker":[[0,0.16],[50000,0.14]],"fee_volume_currency":"ZUSD","margin_call":80,"margin_stop":40,"ordermin":"0.002","costmin":"0.5","tick_size":"0.01","status":"online","long_position_limit":1100,"short_position_limit":400}
}"#;

/// What the fake starts with.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The account's first API key (its nonces are `last_nonce`).
    pub api_key: String,
    /// Its secret, base64 as Kraken issues it.
    pub api_secret: String,
    /// More API keys (key, base64 secret) of the same account, as Kraken
    /// lets one account have several; each has its own nonce sequence.
    pub more_keys: Vec<(String, String)>,
    /// Balances by Kraken asset code (`ZUSD`, `XXBT`, `XETH`).
    pub balances: BTreeMap<String, Decimal>,
    /// How often one level of each book changes (and the ticker goes out).
    pub tick: Duration,
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
        }
    }
}

/// The public and private WebSocket v2 URLs of the fake whose REST base is
/// `base` (one in another process, too).
pub fn ws_urls(base: &str) -> (String, String) {
    let ws = base.replacen("http://", "ws://", 1);
    (format!("{ws}/v2"), format!("{ws}/auth/v2"))
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
    /// Every API key's signer.
    signers: BTreeMap<String, Signer>,
    pairs: PairMap,
    state: Mutex<FakeState>,
    /// Bumped to close every WebSocket.
    drops: watch::Sender<u64>,
    public_tx: broadcast::Sender<PublicFrame>,
    /// Execution entries with their sequence number.
    exec_tx: broadcast::Sender<(u64, ExecutionData)>,
}

/// Taker fee of the fake (Kraken's first tier: 0.26 %).
const TAKER_FEE: Decimal = Decimal::from_parts(26, 0, 0, false, 4);
/// Fills kept for the executions snapshot, as Kraken's `snap_trades`.
const SNAP_TRADES: usize = 50;

#[derive(Default)]
struct FakeState {
    /// The last nonce per API key.
    nonces: BTreeMap<String, u64>,
    orders: BTreeMap<String, OrderInfo>,
    next_order: u64,
    fail_next: Option<String>,
    /// API keys whose private requests fail, with the error.
    failing_keys: BTreeMap<String, String>,
    /// The API key each WebSocket token was issued to.
    token_keys: BTreeMap<String, String>,
    stall_next: Option<Duration>,
    requests: u64,
    balances: BTreeMap<String, Decimal>,
    /// Markets by WebSocket v2 symbol (`BTC/USD`).
    markets: BTreeMap<String, FakeMarket>,
    tokens: HashSet<String>,
    exec_seq: u64,
    /// Recent fills, for the executions snapshot.
    fills: Vec<ExecutionData>,
    corrupt_next_checksum: bool,
    ws_stalled_until: Option<Instant>,
    ws_opened: u64,
    /// AddOrder requests over REST, and `add_order` calls over the socket.
    rest_add_orders: u64,
    ws_add_orders: u64,
    /// CancelOrder requests over REST, and `cancel_order` calls over the socket.
    rest_cancels: u64,
    ws_cancels: u64,
    drop_after_add_order: bool,
    /// How long each executions subscription's answer and snapshot are held back.
    snapshot_delay: Option<Duration>,
}

impl FakeKraken {
    /// Starts the fake on 127.0.0.1, on a free port.
    pub async fn start(config: FakeConfig) -> Self {
        let keys = std::iter::once((config.api_key.clone(), config.api_secret.clone())).chain(config.more_keys.clone());
        let signers =
            keys.map(|(k, secret)| (k, Signer::new(&secret).expect("the fake's secrets are base64"))).collect();
        let raw: BTreeMap<String, AssetPair> = serde_json::from_str(ASSET_PAIRS).expect("asset pairs");
        let pairs = PairMap::from_asset_pairs(&raw);
        let markets = pairs.iter().map(|p| (p.ws_symbol().to_string(), FakeMarket::new(p.clone(), mid(p)))).collect();
        let fake_state = FakeState { balances: config.balances.clone(), markets, ..FakeState::default() };
        let state = Arc::new(Shared {
            config,
            signers,
            pairs,
            state: Mutex::new(fake_state),
            drops: watch::channel(0).0,
            public_tx: broadcast::channel(4096).0,
            exec_tx: broadcast::channel(4096).0,
        });
        let app = Router::new()
            .route("/0/public/{method}", get(public))
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

    /// Answers the next request (REST public or private, or a socket
    /// `add_order` / `cancel_order`) with this Kraken error string, without
    /// acting on it.
    pub fn fail_next_with(&self, error: &str) {
        self.state.lock().fail_next = Some(error.to_string());
    }

    /// While `error` is set, answers every private request made with API
    /// key `key` (REST, or a socket `add_order` / `cancel_order` behind a
    /// token issued to it) with this Kraken error string, without acting
    /// on it; other keys and public requests are served. `None` heals it.
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

    /// Places an order at "Kraken" directly, as another app on the same
    /// account would (not through lidod): the AddOrder form fields, without
    /// the nonce. Returns the txid.
    pub fn place_elsewhere(&self, fields: &[(&str, &str)]) -> Result<String, String> {
        let mut fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        fields.push(("nonce".into(), "0".into()));
        let mut state = self.state.lock();
        let answer = self.state.add_order(&mut state, &fields)?;
        let result: AddOrderResult = serde_json::from_value(answer).map_err(|e| e.to_string())?;
        result.txid.into_iter().next().ok_or_else(|| "no txid".to_string())
    }

    /// Another trader takes `quantity` of the open order `txid` at its
    /// limit price: a fill as Kraken books it (executions `trade`, balances),
    /// made whether or not anyone listens (e.g. while lidod is down).
    pub fn trade_against(&self, txid: &str, quantity: Decimal) -> Result<(), String> {
        let mut state = self.state.lock();
        let mut info = state.orders.get(txid).cloned().ok_or("EOrder:Unknown order")?;
        if info.status != RestOrderStatus::Open || quantity <= Decimal::ZERO || quantity > info.remaining() {
            return Err(format!("order {txid} cannot fill {quantity} more"));
        }
        let pair = self.state.pairs.resolve(&info.descr.pair).ok_or("EQuery:Unknown asset pair")?.clone();
        let trade_id = state.markets.get_mut(pair.ws_symbol()).ok_or("EQuery:Unknown asset pair")?.next_trade_id();
        let execution = Execution { price: info.descr.price, qty: quantity, trade_id };
        self.state.fill(&mut state, txid, &mut info, &pair, &execution);
        if info.remaining().is_zero() {
            info.status = RestOrderStatus::Closed;
            info.closetm = Some(now_secs());
        }
        state.orders.insert(txid.to_string(), info);
        Ok(())
    }

    /// Every order the fake holds, by txid.
    pub fn orders(&self) -> BTreeMap<String, OrderInfo> {
        self.state.lock().orders.clone()
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.state.lock().requests
    }

    /// The last nonce accepted.
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

impl Shared {
    /// The error a private request behind `token` gets while its key fails.
    fn key_failure_for_token(&self, token: &str) -> Option<String> {
        let state = self.lock();
        state.token_keys.get(token).and_then(|key| state.failing_keys.get(key)).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stalled(&self) -> bool {
        self.lock().ws_stalled_until.is_some_and(|t| Instant::now() < t)
    }

    /// The frame as sent: a book update gets a wrong checksum when asked.
    fn maybe_corrupt(&self, message: WsMessage) -> WsMessage {
        let WsMessage::Book { kind: MessageType::Update, mut data } = message else { return message };
        let mut s = self.lock();
        if s.corrupt_next_checksum {
            s.corrupt_next_checksum = false;
            for d in &mut data {
                d.checksum = d.checksum.map(|c| c ^ 0x5a5a);
            }
        }
        WsMessage::Book { kind: MessageType::Update, data }
    }

    /// Every tick (100 ms by default) one level of each book changes;
    /// sockets get the book update and the new ticker.
    async fn activity(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let mut s = self.lock();
            for (symbol, m) in s.markets.iter_mut() {
                let update = m.tick();
                self.publish_book(symbol, m, update);
            }
        }
    }

    fn publish_book(&self, symbol: &str, m: &FakeMarket, update: lidod::venue::kraken::messages::BookData) {
        let _ = self.public_tx.send(PublicFrame {
            channel: Channel::Book,
            symbol: symbol.to_string(),
            seq: m.seq,
            message: book_frame(MessageType::Update, update),
        });
        let _ = self.public_tx.send(PublicFrame {
            channel: Channel::Ticker,
            symbol: symbol.to_string(),
            seq: 0,
            message: WsMessage::Ticker { kind: MessageType::Update, data: vec![m.ticker()] },
        });
    }

    /// The switches for the request now arriving.
    fn take_switches(&self) -> (Option<String>, Option<Duration>) {
        let mut s = self.lock();
        s.requests += 1;
        (s.fail_next.take(), s.stall_next.take())
    }
}

type Answer = Result<serde_json::Value, String>;

fn reply(answer: Answer) -> Response {
    let body = match answer {
        Ok(result) => success_body(&result),
        Err(error) => error_body(&[error.as_str()]),
    };
    ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response()
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
    let fields = match form_decode(query.as_deref().unwrap_or("")) {
        Ok(f) => f,
        Err(_) => return finish(Err("EGeneral:Invalid arguments".into()), stall).await,
    };
    let answer = fake.public_call(&method, &fields);
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
    let answer = fake.private_call(&method, &headers, &body);
    finish(answer, stall).await
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

impl Shared {
    fn pair(&self, fields: &[(String, String)]) -> Result<&PairInfo, String> {
        let name = field(fields, "pair").ok_or("EGeneral:Invalid arguments:pair")?;
        self.pairs.resolve(name).ok_or_else(|| "EQuery:Unknown asset pair".to_string())
    }

    fn public_call(&self, method: &str, fields: &[(String, String)]) -> Answer {
        match method {
            "Time" => {
                let now = Utc::now();
                let time = ServerTime {
                    unixtime: now.timestamp(),
                    rfc1123: now.format("%a, %d %b %y %H:%M:%S +0000").to_string(),
                };
                Ok(json!(time))
            }
            "AssetPairs" => Ok(serde_json::from_str(ASSET_PAIRS).expect("asset pairs")),
            "Ticker" => {
                let pair = self.pair(fields)?;
                let state = self.lock();
                let t = state.markets.get(pair.ws_symbol()).ok_or("EQuery:Unknown asset pair")?.ticker();
                let info = TickerInfo {
                    a: TickerLevel(t.ask, t.ask_qty.ceil(), t.ask_qty),
                    b: TickerLevel(t.bid, t.bid_qty.ceil(), t.bid_qty),
                    c: LastTrade(t.last, Decimal::new(5, 2)),
                    v: TodayAnd24h(Decimal::from(100), Decimal::from(1000)),
                    p: TodayAnd24h(t.last, t.last),
                    t: (1_000, 10_000),
                    l: TodayAnd24h(t.last - Decimal::from(100), t.last - Decimal::from(200)),
                    h: TodayAnd24h(t.last + Decimal::from(100), t.last + Decimal::from(200)),
                    o: t.last,
                };
                Ok(json!({ pair.key.clone(): info }))
            }
            "Depth" => {
                let pair = self.pair(fields)?;
                let count = match field(fields, "count") {
                    None => 100,
                    Some(c) => c.parse::<usize>().map_err(|_| "EGeneral:Invalid arguments:count".to_string())?,
                };
                let count = count.clamp(1, 500);
                let state = self.lock();
                let m = state.markets.get(pair.ws_symbol()).ok_or("EQuery:Unknown asset pair")?;
                let ts = Utc::now().timestamp();
                let levels = |side: Vec<(Decimal, Decimal)>| -> Vec<DepthLevel> {
                    side.into_iter().take(count).map(|(p, q)| DepthLevel(p, q, ts)).collect()
                };
                let book = DepthBook { asks: levels(m.asks()), bids: levels(m.bids()) };
                Ok(json!({ pair.key.clone(): book }))
            }
            "Trades" => {
                // `since` and `last` are nanosecond timestamps, as Kraken's are.
                let pair = self.pair(fields)?;
                let since: i128 = match field(fields, "since") {
                    None => 0,
                    Some(v) => v.parse().map_err(|_| "EGeneral:Invalid arguments:since".to_string())?,
                };
                let state = self.lock();
                let m = state.markets.get(pair.ws_symbol()).ok_or("EQuery:Unknown asset pair")?;
                let nanos = |t: &PublicTrade| (t.time * Decimal::from(1_000_000_000)).trunc().to_i128().unwrap_or(0);
                let trades: Vec<PublicTrade> = m.history.iter().filter(|t| nanos(t) > since).cloned().collect();
                let last = trades.last().map_or(since, nanos).to_string();
                Ok(json!(TradesResult { pair: pair.key.clone(), trades, last }))
            }
            "OHLC" => {
                let pair = self.pair(fields)?;
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
                let state = self.lock();
                let m = state.markets.get(pair.ws_symbol()).ok_or("EQuery:Unknown asset pair")?;
                let candles = m.candles(interval, since);
                let last = candles.last().map_or(since, |c| c.0);
                Ok(json!(OhlcResult { pair: pair.key.clone(), candles, last }))
            }
            _ => Err("EGeneral:Unknown method".into()),
        }
    }

    fn private_call(&self, method: &str, headers: &HeaderMap, body: &str) -> Answer {
        let key = headers.get("API-Key").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let Some(signer) = self.signers.get(key) else {
            return Err("EAPI:Invalid key".into());
        };
        let fields = form_decode(body).map_err(|_| "EGeneral:Invalid arguments".to_string())?;
        let nonce_text = field(&fields, "nonce").ok_or("EAPI:Invalid nonce")?;
        let nonce = nonce_text.parse::<u64>().map_err(|_| "EAPI:Invalid nonce".to_string())?;
        let sign = headers.get("API-Sign").and_then(|v| v.to_str().ok()).ok_or("EAPI:Invalid signature")?;
        let path = format!("/0/private/{method}");
        // The signature covers the nonce as it appears in the body.
        if nonce.to_string() != nonce_text || signer.sign(&path, nonce, body) != sign {
            return Err("EAPI:Invalid signature".into());
        }
        let mut state = self.lock();
        if state.nonces.get(key).is_some_and(|last| nonce <= *last) {
            return Err("EAPI:Invalid nonce".into());
        }
        state.nonces.insert(key.to_string(), nonce);
        if let Some(error) = state.failing_keys.get(key) {
            return Err(error.clone());
        }
        match method {
            "Balance" => {
                let balances: BTreeMap<&String, String> =
                    state.balances.iter().map(|(k, v)| (k, format!("{:.4}", v))).collect();
                Ok(json!(balances))
            }
            "GetWebSocketsToken" => {
                let token = format!("fake-ws-token-{}-{}", state.tokens.len() + 1, Utc::now().timestamp_micros());
                state.tokens.insert(token.clone());
                state.token_keys.insert(token.clone(), key.to_string());
                Ok(json!(WebSocketsToken { token: Token(token), expires: 900 }))
            }
            "ClosedOrders" => {
                let wanted = field(&fields, "cl_ord_id");
                let closed: BTreeMap<String, OrderInfo> = state
                    .orders
                    .iter()
                    .filter(|(_, o)| o.status != RestOrderStatus::Open)
                    .filter(|(_, o)| wanted.is_none() || o.cl_ord_id.as_deref() == wanted)
                    .map(|(k, o)| (k.clone(), with_trades(o, &fields)))
                    .collect();
                let count = closed.len() as u64;
                Ok(json!(ClosedOrdersResult { closed, count }))
            }
            "OpenOrders" => {
                let wanted = field(&fields, "cl_ord_id");
                let open = state
                    .orders
                    .iter()
                    .filter(|(_, o)| o.status == RestOrderStatus::Open)
                    .filter(|(_, o)| wanted.is_none() || o.cl_ord_id.as_deref() == wanted)
                    .map(|(k, o)| (k.clone(), with_trades(o, &fields)))
                    .collect();
                Ok(json!(OpenOrdersResult { open }))
            }
            "QueryOrders" => {
                let txids =
                    field(&fields, "txid").filter(|t| !t.is_empty()).ok_or("EGeneral:Invalid arguments:txid")?;
                let ids: Vec<&str> = txids.split(',').collect();
                if ids.len() > 50 {
                    return Err("EGeneral:Invalid arguments:txid".into());
                }
                let found: BTreeMap<&str, OrderInfo> =
                    ids.iter().filter_map(|id| state.orders.get(*id).map(|o| (*id, with_trades(o, &fields)))).collect();
                Ok(json!(found))
            }
            "AddOrder" => {
                state.rest_add_orders += 1;
                self.add_order(&mut state, &fields)
            }
            "CancelOrder" => {
                state.rest_cancels += 1;
                self.cancel_order(&mut state, field(&fields, "txid"), field(&fields, "cl_ord_id"))?;
                Ok(json!(CancelResult { count: 1, pending: false }))
            }
            "CancelAll" => {
                let open: Vec<String> = state
                    .orders
                    .iter()
                    .filter(|(_, o)| o.status == RestOrderStatus::Open)
                    .map(|(t, _)| t.clone())
                    .collect();
                for txid in &open {
                    self.cancel_order(&mut state, Some(txid), None)?;
                }
                Ok(json!(CancelResult { count: open.len() as u32, pending: false }))
            }
            _ => Err("EGeneral:Unknown method".into()),
        }
    }

    /// Cancels one open order by Kraken id (or client id given as `txid`,
    /// as Kraken allows) or by `cl_ord_id`; returns its txid.
    fn cancel_order(
        &self,
        state: &mut FakeState,
        by_txid: Option<&str>,
        by_client: Option<&str>,
    ) -> Result<String, String> {
        if by_txid.is_none() && by_client.is_none() {
            return Err("EGeneral:Invalid arguments:txid".into());
        }
        let target =
            state.orders.iter_mut().filter(|(_, o)| o.status == RestOrderStatus::Open).find(|(id, o)| {
                match (by_txid, by_client) {
                    (Some(t), _) => id.as_str() == t || o.cl_ord_id.as_deref() == Some(t),
                    (None, Some(c)) => o.cl_ord_id.as_deref() == Some(c),
                    (None, None) => false,
                }
            });
        let Some((txid, order)) = target else { return Err("EOrder:Unknown order".into()) };
        order.status = RestOrderStatus::Canceled;
        order.closetm = Some(now_secs());
        order.reason = Some("User requested".into());
        let entry = execution(&self.pairs, txid, order, ExecType::Canceled, WsOrderStatus::Canceled);
        let txid = txid.clone();
        self.emit_execution(state, entry);
        Ok(txid)
    }

    fn add_order(&self, state: &mut FakeState, fields: &[(String, String)]) -> Answer {
        let (req, _nonce) = AddOrderRequest::from_form(fields)?;
        let pair = self.pairs.resolve(&req.pair).ok_or("EQuery:Unknown asset pair")?;
        if req.volume <= Decimal::ZERO {
            return Err("EGeneral:Invalid arguments:volume".into());
        }
        if req.volume < pair.ordermin {
            return Err("EOrder:Order minimum not met".into());
        }
        // A market order is priced (for funds and cost checks) at the touch.
        let touch = state.markets.get(pair.ws_symbol()).and_then(|m| match req.side {
            Side::Buy => m.asks().first().map(|l| l.0),
            Side::Sell => m.bids().first().map(|l| l.0),
        });
        let price = req.price.or(touch).unwrap_or_else(|| mid(pair));
        if req.order_type == OrderType::Limit && !(price % pair.tick_size).is_zero() {
            return Err("EOrder:Tick size check failed".into());
        }
        if pair.costmin.is_some_and(|min| price * req.volume < min) {
            return Err("EOrder:Cost minimum not met".into());
        }
        if let Some(id) = &req.cl_ord_id {
            let in_use = state
                .orders
                .values()
                .any(|o| o.status == RestOrderStatus::Open && o.cl_ord_id.as_deref() == Some(id.as_str()));
            if in_use {
                return Err(DUPLICATE_ORDER.into());
            }
        }
        // Funds: what the order would hold against what is not held yet.
        let (asset, needed) = match req.side {
            Side::Buy => (&pair.kraken_quote, price * req.volume),
            Side::Sell => (&pair.kraken_base, req.volume),
        };
        let held: Decimal = state
            .orders
            .values()
            .filter(|o| o.status == RestOrderStatus::Open)
            .filter_map(|o| {
                let p = self.pairs.resolve(&o.descr.pair)?;
                match o.descr.side {
                    Side::Buy if &p.kraken_quote == asset => Some(o.descr.price * o.remaining()),
                    Side::Sell if &p.kraken_base == asset => Some(o.remaining()),
                    _ => None,
                }
            })
            .sum();
        let balance = state.balances.get(asset).copied().unwrap_or_default();
        if needed > balance - held {
            return Err("EOrder:Insufficient funds".into());
        }
        let side = if req.side == Side::Buy { "buy" } else { "sell" };
        let ordertype = if req.order_type == OrderType::Limit { "limit" } else { "market" };
        let text = match req.order_type {
            OrderType::Limit => format!("{side} {} {} @ limit {price}", req.volume, pair.altname),
            OrderType::Market => format!("{side} {} {} @ market", req.volume, pair.altname),
        };
        let descr = AddOrderDescr { order: text.clone(), close: None };
        if req.validate {
            return Ok(json!(AddOrderResult { descr, txid: vec![] }));
        }
        state.next_order += 1;
        let txid = txid(state.next_order);
        let info = OrderInfo {
            refid: None,
            userref: None,
            cl_ord_id: req.cl_ord_id.clone(),
            status: RestOrderStatus::Open,
            opentm: now_secs(),
            closetm: None,
            descr: OrderDescr {
                pair: pair.altname.clone(),
                side: req.side,
                ordertype: ordertype.into(),
                price,
                price2: Some(Decimal::ZERO),
                leverage: Some("none".into()),
                order: text,
                close: None,
            },
            vol: req.volume,
            vol_exec: Decimal::ZERO,
            cost: Decimal::ZERO,
            fee: Decimal::ZERO,
            price: Decimal::ZERO,
            misc: String::new(),
            oflags: if req.post_only { "post,fciq".into() } else { "fciq".into() },
            reason: None,
            trades: None,
        };
        let mut info = info;
        let pending = execution(&self.pairs, &txid, &info, ExecType::PendingNew, WsOrderStatus::PendingNew);
        self.emit_execution(state, pending);
        let new = execution(&self.pairs, &txid, &info, ExecType::New, WsOrderStatus::New);
        self.emit_execution(state, new);
        self.match_order(state, &txid, &mut info, pair, req.order_type, req.time_in_force);
        state.orders.insert(txid.clone(), info);
        Ok(json!(AddOrderResult { descr, txid: vec![txid] }))
    }

    /// Fills what the order can take from the book, then rests the rest
    /// (GTC limit) or cancels it (market, IOC).
    fn match_order(
        &self,
        state: &mut FakeState,
        txid: &str,
        info: &mut OrderInfo,
        pair: &PairInfo,
        order_type: OrderType,
        tif: lido_shared::model::TimeInForce,
    ) {
        let limit = (order_type == OrderType::Limit).then_some(info.descr.price);
        let Some(market) = state.markets.get_mut(pair.ws_symbol()) else { return };
        let (executions, update) = market.take(info.descr.side, info.vol, limit);
        if let Some(update) = update {
            self.publish_book(pair.ws_symbol(), market, update);
            for trade in market.trades(info.descr.side, &executions) {
                let _ = self.public_tx.send(PublicFrame {
                    channel: Channel::Trade,
                    symbol: pair.ws_symbol().to_string(),
                    seq: 0,
                    message: WsMessage::Trade { kind: MessageType::Update, data: vec![trade] },
                });
            }
        }
        for e in &executions {
            self.fill(state, txid, info, pair, e);
        }
        let rests = order_type == OrderType::Limit && tif != lido_shared::model::TimeInForce::Ioc;
        if info.remaining().is_zero() || !rests {
            info.status = if info.remaining().is_zero() { RestOrderStatus::Closed } else { RestOrderStatus::Canceled };
            info.closetm = Some(now_secs());
            if !info.remaining().is_zero() {
                info.reason = Some("Insufficient liquidity".into());
                let entry = execution(&self.pairs, txid, info, ExecType::Canceled, WsOrderStatus::Canceled);
                self.emit_execution(state, entry);
            }
        }
    }

    /// Books one fill: the order's figures, balances, and an executions
    /// `trade` entry with its fee.
    fn fill(&self, state: &mut FakeState, txid: &str, info: &mut OrderInfo, pair: &PairInfo, e: &Execution) {
        let cost = e.price * e.qty;
        let fee = (cost * TAKER_FEE).round_dp(pair.cost_decimals.unwrap_or(5));
        info.vol_exec += e.qty;
        info.cost += cost;
        info.fee += fee;
        info.price = (info.cost / info.vol_exec).round_dp(pair.price_decimals);
        let sign = if info.descr.side == Side::Buy { Decimal::ONE } else { Decimal::NEGATIVE_ONE };
        *state.balances.entry(pair.kraken_base.clone()).or_default() += sign * e.qty;
        *state.balances.entry(pair.kraken_quote.clone()).or_default() -= sign * cost + fee;
        let status = if info.remaining().is_zero() { WsOrderStatus::Filled } else { WsOrderStatus::PartiallyFilled };
        let mut entry = execution(&self.pairs, txid, info, ExecType::Trade, status);
        entry.exec_id = Some(format!("{txid}-T{}", e.trade_id));
        info.trades.get_or_insert_with(Vec::new).extend(entry.exec_id.clone());
        entry.trade_id = Some(e.trade_id);
        entry.last_qty = Some(e.qty);
        entry.last_price = Some(e.price);
        entry.cost = Some(cost);
        entry.liquidity_ind = Some("t".into());
        entry.fees = Some(vec![FeeData { asset: pair.symbol.quote().unwrap_or("USD").to_string(), qty: fee }]);
        state.fills.push(entry.clone());
        if state.fills.len() > SNAP_TRADES {
            state.fills.remove(0);
        }
        self.emit_execution(state, entry);
    }

    fn emit_execution(&self, state: &mut FakeState, entry: ExecutionData) {
        state.exec_seq += 1;
        let _ = self.exec_tx.send((state.exec_seq, entry));
    }
}

impl FakeState {
    fn ws_connections_opened(&mut self) -> u64 {
        self.ws_opened += 1;
        self.ws_opened
    }

    /// The executions snapshot: open orders, then the last fills.
    fn executions_snapshot(&self, pairs: &PairMap) -> Vec<ExecutionData> {
        let open = self.orders.iter().filter(|(_, o)| o.status == RestOrderStatus::Open).map(|(txid, o)| {
            let status = if o.vol_exec.is_zero() { WsOrderStatus::New } else { WsOrderStatus::PartiallyFilled };
            execution(pairs, txid, o, ExecType::New, status)
        });
        open.chain(self.fills.iter().cloned()).collect()
    }
}

/// An order as OpenOrders, ClosedOrders and QueryOrders show it: with the
/// ids of its trades only when the request says `trades=true`.
fn with_trades(o: &OrderInfo, fields: &[(String, String)]) -> OrderInfo {
    let trades = o.trades.clone().filter(|_| field(fields, "trades") == Some("true"));
    OrderInfo { trades, ..o.clone() }
}

/// An executions entry for the order as it stands.
fn execution(pairs: &PairMap, txid: &str, o: &OrderInfo, exec_type: ExecType, status: WsOrderStatus) -> ExecutionData {
    let ws_symbol = pairs.resolve(&o.descr.pair).map_or_else(|| o.descr.pair.clone(), |p| p.ws_symbol().to_string());
    ExecutionData {
        exec_type,
        order_id: txid.to_string(),
        cl_ord_id: o.cl_ord_id.clone(),
        order_userref: o.userref,
        exec_id: None,
        trade_id: None,
        symbol: Some(ws_symbol),
        side: Some(o.descr.side),
        order_type: Some(o.descr.ordertype.clone()),
        order_qty: Some(o.vol),
        limit_price: Some(o.descr.price),
        order_status: Some(status),
        last_qty: None,
        last_price: None,
        cost: None,
        cum_qty: Some(o.vol_exec),
        cum_cost: Some(o.cost),
        avg_price: Some(o.price),
        liquidity_ind: None,
        fees: None,
        fee_usd_equiv: None,
        reason: o.reason.clone(),
        timestamp: Some(Utc::now()),
    }
}

/// A made-up starting mid price per pair.
fn mid(pair: &PairInfo) -> Decimal {
    if pair.key == "XXBTZUSD" {
        Decimal::new(650_001, 1)
    } else {
        Decimal::new(350_012, 2)
    }
}

/// A Kraken-looking order id (`OQCLML-BW3P3-BUCMWZ`) from a counter.
fn txid(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut letters = String::new();
    for i in 0..17 {
        if i == 6 || i == 11 {
            letters.push('-');
        }
        letters.push(char::from(b'A' + (x % 26) as u8));
        x = x / 26 + n;
    }
    letters
}

fn now_secs() -> Decimal {
    let micros = Utc::now().timestamp_micros();
    Decimal::new(micros, 6)
}

//! Kraken's wire messages, as serde types.
//!
//! **WebSocket v2** (`wss://ws.kraken.com/v2`, `wss://ws-auth.kraken.com/v2`):
//! requests are `{"method":…,"params":{…},"req_id":…}`; the answers to them
//! are `{"method":…,"success":…,"result"|"error":…,"req_id":…,"time_in",
//! "time_out"}`; channel data is `{"channel":…,"type":"snapshot"|"update",
//! "data":[…]}`, plus `{"channel":"heartbeat"}` and `status`. Prices and
//! quantities are JSON numbers (sometimes strings), read exactly through
//! [`num`]. [`parse_ws`] reads any incoming frame into [`WsMessage`].
//!
//! **REST** (`https://api.kraken.com/0/public|private/<Method>`): the
//! request bodies the broker sends (form-encoded, see
//! [`super::sign::form_encode`]) and the `result` types of Time, Ticker,
//! Depth, Trades, OHLC, AddOrder, CancelOrder, CancelAll, OpenOrders,
//! QueryOrders and Balance. Decimals are JSON strings there.
//!
//! Every type also serializes back to Kraken's shape, so the fake Kraken in
//! the tests can answer with them.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use lido_shared::model::{Balance, Book, BookLevel, OrderStatus, OrderType, Quote, Side, Symbol, TimeInForce, Trade};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::envelope::KrakenError;
use super::num::{self, Flex};
use super::pairs::lido_asset;

// ───────────────────────────── WebSocket v2 ─────────────────────────────

/// `snapshot` or `update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    Snapshot,
    Update,
}

/// The channels the broker subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Book,
    Ticker,
    Trade,
    Executions,
}

/// A WebSocket token from GetWebSocketsToken. Its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A request frame: `{"method":…,"params":{…},"req_id":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WsRequest<P> {
    pub method: String,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub params: Option<P>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_id: Option<u64>,
}

impl<P: Serialize> WsRequest<P> {
    /// The frame as JSON text.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

impl WsRequest<SubscriptionParams> {
    pub fn subscribe(params: SubscriptionParams, req_id: u64) -> Self {
        Self { method: "subscribe".into(), params: Some(params), req_id: Some(req_id) }
    }

    pub fn unsubscribe(params: SubscriptionParams, req_id: u64) -> Self {
        Self { method: "unsubscribe".into(), params: Some(params), req_id: Some(req_id) }
    }
}

impl WsRequest<()> {
    /// `{"method":"ping","req_id":…}`; Kraken wants one at least every 60 s
    /// on an otherwise idle connection.
    pub fn ping(req_id: u64) -> Self {
        Self { method: "ping".into(), params: None, req_id: Some(req_id) }
    }
}

impl WsRequest<AddOrderParams> {
    pub fn add_order(params: AddOrderParams, req_id: u64) -> Self {
        Self { method: "add_order".into(), params: Some(params), req_id: Some(req_id) }
    }
}

impl WsRequest<CancelOrderParams> {
    pub fn cancel_order(params: CancelOrderParams, req_id: u64) -> Self {
        Self { method: "cancel_order".into(), params: Some(params), req_id: Some(req_id) }
    }
}

/// `params` of subscribe / unsubscribe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionParams {
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<Vec<String>>,
    /// Book depth: 10, 25, 100, 500 or 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<bool>,
    /// Ticker: `bbo` (on best bid/offer changes) or `trades` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_trigger: Option<String>,
    /// Executions: include open orders / recent fills in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snap_orders: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snap_trades: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
}

impl SubscriptionParams {
    fn channel(channel: Channel, symbols: &[&str]) -> Self {
        Self {
            channel,
            symbol: Some(symbols.iter().map(|s| s.to_string()).collect()),
            depth: None,
            snapshot: None,
            event_trigger: None,
            snap_orders: None,
            snap_trades: None,
            token: None,
        }
    }

    pub fn book(symbols: &[&str], depth: u32) -> Self {
        Self { depth: Some(depth), ..Self::channel(Channel::Book, symbols) }
    }

    /// Ticker updated on every best bid/offer change (what a quote stream
    /// needs), not only on trades.
    pub fn ticker(symbols: &[&str]) -> Self {
        Self { event_trigger: Some("bbo".into()), ..Self::channel(Channel::Ticker, symbols) }
    }

    pub fn trade(symbols: &[&str]) -> Self {
        Self { snapshot: Some(false), ..Self::channel(Channel::Trade, symbols) }
    }

    /// The private executions channel, with open orders and the last fills
    /// in its snapshot (what reconciliation after a reconnect needs).
    pub fn executions(token: Token) -> Self {
        Self {
            symbol: None,
            snap_orders: Some(true),
            snap_trades: Some(true),
            token: Some(token),
            ..Self::channel(Channel::Executions, &[])
        }
    }
}

/// Kraken's order types the broker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KrakenOrderType {
    Market,
    Limit,
}

impl From<OrderType> for KrakenOrderType {
    fn from(t: OrderType) -> Self {
        match t {
            OrderType::Market => Self::Market,
            OrderType::Limit => Self::Limit,
        }
    }
}

/// Kraken's time in force; Kraken has no `day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KrakenTimeInForce {
    Gtc,
    Ioc,
    Gtd,
}

impl KrakenTimeInForce {
    pub fn from_lido(tif: TimeInForce) -> Result<Self, String> {
        match tif {
            TimeInForce::Gtc => Ok(Self::Gtc),
            TimeInForce::Ioc => Ok(Self::Ioc),
            TimeInForce::Day => Err("kraken has no day orders; use gtc or ioc".into()),
        }
    }

    /// REST spelling (`GTC`, `IOC`, `GTD`).
    pub fn rest(self) -> &'static str {
        match self {
            Self::Gtc => "GTC",
            Self::Ioc => "IOC",
            Self::Gtd => "GTD",
        }
    }
}

/// `params` of `add_order` (private WebSocket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddOrderParams {
    pub order_type: KrakenOrderType,
    pub side: Side,
    #[serde(with = "num::number")]
    pub order_qty: Decimal,
    pub symbol: String,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub limit_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_in_force: Option<KrakenTimeInForce>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cl_ord_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<bool>,
    pub token: Token,
}

/// `params` of `cancel_order` (private WebSocket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelOrderParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cl_ord_id: Option<Vec<String>>,
    pub token: Token,
}

/// Any incoming WebSocket v2 frame.
#[derive(Debug, Clone, PartialEq)]
pub enum WsMessage {
    /// Connection and engine status (`system`: online, maintenance,
    /// cancel_only, post_only).
    Status(Vec<StatusData>),
    Heartbeat,
    Ticker {
        kind: MessageType,
        data: Vec<TickerData>,
    },
    Book {
        kind: MessageType,
        data: Vec<BookData>,
    },
    Trade {
        kind: MessageType,
        data: Vec<TradeData>,
    },
    Executions {
        kind: MessageType,
        sequence: Option<u64>,
        data: Vec<ExecutionData>,
    },
    /// The answer to a request (subscribe, unsubscribe, ping, add_order, …).
    Response(MethodResponse),
    /// A channel the broker does not consume.
    Other {
        channel: String,
    },
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    method: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Frame<T> {
    #[serde(rename = "type")]
    kind: MessageType,
    data: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
}

/// Reads one text frame from a Kraken v2 socket.
pub fn parse_ws(text: &str) -> Result<WsMessage, serde_json::Error> {
    let probe: Probe = serde_json::from_str(text)?;
    if probe.method.is_some() {
        return serde_json::from_str(text).map(WsMessage::Response);
    }
    let Some(channel) = probe.channel else {
        return Err(serde::de::Error::custom("frame has neither a method nor a channel"));
    };
    Ok(match channel.as_str() {
        "heartbeat" => WsMessage::Heartbeat,
        "status" => WsMessage::Status(serde_json::from_str::<Frame<StatusData>>(text)?.data),
        "ticker" => {
            let f: Frame<TickerData> = serde_json::from_str(text)?;
            WsMessage::Ticker { kind: f.kind, data: f.data }
        }
        "book" => {
            let f: Frame<BookData> = serde_json::from_str(text)?;
            WsMessage::Book { kind: f.kind, data: f.data }
        }
        "trade" => {
            let f: Frame<TradeData> = serde_json::from_str(text)?;
            WsMessage::Trade { kind: f.kind, data: f.data }
        }
        "executions" => {
            let f: Frame<ExecutionData> = serde_json::from_str(text)?;
            WsMessage::Executions { kind: f.kind, sequence: f.sequence, data: f.data }
        }
        _ => WsMessage::Other { channel },
    })
}

impl WsMessage {
    /// The frame as Kraken sends it (for the fake Kraken and round trips),
    /// written straight to text so every decimal keeps its digits (see
    /// [`num`]; never through a float).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        #[derive(Serialize)]
        struct Out<'a, T> {
            channel: &'a str,
            #[serde(rename = "type")]
            kind: MessageType,
            data: &'a [T],
            #[serde(skip_serializing_if = "Option::is_none")]
            sequence: Option<u64>,
        }
        fn frame<T: Serialize>(
            channel: &str,
            kind: MessageType,
            data: &[T],
            sequence: Option<u64>,
        ) -> Result<String, serde_json::Error> {
            serde_json::to_string(&Out { channel, kind, data, sequence })
        }
        match self {
            Self::Status(data) => frame("status", MessageType::Update, data, None),
            Self::Heartbeat => Ok(json!({ "channel": "heartbeat" }).to_string()),
            Self::Ticker { kind, data } => frame("ticker", *kind, data, None),
            Self::Book { kind, data } => frame("book", *kind, data, None),
            Self::Trade { kind, data } => frame("trade", *kind, data, None),
            Self::Executions { kind, sequence, data } => frame("executions", *kind, data, *sequence),
            Self::Response(r) => serde_json::to_string(r),
            Self::Other { channel } => Ok(json!({ "channel": channel }).to_string()),
        }
    }
}

/// `status` channel data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusData {
    pub system: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl StatusData {
    /// Whether the engine takes new orders (`online`).
    pub fn accepts_orders(&self) -> bool {
        self.system == "online"
    }
}

/// One `ticker` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TickerData {
    pub symbol: String,
    #[serde(with = "num::number")]
    pub bid: Decimal,
    #[serde(with = "num::number")]
    pub bid_qty: Decimal,
    #[serde(with = "num::number")]
    pub ask: Decimal,
    #[serde(with = "num::number")]
    pub ask_qty: Decimal,
    #[serde(with = "num::number")]
    pub last: Decimal,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub volume: Option<Decimal>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub vwap: Option<Decimal>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub low: Option<Decimal>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub high: Option<Decimal>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub change: Option<Decimal>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub change_pct: Option<Decimal>,
}

impl TickerData {
    /// The Lido quote for `symbol` (the Lido symbol of this pair).
    pub fn to_quote(&self, symbol: Symbol, ts: DateTime<Utc>) -> Quote {
        Quote {
            symbol,
            bid: self.bid,
            ask: self.ask,
            bid_size: self.bid_qty,
            ask_size: self.ask_qty,
            last: Some(self.last),
            ts,
        }
    }
}

/// One price level of a `book` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookLevelMsg {
    #[serde(with = "num::number")]
    pub price: Decimal,
    #[serde(with = "num::number")]
    pub qty: Decimal,
}

/// One `book` entry: a snapshot or the levels that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookData {
    pub symbol: String,
    #[serde(default)]
    pub bids: Vec<BookLevelMsg>,
    #[serde(default)]
    pub asks: Vec<BookLevelMsg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
}

/// One `trade` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TradeData {
    pub symbol: String,
    pub side: Side,
    #[serde(with = "num::number")]
    pub price: Decimal,
    #[serde(with = "num::number")]
    pub qty: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ord_type: Option<String>,
    pub trade_id: u64,
    pub timestamp: DateTime<Utc>,
}

impl TradeData {
    pub fn to_trade(&self, symbol: Symbol) -> Trade {
        Trade {
            symbol,
            trade_id: self.trade_id.to_string(),
            price: self.price,
            quantity: self.qty,
            side: self.side,
            ts: self.timestamp,
        }
    }
}

/// `exec_type` of an executions entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecType {
    PendingNew,
    New,
    Trade,
    Filled,
    IcebergRefill,
    Canceled,
    Expired,
    Amended,
    Restated,
    Status,
    #[serde(other)]
    Other,
}

/// `order_status` of an executions entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WsOrderStatus {
    PendingNew,
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Expired,
    #[serde(other)]
    Other,
}

impl WsOrderStatus {
    pub fn to_lido(self) -> Option<OrderStatus> {
        Some(match self {
            Self::PendingNew => OrderStatus::New,
            Self::New => OrderStatus::Accepted,
            Self::PartiallyFilled => OrderStatus::PartiallyFilled,
            Self::Filled => OrderStatus::Filled,
            Self::Canceled => OrderStatus::Canceled,
            Self::Expired => OrderStatus::Expired,
            Self::Other => return None,
        })
    }
}

/// A fee charged on a fill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeeData {
    pub asset: String,
    #[serde(with = "num::number")]
    pub qty: Decimal,
}

/// One `executions` entry: an order event or a fill (`exec_type` trade).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionData {
    pub exec_type: ExecType,
    pub order_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cl_ord_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_userref: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<Side>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_type: Option<String>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub order_qty: Option<Decimal>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub limit_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_status: Option<WsOrderStatus>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub last_qty: Option<Decimal>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub last_price: Option<Decimal>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub cost: Option<Decimal>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub cum_qty: Option<Decimal>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub cum_cost: Option<Decimal>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub avg_price: Option<Decimal>,
    /// `t` taker, `m` maker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liquidity_ind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fees: Option<Vec<FeeData>>,
    #[serde(default, with = "num::number_opt", skip_serializing_if = "Option::is_none")]
    pub fee_usd_equiv: Option<Decimal>,
    /// Why an order was canceled or expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
}

impl ExecutionData {
    /// Whether this entry is a fill.
    pub fn is_fill(&self) -> bool {
        self.exec_type == ExecType::Trade
    }

    /// The Lido status this entry reports, if it reports one.
    pub fn lido_status(&self) -> Option<OrderStatus> {
        self.order_status.and_then(WsOrderStatus::to_lido)
    }
}

/// The answer to a request: `success` with a `result`, or an `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResponse {
    pub method: String,
    #[serde(default)]
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_in: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_out: Option<String>,
}

impl MethodResponse {
    /// The typed `result`, or Kraken's error (classified like a REST error).
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, KrakenError> {
        if !self.success {
            let error = self.error.unwrap_or_else(|| format!("{} failed without a reason", self.method));
            return Err(KrakenError::from_errors(&[error]));
        }
        let result = self.result.unwrap_or(Value::Null);
        serde_json::from_value(result).map_err(|e| KrakenError::Decode(e.to_string()))
    }
}

/// `result` of `add_order` / `cancel_order`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderAck {
    pub order_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cl_ord_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_userref: Option<i64>,
}

// ───────────────────────────────── REST ─────────────────────────────────

/// `result` of public `Time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTime {
    pub unixtime: i64,
    pub rfc1123: String,
}

/// Ticker `a` / `b`: price, whole lot volume, lot volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickerLevel(
    #[serde(with = "num::flex")] pub Decimal,
    #[serde(with = "num::flex")] pub Decimal,
    #[serde(with = "num::flex")] pub Decimal,
);

/// Ticker `c`: last trade price and lot volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastTrade(#[serde(with = "num::flex")] pub Decimal, #[serde(with = "num::flex")] pub Decimal);

/// Ticker `v`, `p`, `l`, `h`: today's value and the last 24 hours'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodayAnd24h(#[serde(with = "num::flex")] pub Decimal, #[serde(with = "num::flex")] pub Decimal);

/// One pair of the public `Ticker` result (keyed by the pair's result key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickerInfo {
    pub a: TickerLevel,
    pub b: TickerLevel,
    pub c: LastTrade,
    pub v: TodayAnd24h,
    pub p: TodayAnd24h,
    pub t: (u64, u64),
    pub l: TodayAnd24h,
    pub h: TodayAnd24h,
    #[serde(with = "num::flex")]
    pub o: Decimal,
}

impl TickerInfo {
    /// The Lido quote. The REST ticker's sizes are lot volumes at the best
    /// price.
    pub fn to_quote(&self, symbol: Symbol, ts: DateTime<Utc>) -> Quote {
        Quote { symbol, bid: self.b.0, ask: self.a.0, bid_size: self.b.2, ask_size: self.a.2, last: Some(self.c.0), ts }
    }
}

/// A `Depth` level: price, volume, timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepthLevel(#[serde(with = "num::flex")] pub Decimal, #[serde(with = "num::flex")] pub Decimal, pub i64);

/// One pair of the public `Depth` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepthBook {
    pub asks: Vec<DepthLevel>,
    pub bids: Vec<DepthLevel>,
}

impl DepthBook {
    pub fn to_book(&self, symbol: Symbol, ts: DateTime<Utc>) -> Book {
        let levels = |v: &[DepthLevel]| v.iter().map(|l| BookLevel(l.0, l.1)).collect();
        Book { symbol, bids: levels(&self.bids), asks: levels(&self.asks), ts }
    }
}

/// Seconds since the epoch, with fractions, as a UTC time.
pub fn unix_seconds(secs: Decimal) -> Option<DateTime<Utc>> {
    let whole = secs.trunc();
    let nanos = ((secs - whole) * Decimal::from(1_000_000_000)).trunc().to_u32()?;
    Utc.timestamp_opt(whole.to_i64()?, nanos).single()
}

/// A raw JSON string's contents, or the raw text of anything else.
fn raw_text(v: &RawValue) -> String {
    serde_json::from_str::<String>(v.get()).unwrap_or_else(|_| v.get().to_string())
}

fn decimal_number(d: Decimal) -> Result<Value, String> {
    let f = num::to_exact_f64(d)?;
    serde_json::Number::from_f64(f).map(Value::Number).ok_or_else(|| format!("{d} is not a JSON number"))
}

/// One public trade: `[price, volume, time, "b"|"s", "m"|"l", misc, trade_id]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicTrade {
    pub price: Decimal,
    pub volume: Decimal,
    /// Seconds since the epoch, as Kraken wrote them.
    pub time: Decimal,
    pub side: Side,
    /// `true` for a market order, `false` for a limit order.
    pub market: bool,
    pub misc: String,
    pub trade_id: Option<u64>,
}

impl PublicTrade {
    /// One row as Kraken wrote it; prices and volumes are read from their
    /// text (see [`num`]).
    fn from_raw(a: &[Box<RawValue>]) -> Result<Self, String> {
        if a.len() < 6 {
            let row: Vec<&str> = a.iter().map(|v| v.get()).collect();
            return Err(format!("[{}] is not a trade", row.join(",")));
        }
        Ok(Self {
            price: num::from_raw(&a[0])?,
            volume: num::from_raw(&a[1])?,
            time: num::from_raw(&a[2])?,
            side: match raw_text(&a[3]).as_str() {
                "b" => Side::Buy,
                "s" => Side::Sell,
                other => return Err(format!("{other} is not a side")),
            },
            market: raw_text(&a[4]) == "m",
            misc: raw_text(&a[5]),
            trade_id: a.get(6).and_then(|v| v.get().parse().ok()),
        })
    }

    fn to_value(&self) -> Result<Value, String> {
        let mut a = vec![
            json!(self.price.to_string()),
            json!(self.volume.to_string()),
            decimal_number(self.time)?,
            json!(if self.side == Side::Buy { "b" } else { "s" }),
            json!(if self.market { "m" } else { "l" }),
            json!(self.misc),
        ];
        if let Some(id) = self.trade_id {
            a.push(json!(id));
        }
        Ok(Value::Array(a))
    }

    pub fn to_trade(&self, symbol: Symbol) -> Trade {
        Trade {
            symbol,
            trade_id: self.trade_id.map_or_else(|| self.time.to_string(), |id| id.to_string()),
            price: self.price,
            quantity: self.volume,
            side: self.side,
            ts: unix_seconds(self.time).unwrap_or_default(),
        }
    }
}

/// `result` of public `Trades`: `{"<pair key>": [trade…], "last": "<id>"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradesResult {
    pub pair: String,
    pub trades: Vec<PublicTrade>,
    /// Cursor for the next `since`.
    pub last: String,
}

/// One OHLC candle: `[time, open, high, low, close, vwap, volume, count]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candle(
    pub i64,
    #[serde(with = "num::flex")] pub Decimal,
    #[serde(with = "num::flex")] pub Decimal,
    #[serde(with = "num::flex")] pub Decimal,
    #[serde(with = "num::flex")] pub Decimal,
    #[serde(with = "num::flex")] pub Decimal,
    #[serde(with = "num::flex")] pub Decimal,
    pub u64,
);

/// `result` of public `OHLC`: `{"<pair key>": [candle…], "last": <time>}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OhlcResult {
    pub pair: String,
    pub candles: Vec<Candle>,
    pub last: i64,
}

/// Splits `{"<pair>": [...], "last": …}` into its parts, each as Kraken
/// wrote it.
type Raw = Box<RawValue>;

fn pair_and_last(map: BTreeMap<String, Raw>) -> Result<(String, Raw, Option<Raw>), String> {
    let mut last = None;
    let mut pair = None;
    for (k, v) in map {
        if k == "last" {
            last = Some(v);
        } else if pair.is_none() {
            pair = Some((k, v));
        } else {
            return Err("more than one pair in the result".into());
        }
    }
    let (key, rows) = pair.ok_or("no pair in the result")?;
    Ok((key, rows, last))
}

impl<'de> Deserialize<'de> for TradesResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let (pair, rows, last) = pair_and_last(BTreeMap::deserialize(d)?).map_err(D::Error::custom)?;
        let rows: Vec<Vec<Raw>> =
            serde_json::from_str(rows.get()).map_err(|e| D::Error::custom(format!("trades are not a list: {e}")))?;
        let trades =
            rows.iter().map(|r| PublicTrade::from_raw(r)).collect::<Result<_, _>>().map_err(D::Error::custom)?;
        Ok(Self { pair, trades, last: last.map(|l| raw_text(&l)).unwrap_or_else(|| "null".into()) })
    }
}

impl Serialize for TradesResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let rows: Vec<Value> =
            self.trades.iter().map(PublicTrade::to_value).collect::<Result<_, _>>().map_err(S::Error::custom)?;
        let mut map = serde_json::Map::new();
        map.insert(self.pair.clone(), Value::Array(rows));
        map.insert("last".into(), json!(self.last));
        map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for OhlcResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let (pair, rows, last) = pair_and_last(BTreeMap::deserialize(d)?).map_err(D::Error::custom)?;
        let candles = serde_json::from_str(rows.get()).map_err(D::Error::custom)?;
        let last = last.and_then(|l| raw_text(&l).parse().ok()).unwrap_or(0);
        Ok(Self { pair, candles, last })
    }
}

impl Serialize for OhlcResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut map = serde_json::Map::new();
        map.insert(self.pair.clone(), serde_json::to_value(&self.candles).map_err(S::Error::custom)?);
        map.insert("last".into(), json!(self.last));
        map.serialize(s)
    }
}

/// A private AddOrder request.
#[derive(Debug, Clone, PartialEq)]
pub struct AddOrderRequest {
    /// The pair's altname or result key (`XBTUSD`).
    pub pair: String,
    pub side: Side,
    pub order_type: OrderType,
    pub volume: Decimal,
    pub price: Option<Decimal>,
    pub time_in_force: TimeInForce,
    /// Maker only (`oflags=post`).
    pub post_only: bool,
    /// Lido's client order id, as Kraken's `cl_ord_id` (a UUID, or up to 18
    /// characters of free text).
    pub cl_ord_id: Option<String>,
    /// Validate only: Kraken checks the order and does not place it.
    pub validate: bool,
}

impl AddOrderRequest {
    /// The form fields, `nonce` first, in the order they are sent.
    pub fn form(&self, nonce: u64) -> Result<Vec<(&'static str, String)>, String> {
        let tif = KrakenTimeInForce::from_lido(self.time_in_force)?;
        let mut f = vec![
            ("nonce", nonce.to_string()),
            ("ordertype", if self.order_type == OrderType::Limit { "limit" } else { "market" }.to_string()),
            ("type", if self.side == Side::Buy { "buy" } else { "sell" }.to_string()),
            ("volume", self.volume.to_string()),
            ("pair", self.pair.clone()),
        ];
        match (self.order_type, self.price) {
            (OrderType::Limit, Some(p)) => f.push(("price", p.to_string())),
            (OrderType::Limit, None) => return Err("a limit order needs a price".into()),
            (OrderType::Market, Some(_)) => return Err("a market order takes no price".into()),
            (OrderType::Market, None) => {}
        }
        if tif != KrakenTimeInForce::Gtc {
            f.push(("timeinforce", tif.rest().to_string()));
        }
        if self.post_only {
            f.push(("oflags", "post".to_string()));
        }
        if let Some(id) = &self.cl_ord_id {
            f.push(("cl_ord_id", id.clone()));
        }
        if self.validate {
            f.push(("validate", "true".to_string()));
        }
        Ok(f)
    }

    /// The same order as private WebSocket v2 `add_order` params, for the
    /// pair's v2 `symbol` (`BTC/USD`), with the socket's `token`.
    pub fn ws_params(&self, symbol: &str, token: Token) -> Result<AddOrderParams, String> {
        let tif = KrakenTimeInForce::from_lido(self.time_in_force)?;
        if (self.order_type == OrderType::Limit) != self.price.is_some() {
            return Err("a limit order needs a price and a market order takes none".into());
        }
        Ok(AddOrderParams {
            order_type: self.order_type.into(),
            side: self.side,
            order_qty: self.volume,
            symbol: symbol.to_string(),
            limit_price: self.price,
            time_in_force: (tif != KrakenTimeInForce::Gtc).then_some(tif),
            post_only: self.post_only.then_some(true),
            cl_ord_id: self.cl_ord_id.clone(),
            validate: self.validate.then_some(true),
            token,
        })
    }

    /// The form-encoded body to sign and send.
    pub fn post_data(&self, nonce: u64) -> Result<String, String> {
        Ok(super::sign::form_encode(&self.form(nonce)?))
    }

    /// Reads an AddOrder form back, checking it as Kraken would (for the
    /// fake Kraken). Returns the request and its nonce.
    pub fn from_form(fields: &[(String, String)]) -> Result<(Self, u64), String> {
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        let need = |k: &str| get(k).ok_or_else(|| format!("EGeneral:Invalid arguments:{k}"));
        let dec = |k: &str, v: &str| num::parse_decimal(v).map_err(|_| format!("EGeneral:Invalid arguments:{k}"));
        let nonce = need("nonce")?.parse::<u64>().map_err(|_| "EAPI:Invalid nonce".to_string())?;
        let order_type = match need("ordertype")? {
            "limit" => OrderType::Limit,
            "market" => OrderType::Market,
            _ => return Err("EGeneral:Invalid arguments:ordertype".into()),
        };
        let side = match need("type")? {
            "buy" => Side::Buy,
            "sell" => Side::Sell,
            _ => return Err("EGeneral:Invalid arguments:type".into()),
        };
        let price = get("price").map(|p| dec("price", p)).transpose()?;
        if order_type == OrderType::Limit && price.is_none() {
            return Err("EGeneral:Invalid arguments:price".into());
        }
        let time_in_force = match get("timeinforce") {
            None | Some("GTC") => TimeInForce::Gtc,
            Some("IOC") => TimeInForce::Ioc,
            Some(_) => return Err("EGeneral:Invalid arguments:timeinforce".into()),
        };
        let request = Self {
            pair: need("pair")?.to_string(),
            side,
            order_type,
            volume: dec("volume", need("volume")?)?,
            price,
            time_in_force,
            post_only: get("oflags").is_some_and(|f| f.split(',').any(|x| x == "post")),
            cl_ord_id: get("cl_ord_id").map(str::to_string),
            validate: matches!(get("validate"), Some("true" | "1")),
        };
        Ok((request, nonce))
    }
}

/// `descr` of an AddOrder result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddOrderDescr {
    pub order: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close: Option<String>,
}

/// `result` of AddOrder; `txid` is empty for `validate` requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddOrderResult {
    pub descr: AddOrderDescr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub txid: Vec<String>,
}

/// A private CancelOrder request, by Kraken id or by client order id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOrderRequest {
    Txid(String),
    ClOrdId(String),
}

impl CancelOrderRequest {
    pub fn form(&self, nonce: u64) -> Vec<(&'static str, String)> {
        let id = match self {
            Self::Txid(t) => ("txid", t.clone()),
            Self::ClOrdId(c) => ("cl_ord_id", c.clone()),
        };
        vec![("nonce", nonce.to_string()), id]
    }
}

/// `result` of CancelOrder and CancelAll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelResult {
    pub count: u32,
    #[serde(default)]
    pub pending: bool,
}

/// A private OpenOrders or ClosedOrders request (the filters the broker
/// uses are the same for both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenOrdersRequest {
    pub trades: bool,
    pub cl_ord_id: Option<String>,
}

impl OpenOrdersRequest {
    pub fn form(&self, nonce: u64) -> Vec<(&'static str, String)> {
        let mut f = vec![("nonce", nonce.to_string())];
        if self.trades {
            f.push(("trades", "true".into()));
        }
        if let Some(id) = &self.cl_ord_id {
            f.push(("cl_ord_id", id.clone()));
        }
        f
    }
}

/// A private QueryOrders request (up to 50 ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOrdersRequest {
    pub txids: Vec<String>,
    pub trades: bool,
}

impl QueryOrdersRequest {
    /// Kraken's limit on ids per QueryOrders call.
    pub const MAX_IDS: usize = 50;

    pub fn form(&self, nonce: u64) -> Result<Vec<(&'static str, String)>, String> {
        if self.txids.is_empty() || self.txids.len() > Self::MAX_IDS {
            return Err(format!("QueryOrders takes 1 to {} ids, got {}", Self::MAX_IDS, self.txids.len()));
        }
        let mut f = vec![("nonce", nonce.to_string()), ("txid", self.txids.join(","))];
        if self.trades {
            f.push(("trades", "true".into()));
        }
        Ok(f)
    }
}

/// A private QueryTrades request: trades by Kraken trade id (the `trades`
/// of an order in QueryOrders), at most 20 a call ("Query Trades Info").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTradesRequest {
    pub txids: Vec<String>,
}

impl QueryTradesRequest {
    /// Kraken's limit on ids per QueryTrades call.
    pub const MAX_IDS: usize = 20;

    pub fn form(&self, nonce: u64) -> Result<Vec<(&'static str, String)>, String> {
        if self.txids.is_empty() || self.txids.len() > Self::MAX_IDS {
            return Err(format!("QueryTrades takes 1 to {} ids, got {}", Self::MAX_IDS, self.txids.len()));
        }
        Ok(vec![("nonce", nonce.to_string()), ("txid", self.txids.join(","))])
    }
}

/// One trade of QueryTrades, keyed by its trade id: price, volume and fee
/// at the pair's decimals, fee in the quote currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeInfo {
    pub ordertxid: String,
    pub pair: String,
    /// Seconds since the epoch.
    #[serde(with = "num::flex")]
    pub time: Decimal,
    #[serde(rename = "type")]
    pub side: Side,
    #[serde(default)]
    pub ordertype: String,
    #[serde(with = "num::flex")]
    pub price: Decimal,
    #[serde(with = "num::flex")]
    pub cost: Decimal,
    #[serde(with = "num::flex")]
    pub fee: Decimal,
    #[serde(with = "num::flex")]
    pub vol: Decimal,
}

/// `result` of QueryTrades.
pub type QueryTradesResult = BTreeMap<String, TradeInfo>;

/// Status of an order in OpenOrders / QueryOrders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestOrderStatus {
    Pending,
    Open,
    Closed,
    Canceled,
    Expired,
}

/// `descr` of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDescr {
    pub pair: String,
    #[serde(rename = "type")]
    pub side: Side,
    pub ordertype: String,
    #[serde(with = "num::flex")]
    pub price: Decimal,
    #[serde(default, with = "num::flex_opt", skip_serializing_if = "Option::is_none")]
    pub price2: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leverage: Option<String>,
    #[serde(default)]
    pub order: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close: Option<String>,
}

/// One order of OpenOrders (`open`) or QueryOrders, keyed by txid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userref: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cl_ord_id: Option<String>,
    pub status: RestOrderStatus,
    /// Seconds since the epoch.
    #[serde(with = "num::flex")]
    pub opentm: Decimal,
    #[serde(default, with = "num::flex_opt", skip_serializing_if = "Option::is_none")]
    pub closetm: Option<Decimal>,
    pub descr: OrderDescr,
    #[serde(with = "num::flex")]
    pub vol: Decimal,
    #[serde(with = "num::flex")]
    pub vol_exec: Decimal,
    #[serde(with = "num::flex")]
    pub cost: Decimal,
    #[serde(with = "num::flex")]
    pub fee: Decimal,
    /// Average fill price.
    #[serde(with = "num::flex")]
    pub price: Decimal,
    #[serde(default)]
    pub misc: String,
    #[serde(default)]
    pub oflags: String,
    /// Why the order closed, when it closed without filling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trades: Option<Vec<String>>,
}

impl OrderInfo {
    /// The Lido status: `closed` is filled when all volume executed, else
    /// (an IOC remainder) canceled.
    pub fn lido_status(&self) -> OrderStatus {
        match self.status {
            RestOrderStatus::Pending => OrderStatus::New,
            RestOrderStatus::Open if self.vol_exec.is_zero() => OrderStatus::Accepted,
            RestOrderStatus::Open => OrderStatus::PartiallyFilled,
            RestOrderStatus::Closed if self.vol_exec >= self.vol => OrderStatus::Filled,
            RestOrderStatus::Closed | RestOrderStatus::Canceled => OrderStatus::Canceled,
            RestOrderStatus::Expired => OrderStatus::Expired,
        }
    }

    /// Volume still to fill.
    pub fn remaining(&self) -> Decimal {
        (self.vol - self.vol_exec).max(Decimal::ZERO)
    }
}

/// `result` of OpenOrders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenOrdersResult {
    pub open: BTreeMap<String, OrderInfo>,
}

/// `result` of QueryOrders.
pub type QueryOrdersResult = BTreeMap<String, OrderInfo>;

/// `result` of ClosedOrders (the newest first, 50 a page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedOrdersResult {
    pub closed: BTreeMap<String, OrderInfo>,
    #[serde(default)]
    pub count: u64,
}

/// `result` of GetWebSocketsToken: a token for the private WebSocket,
/// valid for `expires` seconds unless a connection uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebSocketsToken {
    pub token: Token,
    pub expires: u64,
}

/// `result` of Balance: Kraken asset code → amount.
pub type BalanceResult = BTreeMap<String, Flex>;

/// Lido balances from a Balance result, with Lido asset codes (`XXBT` →
/// `BTC`); zero balances left out. Balance reports totals only, so
/// `available` equals `total` here (BalanceEx has the holds).
pub fn lido_balances(result: &BalanceResult) -> Vec<Balance> {
    let mut out: Vec<Balance> = result
        .iter()
        .filter(|(_, v)| !v.0.is_zero())
        .map(|(k, v)| Balance { asset: lido_asset(k), total: v.0, available: v.0 })
        .collect();
    out.sort_by(|a, b| a.asset.cmp(&b.asset));
    out
}

#[cfg(test)]
mod tests;

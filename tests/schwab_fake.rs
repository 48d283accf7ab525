//! A fake Schwab Trader API on 127.0.0.1, strict in the ways Schwab is:
//!
//! - OAuth: `GET /v1/oauth/authorize` redirects to the registered redirect
//!   URI with `?code=…%40&session=…`; `POST /v1/oauth/token` checks HTTP
//!   Basic app credentials and the form (`authorization_code` with the
//!   issued code and the same redirect URI, or `refresh_token` with the
//!   current refresh token) and issues a new access token each time.
//! - Every market data and trader call needs `Authorization: Bearer` with
//!   the current access token, else the gateway's 401 body.
//! - Market data: quotes, price history, equity market hours (open around
//!   now unless [`FakeSchwab::close_market`]).
//! - Trader: account numbers → hash, account with positions and balances,
//!   orders: POST checks the documented order JSON with lidod's own
//!   [`OrderRequest`] type and answers `201` with a `Location` header;
//!   GET, DELETE, and lists by entered time and status. A small fill engine:
//!   market orders and marketable limits fill at once at the quote; others
//!   work until [`FakeSchwab::fill`] or a cancel.
//! - `userPreference` points at its own streamer WebSocket (`/ws`): LOGIN
//!   checks the access token, LEVELONE_EQUITIES SUBS sends quotes and
//!   [`FakeSchwab::push_quote`] updates, ACCT_ACTIVITY sends order events,
//!   and a heartbeat `notify` goes out every second.
//! - Switches: [`FakeSchwab::expire_access_token`],
//!   [`FakeSchwab::rate_limit_next`] (429 with `Retry-After`),
//!   [`FakeSchwab::drop_streams`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use lidod::venue::schwab::stream::{Incoming, Requests};
use lidod::venue::schwab::wire::{
    self, AccountNumber, ExecutionLeg, OrderActivity, OrderRequest, QuoteBlock, QuoteEntry, StreamerInfo,
};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// What the fake starts with.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub app_key: String,
    pub app_secret: String,
    pub redirect_uri: String,
    pub account_number: String,
    pub account_hash: String,
    /// Bid and ask by symbol.
    pub quotes: BTreeMap<String, (Decimal, Decimal)>,
    pub cash: Decimal,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            app_key: "fake-app-key-1234".into(),
            app_secret: "fake-app-secret-5678".into(),
            redirect_uri: "https://127.0.0.1".into(),
            account_number: "12345678".into(),
            account_hash: "E5B2A1C0F9D8A7B6C5D4E3F2A1B0C9D8E7F6A5B4C3D2E1F0A9B8C7D6E5F4A3B2".into(),
            quotes: [
                ("AAPL".to_string(), (Decimal::new(19025, 2), Decimal::new(19027, 2))),
                ("MSFT".to_string(), (Decimal::new(41210, 2), Decimal::new(41215, 2))),
            ]
            .into(),
            cash: Decimal::from(100_000),
        }
    }
}

/// A running fake; stopped when dropped.
pub struct FakeSchwab {
    /// `http://127.0.0.1:PORT`: both `api_url` and `auth_url`.
    pub url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    config: FakeConfig,
    base_url: String,
    ws_url: String,
    state: Mutex<FakeState>,
    /// Frames for every logged-in streamer socket (already filtered by service there).
    stream: broadcast::Sender<StreamPush>,
}

#[derive(Clone, Debug)]
enum StreamPush {
    Quote(String),
    Activity(i64, &'static str),
    Drop,
}

#[derive(Default)]
struct FakeState {
    issued_codes: Vec<String>,
    access_token: Option<String>,
    refresh_token: Option<String>,
    tokens_issued: u64,
    refresh_grants: u64,
    orders: BTreeMap<i64, wire::Order>,
    order_posts: Vec<Value>,
    next_order: i64,
    next_activity: i64,
    rate_limited: u32,
    /// The next order POST takes effect, then answers 502.
    fail_next_order: bool,
    market_closed: bool,
    quotes: BTreeMap<String, (Decimal, Decimal)>,
    stream_logins: u64,
}

impl FakeSchwab {
    /// Starts the fake on 127.0.0.1, on a free port, with one login issued
    /// (see [`FakeSchwab::tokens`]).
    pub async fn start(config: FakeConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = FakeState { quotes: config.quotes.clone(), next_order: 1_000_100, ..FakeState::default() };
        let shared = Arc::new(Shared {
            config,
            base_url: format!("http://{addr}"),
            ws_url: format!("ws://{addr}/ws"),
            state: Mutex::new(state),
            stream: broadcast::channel(1024).0,
        });
        let api = Router::new()
            .route("/marketdata/v1/quotes", get(quotes))
            .route("/marketdata/v1/pricehistory", get(price_history))
            .route("/marketdata/v1/markets", get(markets))
            .route("/trader/v1/accounts/accountNumbers", get(account_numbers))
            .route("/trader/v1/accounts/{hash}", get(account))
            .route("/trader/v1/accounts/{hash}/orders", post(place).get(list_orders))
            .route("/trader/v1/accounts/{hash}/orders/{id}", get(get_order).delete(cancel))
            .route("/trader/v1/userPreference", get(user_preference))
            .layer(middleware::from_fn_with_state(shared.clone(), bearer));
        let app = Router::new()
            .route("/v1/oauth/authorize", get(authorize))
            .route("/v1/oauth/token", post(token))
            .route("/ws", get(streamer))
            .merge(api)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let fake = Self { url: format!("http://{addr}"), shared, task };
        fake.issue_tokens();
        fake
    }

    pub fn config(&self) -> &FakeConfig {
        &self.shared.config
    }

    /// Issues a fresh login (as a code exchange would) and returns it as a
    /// token-file JSON document, for a test to write.
    pub fn issue_tokens(&self) -> Value {
        let mut s = self.shared.lock();
        let (access, refresh) = s.new_tokens(true);
        let now = Utc::now();
        json!({
            "access_token": access,
            "refresh_token": refresh,
            "access_expires_at": now + TimeDelta::minutes(30),
            "refresh_expires_at": now + TimeDelta::days(7),
        })
    }

    /// The current access and refresh tokens.
    pub fn tokens(&self) -> (String, String) {
        let s = self.shared.lock();
        (s.access_token.clone().unwrap_or_default(), s.refresh_token.clone().unwrap_or_default())
    }

    /// Invalidates the current access token now, as Schwab may.
    pub fn expire_access_token(&self) {
        self.shared.lock().access_token = None;
    }

    /// Refresh grants served so far.
    pub fn refresh_grants(&self) -> u64 {
        self.shared.lock().refresh_grants
    }

    /// Answers the next `n` API calls with 429.
    pub fn rate_limit_next(&self, n: u32) {
        self.shared.lock().rate_limited = n;
    }

    /// The next order POST places the order and then answers 502 Bad
    /// Gateway, as a proxy that lost Schwab's answer would: the broker
    /// cannot know whether the order exists.
    pub fn fail_next_order_after_effect(&self) {
        self.shared.lock().fail_next_order = true;
    }

    pub fn close_market(&self) {
        self.shared.lock().market_closed = true;
    }

    /// Every order body POSTed, as sent.
    pub fn order_posts(&self) -> Vec<Value> {
        self.shared.lock().order_posts.clone()
    }

    pub fn orders(&self) -> BTreeMap<i64, wire::Order> {
        self.shared.lock().orders.clone()
    }

    pub fn stream_logins(&self) -> u64 {
        self.shared.lock().stream_logins
    }

    /// Moves a symbol's quote and streams it to LEVELONE_EQUITIES subscribers.
    pub fn push_quote(&self, symbol: &str, bid: Decimal, ask: Decimal) {
        self.shared.lock().quotes.insert(symbol.to_string(), (bid, ask));
        let _ = self.shared.stream.send(StreamPush::Quote(symbol.to_string()));
    }

    /// Executes `quantity` of a working order at `price` and announces it
    /// on ACCT_ACTIVITY.
    pub fn fill(&self, order_id: i64, quantity: Decimal, price: Decimal) {
        let mut s = self.shared.lock();
        let activity_id = s.next_activity_id();
        let order = s.orders.get_mut(&order_id).expect("fill of an order the fake has");
        execute(order, activity_id, quantity, price);
        drop(s);
        let _ = self.shared.stream.send(StreamPush::Activity(order_id, "OrderFillCompleted"));
    }

    /// Closes every streamer socket (the broker must reconnect and log in again).
    pub fn drop_streams(&self) {
        let _ = self.shared.stream.send(StreamPush::Drop);
    }
}

impl Drop for FakeSchwab {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn streamer_info(&self) -> StreamerInfo {
        StreamerInfo {
            streamer_socket_url: self.ws_url.clone(),
            schwab_client_customer_id: "fake-customer-id".into(),
            schwab_client_correl_id: "fake-correl-id".into(),
            schwab_client_channel: "N9".into(),
            schwab_client_function_id: "APIAPP".into(),
        }
    }
}

impl FakeState {
    fn new_tokens(&mut self, new_refresh: bool) -> (String, String) {
        self.tokens_issued += 1;
        let access = format!("I0.fake-access-{}@", self.tokens_issued);
        self.access_token = Some(access.clone());
        if new_refresh || self.refresh_token.is_none() {
            self.refresh_token = Some(format!("fake-refresh-{}@", self.tokens_issued));
        }
        (access, self.refresh_token.clone().unwrap_or_default())
    }

    fn next_activity_id(&mut self) -> i64 {
        self.next_activity += 1;
        self.next_activity
    }
}

fn execute(order: &mut wire::Order, activity_id: i64, quantity: Decimal, price: Decimal) {
    let quantity = quantity.min(order.remaining_quantity);
    order.filled_quantity += quantity;
    order.remaining_quantity -= quantity;
    order.order_activity_collection.push(OrderActivity {
        activity_type: "EXECUTION".into(),
        activity_id,
        execution_type: "FILL".into(),
        quantity,
        execution_legs: vec![ExecutionLeg { leg_id: 1, price, quantity, time: wire::format_order_time(Utc::now()) }],
    });
    if order.remaining_quantity.is_zero() {
        order.status = "FILLED".into();
        order.cancelable = false;
        order.close_time = Some(wire::format_order_time(Utc::now()));
    }
}

// ── errors, as Schwab writes them ──

fn gateway_error(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = json!({"errors": [{"id": "0d5c1e5e-6f7b-4c3a-9a51-3f1f3b0f5a11", "status": status.as_u16().to_string(),
                                  "title": title, "detail": detail}]});
    (status, Json(body)).into_response()
}

fn trader_error(status: StatusCode, message: &str, errors: &[&str]) -> Response {
    (status, Json(json!({"message": message, "errors": errors}))).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({"error": error, "error_description": description}))).into_response()
}

/// Every API call: the rate-limit switch, then the bearer token.
async fn bearer(State(fake): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    {
        let mut s = fake.lock();
        if s.rate_limited > 0 {
            s.rate_limited -= 1;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "2")],
                Json(json!({"errors": [
                {"id": "rl", "status": "429", "title": "Too Many Requests", "detail": "Rate limit exceeded"}]})),
            )
                .into_response();
        }
        let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let valid = s.access_token.as_deref().map(|t| format!("Bearer {t}"));
        if presented.is_none() || presented.map(str::to_string) != valid {
            return gateway_error(StatusCode::UNAUTHORIZED, "Unauthorized", "Client not authorized");
        }
    }
    next.run(request).await
}

// ── OAuth ──

async fn authorize(State(fake): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    if q.get("client_id") != Some(&fake.config.app_key) || q.get("redirect_uri") != Some(&fake.config.redirect_uri) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "unknown client_id or redirect_uri");
    }
    let code = format!("C0.fake-code-{}@", fake.lock().issued_codes.len() + 1);
    fake.lock().issued_codes.push(code.clone());
    let target =
        reqwest::Url::parse_with_params(&fake.config.redirect_uri, &[("code", code.as_str()), ("session", "s-1")])
            .expect("redirect uri");
    Redirect::to(target.as_str()).into_response()
}

async fn token(
    State(fake): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", fake.config.app_key, fake.config.app_secret));
    let basic = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if basic != Some(format!("Basic {expected}").as_str()) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed");
    }
    let mut s = fake.lock();
    let new_refresh = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form.get("code").cloned().unwrap_or_default();
            let Some(pos) = s.issued_codes.iter().position(|c| *c == code) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "authorization code is invalid or used");
            };
            if form.get("redirect_uri") != Some(&fake.config.redirect_uri) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "redirect_uri does not match");
            }
            s.issued_codes.remove(pos);
            true
        }
        Some("refresh_token") => {
            if form.get("refresh_token") != s.refresh_token.as_ref() {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "refresh token is invalid or expired");
            }
            s.refresh_grants += 1;
            false
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "grant_type not supported"),
    };
    let (access, refresh) = s.new_tokens(new_refresh);
    Json(json!({"expires_in": 1800, "token_type": "Bearer", "scope": "api", "refresh_token": refresh,
                "access_token": access, "id_token": "fake-id-token"}))
    .into_response()
}

// ── market data ──

async fn quotes(State(fake): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = fake.lock();
    let mut answer = serde_json::Map::new();
    let mut invalid = Vec::new();
    for symbol in q.get("symbols").map(String::as_str).unwrap_or("").split(',').filter(|s| !s.is_empty()) {
        match s.quotes.get(symbol) {
            Some(&(bid, ask)) => {
                let entry = QuoteEntry {
                    asset_main_type: "EQUITY".into(),
                    symbol: symbol.into(),
                    quote: QuoteBlock {
                        bid_price: bid,
                        bid_size: Decimal::from(300),
                        ask_price: ask,
                        ask_size: Decimal::from(200),
                        last_price: Some(ask),
                        quote_time: Utc::now().timestamp_millis(),
                    },
                };
                answer.insert(symbol.into(), serde_json::to_value(entry).expect("quote"));
            }
            None => invalid.push(symbol.to_string()),
        }
    }
    if !invalid.is_empty() {
        answer.insert("errors".into(), json!({"invalidSymbols": invalid}));
    }
    Json(Value::Object(answer)).into_response()
}

async fn price_history(State(fake): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let symbol = q.get("symbol").cloned().unwrap_or_default();
    let Some(&(bid, _)) = fake.lock().quotes.get(&symbol) else {
        return gateway_error(StatusCode::NOT_FOUND, "Not Found", "symbol not found");
    };
    let start = Utc::now().timestamp_millis() / 60_000 * 60_000 - 600_000;
    let candles: Vec<Value> = (0..2)
        .map(|i| {
            json!({"open": n(bid), "high": n(bid + Decimal::ONE), "low": n(bid - Decimal::ONE), "close": n(bid),
                   "volume": 1000 + i, "datetime": start + i * 300_000})
        })
        .collect();
    Json(json!({"candles": candles, "symbol": symbol, "empty": false})).into_response()
}

/// Open: sessions around now (regular from an hour ago to an hour ahead).
async fn markets(State(fake): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let date = q.get("date").cloned().unwrap_or_default();
    let now = Utc::now();
    let body = if fake.lock().market_closed {
        json!({"equity": {"EQ": {"date": date, "marketType": "EQUITY", "exchange": "NULL", "category": "NULL",
                                "product": "EQ", "productName": "equity", "isOpen": false}}})
    } else {
        let t = |h: i64| (now + TimeDelta::hours(h)).to_rfc3339();
        json!({"equity": {"EQ": {"date": date, "marketType": "EQUITY", "exchange": "NULL", "category": "NULL",
            "product": "EQ", "productName": "equity", "isOpen": true, "sessionHours": {
                "preMarket": [{"start": t(-3), "end": t(-1)}],
                "regularMarket": [{"start": t(-1), "end": t(1)}],
                "postMarket": [{"start": t(1), "end": t(3)}]}}}})
    };
    Json(body).into_response()
}

// ── trader ──

/// Schwab's answer to an account hash it does not know.
fn wrong_account(fake: &Shared, hash: &str) -> Option<Response> {
    if hash == fake.config.account_hash {
        None
    } else {
        Some(trader_error(StatusCode::BAD_REQUEST, "Invalid account number", &["encrypted account number not found"]))
    }
}

async fn account_numbers(State(fake): State<Arc<Shared>>) -> Response {
    Json(vec![AccountNumber {
        account_number: fake.config.account_number.clone(),
        hash_value: fake.config.account_hash.clone(),
    }])
    .into_response()
}

async fn account(State(fake): State<Arc<Shared>>, Path(hash): Path<String>) -> Response {
    if let Some(r) = wrong_account(&fake, &hash) {
        return r;
    }
    let s = fake.lock();
    let mut spent = Decimal::ZERO;
    let mut held: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    for o in s.orders.values() {
        let leg = &o.order_leg_collection[0];
        let sign = if leg.instruction == "BUY" { Decimal::ONE } else { -Decimal::ONE };
        for a in &o.order_activity_collection {
            for l in &a.execution_legs {
                spent += sign * l.price * l.quantity;
                let h = held.entry(leg.instrument.symbol.clone()).or_default();
                h.0 += sign * l.quantity;
                h.1 += sign * l.price * l.quantity;
            }
        }
    }
    let positions: Vec<Value> = held
        .iter()
        .filter(|(_, (q, _))| !q.is_zero())
        .map(|(sym, (q, cost))| {
            let (long, short) = if q.is_sign_positive() { (*q, Decimal::ZERO) } else { (Decimal::ZERO, -*q) };
            json!({"shortQuantity": n(short), "averagePrice": n((cost / q).round_dp(4)), "longQuantity": n(long),
                   "instrument": {"assetType": "EQUITY", "cusip": "000000000", "symbol": sym}, "marketValue": n(*cost)})
        })
        .collect();
    let cash = fake.config.cash - spent;
    let body = json!({"securitiesAccount": {"type": "MARGIN", "accountNumber": fake.config.account_number,
        "roundTrips": 0, "isDayTrader": false, "isClosingOnlyRestricted": false, "pfcbFlag": false,
        "positions": positions,
        "currentBalances": {"availableFunds": n(cash), "buyingPower": n(cash * Decimal::TWO), "cashBalance": n(cash),
                            "liquidationValue": n(fake.config.cash)}}});
    Json(body).into_response()
}

/// A decimal as a JSON number, as Schwab sends amounts.
fn n(d: Decimal) -> Value {
    serde_json::from_str(&d.normalize().to_string()).expect("a decimal is a JSON number")
}

async fn place(State(fake): State<Arc<Shared>>, Path(hash): Path<String>, body: Bytes) -> Response {
    if let Some(r) = wrong_account(&fake, &hash) {
        return r;
    }
    let raw: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let request: OrderRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return trader_error(
                StatusCode::BAD_REQUEST,
                "A validation error occurred while processing the request.",
                &[&e.to_string()],
            )
        }
    };
    let mut s = fake.lock();
    s.order_posts.push(raw);
    let leg = &request.order_leg_collection[0];
    let Some(&(bid, ask)) = s.quotes.get(&leg.instrument.symbol) else {
        return trader_error(
            StatusCode::BAD_REQUEST,
            "A validation error occurred while processing the request.",
            &["Symbol is not valid"],
        );
    };
    if leg.quantity <= Decimal::ZERO
        || request.order_leg_collection.len() != 1
        || request.order_strategy_type != "SINGLE"
    {
        return trader_error(
            StatusCode::BAD_REQUEST,
            "A validation error occurred while processing the request.",
            &["Order quantity must be greater than zero"],
        );
    }
    s.next_order += 1;
    let order_id = s.next_order;
    let mut order = wire::Order {
        order_id,
        session: request.session.clone(),
        duration: request.duration.clone(),
        order_type: request.order_type.clone(),
        order_strategy_type: request.order_strategy_type.clone(),
        price: request.price,
        quantity: leg.quantity,
        filled_quantity: Decimal::ZERO,
        remaining_quantity: leg.quantity,
        order_leg_collection: request.order_leg_collection.clone(),
        status: "WORKING".into(),
        status_description: None,
        cancelable: true,
        entered_time: wire::format_order_time(Utc::now()),
        close_time: None,
        account_number: fake.config.account_number.parse().unwrap_or_default(),
        order_activity_collection: Vec::new(),
    };
    let buy = leg.instruction == "BUY";
    let touch = if buy { ask } else { bid };
    let marketable = match request.price {
        None => true,
        Some(p) => (buy && p >= ask) || (!buy && p <= bid),
    };
    if marketable {
        let activity_id = s.next_activity_id();
        let quantity = order.quantity;
        execute(&mut order, activity_id, quantity, touch);
    }
    s.orders.insert(order_id, order);
    let lose_answer = std::mem::take(&mut s.fail_next_order);
    drop(s);
    if lose_answer {
        return gateway_error(StatusCode::BAD_GATEWAY, "Bad Gateway", "upstream connection reset");
    }
    let _ = fake.stream.send(StreamPush::Activity(order_id, "OrderCreated"));
    if marketable {
        let _ = fake.stream.send(StreamPush::Activity(order_id, "OrderFillCompleted"));
    }
    let location = format!("{}/trader/v1/accounts/{hash}/orders/{order_id}", fake.base_url);
    (StatusCode::CREATED, [(header::LOCATION, location)]).into_response()
}

async fn get_order(State(fake): State<Arc<Shared>>, Path((hash, id)): Path<(String, i64)>) -> Response {
    if let Some(r) = wrong_account(&fake, &hash) {
        return r;
    }
    match fake.lock().orders.get(&id) {
        Some(o) => Json(o.clone()).into_response(),
        None => trader_error(StatusCode::NOT_FOUND, "Order not found", &[]),
    }
}

async fn cancel(State(fake): State<Arc<Shared>>, Path((hash, id)): Path<(String, i64)>) -> Response {
    if let Some(r) = wrong_account(&fake, &hash) {
        return r;
    }
    let mut s = fake.lock();
    let Some(order) = s.orders.get_mut(&id) else {
        return trader_error(StatusCode::NOT_FOUND, "Order not found", &[]);
    };
    if !order.cancelable {
        return trader_error(
            StatusCode::BAD_REQUEST,
            "Order cannot be canceled",
            &["order is not cancelable in its current state"],
        );
    }
    order.status = "CANCELED".into();
    order.cancelable = false;
    order.close_time = Some(wire::format_order_time(Utc::now()));
    drop(s);
    let _ = fake.stream.send(StreamPush::Activity(id, "UROutCompleted"));
    StatusCode::OK.into_response()
}

async fn list_orders(
    State(fake): State<Arc<Shared>>,
    Path(hash): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = wrong_account(&fake, &hash) {
        return r;
    }
    let parse = |k: &str| q.get(k).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
    let (Some(from), Some(to)) = (parse("fromEnteredTime"), parse("toEnteredTime")) else {
        return trader_error(
            StatusCode::BAD_REQUEST,
            "fromEnteredTime and toEnteredTime are required (yyyy-MM-dd'T'HH:mm:ss.SSSZ)",
            &[],
        );
    };
    let list: Vec<wire::Order> = fake
        .lock()
        .orders
        .values()
        .filter(|o| wire::parse_time(&o.entered_time).is_some_and(|t| from <= t && t <= to))
        .filter(|o| q.get("status").is_none_or(|s| *s == o.status))
        .cloned()
        .collect();
    Json(list).into_response()
}

async fn user_preference(State(fake): State<Arc<Shared>>) -> Response {
    Json(json!({"accounts": [{"accountNumber": fake.config.account_number, "primaryAccount": true, "type": "BROKERAGE",
                              "nickName": "Individual", "displayAcctId": "...678", "autoPositionEffect": false,
                              "accountColor": "Green"}],
                "streamerInfo": [fake.streamer_info()],
                "offers": [{"level2Permissions": true, "mktDataPermission": "NP"}]}))
    .into_response()
}

// ── streamer ──

async fn streamer(State(fake): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| stream_session(fake, socket))
}

async fn stream_session(fake: Arc<Shared>, mut socket: WebSocket) {
    let mut pushes = fake.stream.subscribe();
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    let mut logged_in = false;
    let mut quote_keys: Vec<String> = Vec::new();
    let mut activity = false;
    loop {
        let out: Vec<Value> = tokio::select! {
            _ = heartbeat.tick() => vec![json!({"notify": [{"heartbeat": Utc::now().timestamp_millis().to_string()}]})],
            push = pushes.recv() => match push {
                Ok(StreamPush::Drop) | Err(broadcast::error::RecvError::Closed) => return,
                Ok(StreamPush::Quote(sym)) if logged_in && quote_keys.contains(&sym) => vec![level_one(&fake, &[sym])],
                Ok(StreamPush::Activity(id, kind)) if logged_in && activity => vec![account_activity(&fake, id, kind)],
                _ => continue,
            },
            msg = socket.recv() => {
                let Some(Ok(Message::Text(text))) = msg else {
                    match msg { Some(Ok(_)) => continue, _ => return }
                };
                let Ok(frame) = serde_json::from_str::<Requests>(text.as_str()) else {
                    let _ = socket.send(Message::text(json!({"response": [{"service": "ADMIN", "command": "UNKNOWN",
                        "requestid": "-1", "SchwabClientCorrelId": "", "timestamp": Utc::now().timestamp_millis(),
                        "content": {"code": 21, "msg": "Bad command formatting"}}]}).to_string())).await;
                    continue;
                };
                let mut out = Vec::new();
                for r in frame.requests {
                    let (code, msg) = match (r.service.as_str(), r.command.as_str()) {
                        ("ADMIN", "LOGIN") => {
                            let token = r.parameters.get("Authorization");
                            let ok = token.is_some() && token == fake.lock().access_token.as_ref()
                                && r.customer_id == "fake-customer-id" && r.parameters.contains_key("SchwabClientChannel");
                            logged_in = ok;
                            if ok { fake.lock().stream_logins += 1; }
                            if ok { (0, "server=fake;status=PN".to_string()) } else { (3, "Login denied".to_string()) }
                        }
                        _ if !logged_in => (19, "not logged in".to_string()),
                        ("LEVELONE_EQUITIES", "SUBS") => {
                            quote_keys = r.parameters.get("keys").map(|k| k.split(',').map(str::to_string).collect()).unwrap_or_default();
                            (0, "SUBS command succeeded".to_string())
                        }
                        ("ACCT_ACTIVITY", "SUBS") => {
                            activity = true;
                            (0, "SUBS command succeeded".to_string())
                        }
                        ("ADMIN", "LOGOUT") => return,
                        _ => (22, "service or command not available".to_string()),
                    };
                    out.push(json!({"response": [{"service": r.service, "command": r.command, "requestid": r.requestid,
                        "SchwabClientCorrelId": r.correl_id, "timestamp": Utc::now().timestamp_millis(),
                        "content": {"code": code, "msg": msg}}]}));
                    if code == 0 && r.service == "LEVELONE_EQUITIES" {
                        out.push(level_one(&fake, &quote_keys));
                    }
                    if code == 0 && r.service == "ACCT_ACTIVITY" {
                        out.push(json!({"data": [{"service": "ACCT_ACTIVITY", "timestamp": Utc::now().timestamp_millis(),
                            "command": "SUBS", "content": [{"seq": 0, "key": "Account Activity", "1": "", "2": "SUBSCRIBED", "3": ""}]}]}));
                    }
                }
                out
            }
        };
        for frame in out {
            debug_assert!(serde_json::from_value::<Incoming>(frame.clone()).is_ok(), "the fake speaks the protocol");
            if socket.send(Message::text(frame.to_string())).await.is_err() {
                return;
            }
        }
    }
}

fn level_one(fake: &Shared, keys: &[String]) -> Value {
    let s = fake.lock();
    let content: Vec<Value> = keys
        .iter()
        .filter_map(|k| s.quotes.get(k).map(|(bid, ask)| (k, bid, ask)))
        .map(|(k, bid, ask)| {
            json!({"key": k, "delayed": false, "assetMainType": "EQUITY", "1": n(*bid), "2": n(*ask), "3": n(*ask),
                   "4": 300, "5": 200, "35": Utc::now().timestamp_millis()})
        })
        .collect();
    json!({"data": [{"service": "LEVELONE_EQUITIES", "timestamp": Utc::now().timestamp_millis(), "command": "SUBS", "content": content}]})
}

fn account_activity(fake: &Shared, order_id: i64, kind: &str) -> Value {
    let data = json!({"SchwabOrderID": order_id.to_string(), "AccountNumber": fake.config.account_number}).to_string();
    json!({"data": [{"service": "ACCT_ACTIVITY", "timestamp": Utc::now().timestamp_millis(), "command": "SUBS",
        "content": [{"seq": 1, "key": "Account Activity", "1": fake.config.account_number, "2": kind, "3": data}]}]})
}

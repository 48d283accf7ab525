//! A fake Schwab Trader API and Market Data API on 127.0.0.1 that shares
//! nothing with the adapter it tests: it reads requests as raw JSON and
//! answers with Schwab's documented examples (`tests/fixtures/schwab/`,
//! each naming its source), filled in with the values of the moment.
//!
//! - OAuth: `GET /v1/oauth/authorize` redirects to the registered redirect
//!   URI with `?code=…%40&session=…`; `POST /v1/oauth/token` checks HTTP
//!   Basic app credentials and the form (`authorization_code` with an
//!   issued code and the same redirect URI, or `refresh_token`). Access
//!   tokens live 30 minutes, refresh tokens 7 days, on the fake's clock
//!   ([`FakeSchwab::advance_clock`]); a dead refresh token gets Schwab's
//!   400 `unsupported_token_type` / `refresh_token_authentication_error`.
//! - Every market data and trader call needs `Authorization: Bearer` with a
//!   live access token, else the gateway's 401.
//! - Market data: quotes (sizes in shares), price history, equity hours.
//! - Trader: account numbers → hashes, accounts (MARGIN or CASH, each with
//!   its own balance fields), orders: a POST is checked field by field
//!   against the documented order schema and answered `201` with a
//!   `Location` header or Schwab's 400 body; GET one, GET lists by entered
//!   time and status, DELETE. A small fill engine: market orders and
//!   marketable limits fill at once at the quote; others work until
//!   [`FakeSchwab::fill`] or a cancel.
//! - `userPreference` points at the fake's streamer (`/ws`): LOGIN checks
//!   the token and ids, one connection per user (a second LOGIN closes the
//!   first with code 12), LEVELONE_EQUITIES (sizes 4 and 5 in lots of 100),
//!   ACCT_ACTIVITY, a heartbeat `notify`.
//! - Schwab's rules that bite, each switchable: see [`Rules`] and the
//!   `FakeSchwab` methods.

mod fixtures;
mod streamer;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use fixtures::{ACCOUNTS, ERRORS, MARKETDATA, OAUTH, ORDERS, USER_PREFERENCE};

/// How long Schwab's access tokens live (`expires_in: 1800`).
pub const ACCESS_TOKEN_LIFE: TimeDelta = TimeDelta::minutes(30);
/// How long a refresh token lives: seven days (schwab-py docs/auth.rst).
pub const REFRESH_TOKEN_LIFE: TimeDelta = TimeDelta::days(7);
/// The order requests per minute per account an app gets when registered
/// with the recommended setting (schwab-py docs/getting-started.rst).
pub const DEFAULT_ORDERS_PER_MINUTE: u32 = 120;

/// What the fake starts with.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub app_key: String,
    pub app_secret: String,
    pub redirect_uri: String,
    /// The accounts the login can see; the first is the primary one.
    pub accounts: Vec<FakeAccount>,
    /// The quote of each symbol the fake knows.
    pub quotes: BTreeMap<String, FakeQuote>,
    pub rules: Rules,
}

/// One brokerage account.
#[derive(Debug, Clone)]
pub struct FakeAccount {
    pub number: String,
    pub hash: String,
    pub kind: AccountKind,
    /// Cash at the start of the day.
    pub cash: Decimal,
}

/// `securitiesAccount.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    Margin,
    Cash,
}

/// A top of book. Sizes are in shares, as `/marketdata/v1/quotes` gives
/// them; the streamer sends them in lots of 100.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FakeQuote {
    pub bid: Decimal,
    pub ask: Decimal,
    pub bid_size: Decimal,
    pub ask_size: Decimal,
    pub last: Decimal,
}

impl FakeQuote {
    /// Bid and ask with 300 shares bid, 200 offered, last at the ask.
    pub fn new(bid: Decimal, ask: Decimal) -> Self {
        Self { bid, ask, bid_size: Decimal::from(300), ask_size: Decimal::from(200), last: ask }
    }
}

/// Schwab's rules that a test may relax or tighten.
#[derive(Debug, Clone)]
pub struct Rules {
    /// LEVELONE_EQUITIES fields 4 and 5 in lots of 100 shares, as the
    /// streamer guide says (otherwise in shares).
    pub level_one_sizes_in_lots: bool,
    /// `duration: IMMEDIATE_OR_CANCEL` (and the other durations Schwab
    /// refuses for equities) answered 400, as schwab-py issue 226 measured.
    pub reject_refused_durations: bool,
    /// A MARKET order with a session other than NORMAL answered 400.
    pub market_orders_normal_session_only: bool,
    /// Order requests (place, replace, cancel) per minute per account;
    /// `None` for no limit.
    pub orders_per_minute: Option<u32>,
    /// How long a new order takes to appear in the order lists.
    pub list_lag: Duration,
    /// The streamer's heartbeat period.
    pub heartbeat_every: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            level_one_sizes_in_lots: true,
            reject_refused_durations: true,
            market_orders_normal_session_only: true,
            orders_per_minute: Some(DEFAULT_ORDERS_PER_MINUTE),
            list_lag: Duration::ZERO,
            heartbeat_every: Duration::from_secs(1),
        }
    }
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            app_key: "fake-app-key-1234".into(),
            app_secret: "fake-app-secret-5678".into(),
            redirect_uri: "https://127.0.0.1".into(),
            accounts: vec![FakeAccount {
                number: "12345678".into(),
                hash: "E5B2A1C0F9D8A7B6C5D4E3F2A1B0C9D8E7F6A5B4C3D2E1F0A9B8C7D6E5F4A3B2".into(),
                kind: AccountKind::Margin,
                cash: Decimal::from(100_000),
            }],
            quotes: [
                ("AAPL".to_string(), FakeQuote::new(Decimal::new(19025, 2), Decimal::new(19027, 2))),
                ("MSFT".to_string(), FakeQuote::new(Decimal::new(41210, 2), Decimal::new(41215, 2))),
            ]
            .into(),
            rules: Rules::default(),
        }
    }
}

impl FakeConfig {
    /// Adds a CASH account beside the default MARGIN one.
    pub fn with_cash_account(mut self, number: &str, hash: &str, cash: Decimal) -> Self {
        self.accounts.push(FakeAccount { number: number.into(), hash: hash.into(), kind: AccountKind::Cash, cash });
        self
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
    /// Events for every streamer socket (each filters what it subscribed to).
    stream: broadcast::Sender<StreamPush>,
}

#[derive(Clone, Debug)]
enum StreamPush {
    Quote(String),
    Activity {
        account: String,
        order_id: i64,
        kind: &'static str,
    },
    Drop,
    /// Streamer session `keep` logged in: every other logged-in session of
    /// the same customer gets code 12 and is closed.
    LoggedIn {
        keep: u64,
    },
}

/// One order as the fake keeps it: Schwab's JSON plus what the fill engine
/// and the list filters need.
#[derive(Clone, Debug)]
struct FakeOrder {
    json: Value,
    hash: String,
    symbol: String,
    quantity: Decimal,
    buy: bool,
    entered: DateTime<Utc>,
    /// When the order appears in the order lists.
    listed_from: DateTime<Utc>,
}

#[derive(Default)]
struct FakeState {
    issued_codes: Vec<String>,
    /// Live access tokens and when each expires.
    access_tokens: HashMap<String, DateTime<Utc>>,
    refresh_token: Option<(String, DateTime<Utc>)>,
    tokens_issued: u64,
    refresh_grants: u64,
    /// Added to the wall clock: a test moves time forward without waiting.
    clock_offset: TimeDelta,
    orders: BTreeMap<i64, FakeOrder>,
    order_posts: Vec<Value>,
    next_order: i64,
    next_activity: i64,
    rate_limited: u32,
    /// Order requests per account hash in the last minute.
    order_requests: HashMap<String, VecDeque<DateTime<Utc>>>,
    /// The next order POST takes effect, then answers 502.
    fail_next_order: bool,
    /// The next order POST takes effect, then waits this long to answer.
    hang_next_order: Option<Duration>,
    market_closed: bool,
    quotes: BTreeMap<String, FakeQuote>,
    rules: Rules,
    stream_logins: u64,
    next_stream_session: u64,
}

impl FakeState {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }
}

impl FakeSchwab {
    /// Starts the fake on 127.0.0.1, on a free port, with one login issued
    /// (see [`FakeSchwab::tokens`]).
    pub async fn start(config: FakeConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = FakeState {
            quotes: config.quotes.clone(),
            rules: config.rules.clone(),
            next_order: 1_000_100,
            ..FakeState::default()
        };
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
            .route("/trader/v1/accounts", get(all_accounts))
            .route("/trader/v1/accounts/{hash}", get(account))
            .route("/trader/v1/accounts/{hash}/orders", post(place).get(list_orders))
            .route("/trader/v1/accounts/{hash}/orders/{id}", get(get_order).delete(cancel))
            .route("/trader/v1/userPreference", get(user_preference))
            .layer(middleware::from_fn_with_state(shared.clone(), bearer));
        let app = Router::new()
            .route("/v1/oauth/authorize", get(authorize))
            .route("/v1/oauth/token", post(token))
            .route("/ws", get(streamer::upgrade))
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

    /// The primary account's number and hash.
    pub fn account(&self) -> (String, String) {
        let a = &self.shared.config.accounts[0];
        (a.number.clone(), a.hash.clone())
    }

    // ── tokens ──

    /// Issues a fresh login (as a code exchange would) and returns it as a
    /// token-file JSON document, for a test to write.
    pub fn issue_tokens(&self) -> Value {
        let mut s = self.shared.lock();
        let (access, refresh) = new_tokens(&mut s, true);
        let now = Utc::now();
        json!({
            "access_token": access,
            "refresh_token": refresh,
            "access_expires_at": now + ACCESS_TOKEN_LIFE,
            "refresh_expires_at": now + REFRESH_TOKEN_LIFE,
        })
    }

    /// The newest access token and the refresh token.
    pub fn tokens(&self) -> (String, String) {
        let s = self.shared.lock();
        let newest = s.access_tokens.iter().max_by_key(|(_, at)| **at).map(|(t, _)| t.clone());
        (newest.unwrap_or_default(), s.refresh_token.as_ref().map(|r| r.0.clone()).unwrap_or_default())
    }

    /// Invalidates every access token now, as Schwab may.
    pub fn expire_access_token(&self) {
        self.shared.lock().access_tokens.clear();
    }

    /// Kills the refresh token: credentials that stop working. The token
    /// endpoint answers Schwab's 400 `refresh_token_authentication_error`
    /// until a new login ([`FakeSchwab::issue_tokens`]).
    pub fn expire_refresh_token(&self) {
        let mut s = self.shared.lock();
        s.refresh_token = None;
        s.access_tokens.clear();
    }

    /// Moves the fake's clock forward: past 30 minutes access tokens die,
    /// past 7 days the refresh token does.
    pub fn advance_clock(&self, by: TimeDelta) {
        self.shared.lock().clock_offset += by;
    }

    /// Refresh grants served so far.
    pub fn refresh_grants(&self) -> u64 {
        self.shared.lock().refresh_grants
    }

    // ── switches ──

    /// Answers the next `n` API calls with the gateway's 429 and `Retry-After: 2`.
    pub fn rate_limit_next(&self, n: u32) {
        self.shared.lock().rate_limited = n;
    }

    /// The order requests (place, replace, cancel) allowed per minute per
    /// account; `None` lifts the limit. Schwab's default is 120.
    pub fn set_orders_per_minute(&self, limit: Option<u32>) {
        self.shared.lock().rules.orders_per_minute = limit;
    }

    /// How long a new order takes to appear in the order lists (GET by id
    /// finds it at once).
    pub fn set_list_lag(&self, lag: Duration) {
        self.shared.lock().rules.list_lag = lag;
    }

    /// Sizes on the streamer in lots of 100 (`true`, Schwab's way) or shares.
    pub fn set_level_one_sizes_in_lots(&self, lots: bool) {
        self.shared.lock().rules.level_one_sizes_in_lots = lots;
    }

    /// Whether IMMEDIATE_OR_CANCEL (and the other refused durations) get 400.
    pub fn set_reject_refused_durations(&self, reject: bool) {
        self.shared.lock().rules.reject_refused_durations = reject;
    }

    /// Whether a MARKET order outside the NORMAL session gets 400.
    pub fn set_market_orders_normal_session_only(&self, only: bool) {
        self.shared.lock().rules.market_orders_normal_session_only = only;
    }

    /// The next order POST places the order and then answers 502 Bad
    /// Gateway, as a proxy that lost Schwab's answer would: the broker
    /// cannot know whether the order exists.
    pub fn fail_next_order_after_effect(&self) {
        self.shared.lock().fail_next_order = true;
    }

    /// The next order POST places the order, then holds its answer for
    /// `delay` (past the client's time-out): an order whose answer is lost.
    pub fn hang_next_order_after_effect(&self, delay: Duration) {
        self.shared.lock().hang_next_order = Some(delay);
    }

    pub fn close_market(&self) {
        self.shared.lock().market_closed = true;
    }

    pub fn open_market(&self) {
        self.shared.lock().market_closed = false;
    }

    /// Closes every streamer socket (the broker must reconnect and log in again).
    pub fn drop_streams(&self) {
        let _ = self.shared.stream.send(StreamPush::Drop);
    }

    // ── what the venue holds ──

    /// Every order body POSTed, as sent (valid or not).
    pub fn order_posts(&self) -> Vec<Value> {
        self.shared.lock().order_posts.clone()
    }

    /// Every order the venue holds, by Schwab order id, as `GET …/orders/{id}` answers it.
    pub fn orders(&self) -> BTreeMap<i64, Value> {
        self.shared.lock().orders.iter().map(|(id, o)| (*id, o.json.clone())).collect()
    }

    /// How many orders the venue holds.
    pub fn order_count(&self) -> usize {
        self.shared.lock().orders.len()
    }

    /// How many single orders the venue holds for `symbol`, `quantity` and
    /// (for limits) `price`, compared as exact decimals.
    pub fn orders_matching(&self, symbol: &str, quantity: Decimal, price: Option<Decimal>) -> usize {
        let s = self.shared.lock();
        s.orders
            .values()
            .filter(|o| o.symbol == symbol && o.quantity == quantity)
            .filter(|o| decimal(&o.json["price"]) == price)
            .count()
    }

    /// Places an OCO (a limit sell and a stop sell of `quantity` `symbol`)
    /// as another app on the same account would; returns its order id.
    pub fn place_foreign_oco(&self, symbol: &str, quantity: Decimal) -> i64 {
        let mut s = self.shared.lock();
        let now = s.now();
        let account = self.shared.config.accounts[0].clone();
        let mut oco = ORDERS.get("oco");
        let parent = next_order_id(&mut s);
        oco["orderId"] = json!(parent);
        oco["enteredTime"] = json!(order_time(now));
        oco["accountNumber"] = account_number_json(&account.number);
        if let Some(children) = oco["childOrderStrategies"].as_array_mut() {
            for child in children {
                child["orderId"] = json!(next_order_id(&mut s));
                child["enteredTime"] = json!(order_time(now));
                child["accountNumber"] = account_number_json(&account.number);
                for key in ["quantity", "remainingQuantity"] {
                    child[key] = number(quantity);
                }
                child["orderLegCollection"][0]["quantity"] = number(quantity);
                child["orderLegCollection"][0]["instrument"]["symbol"] = json!(symbol);
            }
        }
        let order = FakeOrder {
            json: oco,
            hash: account.hash,
            symbol: symbol.into(),
            quantity,
            buy: false,
            entered: now,
            listed_from: now,
        };
        s.orders.insert(parent, order);
        parent
    }

    pub fn stream_logins(&self) -> u64 {
        self.shared.lock().stream_logins
    }

    // ── market ──

    /// Sets a symbol's quote (sizes in shares) and streams it to
    /// LEVELONE_EQUITIES subscribers.
    pub fn set_quote(&self, symbol: &str, quote: FakeQuote) {
        self.shared.lock().quotes.insert(symbol.to_string(), quote);
        let _ = self.shared.stream.send(StreamPush::Quote(symbol.to_string()));
    }

    /// Moves a symbol's bid and ask (sizes as before) and streams it.
    pub fn push_quote(&self, symbol: &str, bid: Decimal, ask: Decimal) {
        let quote = {
            let s = self.shared.lock();
            let before = s.quotes.get(symbol).copied().unwrap_or_else(|| FakeQuote::new(bid, ask));
            FakeQuote { bid, ask, ..before }
        };
        self.set_quote(symbol, quote);
    }

    /// Executes `quantity` of a working order at `price` and announces it
    /// on ACCT_ACTIVITY.
    pub fn fill(&self, order_id: i64, quantity: Decimal, price: Decimal) {
        let mut s = self.shared.lock();
        let activity_id = next_activity_id(&mut s);
        let now = s.now();
        let order = s.orders.get_mut(&order_id).expect("fill of an order the fake has");
        execute(order, activity_id, quantity, price, now);
        let account = self.shared.account_number(&order.hash);
        drop(s);
        let _ = self.shared.stream.send(StreamPush::Activity { account, order_id, kind: "OrderFillCompleted" });
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

    fn account_by_hash(&self, hash: &str) -> Option<&FakeAccount> {
        self.config.accounts.iter().find(|a| a.hash == hash)
    }

    fn account_number(&self, hash: &str) -> String {
        self.account_by_hash(hash).map(|a| a.number.clone()).unwrap_or_default()
    }

    /// `userPreference.streamerInfo[0]`, pointing at this fake.
    fn streamer_info(&self) -> Value {
        let mut body = USER_PREFERENCE.get("body");
        let info = &mut body["streamerInfo"][0];
        info["streamerSocketUrl"] = json!(self.ws_url);
        info.clone()
    }
}

fn new_tokens(s: &mut FakeState, new_refresh: bool) -> (String, String) {
    s.tokens_issued += 1;
    let now = s.now();
    let access = format!("I0.fake-access-{}@", s.tokens_issued);
    s.access_tokens.insert(access.clone(), now + ACCESS_TOKEN_LIFE);
    if new_refresh || s.refresh_token.is_none() {
        s.refresh_token = Some((format!("fake-refresh-{}@", s.tokens_issued), now + REFRESH_TOKEN_LIFE));
    }
    (access, s.refresh_token.as_ref().map(|r| r.0.clone()).unwrap_or_default())
}

fn next_order_id(s: &mut FakeState) -> i64 {
    s.next_order += 1;
    s.next_order
}

fn next_activity_id(s: &mut FakeState) -> i64 {
    s.next_activity += 1;
    s.next_activity
}

/// Schwab's order time: `2024-03-29T14:30:00+0000`.
fn order_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%z").to_string()
}

/// Schwab sends `accountNumber` inside orders as a JSON number.
fn account_number_json(number: &str) -> Value {
    number.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(number))
}

/// A decimal as a JSON number, as Schwab sends amounts (exact digits, no float on the way).
fn number(d: Decimal) -> Value {
    serde_json::from_str(&d.normalize().to_string()).expect("a decimal is a JSON number")
}

/// A JSON number or numeric string as a decimal, digit for digit.
fn decimal(v: &Value) -> Option<Decimal> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    Decimal::from_str(&text).or_else(|_| Decimal::from_scientific(&text)).ok()
}

fn execute(order: &mut FakeOrder, activity_id: i64, quantity: Decimal, price: Decimal, now: DateTime<Utc>) {
    let filled = decimal(&order.json["filledQuantity"]).unwrap_or_default();
    let remaining = order.quantity - filled;
    let quantity = quantity.min(remaining);
    let (filled, remaining) = (filled + quantity, remaining - quantity);
    let mut activity = ORDERS.get("execution");
    activity["activityId"] = json!(activity_id);
    activity["quantity"] = number(quantity);
    activity["orderRemainingQuantity"] = number(remaining);
    activity["executionLegs"][0]["quantity"] = number(quantity);
    activity["executionLegs"][0]["price"] = number(price);
    activity["executionLegs"][0]["time"] = json!(order_time(now));
    let json = &mut order.json;
    json["filledQuantity"] = number(filled);
    json["remainingQuantity"] = number(remaining);
    match json.get_mut("orderActivityCollection").and_then(Value::as_array_mut) {
        Some(list) => list.push(activity),
        None => json["orderActivityCollection"] = json!([activity]),
    }
    if remaining.is_zero() {
        json["status"] = json!("FILLED");
        json["cancelable"] = json!(false);
        json["editable"] = json!(false);
        json["closeTime"] = json!(order_time(now));
    }
}

// ── errors, as Schwab writes them ──

fn error_body(status: StatusCode, name: &str) -> Response {
    (status, Json(ERRORS.get(name))).into_response()
}

/// The Trader API's `{"message","errors":[…]}` with the fixture's placeholders filled.
fn trader_error(status: StatusCode, name: &str, fill: &[(&str, &str)]) -> Response {
    let mut text = ERRORS.get(name).to_string();
    for (key, value) in fill {
        text = text.replace(&format!("{{{key}}}"), value);
    }
    let body: Value = serde_json::from_str(&text).expect("filled fixture is JSON");
    (status, Json(body)).into_response()
}

fn validation_error(detail: &str) -> Response {
    trader_error(StatusCode::BAD_REQUEST, "trader_validation", &[("DETAIL", &detail.replace('"', "'"))])
}

fn oauth_error(status: StatusCode, name: &str) -> Response {
    (status, Json(OAUTH.get(name))).into_response()
}

/// Every API call: the rate-limit switch, then the bearer token.
async fn bearer(State(fake): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    {
        let mut s = fake.lock();
        if s.rate_limited > 0 {
            s.rate_limited -= 1;
            let body = Json(ERRORS.get("gateway_rate_limited"));
            return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "2")], body).into_response();
        }
        let now = s.now();
        let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = presented.and_then(|p| p.strip_prefix("Bearer "));
        let live = token.and_then(|t| s.access_tokens.get(t)).is_some_and(|expires| now < *expires);
        if !live {
            return error_body(StatusCode::UNAUTHORIZED, "gateway_unauthorized");
        }
    }
    next.run(request).await
}

// ── OAuth ──

async fn authorize(State(fake): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    if q.get("client_id") != Some(&fake.config.app_key) || q.get("redirect_uri") != Some(&fake.config.redirect_uri) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_client");
    }
    let code = {
        let mut s = fake.lock();
        let code = format!("C0.fake-code-{}@", s.issued_codes.len() + 1);
        s.issued_codes.push(code.clone());
        code
    };
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
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let mut s = fake.lock();
    let new_refresh = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form.get("code").cloned().unwrap_or_default();
            let Some(pos) = s.issued_codes.iter().position(|c| *c == code) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            if form.get("redirect_uri") != Some(&fake.config.redirect_uri) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            s.issued_codes.remove(pos);
            true
        }
        Some("refresh_token") => {
            let now = s.now();
            let live = s
                .refresh_token
                .as_ref()
                .is_some_and(|(t, expires)| Some(t) == form.get("refresh_token") && now < *expires);
            if !live {
                return oauth_error(StatusCode::BAD_REQUEST, "refresh_token_dead");
            }
            s.refresh_grants += 1;
            false
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    let (access, refresh) = new_tokens(&mut s, new_refresh);
    let mut body = OAUTH.get("token");
    body["access_token"] = json!(access);
    body["refresh_token"] = json!(refresh);
    body["id_token"] = json!("fake-id-token");
    Json(body).into_response()
}

// ── market data ──

async fn quotes(State(fake): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = fake.lock();
    let now = s.now().timestamp_millis();
    let mut answer = serde_json::Map::new();
    let mut invalid = Vec::new();
    for symbol in q.get("symbols").map(String::as_str).unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty())
    {
        let Some(quote) = s.quotes.get(symbol) else {
            invalid.push(symbol.to_string());
            continue;
        };
        let mut entry = MARKETDATA.get("quote");
        entry["symbol"] = json!(symbol);
        let block = &mut entry["quote"];
        block["bidPrice"] = number(quote.bid);
        block["askPrice"] = number(quote.ask);
        block["bidSize"] = number(quote.bid_size);
        block["askSize"] = number(quote.ask_size);
        block["lastPrice"] = number(quote.last);
        block["mark"] = number(quote.last);
        for key in ["quoteTime", "askTime", "bidTime", "tradeTime"] {
            block[key] = json!(now);
        }
        answer.insert(symbol.into(), entry);
    }
    if !invalid.is_empty() {
        answer.insert("errors".into(), json!({"invalidSymbols": invalid}));
    }
    Json(Value::Object(answer)).into_response()
}

async fn price_history(State(fake): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let symbol = q.get("symbol").cloned().unwrap_or_default();
    let s = fake.lock();
    let Some(quote) = s.quotes.get(&symbol).copied() else {
        return error_body(StatusCode::NOT_FOUND, "marketdata_not_found");
    };
    let start = s.now().timestamp_millis() / 60_000 * 60_000 - 600_000;
    let bid = quote.bid;
    let candles: Vec<Value> = (0..2)
        .map(|i| {
            let mut c = MARKETDATA.get("candle");
            c["open"] = number(bid);
            c["high"] = number(bid + Decimal::ONE);
            c["low"] = number(bid - Decimal::ONE);
            c["close"] = number(bid);
            c["volume"] = json!(1000 + i);
            c["datetime"] = json!(start + i * 300_000);
            c
        })
        .collect();
    let mut body = MARKETDATA.get("price_history");
    body["symbol"] = json!(symbol);
    body["candles"] = json!(candles);
    Json(body).into_response()
}

/// Open: sessions around now (regular from an hour ago to an hour ahead).
async fn markets(State(fake): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let date = q.get("date").cloned().unwrap_or_default();
    let s = fake.lock();
    let now = s.now();
    if s.market_closed {
        let mut body = MARKETDATA.get("hours_closed");
        body["equity"]["equity"]["date"] = json!(date);
        return Json(body).into_response();
    }
    let t = |h: i64| json!((now + TimeDelta::hours(h)).to_rfc3339());
    let mut body = MARKETDATA.get("hours_open");
    let eq = &mut body["equity"]["EQ"];
    eq["date"] = json!(date);
    let sessions = &mut eq["sessionHours"];
    sessions["preMarket"] = json!([{"start": t(-3), "end": t(-1)}]);
    sessions["regularMarket"] = json!([{"start": t(-1), "end": t(1)}]);
    sessions["postMarket"] = json!([{"start": t(1), "end": t(3)}]);
    Json(body).into_response()
}

// ── trader ──

/// Schwab's answer to an account hash it does not know.
fn wrong_account(fake: &Shared, hash: &str) -> Option<Response> {
    match fake.account_by_hash(hash) {
        Some(_) => None,
        None => Some(trader_error(StatusCode::BAD_REQUEST, "trader_account_not_found", &[])),
    }
}

async fn account_numbers(State(fake): State<Arc<Shared>>) -> Response {
    let list: Vec<Value> = fake
        .config
        .accounts
        .iter()
        .map(|a| {
            let mut entry = ACCOUNTS.get("account_numbers_entry");
            entry["accountNumber"] = json!(a.number);
            entry["hashValue"] = json!(a.hash);
            entry
        })
        .collect();
    Json(list).into_response()
}

async fn all_accounts(State(fake): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let with_positions = q.get("fields").is_some_and(|f| f.split(',').any(|f| f == "positions"));
    let list: Vec<Value> = fake.config.accounts.iter().map(|a| account_json(&fake, a, with_positions)).collect();
    Json(list).into_response()
}

async fn account(
    State(fake): State<Arc<Shared>>,
    Path(hash): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(a) = fake.account_by_hash(&hash) else {
        return trader_error(StatusCode::BAD_REQUEST, "trader_account_not_found", &[]);
    };
    let with_positions = q.get("fields").is_some_and(|f| f.split(',').any(|f| f == "positions"));
    Json(account_json(&fake, a, with_positions)).into_response()
}

/// The account from its type's fixture: positions from the fills, cash
/// less what they cost. Positions only with `fields=positions`, as Schwab.
fn account_json(fake: &Shared, a: &FakeAccount, with_positions: bool) -> Value {
    let s = fake.lock();
    let mut spent = Decimal::ZERO;
    let mut held: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    for o in s.orders.values().filter(|o| o.hash == a.hash) {
        let sign = if o.buy { Decimal::ONE } else { -Decimal::ONE };
        let activities = o.json["orderActivityCollection"].as_array().cloned().unwrap_or_default();
        for leg in activities.iter().flat_map(|a| a["executionLegs"].as_array().cloned().unwrap_or_default()) {
            let (Some(price), Some(quantity)) = (decimal(&leg["price"]), decimal(&leg["quantity"])) else {
                continue;
            };
            spent += sign * price * quantity;
            let h = held.entry(o.symbol.clone()).or_default();
            h.0 += sign * quantity;
            h.1 += sign * price * quantity;
        }
    }
    let positions: Vec<Value> = held
        .iter()
        .filter(|(_, (q, _))| !q.is_zero())
        .map(|(sym, (q, cost))| {
            let (long, short) = if q.is_sign_positive() { (*q, Decimal::ZERO) } else { (Decimal::ZERO, -*q) };
            let mut p = ACCOUNTS.get("position");
            p["longQuantity"] = number(long);
            p["settledLongQuantity"] = number(long);
            p["shortQuantity"] = number(short);
            p["averagePrice"] = number((cost / q).round_dp(4));
            p["averageLongPrice"] = p["averagePrice"].clone();
            p["marketValue"] = number(*cost);
            p["instrument"]["symbol"] = json!(sym);
            p
        })
        .collect();
    let cash = a.cash - spent;
    let long_value: Decimal = held.values().map(|(_, cost)| *cost).sum();
    let liquidation = cash + long_value;
    let mut body = ACCOUNTS.get(match a.kind {
        AccountKind::Margin => "margin",
        AccountKind::Cash => "cash",
    });
    let account = &mut body["securitiesAccount"];
    account["accountNumber"] = json!(a.number);
    if with_positions {
        account["positions"] = json!(positions);
    } else if let Some(map) = account.as_object_mut() {
        map.remove("positions");
    }
    for balances in ["initialBalances", "currentBalances", "projectedBalances"] {
        let (cash_now, liquidation_now) =
            if balances == "initialBalances" { (a.cash, a.cash) } else { (cash, liquidation) };
        let Some(map) = account[balances].as_object_mut() else { continue };
        let mut set = |key: &str, v: Decimal| {
            if map.contains_key(key) {
                map.insert(key.into(), number(v));
            }
        };
        set("cashBalance", cash_now);
        set("totalCash", cash_now);
        set("liquidationValue", liquidation_now);
        set("accountValue", liquidation_now);
        set("equity", liquidation_now);
        set("longMarketValue", long_value);
        set("longStockValue", long_value);
        match a.kind {
            AccountKind::Margin => {
                for key in
                    ["availableFunds", "availableFundsNonMarginableTrade", "marginBalance", "cashAvailableForTrading"]
                {
                    set(key, cash_now);
                }
                for key in ["buyingPower", "stockBuyingPower", "buyingPowerNonMarginableTrade"] {
                    set(key, cash_now * Decimal::TWO);
                }
                set("dayTradingBuyingPower", cash_now * Decimal::from(4));
            }
            AccountKind::Cash => {
                set("cashAvailableForTrading", cash_now);
                set("cashAvailableForWithdrawal", cash_now);
            }
        }
    }
    body["aggregatedBalance"] =
        json!({"currentLiquidationValue": number(liquidation), "liquidationValue": number(liquidation)});
    body
}

/// Spends one order request of the account's per-minute budget; `false`
/// when it is spent.
fn spend_order_request(s: &mut FakeState, hash: &str) -> bool {
    let now = s.now();
    let limit = s.rules.orders_per_minute;
    let window = s.order_requests.entry(hash.to_string()).or_default();
    while window.front().is_some_and(|t| now - *t >= TimeDelta::minutes(1)) {
        window.pop_front();
    }
    if limit.is_some_and(|l| window.len() >= l as usize) {
        return false;
    }
    window.push_back(now);
    true
}

fn rate_limited() -> Response {
    trader_error(StatusCode::TOO_MANY_REQUESTS, "trader_rate_limited", &[])
}

/// A single equity order, checked against the documented schema.
#[derive(Debug)]
struct Checked {
    symbol: String,
    buy: bool,
    quantity: Decimal,
    price: Option<Decimal>,
}

/// Checks an order POST as Schwab does, field by field; the error is the
/// 400 to answer.
fn check_order(body: &Value, s: &FakeState) -> Result<Checked, Box<Response>> {
    let Some(order) = body.as_object() else {
        return Err(Box::new(validation_error("the request body is not a JSON object")));
    };
    let text = |key: &str| order.get(key).and_then(Value::as_str);
    let invalid = |field: &str, value: &str| {
        trader_error(StatusCode::BAD_REQUEST, "trader_invalid_value", &[("VALUE", value), ("FIELD", field)])
    };
    for (field, list) in [
        ("orderType", "orderType"),
        ("session", "session"),
        ("duration", "duration"),
        ("orderStrategyType", "orderStrategyType"),
    ] {
        let Some(value) = text(field) else {
            return Err(Box::new(validation_error(&format!("{field} is required"))));
        };
        let refused_duration = field == "duration" && fixtures::accepted("duration_rejected", value);
        if refused_duration && !s.rules.reject_refused_durations {
            continue;
        }
        if !fixtures::accepted(list, value) {
            return Err(Box::new(invalid(field, value)));
        }
    }
    let (order_type, session) = (text("orderType").unwrap_or_default(), text("session").unwrap_or_default());
    if order_type == "MARKET" && session != "NORMAL" && s.rules.market_orders_normal_session_only {
        return Err(Box::new(invalid("session", session)));
    }
    if text("orderStrategyType") != Some("SINGLE") {
        return Err(Box::new(validation_error(
            "only SINGLE orders are placed through this fake; OCO and TRIGGER are not",
        )));
    }
    let Some(legs) = order.get("orderLegCollection").and_then(Value::as_array).filter(|l| !l.is_empty()) else {
        return Err(Box::new(validation_error("orderLegCollection is required")));
    };
    if legs.len() != 1 {
        return Err(Box::new(validation_error("an equity order has one leg")));
    }
    let leg = &legs[0];
    let instruction = leg["instruction"].as_str().unwrap_or_default();
    if !fixtures::accepted("instruction", instruction) {
        return Err(Box::new(invalid("instruction", instruction)));
    }
    let Some(quantity) = decimal(&leg["quantity"]) else {
        return Err(Box::new(validation_error("orderLegCollection[0].quantity must be a number")));
    };
    if quantity <= Decimal::ZERO {
        return Err(Box::new(validation_error("Order quantity must be greater than zero")));
    }
    if !quantity.fract().is_zero() {
        return Err(Box::new(validation_error("fractional share quantities are not accepted")));
    }
    let asset_type = leg["instrument"]["assetType"].as_str().unwrap_or_default();
    if !fixtures::accepted("assetType", asset_type) {
        return Err(Box::new(invalid("assetType", asset_type)));
    }
    let Some(symbol) = leg["instrument"]["symbol"].as_str() else {
        return Err(Box::new(validation_error("orderLegCollection[0].instrument.symbol is required")));
    };
    if !s.quotes.contains_key(symbol) {
        return Err(Box::new(validation_error("Symbol is not valid")));
    }
    let price = match order.get("price") {
        None | Some(Value::Null) => None,
        Some(p) => match decimal(p) {
            Some(p) => Some(p),
            None => return Err(Box::new(validation_error("price must be a number"))),
        },
    };
    let needs_price = matches!(order_type, "LIMIT" | "STOP_LIMIT" | "LIMIT_ON_CLOSE");
    match price {
        None if needs_price => return Err(Box::new(validation_error("price is required for a LIMIT order"))),
        Some(p) if p <= Decimal::ZERO => return Err(Box::new(validation_error("price must be greater than zero"))),
        // Sub-penny prices: two decimals at $1 and above, four below (SEC Rule 612).
        Some(p) if p.normalize().scale() > if p >= Decimal::ONE { 2 } else { 4 } => {
            return Err(Box::new(validation_error("price has too many decimal places")))
        }
        _ => {}
    }
    let buy = matches!(instruction, "BUY" | "BUY_TO_COVER");
    Ok(Checked { symbol: symbol.into(), buy, quantity, price })
}

async fn place(State(fake): State<Arc<Shared>>, Path(hash): Path<String>, body: Bytes) -> Response {
    let (order_id, hang) = match book(&fake, &hash, &body) {
        Ok(placed) => placed,
        Err(r) => return *r,
    };
    if let Some(delay) = hang {
        tokio::time::sleep(delay).await;
    }
    let location = format!("{}/trader/v1/accounts/{hash}/orders/{order_id}", fake.base_url);
    (StatusCode::CREATED, [(header::LOCATION, location)]).into_response()
}

/// Checks and books an order POST: its id and how long to hold the answer,
/// or the answer to give at once.
fn book(fake: &Shared, hash: &str, body: &[u8]) -> Result<(i64, Option<Duration>), Box<Response>> {
    if let Some(r) = wrong_account(fake, hash) {
        return Err(Box::new(r));
    }
    let raw: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Err(Box::new(validation_error(&format!("the request body is not JSON: {e}")))),
    };
    let mut s = fake.lock();
    if !spend_order_request(&mut s, hash) {
        return Err(Box::new(rate_limited()));
    }
    s.order_posts.push(raw.clone());
    let checked = check_order(&raw, &s)?;
    let now = s.now();
    let order_id = next_order_id(&mut s);
    let account = fake.account_number(hash);
    let mut json = ORDERS.get("order");
    for key in ["session", "duration", "orderType", "orderStrategyType"] {
        json[key] = raw[key].clone();
    }
    match checked.price {
        Some(p) => json["price"] = number(p),
        None => {
            if let Some(map) = json.as_object_mut() {
                map.remove("price");
            }
        }
    }
    json["orderId"] = json!(order_id);
    json["quantity"] = number(checked.quantity);
    json["filledQuantity"] = json!(0);
    json["remainingQuantity"] = number(checked.quantity);
    json["enteredTime"] = json!(order_time(now));
    json["accountNumber"] = account_number_json(&account);
    json["tag"] = json!(format!("API_TOS:{}", fake.config.app_key.chars().take(8).collect::<String>()));
    let leg = &mut json["orderLegCollection"][0];
    leg["instruction"] = raw["orderLegCollection"][0]["instruction"].clone();
    leg["positionEffect"] = json!(if checked.buy { "OPENING" } else { "CLOSING" });
    leg["quantity"] = number(checked.quantity);
    leg["instrument"]["symbol"] = json!(checked.symbol);
    let list_lag = TimeDelta::from_std(s.rules.list_lag).unwrap_or_default();
    let mut order = FakeOrder {
        json,
        hash: hash.to_string(),
        symbol: checked.symbol.clone(),
        quantity: checked.quantity,
        buy: checked.buy,
        entered: now,
        listed_from: now + list_lag,
    };
    let quote = s.quotes[&checked.symbol];
    let touch = if checked.buy { quote.ask } else { quote.bid };
    let marketable = match checked.price {
        None => true,
        Some(p) => (checked.buy && p >= quote.ask) || (!checked.buy && p <= quote.bid),
    };
    if marketable {
        let activity_id = next_activity_id(&mut s);
        execute(&mut order, activity_id, checked.quantity, touch, now);
    }
    s.orders.insert(order_id, order);
    let lose_answer = std::mem::take(&mut s.fail_next_order);
    let hang = s.hang_next_order.take();
    drop(s);
    let _ = fake.stream.send(StreamPush::Activity { account: account.clone(), order_id, kind: "OrderCreated" });
    if marketable {
        let _ = fake.stream.send(StreamPush::Activity { account, order_id, kind: "OrderFillCompleted" });
    }
    if lose_answer {
        return Err(Box::new(error_body(StatusCode::BAD_GATEWAY, "gateway_bad_gateway")));
    }
    Ok((order_id, hang))
}

async fn get_order(State(fake): State<Arc<Shared>>, Path((hash, id)): Path<(String, i64)>) -> Response {
    if let Some(r) = wrong_account(&fake, &hash) {
        return r;
    }
    match fake.lock().orders.get(&id).filter(|o| o.hash == hash) {
        Some(o) => Json(o.json.clone()).into_response(),
        None => trader_error(StatusCode::NOT_FOUND, "trader_order_not_found", &[]),
    }
}

async fn cancel(State(fake): State<Arc<Shared>>, Path((hash, id)): Path<(String, i64)>) -> Response {
    if let Some(r) = wrong_account(&fake, &hash) {
        return r;
    }
    let mut s = fake.lock();
    if !spend_order_request(&mut s, &hash) {
        return rate_limited();
    }
    let now = s.now();
    let Some(order) = s.orders.get_mut(&id).filter(|o| o.hash == hash) else {
        return trader_error(StatusCode::NOT_FOUND, "trader_order_not_found", &[]);
    };
    if order.json["cancelable"] != json!(true) {
        return trader_error(StatusCode::BAD_REQUEST, "trader_not_cancelable", &[]);
    }
    let json = &mut order.json;
    json["status"] = json!("CANCELED");
    json["cancelable"] = json!(false);
    json["editable"] = json!(false);
    json["closeTime"] = json!(order_time(now));
    if let Some(children) = json["childOrderStrategies"].as_array_mut() {
        for child in children {
            child["status"] = json!("CANCELED");
            child["cancelable"] = json!(false);
            child["closeTime"] = json!(order_time(now));
        }
    }
    drop(s);
    let account = fake.account_number(&hash);
    let _ = fake.stream.send(StreamPush::Activity { account, order_id: id, kind: "UROutCompleted" });
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
        return trader_error(StatusCode::BAD_REQUEST, "trader_bad_query", &[]);
    };
    let max = q.get("maxResults").and_then(|m| m.parse::<usize>().ok()).unwrap_or(3000);
    let s = fake.lock();
    let now = s.now();
    let status_of = |o: &FakeOrder| o.json["status"].as_str().unwrap_or_default().to_string();
    let list: Vec<Value> = s
        .orders
        .values()
        .rev()
        .filter(|o| o.hash == hash && now >= o.listed_from)
        .filter(|o| from <= o.entered && o.entered <= to)
        .filter(|o| q.get("status").is_none_or(|st| *st == status_of(o)))
        .take(max)
        .map(|o| o.json.clone())
        .collect();
    Json(list).into_response()
}

async fn user_preference(State(fake): State<Arc<Shared>>) -> Response {
    let mut body = USER_PREFERENCE.get("body");
    let (number, _) = {
        let a = &fake.config.accounts[0];
        (a.number.clone(), a.hash.clone())
    };
    body["accounts"][0]["accountNumber"] = json!(number);
    body["streamerInfo"][0] = fake.streamer_info();
    Json(body).into_response()
}

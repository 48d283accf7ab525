//! A fake Kraken Spot REST API on 127.0.0.1, strict in the ways Kraken is:
//! it answers with Kraken's `{"error":[…],"result":…}` envelope (HTTP 200
//! for errors too) and Kraken's error strings, checks `API-Key` and
//! `API-Sign` by recomputing the signature with the known secret, refuses
//! a nonce not above the last one accepted for the key, checks AddOrder
//! forms with the same parser the protocol core documents
//! ([`AddOrderRequest::from_form`]) and refuses orders the balances cannot
//! cover. Orders rest as open until canceled (no matching yet).
//!
//! Switches for fault tests: [`FakeKraken::fail_next_with`] answers the
//! next request with a given error string; [`FakeKraken::stall`] holds the
//! next answer back (after the request took effect, as a slow Kraken does).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use lido_shared::model::{OrderType, Side};
use lidod::venue::kraken::envelope::{error_body, success_body};
use lidod::venue::kraken::messages::{
    AddOrderDescr, AddOrderRequest, AddOrderResult, CancelResult, DepthBook, DepthLevel, LastTrade, OpenOrdersResult,
    OrderDescr, OrderInfo, RestOrderStatus, ServerTime, TickerInfo, TickerLevel, TodayAnd24h,
};
use lidod::venue::kraken::pairs::{AssetPair, PairInfo, PairMap};
use lidod::venue::kraken::sign::{form_decode, Signer};
use rust_decimal::Decimal;
use serde_json::json;
use tokio::task::JoinHandle;

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
    /// The one API key it knows.
    pub api_key: String,
    /// Its secret, base64 as Kraken issues it.
    pub api_secret: String,
    /// Balances by Kraken asset code (`ZUSD`, `XXBT`, `XETH`).
    pub balances: BTreeMap<String, Decimal>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            api_key: "fake-api-key".into(),
            // Kraken's published example secret ("Spot REST Authentication").
            api_secret: "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
                .into(),
            balances: [
                ("ZUSD".to_string(), Decimal::from(10_000)),
                ("XXBT".to_string(), Decimal::ONE),
                ("XETH".to_string(), Decimal::from(10)),
            ]
            .into(),
        }
    }
}

/// A running fake; stopped when dropped.
pub struct FakeKraken {
    /// `http://127.0.0.1:PORT`, to use as the REST base URL.
    pub url: String,
    state: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    config: FakeConfig,
    signer: Signer,
    pairs: PairMap,
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    last_nonce: Option<u64>,
    orders: BTreeMap<String, OrderInfo>,
    next_order: u64,
    fail_next: Option<String>,
    stall_next: Option<Duration>,
    requests: u64,
}

impl FakeKraken {
    /// Starts the fake on 127.0.0.1, on a free port.
    pub async fn start(config: FakeConfig) -> Self {
        let signer = Signer::new(&config.api_secret).expect("the fake's secret is base64");
        let raw: BTreeMap<String, AssetPair> = serde_json::from_str(ASSET_PAIRS).expect("asset pairs");
        let state = Arc::new(Shared {
            config,
            signer,
            pairs: PairMap::from_asset_pairs(&raw),
            state: Mutex::new(FakeState::default()),
        });
        let app = Router::new()
            .route("/0/public/{method}", get(public))
            .route("/0/private/{method}", post(private))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    /// Answers the next request (public or private) with this Kraken
    /// error string, without acting on it.
    pub fn fail_next_with(&self, error: &str) {
        self.state.lock().fail_next = Some(error.to_string());
    }

    /// Holds the next answer back for `delay`, after the request took
    /// effect.
    pub fn stall(&self, delay: Duration) {
        self.state.lock().stall_next = Some(delay);
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
        self.state.lock().last_nonce
    }
}

impl Drop for FakeKraken {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    /// A made-up but stable mid price per pair.
    fn mid(pair: &PairInfo) -> Decimal {
        if pair.key == "XXBTZUSD" {
            Decimal::new(650_001, 1)
        } else {
            Decimal::new(350_012, 2)
        }
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
                let mid = Self::mid(pair);
                let (bid, ask) = (mid - pair.tick_size, mid + pair.tick_size);
                let info = TickerInfo {
                    a: TickerLevel(ask, Decimal::ONE, Decimal::new(1000, 3)),
                    b: TickerLevel(bid, Decimal::from(2), Decimal::new(2000, 3)),
                    c: LastTrade(mid, Decimal::new(5, 2)),
                    v: TodayAnd24h(Decimal::from(100), Decimal::from(1000)),
                    p: TodayAnd24h(mid, mid),
                    t: (1_000, 10_000),
                    l: TodayAnd24h(mid - Decimal::from(100), mid - Decimal::from(200)),
                    h: TodayAnd24h(mid + Decimal::from(100), mid + Decimal::from(200)),
                    o: mid,
                };
                Ok(json!({ pair.key.clone(): info }))
            }
            "Depth" => {
                let pair = self.pair(fields)?;
                let count = match field(fields, "count") {
                    None => 100,
                    Some(c) => c.parse::<u32>().map_err(|_| "EGeneral:Invalid arguments:count".to_string())?,
                };
                let count = count.clamp(1, 500);
                let mid = Self::mid(pair);
                let ts = Utc::now().timestamp();
                let level = |i: u32, sign: i64| {
                    let offset = pair.tick_size * Decimal::from(i64::from(i) + 1) * Decimal::from(sign);
                    DepthLevel(mid + offset, Decimal::new(i64::from(i) + 1, 1), ts)
                };
                let book = DepthBook {
                    asks: (0..count).map(|i| level(i, 1)).collect(),
                    bids: (0..count).map(|i| level(i, -1)).collect(),
                };
                Ok(json!({ pair.key.clone(): book }))
            }
            _ => Err("EGeneral:Unknown method".into()),
        }
    }

    fn private_call(&self, method: &str, headers: &HeaderMap, body: &str) -> Answer {
        let key = headers.get("API-Key").and_then(|v| v.to_str().ok());
        if key != Some(self.config.api_key.as_str()) {
            return Err("EAPI:Invalid key".into());
        }
        let fields = form_decode(body).map_err(|_| "EGeneral:Invalid arguments".to_string())?;
        let nonce_text = field(&fields, "nonce").ok_or("EAPI:Invalid nonce")?;
        let nonce = nonce_text.parse::<u64>().map_err(|_| "EAPI:Invalid nonce".to_string())?;
        let sign = headers.get("API-Sign").and_then(|v| v.to_str().ok()).ok_or("EAPI:Invalid signature")?;
        let path = format!("/0/private/{method}");
        // The signature covers the nonce as it appears in the body.
        if nonce.to_string() != nonce_text || self.signer.sign(&path, nonce, body) != sign {
            return Err("EAPI:Invalid signature".into());
        }
        let mut state = self.lock();
        if state.last_nonce.is_some_and(|last| nonce <= last) {
            return Err("EAPI:Invalid nonce".into());
        }
        state.last_nonce = Some(nonce);
        match method {
            "Balance" => {
                let balances: BTreeMap<&String, String> =
                    self.config.balances.iter().map(|(k, v)| (k, format!("{:.4}", v))).collect();
                Ok(json!(balances))
            }
            "OpenOrders" => {
                let wanted = field(&fields, "cl_ord_id");
                let open = state
                    .orders
                    .iter()
                    .filter(|(_, o)| o.status == RestOrderStatus::Open)
                    .filter(|(_, o)| wanted.is_none() || o.cl_ord_id.as_deref() == wanted)
                    .map(|(k, o)| (k.clone(), o.clone()))
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
                let found: BTreeMap<&str, &OrderInfo> =
                    ids.iter().filter_map(|id| state.orders.get(*id).map(|o| (*id, o))).collect();
                Ok(json!(found))
            }
            "AddOrder" => self.add_order(&mut state, &fields),
            "CancelOrder" => {
                let by_txid = field(&fields, "txid");
                let by_client = field(&fields, "cl_ord_id");
                let target =
                    state.orders.iter_mut().filter(|(_, o)| o.status == RestOrderStatus::Open).find(|(id, o)| {
                        match (by_txid, by_client) {
                            (Some(t), _) => id.as_str() == t || o.cl_ord_id.as_deref() == Some(t),
                            (None, Some(c)) => o.cl_ord_id.as_deref() == Some(c),
                            (None, None) => false,
                        }
                    });
                if by_txid.is_none() && by_client.is_none() {
                    return Err("EGeneral:Invalid arguments:txid".into());
                }
                let Some((_, order)) = target else { return Err("EOrder:Unknown order".into()) };
                order.status = RestOrderStatus::Canceled;
                order.closetm = Some(now_secs());
                order.reason = Some("User requested".into());
                Ok(json!(CancelResult { count: 1, pending: false }))
            }
            _ => Err("EGeneral:Unknown method".into()),
        }
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
        let price = req.price.unwrap_or_else(|| Self::mid(pair));
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
                    Side::Buy if &p.kraken_quote == asset => Some(o.descr.price * o.vol),
                    Side::Sell if &p.kraken_base == asset => Some(o.vol),
                    _ => None,
                }
            })
            .sum();
        let balance = self.config.balances.get(asset).copied().unwrap_or_default();
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
        state.orders.insert(txid.clone(), info);
        Ok(json!(AddOrderResult { descr, txid: vec![txid] }))
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

//! The Schwab streamer protocol (the WebSocket named by `userPreference`'s
//! `streamerInfo.streamerSocketUrl`).
//!
//! - Client → streamer: `{"requests":[{"service","requestid","command",
//!   "SchwabClientCustomerId","SchwabClientCorrelId","parameters":{…}}]}`:
//!   [`login`] (`ADMIN`/`LOGIN` with the access token, channel and
//!   function id), [`subscribe_quotes`] (`LEVELONE_EQUITIES`/`SUBS`, keys and
//!   numbered fields), [`subscribe_account`] (`ACCT_ACTIVITY`/`SUBS`).
//! - Streamer → client ([`Incoming`]): `{"response":[…]}` answers requests
//!   (`content.code` 0 is success), `{"data":[…]}` carries updates,
//!   `{"notify":[{"heartbeat":"…"}]}` keeps the socket alive.
//! - [`LevelOne`] merges LEVELONE_EQUITIES updates, which carry only the
//!   fields that changed, into full Lido quotes: field 1 bid, 2 ask, 3 last,
//!   4 bid size, 5 ask size, 35 trade time (ms). The streamer gives the
//!   sizes in round lots of 100 shares (the Streamer API guide's
//!   LEVELONE_EQUITIES fields 4 and 5; the same quote's `bidSize` from
//!   `/marketdata/v1/quotes` is 100 times larger); Lido quotes shares, as
//!   the REST quote does, so they are multiplied by [`SHARES_PER_LOT`].
//! - Response codes ([`code`]): 0 success, 3 login denied (the access token
//!   is refused: fetch a new one), 12 close connection (Schwab allows one
//!   streamer connection per user: a second LOGIN of the same login closes
//!   the first with code 12).
//! - [`activity`] reads an ACCT_ACTIVITY entry: field 1 account, 2 message
//!   type, 3 message data (JSON text, carrying `SchwabOrderID`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use lido_shared::model::{Quote, Symbol};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::wire::{self, StreamerInfo};
use crate::venue::kraken::num;

/// The fields the broker asks LEVELONE_EQUITIES for.
pub const LEVEL_ONE_FIELDS: &str = "0,1,2,3,4,5,8,34,35";
/// The fields of ACCT_ACTIVITY.
pub const ACCOUNT_FIELDS: &str = "0,1,2,3";
/// Shares in one LEVELONE_EQUITIES size unit.
pub const SHARES_PER_LOT: Decimal = Decimal::ONE_HUNDRED;

/// The streamer's response codes the broker acts on.
pub mod code {
    pub const SUCCESS: i64 = 0;
    /// The LOGIN was denied (a refused or stale access token).
    pub const LOGIN_DENIED: i64 = 3;
    /// Another connection of the same user took the streamer over.
    pub const CLOSE_CONNECTION: i64 = 12;
}

/// ACCT_ACTIVITY's one subscription key.
pub const ACCOUNT_KEY: &str = "Account Activity";

/// One request in a `{"requests":[…]}` frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub service: String,
    pub requestid: String,
    pub command: String,
    #[serde(rename = "SchwabClientCustomerId")]
    pub customer_id: String,
    #[serde(rename = "SchwabClientCorrelId")]
    pub correl_id: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

/// The frame that carries requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    pub requests: Vec<Request>,
}

fn request(info: &StreamerInfo, id: u64, service: &str, command: &str, parameters: &[(&str, &str)]) -> Requests {
    Requests {
        requests: vec![Request {
            service: service.into(),
            requestid: id.to_string(),
            command: command.into(),
            customer_id: info.schwab_client_customer_id.clone(),
            correl_id: info.schwab_client_correl_id.clone(),
            parameters: parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }],
    }
}

/// `ADMIN`/`LOGIN`: the first request on every socket.
pub fn login(info: &StreamerInfo, id: u64, access_token: &str) -> Requests {
    request(
        info,
        id,
        "ADMIN",
        "LOGIN",
        &[
            ("Authorization", access_token),
            ("SchwabClientChannel", &info.schwab_client_channel),
            ("SchwabClientFunctionId", &info.schwab_client_function_id),
        ],
    )
}

/// `LEVELONE_EQUITIES`/`SUBS` for `symbols` (replaces the subscribed set).
pub fn subscribe_quotes(info: &StreamerInfo, id: u64, symbols: &[Symbol]) -> Requests {
    let keys: Vec<&str> = symbols.iter().map(Symbol::as_str).collect();
    request(info, id, "LEVELONE_EQUITIES", "SUBS", &[("keys", &keys.join(",")), ("fields", LEVEL_ONE_FIELDS)])
}

/// `ACCT_ACTIVITY`/`SUBS`: order and execution events of the login's accounts.
pub fn subscribe_account(info: &StreamerInfo, id: u64) -> Requests {
    request(info, id, "ACCT_ACTIVITY", "SUBS", &[("keys", ACCOUNT_KEY), ("fields", ACCOUNT_FIELDS)])
}

/// A frame from the streamer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Incoming {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response: Vec<Response>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<Data>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Value>,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub service: String,
    pub command: String,
    pub requestid: String,
    #[serde(rename = "SchwabClientCorrelId", default)]
    pub correl_id: String,
    pub timestamp: i64,
    pub content: ResponseContent,
}

/// `code` 0 is success (3 is a failed login, 21 a malformed request…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseContent {
    pub code: i64,
    pub msg: String,
}

/// Updates of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    pub service: String,
    pub timestamp: i64,
    pub command: String,
    pub content: Vec<serde_json::Map<String, Value>>,
}

/// The last full quote of each subscribed symbol, updated field by field.
#[derive(Debug, Default)]
pub struct LevelOne {
    quotes: HashMap<Symbol, Quote>,
}

impl LevelOne {
    /// Applies one LEVELONE_EQUITIES entry; the merged quote, once it has a
    /// bid and an ask.
    pub fn apply(&mut self, entry: &serde_json::Map<String, Value>, now: DateTime<Utc>) -> Option<Quote> {
        let symbol = Symbol::parse(entry.get("key")?.as_str()?).ok()?;
        let field = |n: &str| entry.get(n).and_then(decimal);
        let quote = self.quotes.entry(symbol.clone()).or_insert_with(|| Quote {
            symbol,
            bid: Decimal::ZERO,
            ask: Decimal::ZERO,
            bid_size: Decimal::ZERO,
            ask_size: Decimal::ZERO,
            last: None,
            ts: now,
        });
        let update = |slot: &mut Decimal, n: &str| {
            if let Some(v) = field(n) {
                *slot = v;
            }
        };
        update(&mut quote.bid, "1");
        update(&mut quote.ask, "2");
        if let Some(lots) = field("4") {
            quote.bid_size = lots * SHARES_PER_LOT;
        }
        if let Some(lots) = field("5") {
            quote.ask_size = lots * SHARES_PER_LOT;
        }
        if let Some(last) = field("3") {
            quote.last = Some(last);
        }
        let time = ["35", "34"].iter().find_map(|n| entry.get(*n).and_then(Value::as_i64)).and_then(wire::from_millis);
        quote.ts = time.unwrap_or(now);
        (!quote.bid.is_zero() && !quote.ask.is_zero()).then(|| quote.clone())
    }

    /// Forgets the quotes (after a reconnect, before the fresh snapshot).
    pub fn clear(&mut self) {
        self.quotes.clear();
    }
}

fn decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => num::from_json_number(n).ok(),
        Value::String(s) => num::parse_decimal(s).ok(),
        _ => None,
    }
}

/// Schwab's message when a frame says it closed this connection (code 12,
/// in a response or in a notify entry, `{"notify":[{"service":"ADMIN",
/// "content":{"code":12,"msg":…}}]}`).
pub fn closed_by_schwab(frame: &Incoming) -> Option<String> {
    let from_response =
        frame.response.iter().find(|r| r.content.code == code::CLOSE_CONNECTION).map(|r| r.content.msg.clone());
    from_response.or_else(|| {
        frame.notify.iter().find_map(|n| {
            let content = n.get("content")?;
            (content.get("code")?.as_i64()? == code::CLOSE_CONNECTION)
                .then(|| content.get("msg").and_then(Value::as_str).unwrap_or_default().to_string())
        })
    })
}

/// One ACCT_ACTIVITY entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub account: String,
    /// `OrderCreated`, `OrderAccepted`, `ExecutionCreated`, `OrderUROutCompleted`, …
    pub message_type: String,
    /// The order it is about, when the message data names one.
    pub order_id: Option<i64>,
}

/// Reads an ACCT_ACTIVITY entry (`None` for the `SUBSCRIBED` greeting).
pub fn activity(entry: &serde_json::Map<String, Value>) -> Option<Activity> {
    let message_type = entry.get("2")?.as_str()?.to_string();
    if message_type == "SUBSCRIBED" {
        return None;
    }
    let account = entry.get("1").and_then(Value::as_str).unwrap_or_default().to_string();
    let data: Option<Value> = entry.get("3").and_then(Value::as_str).and_then(|t| serde_json::from_str(t).ok());
    let order_id = data.as_ref().and_then(|d| d.get("SchwabOrderID")).and_then(|v| match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    });
    Some(Activity { account, message_type, order_id })
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn info() -> StreamerInfo {
        StreamerInfo {
            streamer_socket_url: "wss://streamer-api.schwab.com/ws".into(),
            schwab_client_customer_id: "cust-1".into(),
            schwab_client_correl_id: "correl-1".into(),
            schwab_client_channel: "N9".into(),
            schwab_client_function_id: "APIAPP".into(),
        }
    }

    #[test]
    fn login_and_subs_requests_as_documented() {
        let login = serde_json::to_value(login(&info(), 0, "TOKEN")).unwrap();
        assert_eq!(
            login,
            serde_json::json!({"requests":[{"service":"ADMIN","requestid":"0","command":"LOGIN",
                "SchwabClientCustomerId":"cust-1","SchwabClientCorrelId":"correl-1",
                "parameters":{"Authorization":"TOKEN","SchwabClientChannel":"N9","SchwabClientFunctionId":"APIAPP"}}]})
        );
        let subs = subscribe_quotes(&info(), 1, &[Symbol::parse("AAPL").unwrap(), Symbol::parse("MSFT").unwrap()]);
        assert_eq!(subs.requests[0].parameters["keys"], "AAPL,MSFT");
        assert_eq!(subs.requests[0].parameters["fields"], LEVEL_ONE_FIELDS);
        assert_eq!(subscribe_account(&info(), 2).requests[0].parameters["keys"], "Account Activity");
    }

    #[test]
    fn level_one_deltas_merge_into_quotes() {
        let frame: Incoming = serde_json::from_str(
            r#"{"data":[{"service":"LEVELONE_EQUITIES","timestamp":1764687600000,"command":"SUBS","content":[
            {"key":"AAPL","delayed":false,"assetMainType":"EQUITY","1":190.25,"2":190.27,"3":190.26,"4":3,"5":2,"35":1764687600123}]}]}"#,
        )
        .unwrap();
        let mut book = LevelOne::default();
        let now = Utc::now();
        let q = book.apply(&frame.data[0].content[0], now).unwrap();
        assert_eq!(
            (q.bid, q.ask, q.last, q.bid_size, q.ask_size),
            (dec!(190.25), dec!(190.27), Some(dec!(190.26)), dec!(300), dec!(200)),
            "sizes come in lots of 100 shares and are quoted in shares"
        );
        assert_eq!(q.ts.timestamp_millis(), 1764687600123);
        let delta: serde_json::Map<String, Value> = serde_json::from_str(r#"{"key":"AAPL","2":190.3,"4":7}"#).unwrap();
        let q = book.apply(&delta, now).unwrap();
        assert_eq!((q.bid, q.ask, q.bid_size, q.ask_size), (dec!(190.25), dec!(190.3), dec!(700), dec!(200)));
        let half: serde_json::Map<String, Value> = serde_json::from_str(r#"{"key":"MSFT","1":400.1}"#).unwrap();
        assert!(book.apply(&half, now).is_none(), "no ask yet");
    }

    #[test]
    fn a_second_login_of_the_same_user_closes_this_one_with_code_12() {
        // Streamer API guide, response codes: 12 is CLOSE_CONNECTION, sent
        // when a newer connection of the same user logged in (the messages
        // here are stand-ins; the broker reads the code only).
        let notify: Incoming = serde_json::from_str(
            r#"{"notify":[{"service":"ADMIN","timestamp":1764687600000,"content":{"code":12,"msg":"Connection closed by a new login"}}]}"#,
        )
        .unwrap();
        assert_eq!(closed_by_schwab(&notify).as_deref(), Some("Connection closed by a new login"));
        let response: Incoming = serde_json::from_str(
            r#"{"response":[{"service":"ADMIN","command":"LOGIN","requestid":"0","SchwabClientCorrelId":"c",
            "timestamp":1764687600000,"content":{"code":12,"msg":"max connections reached"}}]}"#,
        )
        .unwrap();
        assert_eq!(closed_by_schwab(&response).as_deref(), Some("max connections reached"));
        let denied: Incoming = serde_json::from_str(
            r#"{"response":[{"service":"ADMIN","command":"LOGIN","requestid":"0","SchwabClientCorrelId":"c",
            "timestamp":1764687600000,"content":{"code":3,"msg":"Login Denied"}}]}"#,
        )
        .unwrap();
        assert_eq!(closed_by_schwab(&denied), None);
    }

    #[test]
    fn responses_heartbeats_and_account_activity() {
        let r: Incoming = serde_json::from_str(
            r#"{"response":[{"service":"ADMIN","command":"LOGIN","requestid":"0","SchwabClientCorrelId":"correl-1",
            "timestamp":1764687600000,"content":{"code":0,"msg":"server=s0635dc6-4;status=PN"}}]}"#,
        )
        .unwrap();
        assert_eq!(r.response[0].content.code, 0);
        let hb: Incoming = serde_json::from_str(r#"{"notify":[{"heartbeat":"1764687600000"}]}"#).unwrap();
        assert_eq!(hb.notify.len(), 1);
        assert_eq!(closed_by_schwab(&hb), None);
        let entry: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"seq":3,"key":"Account Activity","1":"12345678","2":"OrderFillCompleted","3":"{\"SchwabOrderID\":\"1000123\",\"AccountNumber\":\"12345678\"}"}"#,
        )
        .unwrap();
        assert_eq!(
            activity(&entry),
            Some(Activity {
                account: "12345678".into(),
                message_type: "OrderFillCompleted".into(),
                order_id: Some(1000123)
            })
        );
        let sub: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"seq":0,"key":"Account Activity","1":"","2":"SUBSCRIBED","3":""}"#).unwrap();
        assert_eq!(activity(&sub), None);
    }
}

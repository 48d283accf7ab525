//! The fake's wire: the documented examples it builds every payload from
//! (`tests/fixtures/kraken/`), decimals written as Kraken writes them (REST:
//! JSON strings at the pair's precision; WebSocket v2: JSON numbers), form
//! bodies, and timestamps.

use std::str::FromStr;
use std::sync::OnceLock;

use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::Value;

/// The fixture files, by name, as `include_str!` sees them.
const FIXTURES: &[(&str, &str)] = &[
    ("rest/error", include_str!("../fixtures/kraken/rest/error.json")),
    ("rest/time", include_str!("../fixtures/kraken/rest/time.json")),
    ("rest/asset_pairs", include_str!("../fixtures/kraken/rest/asset_pairs.json")),
    ("rest/ticker", include_str!("../fixtures/kraken/rest/ticker.json")),
    ("rest/depth", include_str!("../fixtures/kraken/rest/depth.json")),
    ("rest/trades", include_str!("../fixtures/kraken/rest/trades.json")),
    ("rest/ohlc", include_str!("../fixtures/kraken/rest/ohlc.json")),
    ("rest/balance", include_str!("../fixtures/kraken/rest/balance.json")),
    ("rest/open_orders", include_str!("../fixtures/kraken/rest/open_orders.json")),
    ("rest/closed_orders", include_str!("../fixtures/kraken/rest/closed_orders.json")),
    ("rest/query_orders", include_str!("../fixtures/kraken/rest/query_orders.json")),
    ("rest/query_trades", include_str!("../fixtures/kraken/rest/query_trades.json")),
    ("rest/add_order", include_str!("../fixtures/kraken/rest/add_order.json")),
    ("rest/amend_order", include_str!("../fixtures/kraken/rest/amend_order.json")),
    ("rest/cancel_order", include_str!("../fixtures/kraken/rest/cancel_order.json")),
    ("rest/cancel_all", include_str!("../fixtures/kraken/rest/cancel_all.json")),
    ("rest/cancel_all_orders_after", include_str!("../fixtures/kraken/rest/cancel_all_orders_after.json")),
    ("rest/get_websockets_token", include_str!("../fixtures/kraken/rest/get_websockets_token.json")),
    ("ws/status", include_str!("../fixtures/kraken/ws/status.json")),
    ("ws/heartbeat", include_str!("../fixtures/kraken/ws/heartbeat.json")),
    ("ws/pong", include_str!("../fixtures/kraken/ws/pong.json")),
    ("ws/ticker", include_str!("../fixtures/kraken/ws/ticker.json")),
    ("ws/book_snapshot", include_str!("../fixtures/kraken/ws/book_snapshot.json")),
    ("ws/book_update", include_str!("../fixtures/kraken/ws/book_update.json")),
    ("ws/trade", include_str!("../fixtures/kraken/ws/trade.json")),
    ("ws/executions_snapshot", include_str!("../fixtures/kraken/ws/executions_snapshot.json")),
    ("ws/executions_update", include_str!("../fixtures/kraken/ws/executions_update.json")),
    ("ws/add_order", include_str!("../fixtures/kraken/ws/add_order.json")),
    ("ws/cancel_order", include_str!("../fixtures/kraken/ws/cancel_order.json")),
    ("ws/amend_order", include_str!("../fixtures/kraken/ws/amend_order.json")),
    ("ws/cancel_all", include_str!("../fixtures/kraken/ws/cancel_all.json")),
    ("ws/cancel_all_orders_after", include_str!("../fixtures/kraken/ws/cancel_all_orders_after.json")),
    ("ws/subscribe", include_str!("../fixtures/kraken/ws/subscribe.json")),
];

/// A fixture file as parsed once.
fn file(name: &str) -> &'static Value {
    static PARSED: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    let all = PARSED.get_or_init(|| {
        FIXTURES
            .iter()
            .map(|(n, text)| (*n, serde_json::from_str(text).unwrap_or_else(|e| panic!("fixture {n}: {e}"))))
            .collect()
    });
    all.iter().find(|(n, _)| *n == name).map(|(_, v)| v).unwrap_or_else(|| panic!("no fixture {name}"))
}

/// A copy of the documented example of fixture `name` (`rest/time`).
pub fn example(name: &str) -> Value {
    file(name)["example"].clone()
}

/// A copy of a second documented variant (`error`, `trade`) of `name`.
pub fn variant(name: &str, which: &str) -> Value {
    let v = file(name)[which].clone();
    assert!(!v.is_null(), "fixture {name} has no {which}");
    v
}

/// The first entry of the `result` map of a REST example, or of a named
/// inner map (`open`, `closed`): the template of one element.
pub fn first_entry(name: &str, inner: Option<&str>) -> Value {
    let result = &file(name)["example"]["result"];
    let map = inner.map_or(result, |i| &result[i]);
    map.as_object().and_then(|m| m.values().next()).cloned().unwrap_or_else(|| panic!("fixture {name}: empty"))
}

/// A REST answer: the method's documented envelope with our `result`.
pub fn rest_ok(name: &str, result: Value) -> Value {
    let mut v = example(name);
    v["error"] = Value::Array(vec![]);
    v["result"] = result;
    v
}

/// A REST error answer: the documented error envelope with our errors.
pub fn rest_error(errors: &[&str]) -> Value {
    let mut v = example("rest/error");
    v["error"] = errors.iter().map(|e| Value::String(e.to_string())).collect();
    v
}

/// A marker that [`render`] turns into a bare JSON number with exactly
/// this decimal's digits (`0.10000000` stays `0.10000000`, as Kraken's
/// WebSocket v2 writes it; serde_json alone would write `0.1`).
const NUMBER: char = '\u{1}';

/// A decimal written as a JSON number, digits as they are.
pub fn num(d: Decimal) -> Value {
    Value::String(format!("{NUMBER}{d}"))
}

/// The text of a JSON value, with [`num`] markers as bare numbers.
pub fn render(v: &Value) -> String {
    let text = serde_json::to_string(v).expect("a JSON value always serializes");
    let marker = "\"\\u0001";
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find(marker) {
        out.push_str(&rest[..i]);
        let after = &rest[i + marker.len()..];
        let end = after.find('"').expect("a marked number ends with a quote");
        out.push_str(&after[..end]);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A decimal as a REST string with exactly `dp` decimals (`"30010.0"`).
pub fn fixed(d: Decimal, dp: u32) -> String {
    let mut x = d.round_dp(dp);
    x.rescale(dp);
    x.to_string()
}

/// A REST string at `dp` decimals.
pub fn text(d: Decimal, dp: u32) -> Value {
    Value::String(fixed(d, dp))
}

/// A decimal from a form field or JSON string (`"0.01"`, `"1e-8"`).
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let t = text.trim();
    if t.contains(['e', 'E']) {
        Decimal::from_scientific(t).ok()
    } else {
        Decimal::from_str(t).ok()
    }
}

/// A decimal from a JSON number or string, as the socket's params carry them.
pub fn json_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => parse_decimal(&n.to_string()),
        Value::String(s) => parse_decimal(s),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` (a REST body or query) as pairs.
pub fn form(text: &str) -> Result<Vec<(String, String)>, String> {
    serde_urlencoded::from_str(text).map_err(|e| format!("EGeneral:Invalid arguments:{e}"))
}

/// Now as Kraken's WebSocket v2 writes times (RFC 3339, microseconds, `Z`).
pub fn now_text() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Now in seconds with four decimals, as REST `opentm` / `closetm`.
pub fn now_secs() -> Decimal {
    Decimal::new(Utc::now().timestamp_micros() / 100, 4)
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn numbers_keep_their_digits() {
        let v = serde_json::json!({"qty": num(dec!(0.10000000)), "s": "x", "p": num(dec!(-45283.5))});
        assert_eq!(render(&v), r#"{"p":-45283.5,"qty":0.10000000,"s":"x"}"#);
    }

    #[test]
    fn every_fixture_parses_and_names_its_source() {
        for (name, _) in FIXTURES {
            let f = file(name);
            assert!(f["_source"].as_str().is_some_and(|s| s.contains("kraken.com")), "{name} names no source");
            assert!(!f["example"].is_null(), "{name} has no example");
        }
    }
}

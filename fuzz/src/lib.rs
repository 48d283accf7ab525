//! The bodies of the fuzz targets: each takes arbitrary bytes as the
//! network would deliver them to one decoder, must never panic, and checks
//! that whatever decodes survives a round trip unchanged (what Lido sends
//! back must mean what it read).
//!
//! The `fuzz_targets/` binaries call these under libFuzzer (`bash
//! fuzz/run.sh`); `tests/fuzz_regressions.rs` replays every input kept in
//! `fuzz/regressions/<target>/` through the same functions on every test
//! run, so a fixed crash stays fixed.

use lido_shared::api::{ClientMessage, OrdersQuery, PlaceOrder, SessionRequest, SymbolQuery};
use lido_shared::model::{AssetClass, Instrument, OrderStatus, OrderType, Symbol};
use lido_shared::pipe::{CheckIn, ManagerFrame, ServiceFrame};
use lidod::venue::kraken::book::L2Book;
use lidod::venue::kraken::envelope;
use lidod::venue::kraken::messages::{
    parse_ws, AddOrderRequest, AddOrderResult, BalanceResult, CancelResult, DepthBook, MessageType, OpenOrdersResult,
    QueryOrdersResult, ServerTime, TickerInfo, WsMessage,
};
use lidod::venue::kraken::pairs::PairMap;
use lidod::venue::kraken::sign::form_decode;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Debug;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary and regression folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("algo_request", algo_request),
    ("pipe_frame", pipe_frame),
    ("kraken_rest", kraken_rest),
    ("kraken_ws", kraken_ws),
];

/// The algo API's decoding: JSON bodies as its JSON extractor reads them,
/// query strings as axum's `Query` reads them, and the checks an order
/// meets before it reaches a market.
pub fn algo_request(data: &[u8]) {
    if let Some(order) = json_roundtrip::<PlaceOrder>(data) {
        let _ = Symbol::parse(&order.symbol);
        let instrument = btc_usd();
        let _ = instrument.check_quantity(order.quantity);
        if let Some(price) = order.limit_price {
            let _ = instrument.check_price(price);
        }
    }
    json_roundtrip::<ClientMessage>(data);
    json_roundtrip::<SessionRequest>(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    // What names an order request's error reply when it does not decode.
    let _ = ClientMessage::request_id(text);
    let _ = serde_urlencoded::from_str::<SymbolQuery>(text);
    if let Ok(query) = serde_urlencoded::from_str::<OrdersQuery>(text) {
        if let Some(status) = query.status {
            let _ = status.parse::<OrderStatus>();
        }
    }
    if let Ok(symbol) = Symbol::parse(text) {
        assert_eq!(Symbol::parse(symbol.as_str()).as_ref(), Ok(&symbol), "a parsed symbol parses to itself");
    }
}

/// The service pipe: frames in both directions and the check-in body.
pub fn pipe_frame(data: &[u8]) {
    json_roundtrip::<ManagerFrame>(data);
    json_roundtrip::<ServiceFrame>(data);
    json_roundtrip::<CheckIn>(data);
}

/// Kraken REST: the envelope around every result type the broker reads,
/// AssetPairs, and the form bodies the fake Kraken decodes.
pub fn kraken_rest(data: &[u8]) {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let _ = envelope::decode::<ServerTime>(body);
    let _ = envelope::decode::<BTreeMap<String, TickerInfo>>(body);
    let _ = envelope::decode::<BTreeMap<String, DepthBook>>(body);
    let _ = envelope::decode::<AddOrderResult>(body);
    let _ = envelope::decode::<CancelResult>(body);
    let _ = envelope::decode::<OpenOrdersResult>(body);
    let _ = envelope::decode::<QueryOrdersResult>(body);
    let _ = envelope::decode::<BalanceResult>(body);
    if let Ok(pairs) = PairMap::from_body(body) {
        for pair in pairs.iter() {
            assert!(pairs.resolve(&pair.altname).is_some(), "a pair is found by its altname");
            let _ = pair.instrument();
            let _ = pair.check_order(OrderType::Limit, Decimal::ONE, Some(Decimal::ONE));
            let _ = pair.check_order(OrderType::Market, Decimal::new(1, 9), None);
        }
    }
    if let Ok(fields) = form_decode(body) {
        if let Ok((request, nonce)) = AddOrderRequest::from_form(&fields) {
            let again = request.post_data(nonce).expect("a decoded AddOrder encodes");
            let fields = form_decode(&again).expect("an encoded AddOrder is a form");
            let (request2, nonce2) = AddOrderRequest::from_form(&fields).expect("an encoded AddOrder decodes");
            assert_eq!((request2, nonce2), (request, nonce));
        }
    }
}

/// Kraken WebSocket v2: one frame per line, each parsed, re-encoded and
/// parsed again; book frames are applied in order to one checksummed book.
pub fn kraken_ws(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let symbol = Symbol::parse("BTC/USD").expect("valid symbol");
    let mut book = L2Book::new(symbol, 10, 1, 8);
    for line in text.lines() {
        let Ok(message) = parse_ws(line) else { continue };
        // A decimal with more digits than a JSON number carries exactly
        // cannot be sent back as Kraken would; that is an error, not a panic.
        let Ok(encoded) = message.to_json() else { continue };
        let again = parse_ws(&encoded).expect("an encoded frame parses");
        assert_eq!(again, message, "frame changed in a round trip: {encoded}");
        if let WsMessage::Book { kind, data } = &message {
            for d in data {
                if book.apply(*kind, d).is_err() && *kind == MessageType::Update {
                    book.reset();
                }
            }
            let _ = book.checksum();
            let _ = book.best_bid().zip(book.best_ask());
        }
    }
}

/// Decodes `T`; if it decodes, checks that encoding and decoding again
/// gives the same value.
fn json_roundtrip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    let encoded = serde_json::to_string(&value).expect("a decoded value encodes");
    let again: T = serde_json::from_str(&encoded).expect("an encoded value decodes");
    assert_eq!(again, value, "value changed in a round trip: {encoded}");
    Some(value)
}

fn btc_usd() -> Instrument {
    Instrument {
        symbol: Symbol::parse("BTC/USD").expect("valid symbol"),
        asset_class: AssetClass::Crypto,
        base: "BTC".into(),
        quote: "USD".into(),
        tick_size: Decimal::new(1, 1),
        lot_size: Decimal::new(1, 8),
        min_quantity: Decimal::new(1, 4),
    }
}

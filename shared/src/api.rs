//! The algo API: REST bodies and the `/v1/stream` WebSocket messages.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::cluster::ServiceState;
use crate::model::{Order, OrderStatus, OrderType, Side, Symbol, TimeInForce};
use crate::ErrorDetail;

/// Largest REST body the API accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest WebSocket frame the stream accepts from a client.
pub const MAX_STREAM_FRAME_BYTES: usize = 16 * 1024;
/// Subscriptions one stream connection may hold.
pub const MAX_SUBSCRIPTIONS_PER_STREAM: usize = 256;

/// `POST /v1/sessions`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionRequest {
    /// 1-64 of `A-Z a-z 0-9 - _ .` (a customer token may send it empty
    /// for its own name).
    #[schema(example = "acme", pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub customer: String,
    /// Prefer a node at this location, if one is available.
    #[serde(default)]
    pub location: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// Send as `Authorization: Bearer <session_id>` to act as the customer.
    pub session_id: String,
    pub customer: String,
    pub node: String,
    pub market_manager_url: String,
    pub trader_manager_url: String,
}

/// `GET /v1/markets`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MarketInfo {
    pub name: String,
    pub symbols: Vec<Symbol>,
    /// The broker pool, in priority order.
    pub brokers: Vec<String>,
    /// The broker currently carrying the market (its first routed symbol's).
    pub active_broker: Option<String>,
    pub state: ServiceState,
    /// Brokers used only when none of `brokers` is healthy.
    #[serde(default)]
    pub fallback: Vec<String>,
    /// The broker each routed symbol is on (`BTC/USD` → `kraken-a`).
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    /// Each broker of the pool and fallback, in priority order, with its health.
    #[serde(default)]
    pub health: Vec<BrokerHealth>,
}

/// One broker's health as a market sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BrokerHealth {
    pub broker: String,
    /// `healthy`, `degraded`, `draining` or `down`.
    #[schema(pattern = "^(healthy|degraded|draining|down)$")]
    pub health: String,
    /// Why it is not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/orders`. Its schema says which fields go with which order
/// type (a limit order has a price, a market order none), see
/// [`PlaceOrder::schema`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub market: String,
    /// `BASE/QUOTE` (each 1-12 letters or digits) or a ticker.
    pub symbol: String,
    pub side: Side,
    #[serde(rename = "type")]
    pub order_type: OrderType,
    /// A positive decimal string (never a JSON number: money is exact);
    /// the instrument's lot size and minimum apply.
    #[serde(with = "rust_decimal::serde::str")]
    pub quantity: Decimal,
    /// Required for limit orders, absent for market orders: a positive
    /// decimal string on the instrument's tick.
    #[serde(
        default,
        serialize_with = "rust_decimal::serde::str_option::serialize",
        deserialize_with = "present_decimal"
    )]
    pub limit_price: Option<Decimal>,
    #[serde(default)]
    pub time_in_force: TimeInForce,
    /// Unique per customer; the same id again returns the first order.
    /// 1-64 of `A-Z a-z 0-9 - _ . :`.
    #[serde(default)]
    pub client_order_id: Option<String>,
}

/// A positive decimal string as the API reads prices and quantities.
const DECIMAL_PATTERN: &str = r"^([1-9][0-9]{0,15}(\.[0-9]{1,12})?|0\.[0-9]{0,11}[1-9])$";

impl ToSchema for PlaceOrder {}

impl utoipa::PartialSchema for PlaceOrder {
    /// One of a limit order (`"type":"limit"` with a `limit_price`) and a
    /// market order (`"type":"market"`, `limit_price` absent or null), each
    /// with `market`, `symbol`, `side` and `quantity`, and optionally
    /// `time_in_force` and `client_order_id`.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
        let string = |pattern: &str| ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern));
        let shape = |order_type: &str| {
            ObjectBuilder::new()
                .property("market", ObjectBuilder::new().schema_type(Type::String).examples(["paper"]))
                .required("market")
                .property(
                    "symbol",
                    string(r"^([A-Za-z0-9]{1,12}/[A-Za-z0-9]{1,12}|[A-Za-z][A-Za-z0-9.]{0,11})$")
                        .description(Some("`BASE/QUOTE` (each 1-12 letters or digits) or a ticker."))
                        .examples(["BTC/USD"]),
                )
                .required("symbol")
                .property("side", <Side as utoipa::PartialSchema>::schema())
                .required("side")
                .property("type", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([order_type])))
                .required("type")
                .property(
                    "quantity",
                    string(DECIMAL_PATTERN)
                        .description(Some("A positive decimal string; the instrument's lot size and minimum apply."))
                        .examples(["0.01"]),
                )
                .required("quantity")
                .property("time_in_force", <TimeInForce as utoipa::PartialSchema>::schema())
                .property(
                    "client_order_id",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                        .pattern(Some(r"^[A-Za-z0-9._:-]{1,64}$"))
                        .description(Some("Unique per customer; the same id again returns the first order."))
                        .examples(["c-1"]),
                )
        };
        let limit = shape("limit")
            .property(
                "limit_price",
                string(DECIMAL_PATTERN).description(Some("A positive decimal string on the instrument's tick.")),
            )
            .required("limit_price");
        let market = shape("market").property("limit_price", ObjectBuilder::new().schema_type(Type::Null));
        OneOfBuilder::new()
            .description(Some("A limit order has a limit_price; a market order has none."))
            .item(limit)
            .item(market)
            .into()
    }
}

/// An optional decimal string: absent or `null` is no value, but `""` is
/// an error (`rust_decimal`'s `str_option` would read it as no price).
fn present_decimal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else { return Ok(None) };
    text.parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a decimal string ({e}), e.g. \"50000\"")))
}

/// Query of `GET /v1/quotes` and `GET /v1/book`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SymbolQuery {
    pub market: String,
    /// `BASE/QUOTE` (each 1-12 letters or digits) or a ticker.
    #[param(pattern = r"^([A-Za-z0-9]{1,12}/[A-Za-z0-9]{1,12}|[A-Za-z][A-Za-z0-9.]{0,11})$")]
    pub symbol: String,
    /// Book levels per side (`/v1/book` only; default 10, at most 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 100)]
    pub depth: Option<usize>,
}

/// Query of `GET /v1/instruments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MarketQuery {
    pub market: String,
}

/// Query of `GET /v1/orders`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrdersQuery {
    /// `open` for every non-terminal order, `all`, or one status.
    #[serde(default)]
    #[param(pattern = "^(open|all|new|accepted|partially_filled|filled|canceled|rejected|expired)$")]
    pub status: Option<String>,
    #[serde(default)]
    pub market: Option<String>,
}

/// Query of `/v1/balances` and `/v1/positions`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccountQuery {
    /// Defaults to the node's first market.
    #[serde(default)]
    pub market: Option<String>,
}

/// A stream channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Quotes,
    Trades,
    Book,
    /// The customer's own order updates (symbol optional).
    Orders,
    /// The customer's own fills (symbol optional).
    Fills,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quotes => "quotes",
            Self::Trades => "trades",
            Self::Book => "book",
            Self::Orders => "orders",
            Self::Fills => "fills",
        }
    }

    /// Market-data channels need a symbol; private ones do not.
    pub fn needs_symbol(self) -> bool {
        matches!(self, Self::Quotes | Self::Trades | Self::Book)
    }
}

/// Client → server on `/v1/stream`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientMessage {
    Subscribe {
        channel: Channel,
        market: String,
        #[serde(default)]
        symbol: Option<String>,
    },
    Unsubscribe {
        channel: Channel,
        market: String,
        #[serde(default)]
        symbol: Option<String>,
    },
    Ping,
    /// Places an order exactly as `POST /v1/orders` does (same fields,
    /// checks, limits and idempotency); answered by a [`StreamReply`] whose
    /// `reply_to` is `id`. Customers only.
    PlaceOrder {
        /// Chosen by the client to match the reply; not interpreted.
        id: String,
        #[serde(flatten)]
        order: PlaceOrder,
    },
    /// Cancels an order exactly as `DELETE /v1/orders/{order_id}` does;
    /// answered by a [`StreamReply`]. Customers only.
    CancelOrder {
        id: String,
        order_id: String,
    },
}

impl ClientMessage {
    /// The `id` of a `place_order` or `cancel_order` message that does not
    /// decode, so its error can still name the request it answers.
    pub fn request_id(text: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Request {
            op: String,
            id: String,
        }
        let r: Request = serde_json::from_str(text).ok()?;
        matches!(r.op.as_str(), "place_order" | "cancel_order").then_some(r.id)
    }
}

/// The key of one stream: its sequence numbers count per key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct StreamKey {
    pub channel: Channel,
    pub market: String,
    pub symbol: Option<String>,
}

/// Server → client on `/v1/stream`: `{"channel","market","symbol","seq","data"}`.
///
/// `seq` starts at 1 per stream and has no holes. When Lido could not carry
/// data across (a broker restarted, trades or order updates a slow consumer
/// could not take), it sends a gap marker: `data` is null and `gap` says why.
/// A slow consumer of quotes or book gets the newest update instead of a
/// backlog: `conflated` says how many older ones it replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamEvent {
    pub channel: Channel,
    pub market: String,
    pub symbol: Option<String>,
    pub seq: u64,
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<String>,
    /// How many older updates of this stream this one replaced, because the
    /// algo read slower than they came (quotes and book only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflated: Option<u64>,
}

impl StreamEvent {
    pub fn key(&self) -> StreamKey {
        StreamKey { channel: self.channel, market: self.market.clone(), symbol: self.symbol.clone() }
    }

    /// Decodes `data` into the channel's type (`Quote`, `Trade`, `Book`, `Order`, `Fill`).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data)
    }
}

/// Acknowledgement of a client op.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamAck {
    /// `subscribed`, `unsubscribed` or `pong`.
    pub op: String,
    #[serde(default)]
    pub channel: Option<Channel>,
    #[serde(default)]
    pub market: Option<String>,
    #[serde(default)]
    pub symbol: Option<String>,
}

/// The answer to a `place_order` or `cancel_order` message:
/// `{"reply_to":ID,"status":201,"order":{…}}` or
/// `{"reply_to":ID,"status":409,"error":{"code","message"}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamReply {
    /// The request's `id`.
    pub reply_to: String,
    /// What the REST call would have answered: 201 a new order, 200 the
    /// order the client order id placed before (or a canceled order), 4xx/5xx an error.
    pub status: u16,
    #[serde(flatten)]
    pub outcome: ReplyOutcome,
}

/// An order, or why there is none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplyOutcome {
    Order(Box<Order>),
    Error(ErrorDetail),
}

/// Anything the stream sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ServerMessage {
    /// First: an error reply also has the `error` field of [`Self::Error`].
    Reply(StreamReply),
    Event(StreamEvent),
    Ack(StreamAck),
    Error {
        error: ErrorDetail,
    },
}

/// Summary of an order state change, as carried on the `orders` channel
/// (the `data` is the full [`crate::model::Order`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderChange {
    pub order_id: String,
    pub status: OrderStatus,
    pub ts: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_order_matches_the_design_example() {
        let body = r#"{"market":"paper","symbol":"BTC/USD","side":"buy","type":"limit","quantity":"0.01","limit_price":"50000","time_in_force":"gtc","client_order_id":"c-1"}"#;
        let p: PlaceOrder = serde_json::from_str(body).unwrap();
        assert_eq!(p.order_type, OrderType::Limit);
        assert_eq!(p.quantity.to_string(), "0.01");
        assert_eq!(p.client_order_id.as_deref(), Some("c-1"));
    }

    #[test]
    fn a_limit_price_is_absent_or_a_decimal_string_never_empty() {
        let read = |price: &str| {
            let body = format!(
                r#"{{"market":"paper","symbol":"BTC/USD","side":"buy","type":"market","quantity":"1"{price}}}"#
            );
            serde_json::from_str::<PlaceOrder>(&body).map(|p| p.limit_price)
        };
        assert_eq!(read("").unwrap(), None);
        assert_eq!(read(r#","limit_price":null"#).unwrap(), None);
        assert_eq!(read(r#","limit_price":"50000.5""#).unwrap(), Some(Decimal::new(500005, 1)));
        assert!(read(r#","limit_price":"""#).is_err(), "an empty price is refused, not taken as none");
        assert!(read(r#","limit_price":50000"#).is_err(), "a JSON number is refused: money is exact");
    }

    #[test]
    fn server_messages_are_told_apart() {
        let ev = r#"{"channel":"quotes","market":"paper","symbol":"BTC/USD","seq":3,"data":{"x":1}}"#;
        assert!(matches!(serde_json::from_str::<ServerMessage>(ev).unwrap(), ServerMessage::Event(e) if e.seq == 3));
        let ack = r#"{"op":"subscribed","channel":"quotes","market":"paper","symbol":"BTC/USD"}"#;
        assert!(matches!(serde_json::from_str::<ServerMessage>(ack).unwrap(), ServerMessage::Ack(_)));
        let err = r#"{"error":{"code":"bad","message":"m"}}"#;
        assert!(matches!(serde_json::from_str::<ServerMessage>(err).unwrap(), ServerMessage::Error { .. }));
        let reply = r#"{"reply_to":"r1","status":409,"error":{"code":"order_not_open","message":"m"}}"#;
        let ServerMessage::Reply(reply) = serde_json::from_str::<ServerMessage>(reply).unwrap() else {
            panic!("an error reply is a reply, not a bare error")
        };
        assert_eq!((reply.reply_to.as_str(), reply.status), ("r1", 409));
        assert!(matches!(reply.outcome, ReplyOutcome::Error(e) if e.code == "order_not_open"));
    }

    #[test]
    fn order_ops_carry_the_rest_bodies_flat() {
        let text = r#"{"op":"place_order","id":"r1","market":"paper","symbol":"BTC/USD","side":"buy","type":"limit","quantity":"0.01","limit_price":"50000","client_order_id":"c-1"}"#;
        let ClientMessage::PlaceOrder { id, order } = serde_json::from_str(text).unwrap() else {
            panic!("a place_order op")
        };
        assert_eq!((id.as_str(), order.limit_price), ("r1", Some(Decimal::new(50000, 0))));
        let back = serde_json::to_string(&ClientMessage::PlaceOrder { id, order: order.clone() }).unwrap();
        assert!(
            matches!(serde_json::from_str(&back).unwrap(), ClientMessage::PlaceOrder { order: o, .. } if o == order)
        );
        let cancel: ClientMessage =
            serde_json::from_str(r#"{"op":"cancel_order","id":"r2","order_id":"o-1"}"#).unwrap();
        assert_eq!(cancel, ClientMessage::CancelOrder { id: "r2".into(), order_id: "o-1".into() });
        let bad = r#"{"op":"place_order","id":"r3","market":"paper","quantity":1}"#;
        assert!(serde_json::from_str::<ClientMessage>(bad).is_err());
        assert_eq!(ClientMessage::request_id(bad).as_deref(), Some("r3"), "the error can still name the request");
        assert_eq!(ClientMessage::request_id(r#"{"op":"subscribe","id":"x"}"#), None);
    }
}

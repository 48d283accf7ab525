//! The algo API: REST bodies and the `/v1/stream` WebSocket messages.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::cluster::ServiceState;
use crate::model::{OrderStatus, OrderType, Side, Symbol, TimeInForce};
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
    #[schema(example = "acme")]
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
    /// The broker currently carrying the market.
    pub active_broker: Option<String>,
    pub state: ServiceState,
}

/// `POST /v1/orders`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlaceOrder {
    #[schema(example = "paper")]
    pub market: String,
    #[schema(example = "BTC/USD")]
    pub symbol: String,
    pub side: Side,
    #[serde(rename = "type")]
    pub order_type: OrderType,
    #[schema(value_type = String, example = "0.01")]
    pub quantity: Decimal,
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "50000")]
    pub limit_price: Option<Decimal>,
    #[serde(default)]
    pub time_in_force: TimeInForce,
    /// Unique per customer; the same id again returns the first order.
    #[serde(default)]
    #[schema(example = "c-1")]
    pub client_order_id: Option<String>,
}

/// Query of `GET /v1/quotes` and `GET /v1/book`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SymbolQuery {
    pub market: String,
    pub symbol: String,
    /// Book levels per side (`/v1/book` only; default 10, at most 100).
    #[serde(default)]
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
    /// `open` for every non-terminal order, or one status.
    #[serde(default)]
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

/// Anything the stream sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ServerMessage {
    Event(StreamEvent),
    Ack(StreamAck),
    Error { error: ErrorDetail },
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
    fn server_messages_are_told_apart() {
        let ev = r#"{"channel":"quotes","market":"paper","symbol":"BTC/USD","seq":3,"data":{"x":1}}"#;
        assert!(matches!(serde_json::from_str::<ServerMessage>(ev).unwrap(), ServerMessage::Event(e) if e.seq == 3));
        let ack = r#"{"op":"subscribed","channel":"quotes","market":"paper","symbol":"BTC/USD"}"#;
        assert!(matches!(serde_json::from_str::<ServerMessage>(ack).unwrap(), ServerMessage::Ack(_)));
        let err = r#"{"error":{"code":"bad","message":"m"}}"#;
        assert!(matches!(serde_json::from_str::<ServerMessage>(err).unwrap(), ServerMessage::Error { .. }));
    }
}

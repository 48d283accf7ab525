//! The service protocol: how a manager and the services it supervises talk.
//!
//! 1. A service starts, listens on a WebSocket, and `POST`s a [`CheckIn`] to
//!    its manager's check-in URL (`/v1/internal/checkin`).
//! 2. The manager dials that WebSocket: the pipe. Down go [`ManagerFrame`]s
//!    (commands with an id, heartbeats); up come [`ServiceFrame`]s (replies
//!    to those ids, events, status, heartbeats). One JSON object per text frame.
//! 3. If the pipe drops, the manager re-dials it with backoff; the service
//!    keeps working and buffers the events it must not lose (order updates
//!    and fills); market data is not buffered, it is stale by then.
//!
//! Delivery of must-deliver events: the service numbers them (`seq`, from 1
//! per service incarnation, announced by [`ServiceFrame::Hello`]) and keeps
//! each until the manager acknowledges it ([`ManagerFrame::Ack`],
//! cumulative). A new pipe starts with a replay of everything unacknowledged;
//! the manager drops numbers it has already seen. So a fill written into a
//! socket that was silently dead is sent again, and never counted twice.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::cluster::{ServiceKind, ServiceState};
use crate::model::{
    Balance, Book, Fill, Instrument, OrderStatus, OrderType, Position, Quote, Side, Symbol, TimeInForce, Trade,
};
use crate::ErrorDetail;

/// Path, on a manager, of the check-in endpoint.
pub const CHECKIN_PATH: &str = "/v1/internal/checkin";
/// How often each side sends a heartbeat.
pub const HEARTBEAT_INTERVAL_MS: u64 = 500;
/// Silence after which a side declares the pipe dead.
pub const HEARTBEAT_TIMEOUT_MS: u64 = 3_000;
/// Largest frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// `POST …/checkin` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckIn {
    /// Unique name within the node (`paper`, `k1`).
    pub name: String,
    pub kind: ServiceKind,
    /// The implementation: `paper`, `kraken`, or for traders the program.
    #[serde(rename = "type")]
    pub service_type: String,
    /// Where the service's pipe WebSocket listens (`ws://127.0.0.1:PORT/pipe`).
    pub ws_url: String,
    /// OS process id, when the service is a process.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Incarnation id: a new one each time the service starts, so a manager
    /// can tell a restart from a reconnect.
    pub instance: String,
}

/// Answer to a check-in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckInReply {
    pub accepted: bool,
    /// The node the service now belongs to.
    pub node: String,
}

/// Manager → service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ManagerFrame {
    Command {
        id: u64,
        command: Command,
        /// The order the command is about, so the service's log lines carry
        /// the same ids as the manager's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<Box<OrderTrace>>,
    },
    Heartbeat {
        ts: DateTime<Utc>,
    },
    /// Every must-deliver event up to and including `seq` has been taken.
    Ack {
        seq: u64,
    },
}

/// Service → manager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServiceFrame {
    /// First frame of every pipe: which incarnation of the service this is.
    Hello {
        instance: String,
    },
    Reply {
        id: u64,
        result: Reply,
    },
    /// `seq` is set on must-deliver events (see the module docs).
    Event {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        event: ServiceEvent,
    },
    Status {
        state: ServiceState,
        detail: Option<String>,
    },
    Heartbeat {
        ts: DateTime<Utc>,
    },
}

/// Which market data feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feed {
    Quotes,
    Trades,
    Book,
}

/// Who and what an order is, carried with the commands about it so that
/// the algo side and the broker side log the same ids.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderTrace {
    /// Lido's order id (the venue's client id).
    pub order_id: String,
    /// The algo's client order id.
    pub client_order_id: String,
    pub customer: String,
    pub market: String,
}

/// What a manager asks a service to do. Brokers answer all of these; a
/// hosted trader answers `Stop` and `Ping`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Ping,
    /// Finish in-flight work and exit.
    Stop,
    Instruments,
    Subscribe {
        feed: Feed,
        symbol: Symbol,
    },
    Unsubscribe {
        feed: Feed,
        symbol: Symbol,
    },
    Quote {
        symbol: Symbol,
    },
    Book {
        symbol: Symbol,
        depth: usize,
    },
    PlaceOrder {
        order: VenueOrder,
    },
    CancelOrder {
        account: String,
        client_id: String,
    },
    /// One order by Lido's id, to settle an uncertain send.
    OrderStatus {
        account: String,
        client_id: String,
    },
    OpenOrders {
        account: String,
    },
    Balances {
        account: String,
    },
    Positions {
        account: String,
    },
}

impl Command {
    /// The command's name on the wire (`place_order`), for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Stop => "stop",
            Self::Instruments => "instruments",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Quote { .. } => "quote",
            Self::Book { .. } => "book",
            Self::PlaceOrder { .. } => "place_order",
            Self::CancelOrder { .. } => "cancel_order",
            Self::OrderStatus { .. } => "order_status",
            Self::OpenOrders { .. } => "open_orders",
            Self::Balances { .. } => "balances",
            Self::Positions { .. } => "positions",
        }
    }
}

/// A command's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(ReplyBody),
    Err(ErrorDetail),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum ReplyBody {
    Done,
    Pong,
    Instruments(Vec<Instrument>),
    Quote(Quote),
    Book(Book),
    Order(VenueOrderReport),
    Orders(Vec<VenueOrderReport>),
    Balances(Vec<Balance>),
    Positions(Vec<Position>),
}

/// An order as sent to a venue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VenueOrder {
    /// Lido's order id, used as the venue-side client id.
    pub client_id: String,
    /// The account at the venue (paper keeps one per customer).
    pub account: String,
    pub symbol: Symbol,
    pub side: Side,
    pub order_type: OrderType,
    pub time_in_force: TimeInForce,
    pub quantity: Decimal,
    pub limit_price: Option<Decimal>,
    /// The algo's client order id, for venues that keep it with the order
    /// (the paper venue does): what lets another node adopt the order under
    /// the id the algo knows it by. `None` from venues that do not tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_order_id: Option<String>,
}

/// The venue's view of an order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VenueOrderReport {
    pub client_id: String,
    pub venue_order_id: String,
    pub status: OrderStatus,
    pub filled_quantity: Decimal,
    pub average_price: Option<Decimal>,
    /// The venue's words for a rejection, cancel or expiry.
    pub reason: Option<String>,
    pub ts: DateTime<Utc>,
    /// The order as the venue holds it, when the venue tells (open-order
    /// listings): what lets a restarted node adopt an order it never journaled.
    /// Boxed: most reports have none, and replies stay small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Box<VenueOrder>>,
    /// The venue's ids of the order's executions, when it tells (Kraken's
    /// trade ids, the `exec_id` of its fills): what names a fill booked from
    /// this report, so the real fill arriving later is recognized.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trade_ids: Vec<String>,
}

/// Something a service reports without being asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum ServiceEvent {
    Quote(Quote),
    Trade(Trade),
    Book(Book),
    OrderUpdate(VenueOrderReport),
    Fill(Fill),
    /// Load and health figures, for status.
    Metrics(BTreeMap<String, f64>),
    /// The service scaled its venue connections (`action`: `open_connection`
    /// or `close_connection`), and why: for status and the cluster log.
    Scaled {
        action: String,
        reason: String,
    },
}

impl ServiceEvent {
    /// Events that must survive a dropped pipe.
    pub fn must_deliver(&self) -> bool {
        matches!(self, Self::OrderUpdate(_) | Self::Fill(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = ManagerFrame::Command {
            id: 7,
            command: Command::Subscribe { feed: Feed::Quotes, symbol: Symbol::parse("BTC/USD").unwrap() },
            trace: None,
        };
        let s = serde_json::to_string(&f).unwrap();
        assert_eq!(s, r#"{"type":"command","id":7,"command":{"cmd":"subscribe","feed":"quotes","symbol":"BTC/USD"}}"#);
        assert_eq!(serde_json::from_str::<ManagerFrame>(&s).unwrap(), f);
        for command in [Command::Ping, Command::OpenOrders { account: "a".into() }] {
            let wire = serde_json::to_value(&command).unwrap();
            assert_eq!(wire["cmd"], command.name(), "name() is the wire name");
        }
        let r = ServiceFrame::Reply { id: 7, result: Reply::Err(ErrorDetail::new("unknown_symbol", "no")) };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ServiceFrame>(&s).unwrap(), r);
    }
}

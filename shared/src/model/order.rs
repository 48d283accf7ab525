use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ModelError, Symbol};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    Market,
    Limit,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Good till canceled.
    #[default]
    Gtc,
    /// Immediate or cancel: what does not fill at once is canceled.
    Ioc,
    /// Expires at the end of the venue's trading day.
    Day,
}

/// The life of an order:
///
/// ```text
/// new ─▶ accepted ─▶ partially_filled ─▶ filled
///  │         │              │
///  │         └──────────────┴─▶ canceled | expired
///  └─▶ rejected | canceled | partially_filled | filled
/// ```
///
/// `filled`, `canceled`, `rejected` and `expired` are terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    New,
    Accepted,
    PartiallyFilled,
    Filled,
    Canceled,
    Rejected,
    Expired,
}

impl OrderStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Filled | Self::Canceled | Self::Rejected | Self::Expired)
    }

    /// Still working at the venue (or about to be).
    pub fn is_open(self) -> bool {
        !self.is_terminal()
    }

    /// Whether the state machine allows `self → next`.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (New, Accepted | Rejected | Canceled | PartiallyFilled | Filled | Expired)
                | (Accepted, PartiallyFilled | Filled | Canceled | Expired)
                | (PartiallyFilled, PartiallyFilled | Filled | Canceled | Expired)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Accepted => "accepted",
            Self::PartiallyFilled => "partially_filled",
            Self::Filled => "filled",
            Self::Canceled => "canceled",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("unknown order status {s:?}"))
    }
}

/// An order as Lido knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    /// Lido's id; also the venue-side client id, so a retried send can never
    /// create a second order at the venue.
    pub order_id: String,
    /// The algo's id: unique per customer; the same id again returns this order.
    pub client_order_id: String,
    pub customer: String,
    pub market: String,
    pub symbol: Symbol,
    pub side: Side,
    #[serde(rename = "type")]
    pub order_type: OrderType,
    pub time_in_force: TimeInForce,
    #[schema(value_type = String)]
    pub quantity: Decimal,
    #[schema(value_type = Option<String>)]
    pub limit_price: Option<Decimal>,
    #[schema(value_type = String)]
    pub filled_quantity: Decimal,
    #[schema(value_type = Option<String>)]
    pub average_price: Option<Decimal>,
    pub status: OrderStatus,
    /// Why the venue or Lido rejected, canceled or expired it.
    pub reason: Option<String>,
    /// The broker that carries it.
    pub broker: Option<String>,
    /// The venue's own id, once it has one.
    pub venue_order_id: Option<String>,
    /// Found open at the venue after a restart without a journal record
    /// (placed outside this node, or the journal was restored from a
    /// backup): Lido tracks it from then on; `reason` says so.
    #[serde(default)]
    pub adopted: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    pub fn remaining(&self) -> Decimal {
        self.quantity - self.filled_quantity
    }

    /// Moves the order to `next`, or says why it cannot.
    pub fn transition(&mut self, next: OrderStatus, at: DateTime<Utc>) -> Result<(), ModelError> {
        if !self.status.can_become(next) {
            return Err(ModelError::IllegalTransition { from: self.status, to: next });
        }
        self.status = next;
        self.updated_at = at;
        Ok(())
    }

    /// Books a fill: quantity, average price and status move together.
    pub fn apply_fill(&mut self, fill: &Fill) -> Result<(), ModelError> {
        if fill.order_id != self.order_id {
            return Err(ModelError::WrongOrder { order: self.order_id.clone(), fill_order: fill.order_id.clone() });
        }
        let remaining = self.remaining();
        if fill.quantity <= Decimal::ZERO || fill.quantity > remaining {
            return Err(ModelError::Overfill { fill: fill.quantity, remaining });
        }
        let next = if fill.quantity == remaining { OrderStatus::Filled } else { OrderStatus::PartiallyFilled };
        if !self.status.can_become(next) {
            return Err(ModelError::IllegalTransition { from: self.status, to: next });
        }
        let notional = self.average_price.unwrap_or_default() * self.filled_quantity + fill.price * fill.quantity;
        self.filled_quantity += fill.quantity;
        self.average_price = Some((notional / self.filled_quantity).round_dp(12).normalize());
        self.status = next;
        self.updated_at = fill.ts;
        Ok(())
    }
}

/// One execution against an order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Fill {
    pub fill_id: String,
    pub order_id: String,
    pub symbol: Symbol,
    pub side: Side,
    #[schema(value_type = String)]
    pub price: Decimal,
    #[schema(value_type = String)]
    pub quantity: Decimal,
    /// Fee charged, in the quote currency.
    #[schema(value_type = String)]
    pub fee: Decimal,
    pub ts: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn order(quantity: Decimal) -> Order {
        let now = Utc::now();
        Order {
            order_id: "o-1".into(),
            client_order_id: "c-1".into(),
            customer: "acme".into(),
            market: "paper".into(),
            symbol: Symbol::parse("BTC/USD").unwrap(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            quantity,
            limit_price: Some(dec!(50000)),
            filled_quantity: Decimal::ZERO,
            average_price: None,
            status: OrderStatus::New,
            reason: None,
            broker: None,
            venue_order_id: None,
            adopted: false,
            created_at: now,
            updated_at: now,
        }
    }

    fn fill(quantity: Decimal, price: Decimal) -> Fill {
        Fill {
            fill_id: "f".into(),
            order_id: "o-1".into(),
            symbol: Symbol::parse("BTC/USD").unwrap(),
            side: Side::Buy,
            price,
            quantity,
            fee: Decimal::ZERO,
            ts: Utc::now(),
        }
    }

    #[test]
    fn legal_path_to_filled() {
        let mut o = order(dec!(1));
        o.transition(OrderStatus::Accepted, Utc::now()).unwrap();
        o.apply_fill(&fill(dec!(0.4), dec!(100))).unwrap();
        assert_eq!(o.status, OrderStatus::PartiallyFilled);
        o.apply_fill(&fill(dec!(0.6), dec!(200))).unwrap();
        assert_eq!(o.status, OrderStatus::Filled);
        assert_eq!(o.filled_quantity, dec!(1));
        assert_eq!(o.average_price, Some(dec!(160)));
    }

    #[test]
    fn terminal_states_are_final() {
        use OrderStatus::*;
        for terminal in [Filled, Canceled, Rejected, Expired] {
            for next in [New, Accepted, PartiallyFilled, Filled, Canceled, Rejected, Expired] {
                assert!(!terminal.can_become(next), "{terminal} -> {next} must be illegal");
            }
        }
    }

    #[test]
    fn illegal_transitions_are_errors() {
        use OrderStatus::*;
        let mut o = order(dec!(1));
        o.transition(Accepted, Utc::now()).unwrap();
        assert_eq!(o.transition(New, Utc::now()), Err(ModelError::IllegalTransition { from: Accepted, to: New }));
        assert!(o.transition(Rejected, Utc::now()).is_err(), "an accepted order cannot be rejected");
        assert!(o.transition(Accepted, Utc::now()).is_err());
        o.transition(Canceled, Utc::now()).unwrap();
        assert!(o.transition(Filled, Utc::now()).is_err());
        assert_eq!(o.status, Canceled);
    }

    #[test]
    fn overfill_is_refused_and_changes_nothing() {
        let mut o = order(dec!(1));
        o.apply_fill(&fill(dec!(0.5), dec!(100))).unwrap();
        let before = o.clone();
        assert!(matches!(o.apply_fill(&fill(dec!(0.6), dec!(100))), Err(ModelError::Overfill { .. })));
        assert!(o.apply_fill(&fill(dec!(0), dec!(100))).is_err());
        assert_eq!(o, before);
    }

    #[test]
    fn fill_on_canceled_order_is_refused() {
        let mut o = order(dec!(1));
        o.transition(OrderStatus::Canceled, Utc::now()).unwrap();
        assert!(o.apply_fill(&fill(dec!(0.5), dec!(100))).is_err());
    }

    #[test]
    fn decimals_serialize_as_strings() {
        let o = order(dec!(0.01));
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["quantity"], "0.01");
        assert_eq!(v["limit_price"], "50000");
        assert_eq!(v["type"], "limit");
        assert_eq!(v["status"], "new");
    }
}

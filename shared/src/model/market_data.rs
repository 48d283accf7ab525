use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Side, Symbol};

/// Top of book plus last trade.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Quote {
    pub symbol: Symbol,
    #[schema(value_type = String)]
    pub bid: Decimal,
    #[schema(value_type = String)]
    pub ask: Decimal,
    #[schema(value_type = String)]
    pub bid_size: Decimal,
    #[schema(value_type = String)]
    pub ask_size: Decimal,
    #[schema(value_type = Option<String>)]
    pub last: Option<Decimal>,
    pub ts: DateTime<Utc>,
}

/// A public trade print.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Trade {
    pub symbol: Symbol,
    pub trade_id: String,
    #[schema(value_type = String)]
    pub price: Decimal,
    #[schema(value_type = String)]
    pub quantity: Decimal,
    /// The aggressor's side.
    pub side: Side,
    pub ts: DateTime<Utc>,
}

/// One bar (candle) of a price history: open, high, low, close and volume
/// over the interval that starts at `start`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Bar {
    pub symbol: Symbol,
    pub start: DateTime<Utc>,
    #[schema(value_type = String)]
    pub open: Decimal,
    #[schema(value_type = String)]
    pub high: Decimal,
    #[schema(value_type = String)]
    pub low: Decimal,
    #[schema(value_type = String)]
    pub close: Decimal,
    #[schema(value_type = String)]
    pub volume: Decimal,
}

/// One L2 price level, on the wire as `["price","size"]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(value_type = String, example = json!(["50000.1", "0.25"]))]
pub struct BookLevel(pub Decimal, pub Decimal);

impl BookLevel {
    pub fn price(&self) -> Decimal {
        self.0
    }
    pub fn size(&self) -> Decimal {
        self.1
    }
}

/// An L2 order book snapshot, best levels first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Book {
    pub symbol: Symbol,
    pub bids: Vec<BookLevel>,
    pub asks: Vec<BookLevel>,
    pub ts: DateTime<Utc>,
}

impl Book {
    /// The first `depth` levels on each side.
    pub fn truncated(mut self, depth: usize) -> Self {
        self.bids.truncate(depth);
        self.asks.truncate(depth);
        self
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn book_level_is_a_pair_of_strings() {
        let l = BookLevel(dec!(50000.1), dec!(0.25));
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"["50000.1","0.25"]"#);
        let back: BookLevel = serde_json::from_str(r#"["1.5","2"]"#).unwrap();
        assert_eq!(back, BookLevel(dec!(1.5), dec!(2)));
    }
}

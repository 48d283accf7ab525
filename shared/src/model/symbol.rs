use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ModelError;

/// A normalized symbol: `BASE/QUOTE` for pairs (`BTC/USD`), a ticker for
/// equities (`AAPL`, `BRK.B`). Always upper case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "BTC/USD")]
pub struct Symbol(String);

impl Symbol {
    /// Parses and normalizes (upper-cases) a symbol.
    pub fn parse(raw: &str) -> Result<Self, ModelError> {
        let upper = raw.trim().to_ascii_uppercase();
        let part_ok = |p: &str| !p.is_empty() && p.len() <= 12 && p.chars().all(|c| c.is_ascii_alphanumeric());
        let ok = match upper.split_once('/') {
            Some((base, quote)) => part_ok(base) && part_ok(quote),
            None => {
                !upper.is_empty()
                    && upper.len() <= 12
                    && upper.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && upper.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
            }
        };
        if !ok {
            return Err(ModelError::InvalidSymbol(raw.to_string()));
        }
        Ok(Self(upper))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `BTC` for `BTC/USD`, the ticker itself for an equity.
    pub fn base(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(b, _)| b)
    }

    /// `USD` for `BTC/USD`, `None` for an equity ticker (quoted in USD).
    pub fn quote(&self) -> Option<&str> {
        self.0.split_once('/').map(|(_, q)| q)
    }
}

impl TryFrom<String> for Symbol {
    type Error = ModelError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Symbol::parse(&value)
    }
}

impl From<Symbol> for String {
    fn from(value: Symbol) -> Self {
        value.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssetClass {
    Crypto,
    Equity,
}

/// What a venue lets us trade, with the increments it accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Instrument {
    pub symbol: Symbol,
    pub asset_class: AssetClass,
    /// Asset bought or sold (`BTC`, `AAPL`).
    pub base: String,
    /// Currency prices are in (`USD`).
    pub quote: String,
    /// Smallest price increment.
    #[schema(value_type = String, example = "0.1")]
    pub tick_size: Decimal,
    /// Smallest quantity increment.
    #[schema(value_type = String, example = "0.0001")]
    pub lot_size: Decimal,
    /// Smallest order quantity.
    #[schema(value_type = String, example = "0.0001")]
    pub min_quantity: Decimal,
}

impl Instrument {
    /// Why `quantity` is not acceptable, if it is not.
    pub fn check_quantity(&self, quantity: Decimal) -> Result<(), String> {
        if quantity <= Decimal::ZERO {
            return Err(format!("quantity must be positive, got {quantity}"));
        }
        if quantity < self.min_quantity {
            return Err(format!("quantity {quantity} is below the minimum {} for {}", self.min_quantity, self.symbol));
        }
        if !is_multiple(quantity, self.lot_size) {
            return Err(format!(
                "quantity {quantity} is not a multiple of the lot size {} for {}",
                self.lot_size, self.symbol
            ));
        }
        Ok(())
    }

    /// Why `price` is not acceptable, if it is not.
    pub fn check_price(&self, price: Decimal) -> Result<(), String> {
        if price <= Decimal::ZERO {
            return Err(format!("price must be positive, got {price}"));
        }
        if !is_multiple(price, self.tick_size) {
            return Err(format!(
                "price {price} is not a multiple of the tick size {} for {}",
                self.tick_size, self.symbol
            ));
        }
        Ok(())
    }
}

/// Whether `value` is a whole number of `step`s; a step of zero or less
/// (a venue that sets no increment) accepts any value.
fn is_multiple(value: Decimal, step: Decimal) -> bool {
    step <= Decimal::ZERO || matches!(value.checked_rem(step), Some(r) if r.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_increment_accepts_any_value_instead_of_dividing_by_zero() {
        let free = Instrument {
            symbol: Symbol::parse("X/USD").unwrap(),
            asset_class: AssetClass::Crypto,
            base: "X".into(),
            quote: "USD".into(),
            tick_size: Decimal::ZERO,
            lot_size: Decimal::ZERO,
            min_quantity: Decimal::ZERO,
        };
        assert_eq!(free.check_quantity(Decimal::new(12345, 7)), Ok(()));
        assert_eq!(free.check_price(Decimal::MAX), Ok(()));
    }

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(Symbol::parse("btc/usd").unwrap().as_str(), "BTC/USD");
        assert_eq!(Symbol::parse("AAPL").unwrap().base(), "AAPL");
        assert_eq!(Symbol::parse("BRK.B").unwrap().quote(), None);
        assert_eq!(Symbol::parse("ETH/USD").unwrap().quote(), Some("USD"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "/", "BTC/", "/USD", "BTC/USD/EUR", "A B", "1ABC", "ÄPL", "BTC-USD"] {
            assert!(Symbol::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn serializes_as_string() {
        let s: Symbol = serde_json::from_str("\"btc/usd\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"BTC/USD\"");
        assert!(serde_json::from_str::<Symbol>("\"no way\"").is_err());
    }
}

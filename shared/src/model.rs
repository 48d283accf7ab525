//! The trading domain. Every price and quantity is a `Decimal`.

mod account;
mod market_data;
mod order;
mod symbol;

pub use account::{Balance, Position};
pub use market_data::{Bar, Book, BookLevel, Quote, Trade};
pub use order::{Fill, Order, OrderStatus, OrderType, Side, TimeInForce};
pub use symbol::{AssetClass, Instrument, Symbol};

/// A domain rule was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("invalid symbol {0:?}: use BASE/QUOTE for pairs (BTC/USD) or a ticker (AAPL)")]
    InvalidSymbol(String),
    #[error("illegal order transition from {from} to {to}")]
    IllegalTransition { from: OrderStatus, to: OrderStatus },
    #[error("fill of {fill} would exceed the order's remaining quantity {remaining}")]
    Overfill { fill: rust_decimal::Decimal, remaining: rust_decimal::Decimal },
    #[error("fill belongs to order {fill_order}, not {order}")]
    WrongOrder { order: String, fill_order: String },
}

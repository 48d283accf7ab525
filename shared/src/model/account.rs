use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Symbol;

/// Cash or coin held at the venue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Balance {
    pub asset: String,
    /// Everything held.
    #[schema(value_type = String)]
    pub total: Decimal,
    /// What is not reserved by open orders.
    #[schema(value_type = String)]
    pub available: Decimal,
}

/// Net holding of an instrument.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Position {
    pub symbol: Symbol,
    #[schema(value_type = String)]
    pub quantity: Decimal,
    /// Volume-weighted entry price of the open quantity.
    #[schema(value_type = Option<String>)]
    pub average_price: Option<Decimal>,
}

//! The venue's bookkeeping: accounts (holdings, reservations, positions)
//! and the record of each order.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use lido_shared::model::{OrderStatus, Symbol};
use lido_shared::pipe::{VenueOrder, VenueOrderReport};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

/// One asset of an account.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Holding {
    pub(super) total: Decimal,
    /// Held back for open orders.
    pub(super) reserved: Decimal,
}

impl Holding {
    pub(super) fn available(&self) -> Decimal {
        self.total - self.reserved
    }
}

/// Net long holding of one instrument (there is no shorting).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Lot {
    pub(super) quantity: Decimal,
    pub(super) average_price: Option<Decimal>,
}

impl Lot {
    /// Adds a buy, moving the volume-weighted average entry price.
    pub(super) fn buy(&mut self, price: Decimal, quantity: Decimal) {
        let cost = self.average_price.unwrap_or_default() * self.quantity + price * quantity;
        self.quantity += quantity;
        self.average_price = Some(average(cost, self.quantity));
    }

    /// Removes a sell; the entry price of what is left does not change.
    pub(super) fn sell(&mut self, quantity: Decimal) {
        self.quantity -= quantity;
        if self.quantity <= Decimal::ZERO {
            self.quantity = Decimal::ZERO;
            self.average_price = None;
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Account {
    pub(super) holdings: BTreeMap<String, Holding>,
    pub(super) positions: BTreeMap<Symbol, Lot>,
}

impl Account {
    pub(super) fn new(starting_cash: Decimal) -> Self {
        let cash = Holding { total: starting_cash, reserved: Decimal::ZERO };
        Self { holdings: BTreeMap::from([(CASH.to_string(), cash)]), positions: BTreeMap::new() }
    }

    pub(super) fn available(&self, asset: &str) -> Decimal {
        self.holdings.get(asset).map_or(Decimal::ZERO, Holding::available)
    }

    pub(super) fn holding(&mut self, asset: &str) -> &mut Holding {
        self.holdings.entry(asset.to_string()).or_default()
    }
}

/// The currency new accounts are funded in.
pub(super) const CASH: &str = "USD";

/// `notional / quantity`, rounded like `Order::apply_fill` does.
pub(super) fn average(notional: Decimal, quantity: Decimal) -> Decimal {
    (notional / quantity).round_dp(12).normalize()
}

/// Money for a message: two decimals, `need` rounded up, `have` down.
pub(super) fn money(amount: Decimal, strategy: RoundingStrategy) -> String {
    format!("{:.2}", amount.round_dp_with_strategy(2, strategy))
}

// ---------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------

/// An order and what has happened to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct OrderState {
    pub(super) order: VenueOrder,
    pub(super) venue_order_id: String,
    pub(super) status: OrderStatus,
    pub(super) filled_quantity: Decimal,
    pub(super) filled_notional: Decimal,
    pub(super) reason: Option<String>,
    pub(super) updated: DateTime<Utc>,
    /// What the order holds back in its account (quote for buys, base for sells).
    pub(super) reserved: Decimal,
    /// The UTC trading day it was placed on (DAY orders end with it).
    pub(super) day: NaiveDate,
    /// The ids of its fills, oldest first: reported as the order's trade
    /// ids, so a node that books a fill from a report knows which fill it
    /// stands for (state saved before these were kept has none).
    #[serde(default)]
    pub(super) fill_ids: Vec<String>,
}

impl OrderState {
    pub(super) fn remaining(&self) -> Decimal {
        self.order.quantity - self.filled_quantity
    }

    pub(super) fn report(&self) -> VenueOrderReport {
        VenueOrderReport {
            client_id: self.order.client_id.clone(),
            venue_order_id: self.venue_order_id.clone(),
            status: self.status,
            filled_quantity: self.filled_quantity,
            average_price: (self.filled_quantity > Decimal::ZERO)
                .then(|| average(self.filled_notional, self.filled_quantity)),
            reason: self.reason.clone(),
            ts: self.updated,
            order: None,
            trade_ids: self.fill_ids.clone(),
        }
    }

    /// Ends the order with `status` and `reason`.
    pub(super) fn finish(&mut self, status: OrderStatus, reason: &str, now: DateTime<Utc>) {
        self.status = status;
        self.reason = Some(reason.to_string());
        self.updated = now;
    }
}

//! Kraken's counters, as docs.kraken.com describes them.
//!
//! - "Spot Trading Limits" (`/exchange/guides/general/ratelimits`): a rate
//!   counter per client and pair, shared by REST, WebSocket and FIX. AddOrder
//!   adds a fixed 1 "always applied on receipt of the transaction (even if
//!   the transaction fails validation)"; CancelOrder adds by the order's age
//!   (+8 under 5 s, +6 under 10 s, +5 under 15 s, +4 under 45 s, +2 under
//!   90 s, +1 under 300 s); AmendOrder adds 1 plus +3 / +2 / +1 under 5 / 10
//!   / 15 s. The counter decays per second by tier (Starter 1, Intermediate
//!   2.34, Pro 3.75) and its threshold is 60 / 125 / 180; at it the engine
//!   answers `EOrder:Rate limit exceeded`.
//! - "Spot REST Rate Limits" (`/exchange/guides/rest/ratelimits`): a call
//!   counter per API key, +1 a call, +2 for ledger/trade history, AddOrder
//!   and CancelOrder not counted; maximum 15 / 20 / 20, decay 0.33 / 0.5 /
//!   1 per second; past it `EAPI:Rate limit exceeded`.

use std::time::{Duration, Instant};

use rust_decimal::Decimal;

/// An account's verification tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tier {
    Starter,
    Intermediate,
    #[default]
    Pro,
}

impl Tier {
    /// The trading counter's threshold.
    pub fn trading_max(self) -> Decimal {
        match self {
            Self::Starter => Decimal::from(60),
            Self::Intermediate => Decimal::from(125),
            Self::Pro => Decimal::from(180),
        }
    }

    /// The trading counter's decay per second.
    pub fn trading_decay(self) -> Decimal {
        match self {
            Self::Starter => Decimal::ONE,
            Self::Intermediate => Decimal::new(234, 2),
            Self::Pro => Decimal::new(375, 2),
        }
    }

    /// The REST call counter's maximum.
    pub fn rest_max(self) -> Decimal {
        match self {
            Self::Starter => Decimal::from(15),
            Self::Intermediate | Self::Pro => Decimal::from(20),
        }
    }

    /// The REST call counter's decay per second.
    pub fn rest_decay(self) -> Decimal {
        match self {
            Self::Starter => Decimal::new(33, 2),
            Self::Intermediate => Decimal::new(5, 1),
            Self::Pro => Decimal::ONE,
        }
    }
}

/// A counter that decays linearly with time, never below zero.
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    value: Decimal,
    at: Instant,
}

impl Counter {
    pub fn new(now: Instant) -> Self {
        Self { value: Decimal::ZERO, at: now }
    }

    /// The value at `now`, after decay at `per_sec`.
    pub fn level(&self, now: Instant, per_sec: Decimal) -> Decimal {
        let secs = Decimal::from(now.saturating_duration_since(self.at).as_millis() as u64) / Decimal::from(1000);
        (self.value - per_sec * secs).max(Decimal::ZERO)
    }

    /// Adds `n` at `now`; returns the new value.
    pub fn add(&mut self, now: Instant, per_sec: Decimal, n: Decimal) -> Decimal {
        self.value = self.level(now, per_sec) + n;
        self.at = now;
        self.value
    }
}

/// The decaying count a cancel adds, by the age of the order it cancels.
pub fn cancel_penalty(age: Duration) -> Decimal {
    let s = age.as_secs_f64();
    let n = if s < 5.0 {
        8
    } else if s < 10.0 {
        6
    } else if s < 15.0 {
        5
    } else if s < 45.0 {
        4
    } else if s < 90.0 {
        2
    } else if s < 300.0 {
        1
    } else {
        0
    };
    Decimal::from(n)
}

/// What an amend adds: the fixed 1 and the decaying count by age.
pub fn amend_penalty(age: Duration) -> Decimal {
    let s = age.as_secs_f64();
    let extra = if s < 5.0 {
        3
    } else if s < 10.0 {
        2
    } else if s < 15.0 {
        1
    } else {
        0
    };
    Decimal::from(1 + extra)
}

/// What a private REST call adds to the call counter (`None`: a trading
/// call, counted on the trading counter instead).
pub fn rest_cost(method: &str) -> Option<Decimal> {
    match method {
        "AddOrder" | "CancelOrder" => None,
        "Ledgers" | "QueryLedgers" | "TradesHistory" => Some(Decimal::TWO),
        _ => Some(Decimal::ONE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_decay_by_tier() {
        let t0 = Instant::now();
        let mut c = Counter::new(t0);
        for _ in 0..60 {
            c.add(t0, Tier::Starter.trading_decay(), Decimal::ONE);
        }
        assert_eq!(c.level(t0, Tier::Starter.trading_decay()), Tier::Starter.trading_max());
        assert_eq!(c.level(t0 + Duration::from_secs(10), Tier::Starter.trading_decay()), Decimal::from(50));
        assert_eq!(c.level(t0 + Duration::from_secs(10), Tier::Pro.trading_decay()), Decimal::new(225, 1));
        assert_eq!(c.level(t0 + Duration::from_secs(100), Tier::Starter.trading_decay()), Decimal::ZERO);
    }

    #[test]
    fn cancel_penalties_follow_the_order_age_table() {
        let at = |s: u64| cancel_penalty(Duration::from_millis(s));
        assert_eq!(
            [at(0), at(4_999), at(5_000), at(12_000), at(30_000), at(60_000), at(200_000), at(300_000)],
            [8, 8, 6, 5, 4, 2, 1, 0].map(Decimal::from)
        );
        assert_eq!(amend_penalty(Duration::from_secs(1)), Decimal::from(4));
        assert_eq!(amend_penalty(Duration::from_secs(20)), Decimal::ONE);
    }

    #[test]
    fn trading_calls_are_not_on_the_rest_counter() {
        assert_eq!(rest_cost("AddOrder"), None);
        assert_eq!(rest_cost("CancelOrder"), None);
        assert_eq!(rest_cost("TradesHistory"), Some(Decimal::TWO));
        assert_eq!(rest_cost("Balance"), Some(Decimal::ONE));
    }
}

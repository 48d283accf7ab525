//! Kraken's rate limits as pure counters, so the broker waits instead of
//! earning `EAPI:Rate limit exceeded` (and, if it kept going, a lockout).
//!
//! Two counters are documented (docs.kraken.com "Spot REST Rate Limits" and
//! "Spot Trading Limits"):
//!
//! - **REST call counter**, one per API key: every private call adds 1,
//!   ledger and trade history queries add 2; AddOrder and CancelOrder do not
//!   count here. It decays continuously by tier: Starter max 15, −0.33/s;
//!   Intermediate max 20, −0.5/s; Pro max 20, −1/s.
//! - **Trading rate counter**, one per pair, shared by REST, WebSocket and
//!   FIX: AddOrder adds 1; a cancel adds 8/6/5/4/2/1 if the order rested
//!   less than 5/10/15/45/90/300 s (0 after that); an amend adds 1 + 3/2/1
//!   (< 5/10/15 s); an edit 1 + 6/5/4/2/1 (< 5/10/15/45/90 s). Thresholds:
//!   Starter 60, −1/s; Intermediate 125, −2.34/s; Pro 180, −3.75/s.
//!
//! A [`CallCounter`] models one counter with integer arithmetic (millionths
//! of a point, nanoseconds), and answers how long to wait before a call of
//! a given cost so the counter never goes above its maximum. It takes the
//! time as an argument: no clock, no sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

const MICRO: u64 = 1_000_000;

/// A Kraken account verification tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Starter,
    Intermediate,
    Pro,
}

impl Tier {
    /// Parses `starter`, `intermediate` or `pro` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "starter" => Some(Self::Starter),
            "intermediate" => Some(Self::Intermediate),
            "pro" => Some(Self::Pro),
            _ => None,
        }
    }

    /// The REST call counter's limits for this tier.
    pub fn rest_limits(self) -> Limits {
        match self {
            Self::Starter => Limits::new(15, 330_000),
            Self::Intermediate => Limits::new(20, 500_000),
            Self::Pro => Limits::new(20, 1_000_000),
        }
    }

    /// The per-pair trading rate counter's limits for this tier.
    pub fn trading_limits(self) -> Limits {
        match self {
            Self::Starter => Limits::new(60, 1_000_000),
            Self::Intermediate => Limits::new(125, 2_340_000),
            Self::Pro => Limits::new(180, 3_750_000),
        }
    }
}

/// A counter's maximum and its decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Highest value the counter may reach, in points.
    pub max: u32,
    /// Decay per second, in millionths of a point.
    pub decay_micro_per_sec: u64,
}

impl Limits {
    pub fn new(max: u32, decay_micro_per_sec: u64) -> Self {
        Self { max, decay_micro_per_sec }
    }

    /// The same limits with `points` kept in reserve (Kraken decays "every
    /// couple of seconds", a little behind this continuous model).
    pub fn with_headroom(self, points: u32) -> Self {
        Self { max: self.max.saturating_sub(points), ..self }
    }
}

/// What a private REST method costs on the REST call counter.
pub fn rest_cost(method: &str) -> u32 {
    match method {
        "Ledgers" | "QueryLedgers" | "TradesHistory" | "QueryTrades" => 2,
        // Counted on the per-pair trading counter instead.
        "AddOrder" | "AddOrderBatch" | "CancelOrder" | "CancelOrderBatch" | "EditOrder" | "AmendOrder" => 0,
        _ => 1,
    }
}

/// One decaying counter.
#[derive(Debug, Clone)]
pub struct CallCounter {
    limits: Limits,
    /// Value in millionths of a point at `at`.
    level: u64,
    at: Option<Instant>,
}

impl CallCounter {
    pub fn new(limits: Limits) -> Self {
        Self { limits, level: 0, at: None }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn level_micro_at(&self, now: Instant) -> u64 {
        let Some(at) = self.at else { return 0 };
        let elapsed = now.saturating_duration_since(at).as_nanos();
        let decayed = elapsed * u128::from(self.limits.decay_micro_per_sec) / 1_000_000_000;
        self.level.saturating_sub(u64::try_from(decayed).unwrap_or(u64::MAX))
    }

    /// The counter's value at `now`, in points (for status display).
    pub fn level(&self, now: Instant) -> f64 {
        self.level_micro_at(now) as f64 / MICRO as f64
    }

    /// How long to wait from `now` before a call of `cost` points so the
    /// counter stays at or below its maximum; zero if it can go now. A cost
    /// above the maximum is treated as the maximum (it waits for an empty
    /// counter rather than forever).
    pub fn cost_wait(&self, cost: u32, now: Instant) -> Duration {
        let max = u64::from(self.limits.max) * MICRO;
        let cost = (u64::from(cost) * MICRO).min(max);
        let level = self.level_micro_at(now);
        let excess = (level + cost).saturating_sub(max);
        if excess == 0 {
            return Duration::ZERO;
        }
        if self.limits.decay_micro_per_sec == 0 {
            return Duration::MAX;
        }
        // Round up so that after the wait the counter is surely low enough.
        let nanos = (u128::from(excess) * 1_000_000_000).div_ceil(u128::from(self.limits.decay_micro_per_sec));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The counter's value at `now` in millionths of a point, to share it
    /// with another process ([`Self::set_level`]).
    pub fn level_micro(&self, now: Instant) -> u64 {
        self.level_micro_at(now)
    }

    /// Sets the counter to `level_micro` at `now`: the value another
    /// process left, already decayed to now.
    pub fn set_level(&mut self, level_micro: u64, now: Instant) {
        self.level = level_micro;
        self.at = Some(now);
    }

    /// Counts a call of `cost` made at `now`.
    pub fn record(&mut self, cost: u32, now: Instant) {
        let level = self.level_micro_at(now);
        self.level = level + u64::from(cost) * MICRO;
        self.at = Some(now);
    }

    /// Counts the call if it may go now, else says how long to wait.
    pub fn try_acquire(&mut self, cost: u32, now: Instant) -> Result<(), Duration> {
        match self.cost_wait(cost, now) {
            Duration::ZERO => {
                self.record(cost, now);
                Ok(())
            }
            wait => Err(wait),
        }
    }

    /// Kraken said the limit is exceeded: believe it, the counter is full.
    pub fn saturate(&mut self, now: Instant) {
        self.level = self.level_micro_at(now).max(u64::from(self.limits.max) * MICRO);
        self.at = Some(now);
    }
}

/// An order action on the trading rate counter, with the age of the order
/// it acts on where that matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeAction {
    Add,
    Amend { age: Duration },
    Edit { age: Duration },
    Cancel { age: Duration },
}

impl TradeAction {
    /// Points this action adds to the pair's trading counter.
    pub fn cost(self) -> u32 {
        let secs = |age: Duration| age.as_secs_f64();
        match self {
            Self::Add => 1,
            Self::Amend { age } => {
                1 + match secs(age) {
                    s if s < 5.0 => 3,
                    s if s < 10.0 => 2,
                    s if s < 15.0 => 1,
                    _ => 0,
                }
            }
            Self::Edit { age } => {
                1 + match secs(age) {
                    s if s < 5.0 => 6,
                    s if s < 10.0 => 5,
                    s if s < 15.0 => 4,
                    s if s < 45.0 => 2,
                    s if s < 90.0 => 1,
                    _ => 0,
                }
            }
            Self::Cancel { age } => match secs(age) {
                s if s < 5.0 => 8,
                s if s < 10.0 => 6,
                s if s < 15.0 => 5,
                s if s < 45.0 => 4,
                s if s < 90.0 => 2,
                s if s < 300.0 => 1,
                _ => 0,
            },
        }
    }
}

/// The trading rate counters of one account, one per pair.
#[derive(Debug, Clone)]
pub struct TradingCounters {
    limits: Limits,
    pairs: HashMap<String, CallCounter>,
}

impl TradingCounters {
    pub fn new(limits: Limits) -> Self {
        Self { limits, pairs: HashMap::new() }
    }

    /// How long to wait before `action` on `pair`.
    pub fn wait(&self, pair: &str, action: TradeAction, now: Instant) -> Duration {
        self.pairs.get(pair).map_or_else(
            || CallCounter::new(self.limits).cost_wait(action.cost(), now),
            |c| c.cost_wait(action.cost(), now),
        )
    }

    /// Counts `action` on `pair` at `now`.
    pub fn record(&mut self, pair: &str, action: TradeAction, now: Instant) {
        let limits = self.limits;
        self.pairs.entry(pair.to_string()).or_insert_with(|| CallCounter::new(limits)).record(action.cost(), now);
    }

    /// The counter of `pair` at `now`, in points.
    pub fn level(&self, pair: &str, now: Instant) -> f64 {
        self.pairs.get(pair).map_or(0.0, |c| c.level(now))
    }

    /// The busiest pair's counter as a share of the threshold (0 to 1), for status.
    pub fn busiest_share(&self, now: Instant) -> f64 {
        let busiest = self.pairs.values().map(|c| c.level(now)).fold(0.0, f64::max);
        busiest / f64::from(self.limits.max.max(1))
    }

    /// Kraken answered `EOrder:Rate limit exceeded` for `pair`.
    pub fn saturate(&mut self, pair: &str, now: Instant) {
        let limits = self.limits;
        self.pairs.entry(pair.to_string()).or_insert_with(|| CallCounter::new(limits)).saturate(now);
    }
}

/// One pair's trading counter as the account's brokers share it: its level
/// at a wall-clock time (microseconds since the Unix epoch), so processes
/// with clocks of their own (`Instant`s do not cross processes) read the
/// same counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PairLevel {
    /// Millionths of a point at `at_micros`.
    pub level_micro: u64,
    pub at_micros: u64,
}

/// Why an order action would break Kraken's trading rate limit: the
/// counter, its threshold and decay, and how long until the action fits.
#[derive(Debug, Clone, PartialEq)]
pub struct TradingRefusal {
    pub pair: String,
    pub level: f64,
    pub cost: u32,
    pub limits: Limits,
    pub retry_in: Duration,
}

impl std::fmt::Display for TradingRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let decay = self.limits.decay_micro_per_sec as f64 / MICRO as f64;
        write!(
            f,
            "kraken trading rate limit for {}: counter {:.0} of {}, this action adds {}, decays {decay}/s; retry in {} s",
            self.pair,
            self.level.ceil(),
            self.limits.max,
            self.cost,
            self.retry_in.as_secs_f64().ceil().max(1.0),
        )
    }
}

/// The per-pair trading counters of one account (Kraken's "Spot Trading
/// Limits": one counter per pair, shared by every connection and protocol
/// of the account), on the wall clock so the node's brokers on one key can
/// keep them in one file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TradingLedger {
    pub pairs: std::collections::BTreeMap<String, PairLevel>,
}

impl TradingLedger {
    fn level_micro_at(&self, pair: &str, limits: Limits, now_micros: u64) -> u64 {
        let Some(p) = self.pairs.get(pair) else { return 0 };
        let elapsed = u128::from(now_micros.saturating_sub(p.at_micros));
        let decayed = elapsed * u128::from(limits.decay_micro_per_sec) / 1_000_000;
        p.level_micro.saturating_sub(u64::try_from(decayed).unwrap_or(u64::MAX))
    }

    /// The counter of `pair` at `now_micros`, in points.
    pub fn level(&self, pair: &str, limits: Limits, now_micros: u64) -> f64 {
        self.level_micro_at(pair, limits, now_micros) as f64 / MICRO as f64
    }

    /// Counts `action` on `pair` if the counter stays at or under the
    /// threshold; else leaves it and says why, with the wait until it fits.
    pub fn charge(
        &mut self,
        pair: &str,
        action: TradeAction,
        limits: Limits,
        now_micros: u64,
    ) -> Result<(), TradingRefusal> {
        let cost = action.cost();
        let max = u64::from(limits.max) * MICRO;
        let level = self.level_micro_at(pair, limits, now_micros);
        let excess = (level + u64::from(cost) * MICRO).saturating_sub(max);
        if excess > 0 {
            let retry_in = if limits.decay_micro_per_sec == 0 {
                Duration::MAX
            } else {
                let micros = (u128::from(excess) * 1_000_000).div_ceil(u128::from(limits.decay_micro_per_sec));
                Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
            };
            return Err(TradingRefusal {
                pair: pair.to_string(),
                level: level as f64 / MICRO as f64,
                cost,
                limits,
                retry_in,
            });
        }
        self.pairs.insert(
            pair.to_string(),
            PairLevel { level_micro: level + u64::from(cost) * MICRO, at_micros: now_micros },
        );
        Ok(())
    }

    /// Kraken answered `EOrder:Rate limit exceeded` for `pair`: its counter
    /// is at the threshold, whatever this ledger thought.
    pub fn saturate(&mut self, pair: &str, limits: Limits, now_micros: u64) {
        let level = self.level_micro_at(pair, limits, now_micros).max(u64::from(limits.max) * MICRO);
        self.pairs.insert(pair.to_string(), PairLevel { level_micro: level, at_micros: now_micros });
    }

    /// The busiest pair's counter as a share of the threshold (0 to 1).
    pub fn busiest_share(&self, limits: Limits, now_micros: u64) -> f64 {
        let busiest = self.pairs.keys().map(|p| self.level(p, limits, now_micros)).fold(0.0, f64::max);
        busiest / f64::from(limits.max.max(1))
    }

    /// Drops pairs whose counter has decayed to zero (keeps the file small).
    pub fn prune(&mut self, limits: Limits, now_micros: u64) {
        let idle: Vec<String> =
            self.pairs.keys().filter(|p| self.level_micro_at(p, limits, now_micros) == 0).cloned().collect();
        for p in idle {
            self.pairs.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn documented_tiers() {
        assert_eq!(Tier::Starter.rest_limits(), Limits::new(15, 330_000));
        assert_eq!(Tier::Intermediate.rest_limits(), Limits::new(20, 500_000));
        assert_eq!(Tier::Pro.rest_limits(), Limits::new(20, 1_000_000));
        assert_eq!(Tier::Starter.trading_limits().max, 60);
        assert_eq!(Tier::Intermediate.trading_limits(), Limits::new(125, 2_340_000));
        assert_eq!(Tier::Pro.trading_limits(), Limits::new(180, 3_750_000));
        assert_eq!(Tier::parse(" Pro "), Some(Tier::Pro));
        assert_eq!(Tier::parse("gold"), None);
        assert_eq!(Tier::Pro.rest_limits().with_headroom(2).max, 18);
    }

    #[test]
    fn documented_costs() {
        assert_eq!(rest_cost("Balance"), 1);
        assert_eq!(rest_cost("OpenOrders"), 1);
        assert_eq!(rest_cost("Ledgers"), 2);
        assert_eq!(rest_cost("TradesHistory"), 2);
        assert_eq!(rest_cost("AddOrder"), 0);
        assert_eq!(rest_cost("CancelOrder"), 0);
        assert_eq!(TradeAction::Add.cost(), 1);
        assert_eq!(TradeAction::Cancel { age: secs(1.0) }.cost(), 8);
        assert_eq!(TradeAction::Cancel { age: secs(5.0) }.cost(), 6);
        assert_eq!(TradeAction::Cancel { age: secs(44.9) }.cost(), 4);
        assert_eq!(TradeAction::Cancel { age: secs(299.0) }.cost(), 1);
        assert_eq!(TradeAction::Cancel { age: secs(300.0) }.cost(), 0);
        assert_eq!(TradeAction::Amend { age: secs(0.5) }.cost(), 4);
        assert_eq!(TradeAction::Amend { age: secs(20.0) }.cost(), 1);
        assert_eq!(TradeAction::Edit { age: secs(60.0) }.cost(), 2);
    }

    #[test]
    fn starter_bursts_fifteen_then_waits_for_the_decay() {
        let t0 = Instant::now();
        let mut c = CallCounter::new(Tier::Starter.rest_limits());
        for _ in 0..15 {
            assert_eq!(c.try_acquire(1, t0), Ok(()));
        }
        assert_eq!(c.level(t0), 15.0);
        // One more point needs 1 / 0.33 s = 3.030303031 s (rounded up).
        let wait = c.cost_wait(1, t0);
        assert_eq!(wait, Duration::from_nanos(3_030_303_031));
        assert_eq!(c.try_acquire(1, t0), Err(wait));
        assert_eq!(c.cost_wait(1, t0 + wait), Duration::ZERO);
        assert!(c.cost_wait(1, t0 + wait - Duration::from_nanos(10)) > Duration::ZERO);
        // A ledger query costs two points: twice the wait.
        assert_eq!(c.cost_wait(2, t0), Duration::from_nanos(6_060_606_061));
    }

    #[test]
    fn the_counter_never_goes_over_the_maximum_under_steady_load() {
        let t0 = Instant::now();
        let limits = Tier::Intermediate.rest_limits();
        let mut c = CallCounter::new(limits);
        let mut now = t0;
        for i in 0..200u32 {
            let cost = if i % 7 == 0 { 2 } else { 1 };
            now += c.cost_wait(cost, now);
            c.record(cost, now);
            assert!(c.level(now) <= f64::from(limits.max), "call {i}: {}", c.level(now));
        }
        // After the burst, the sustained rate is the decay: 0.5 point/s.
        let points = 200.0 + 29.0; // 29 calls cost 2
        let elapsed = now.duration_since(t0).as_secs_f64();
        assert!((elapsed - (points - 20.0) / 0.5).abs() < 0.01, "{elapsed}");
    }

    #[test]
    fn pro_decays_one_point_per_second() {
        let t0 = Instant::now();
        let mut c = CallCounter::new(Tier::Pro.rest_limits());
        c.record(20, t0);
        assert_eq!(c.cost_wait(1, t0), Duration::from_secs(1));
        assert_eq!(c.level(t0 + Duration::from_secs(5)), 15.0);
        assert_eq!(c.level(t0 + Duration::from_secs(100)), 0.0);
        assert_eq!(c.cost_wait(20, t0 + Duration::from_secs(20)), Duration::ZERO);
        // A cost beyond the maximum waits for an empty counter, not forever.
        assert_eq!(c.cost_wait(50, t0), Duration::from_secs(20));
    }

    #[test]
    fn a_rate_limit_answer_fills_the_counter() {
        let t0 = Instant::now();
        let mut c = CallCounter::new(Tier::Pro.rest_limits());
        c.record(3, t0);
        c.saturate(t0);
        assert_eq!(c.level(t0), 20.0);
        assert_eq!(c.cost_wait(1, t0), Duration::from_secs(1));
    }

    #[test]
    fn trading_counters_are_per_pair_and_punish_quick_cancels() {
        let t0 = Instant::now();
        let mut t = TradingCounters::new(Tier::Starter.trading_limits());
        // Place and cancel at once: 1 + 8 points a round trip.
        for _ in 0..6 {
            t.record("XBTUSD", TradeAction::Add, t0);
            t.record("XBTUSD", TradeAction::Cancel { age: secs(0.1) }, t0);
        }
        assert_eq!(t.level("XBTUSD", t0), 54.0);
        assert_eq!(t.wait("XBTUSD", TradeAction::Add, t0), Duration::ZERO);
        assert_eq!(t.wait("XBTUSD", TradeAction::Cancel { age: secs(0.1) }, t0), Duration::from_secs(2));
        // Another pair is untouched.
        assert_eq!(t.wait("ETHUSD", TradeAction::Cancel { age: secs(0.1) }, t0), Duration::ZERO);
        // A cancel of an order that rested 10 minutes costs nothing.
        assert_eq!(t.wait("XBTUSD", TradeAction::Cancel { age: secs(600.0) }, t0), Duration::ZERO);
        t.saturate("ETHUSD", t0);
        assert_eq!(t.wait("ETHUSD", TradeAction::Add, t0), Duration::from_secs(1));
    }

    #[test]
    fn the_ledger_charges_adds_and_cancels_by_age_and_refuses_past_the_threshold() {
        // Starter: threshold 60, decay 1/s (docs.kraken.com "Spot Trading Limits").
        let limits = Tier::Starter.trading_limits();
        let t0 = 1_700_000_000_000_000u64;
        let mut l = TradingLedger::default();
        // Six place-then-cancel-at-once round trips: (1 + 8) each.
        for _ in 0..6 {
            l.charge("XBTUSD", TradeAction::Add, limits, t0).unwrap();
            l.charge("XBTUSD", TradeAction::Cancel { age: secs(0.5) }, limits, t0).unwrap();
        }
        assert_eq!(l.level("XBTUSD", limits, t0), 54.0);
        // Another cancel under 5 s (+8) would make 62: refused, 2 s to wait.
        let refusal = l.charge("XBTUSD", TradeAction::Cancel { age: secs(1.0) }, limits, t0).unwrap_err();
        assert_eq!(refusal.retry_in, Duration::from_secs(2));
        assert_eq!(
            refusal.to_string(),
            "kraken trading rate limit for XBTUSD: counter 54 of 60, this action adds 8, decays 1/s; retry in 2 s"
        );
        assert_eq!(l.level("XBTUSD", limits, t0), 54.0, "a refusal is not counted");
        // A cancel of an order that rested 100 s costs 1; after 300 s, nothing.
        l.charge("XBTUSD", TradeAction::Cancel { age: secs(100.0) }, limits, t0).unwrap();
        l.charge("XBTUSD", TradeAction::Cancel { age: secs(301.0) }, limits, t0).unwrap();
        assert_eq!(l.level("XBTUSD", limits, t0), 55.0);
        // The counter decays 1/s: 5 s later, 50.
        assert_eq!(l.level("XBTUSD", limits, t0 + 5_000_000), 50.0);
        // Other pairs have counters of their own.
        l.charge("ETHUSD", TradeAction::Add, limits, t0).unwrap();
        assert_eq!(l.level("ETHUSD", limits, t0), 1.0);
        // Kraken's own refusal fills the counter.
        l.saturate("ETHUSD", limits, t0);
        assert!(l.charge("ETHUSD", TradeAction::Add, limits, t0).is_err());
        // Round trip through the shared file's JSON.
        let back: TradingLedger = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        l.prune(limits, t0 + 3_600_000_000);
        assert!(l.pairs.is_empty());
    }

    #[test]
    fn pro_and_intermediate_thresholds_and_decays() {
        let t0 = 1_000_000u64;
        for (tier, max, wait_ms) in [(Tier::Intermediate, 125, 427), (Tier::Pro, 180, 266)] {
            let limits = tier.trading_limits();
            let mut l = TradingLedger::default();
            for _ in 0..max {
                l.charge("XBTUSD", TradeAction::Add, limits, t0).unwrap();
            }
            let r = l.charge("XBTUSD", TradeAction::Add, limits, t0).unwrap_err();
            assert_eq!(r.retry_in.as_millis(), wait_ms, "{tier:?}");
        }
    }
}

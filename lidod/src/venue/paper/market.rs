//! The simulated market behind the paper venue: the instrument catalogue, a
//! seeded random walk of each mid price, the synthetic L2 book around it and
//! the walk of an aggressive order through that book.
//!
//! Everything here is a pure function of the random number generator it is
//! handed, so the venue stays deterministic for a given seed.

use chrono::{DateTime, Utc};
use lido_shared::model::{AssetClass, Book, BookLevel, Instrument, Quote, Side, Symbol};
use rand::rngs::SmallRng;
use rand::Rng;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::Decimal;

/// Seconds in the year that annualized volatilities refer to (markets here
/// trade around the clock).
const SECONDS_PER_YEAR: f64 = 365.0 * 86_400.0;
/// A longer gap between two ticks moves the price as much as one day does.
const MAX_STEP_SECONDS: f64 = 86_400.0;
/// The mid never falls below this many ticks.
const MIN_MID_TICKS: i64 = 100;
/// Most public trade prints per symbol and tick.
const MAX_PRINTS_PER_TICK: u32 = 2;

// ---------------------------------------------------------------------------
// Catalogue
// ---------------------------------------------------------------------------

/// How one instrument is listed and how its market behaves.
#[derive(Clone, Debug)]
pub(super) struct Profile {
    pub instrument: Instrument,
    /// Where the simulation starts.
    start_price: Decimal,
    /// Annualized volatility of the mid.
    volatility: f64,
    /// Ticks between adjacent book levels (multiplied by 1 or 2 at random).
    level_step_ticks: i64,
    /// Size range of one book level, in lots.
    level_lots: (i64, i64),
    /// Size range of one public trade print, in lots.
    print_lots: (i64, i64),
}

/// One row of the catalogue, in human units.
struct Listing {
    symbol: &'static str,
    class: AssetClass,
    tick: &'static str,
    lot: &'static str,
    start_price: &'static str,
    volatility: f64,
    level_step_ticks: i64,
    level_lots: (i64, i64),
    print_lots: (i64, i64),
}

const LISTINGS: &[Listing] = &[
    Listing {
        symbol: "BTC/USD",
        class: AssetClass::Crypto,
        tick: "0.1",
        lot: "0.0001",
        start_price: "65000",
        volatility: 0.60,
        level_step_ticks: 5,
        level_lots: (500, 20_000),
        print_lots: (10, 5_000),
    },
    Listing {
        symbol: "ETH/USD",
        class: AssetClass::Crypto,
        tick: "0.01",
        lot: "0.001",
        start_price: "3500",
        volatility: 0.70,
        level_step_ticks: 3,
        level_lots: (1_000, 40_000),
        print_lots: (10, 5_000),
    },
    Listing {
        symbol: "SOL/USD",
        class: AssetClass::Crypto,
        tick: "0.01",
        lot: "0.01",
        start_price: "150",
        volatility: 0.90,
        level_step_ticks: 1,
        level_lots: (1_000, 50_000),
        print_lots: (10, 5_000),
    },
    Listing {
        symbol: "AAPL",
        class: AssetClass::Equity,
        tick: "0.01",
        lot: "1",
        start_price: "190",
        volatility: 0.25,
        level_step_ticks: 1,
        level_lots: (100, 1_500),
        print_lots: (1, 300),
    },
    Listing {
        symbol: "MSFT",
        class: AssetClass::Equity,
        tick: "0.01",
        lot: "1",
        start_price: "420",
        volatility: 0.25,
        level_step_ticks: 1,
        level_lots: (100, 1_200),
        print_lots: (1, 200),
    },
    Listing {
        symbol: "SPY",
        class: AssetClass::Equity,
        tick: "0.01",
        lot: "1",
        start_price: "520",
        volatility: 0.15,
        level_step_ticks: 1,
        level_lots: (200, 3_000),
        print_lots: (1, 500),
    },
    Listing {
        symbol: "TSLA",
        class: AssetClass::Equity,
        tick: "0.01",
        lot: "1",
        start_price: "250",
        volatility: 0.55,
        level_step_ticks: 1,
        level_lots: (100, 1_500),
        print_lots: (1, 300),
    },
];

/// The instruments the paper venue lists, in a fixed order.
pub(super) fn catalogue() -> Vec<Profile> {
    LISTINGS.iter().map(Listing::profile).collect()
}

impl Listing {
    fn profile(&self) -> Profile {
        let number = |s: &str| s.parse::<Decimal>().expect("catalogue numbers are valid decimals");
        let symbol = Symbol::parse(self.symbol).expect("catalogue symbols are valid");
        let base = symbol.base().to_string();
        let quote = symbol.quote().unwrap_or("USD").to_string();
        let lot = number(self.lot);
        Profile {
            instrument: Instrument {
                symbol,
                asset_class: self.class,
                base,
                quote,
                tick_size: number(self.tick),
                lot_size: lot,
                min_quantity: lot,
            },
            start_price: number(self.start_price),
            volatility: self.volatility,
            level_step_ticks: self.level_step_ticks,
            level_lots: self.level_lots,
            print_lots: self.print_lots,
        }
    }
}

// ---------------------------------------------------------------------------
// Prices and randomness
// ---------------------------------------------------------------------------

/// `value` rounded to the nearest multiple of `step`.
pub(super) fn snap(value: Decimal, step: Decimal) -> Decimal {
    (value / step).round() * step
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut SmallRng) -> f64 {
    let u1 = 1.0 - rng.gen::<f64>(); // (0, 1]: keeps ln finite
    let u2 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A random whole number of lots in `range`, as a quantity.
fn random_size(rng: &mut SmallRng, lot: Decimal, (low, high): (i64, i64)) -> Decimal {
    Decimal::from(rng.gen_range(low..=high)) * lot
}

// ---------------------------------------------------------------------------
// Book walking
// ---------------------------------------------------------------------------

/// One piece of an aggressive order's walk through the book.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Piece {
    pub price: Decimal,
    pub quantity: Decimal,
}

/// Walks `levels` (the side a `taker` trades against, best first) and takes
/// up to `quantity` at prices at or better than `limit`. Pure: the book is
/// not changed, see [`consume`].
pub(super) fn walk(levels: &[BookLevel], taker: Side, quantity: Decimal, limit: Option<Decimal>) -> Vec<Piece> {
    let acceptable = |price: Decimal| match (taker, limit) {
        (_, None) => true,
        (Side::Buy, Some(limit)) => price <= limit,
        (Side::Sell, Some(limit)) => price >= limit,
    };
    let mut left = quantity;
    let mut pieces = Vec::new();
    for level in levels {
        if left <= Decimal::ZERO || !acceptable(level.price()) {
            break;
        }
        let take = left.min(level.size());
        pieces.push(Piece { price: level.price(), quantity: take });
        left -= take;
    }
    pieces
}

/// Removes `quantity` from the best levels of `levels`, dropping emptied ones.
pub(super) fn consume(levels: &mut Vec<BookLevel>, mut quantity: Decimal) {
    while quantity > Decimal::ZERO && !levels.is_empty() {
        let take = quantity.min(levels[0].size());
        levels[0].1 -= take;
        quantity -= take;
        if levels[0].size() <= Decimal::ZERO {
            levels.remove(0);
        }
    }
}

/// Total quantity and notional of a walk.
pub(super) fn totals(pieces: &[Piece]) -> (Decimal, Decimal) {
    pieces.iter().fold((Decimal::ZERO, Decimal::ZERO), |(q, n), p| (q + p.quantity, n + p.price * p.quantity))
}

// ---------------------------------------------------------------------------
// One symbol's market
// ---------------------------------------------------------------------------

/// The state of one symbol: mid, book and last trade.
#[derive(Clone, Debug)]
pub(super) struct Market {
    pub profile: Profile,
    mid: Decimal,
    /// Best first, descending.
    pub bids: Vec<BookLevel>,
    /// Best first, ascending.
    pub asks: Vec<BookLevel>,
    /// Best bid and ask when the book was built, quoted (with size zero)
    /// when orders have consumed a whole side.
    top: (Decimal, Decimal),
    pub last: Option<Decimal>,
    /// When the book was built.
    ts: DateTime<Utc>,
}

impl Market {
    /// A market at its starting price with a fresh book.
    pub fn new(profile: Profile, rng: &mut SmallRng, depth: usize, now: DateTime<Utc>) -> Self {
        let mid = snap(profile.start_price, profile.instrument.tick_size);
        let mut market =
            Self { profile, mid, bids: Vec::new(), asks: Vec::new(), top: (mid, mid), last: None, ts: now };
        market.rebuild(rng, depth, now);
        market
    }

    pub fn instrument(&self) -> &Instrument {
        &self.profile.instrument
    }

    pub fn symbol(&self) -> &Symbol {
        &self.profile.instrument.symbol
    }

    /// Moves the mid by one geometric Brownian step of `seconds`, kept on
    /// tick. No time, no move (and no random draw).
    pub fn step(&mut self, rng: &mut SmallRng, seconds: f64) {
        if seconds <= 0.0 {
            return;
        }
        let dt = seconds.min(MAX_STEP_SECONDS) / SECONDS_PER_YEAR;
        let sigma = self.profile.volatility;
        let factor = (sigma * dt.sqrt() * standard_normal(rng) - 0.5 * sigma * sigma * dt).exp();
        let tick = self.instrument().tick_size;
        let Some(next) = self.mid.to_f64().and_then(|mid| Decimal::from_f64(mid * factor)) else {
            return;
        };
        self.mid = snap(next, tick).max(tick * Decimal::from(MIN_MID_TICKS));
    }

    /// Builds a new book of `depth` levels a side around the mid: a spread
    /// of two to four ticks, levels one or two steps apart, random sizes.
    pub fn rebuild(&mut self, rng: &mut SmallRng, depth: usize, now: DateTime<Utc>) {
        let tick = self.instrument().tick_size;
        let lot = self.instrument().lot_size;
        let step = tick * Decimal::from(self.profile.level_step_ticks);
        let best_bid = self.mid - tick * Decimal::from(rng.gen_range(1..=2));
        let best_ask = self.mid + tick * Decimal::from(rng.gen_range(1..=2));

        self.bids.clear();
        let mut price = best_bid;
        while self.bids.len() < depth && price > Decimal::ZERO {
            self.bids.push(BookLevel(price, random_size(rng, lot, self.profile.level_lots)));
            price -= step * Decimal::from(rng.gen_range(1..=2));
        }
        self.asks.clear();
        let mut price = best_ask;
        while self.asks.len() < depth {
            self.asks.push(BookLevel(price, random_size(rng, lot, self.profile.level_lots)));
            price += step * Decimal::from(rng.gen_range(1..=2));
        }
        self.top = (best_bid, best_ask);
        self.ts = now;
    }

    /// Replaces the book with the given levels (sorted best first, empty
    /// levels dropped) and recenters the mid between the best prices.
    pub fn set_book(&mut self, mut bids: Vec<BookLevel>, mut asks: Vec<BookLevel>, now: DateTime<Utc>) {
        bids.retain(|l| l.size() > Decimal::ZERO);
        asks.retain(|l| l.size() > Decimal::ZERO);
        bids.sort_by_key(|l| std::cmp::Reverse(l.price()));
        asks.sort_by_key(BookLevel::price);
        let tick = self.instrument().tick_size;
        let best_bid = bids.first().map(BookLevel::price);
        let best_ask = asks.first().map(BookLevel::price);
        let (bid, ask) = match (best_bid, best_ask) {
            (Some(bid), Some(ask)) => (bid, ask),
            (Some(bid), None) => (bid, bid + tick),
            (None, Some(ask)) => (ask - tick, ask),
            (None, None) => self.top,
        };
        self.mid = snap((bid + ask) / Decimal::TWO, tick);
        self.top = (bid, ask);
        self.bids = bids;
        self.asks = asks;
        self.ts = now;
    }

    /// The levels a `taker` trades against.
    pub fn opposite(&self, taker: Side) -> &[BookLevel] {
        match taker {
            Side::Buy => &self.asks,
            Side::Sell => &self.bids,
        }
    }

    /// Takes `quantity` out of the side a `taker` trades against.
    pub fn consume(&mut self, taker: Side, quantity: Decimal) {
        match taker {
            Side::Buy => consume(&mut self.asks, quantity),
            Side::Sell => consume(&mut self.bids, quantity),
        }
    }

    /// Zero to two random public prints at the top of the book, as
    /// `(aggressor side, price, quantity)`. They do not consume the book.
    pub fn random_prints(&mut self, rng: &mut SmallRng) -> Vec<(Side, Decimal, Decimal)> {
        let count = rng.gen_range(0..=MAX_PRINTS_PER_TICK);
        let mut prints = Vec::new();
        for _ in 0..count {
            let side = if rng.gen_bool(0.5) { Side::Buy } else { Side::Sell };
            let quantity = random_size(rng, self.instrument().lot_size, self.profile.print_lots);
            let Some(level) = self.opposite(side).first() else {
                continue;
            };
            let price = level.price();
            self.last = Some(price);
            prints.push((side, price, quantity));
        }
        prints
    }

    /// Top of book and last trade.
    pub fn quote(&self) -> Quote {
        let (bid, bid_size) = self.bids.first().map_or((self.top.0, Decimal::ZERO), |l| (l.price(), l.size()));
        let (ask, ask_size) = self.asks.first().map_or((self.top.1, Decimal::ZERO), |l| (l.price(), l.size()));
        Quote { symbol: self.symbol().clone(), bid, ask, bid_size, ask_size, last: self.last, ts: self.ts }
    }

    /// The first `depth` levels of each side.
    pub fn book(&self, depth: usize) -> Book {
        Book { symbol: self.symbol().clone(), bids: self.bids.clone(), asks: self.asks.clone(), ts: self.ts }
            .truncated(depth)
    }
}

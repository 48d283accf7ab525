//! The paper venue: a deterministic, seedable exchange simulator with a real
//! matching engine.
//!
//! Every symbol's mid follows a seeded random walk; around it sits a
//! synthetic L2 book that is rebuilt on every [`PaperVenue::tick`]. Orders
//! trade against that book: market orders walk it level by level, limit
//! orders take what is at or better than their limit and the rest either
//! rests (GTC, DAY) or is canceled (IOC). Resting orders are not shown in the
//! book; they fill, at their limit price, when a later book crosses them.
//! Consumed liquidity stays consumed until the next tick.
//!
//! The venue is synchronous and pure: no I/O, no clock. Time comes in as an
//! argument, so a wrapper decides how fast the market moves, and the same
//! seed and the same calls give the same events.
//!
//! What must outlive the process (accounts, every order, id counters) is a
//! [`PaperState`]: [`PaperVenue::state`] takes it, [`PaperVenue::restore`]
//! puts it back; the broker service keeps it in a file. Prices are not part
//! of it: a restored venue's markets start again from the seed.
//!
//! Accounts are created on first use with [`PaperConfig::starting_cash`] USD.
//! Buys need the quote currency, sells need the base asset: there is no
//! margin and no shorting. Fees are charged in the quote currency.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use lido_shared::model::{
    Balance, Book, BookLevel, Fill, Instrument, OrderStatus, OrderType, Position, Quote, Side, Symbol, TimeInForce,
    Trade,
};
use lido_shared::pipe::{ServiceEvent, VenueOrder, VenueOrderReport};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

mod ledger;
mod market;
#[cfg(test)]
mod tests;

use self::ledger::{money, Account, OrderState, CASH};
use self::market::{catalogue, totals, walk, Market};

/// Reason given to a market order's unfilled remainder.
const NO_LIQUIDITY: &str = "no liquidity for remainder";
/// Reason given to an IOC order's unfilled remainder.
const IOC_REMAINDER: &str = "immediate-or-cancel remainder canceled: no liquidity at or better than the limit";
/// Reason given to an order canceled through [`PaperVenue::cancel`].
const CANCELED_ON_REQUEST: &str = "canceled on request";
/// Reason given to an expired DAY order.
const DAY_EXPIRED: &str = "day order expired at the end of its utc trading day";

// ---------------------------------------------------------------------------
// Configuration and errors
// ---------------------------------------------------------------------------

/// How the paper venue behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct PaperConfig {
    /// Seed of the random walk, book sizes and trade prints.
    pub seed: u64,
    /// USD credited to each new account.
    pub starting_cash: Decimal,
    /// Fee as a fraction of notional (0.001 = 10 bp), charged in the quote currency.
    pub fee_rate: Decimal,
    /// L2 levels per side of each book, and of the `Book` events of a tick.
    pub depth: usize,
}

impl Default for PaperConfig {
    fn default() -> Self {
        Self { seed: 1, starting_cash: Decimal::from(100_000), fee_rate: Decimal::new(1, 3), depth: 20 }
    }
}

/// What the paper venue refuses outright. Bad orders are not errors: they
/// come back as `Rejected` reports with a reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PaperError {
    #[error("unknown symbol {0}: list the instruments to see what the paper venue trades")]
    UnknownSymbol(String),
    #[error("unknown order {0}: check the client id and the account it was placed for")]
    UnknownOrder(String),
    #[error("order {client_id} is already {status}: only open orders can be canceled")]
    NotOpen { client_id: String, status: OrderStatus },
}

impl PaperError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownSymbol(_) => "unknown_symbol",
            Self::UnknownOrder(_) => "unknown_order",
            Self::NotOpen { .. } => "order_not_open",
        }
    }
}

// ---------------------------------------------------------------------------
// The venue
// ---------------------------------------------------------------------------

/// The venue's book-keeping, to keep across restarts: accounts, every order
/// and the id counters (so ids are never reused).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaperState {
    accounts: BTreeMap<String, Account>,
    orders: Vec<OrderState>,
    next_order: u64,
    next_fill: u64,
    next_trade: u64,
}

/// The simulated exchange. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct PaperVenue {
    config: PaperConfig,
    rng: SmallRng,
    now: DateTime<Utc>,
    /// One per listed instrument, in catalogue order.
    markets: Vec<Market>,
    accounts: BTreeMap<String, Account>,
    /// Every order ever placed, in placement order (its index is its handle).
    orders: Vec<OrderState>,
    by_client_id: HashMap<(String, String), usize>,
    /// Indices of resting orders, so they match in placement order.
    open: BTreeSet<usize>,
    next_order: u64,
    next_fill: u64,
    next_trade: u64,
}

impl PaperVenue {
    /// A venue whose markets start at their reference prices at `now`.
    pub fn new(config: PaperConfig, now: DateTime<Utc>) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let depth = config.depth.max(1);
        let markets = catalogue().into_iter().map(|p| Market::new(p, &mut rng, depth, now)).collect();
        Self {
            config,
            rng,
            now,
            markets,
            accounts: BTreeMap::new(),
            orders: Vec::new(),
            by_client_id: HashMap::new(),
            open: BTreeSet::new(),
            next_order: 1,
            next_fill: 1,
            next_trade: 1,
        }
    }

    /// What a restarted venue needs to carry on: see [`PaperState`].
    pub fn state(&self) -> PaperState {
        PaperState {
            accounts: self.accounts.clone(),
            orders: self.orders.clone(),
            next_order: self.next_order,
            next_fill: self.next_fill,
            next_trade: self.next_trade,
        }
    }

    /// Takes back a saved [`PaperState`]: accounts, orders (resting ones
    /// rest again, with what they hold back) and id counters.
    pub fn restore(&mut self, state: PaperState) {
        self.by_client_id = state
            .orders
            .iter()
            .enumerate()
            .map(|(i, o)| ((o.order.account.clone(), o.order.client_id.clone()), i))
            .collect();
        self.open = state
            .orders
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o.status, OrderStatus::Accepted | OrderStatus::PartiallyFilled))
            .map(|(i, _)| i)
            .collect();
        self.accounts = state.accounts;
        self.orders = state.orders;
        self.next_order = state.next_order;
        self.next_fill = state.next_fill;
        self.next_trade = state.next_trade;
    }

    /// The configuration the venue runs with.
    pub fn config(&self) -> &PaperConfig {
        &self.config
    }

    /// The simulation time: the latest `now` seen by `new` or `tick`.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    // -- market data --------------------------------------------------------

    /// Everything the venue trades: BTC/USD, ETH/USD, SOL/USD, AAPL, MSFT, SPY, TSLA.
    pub fn instruments(&self) -> Vec<Instrument> {
        self.markets.iter().map(|m| m.instrument().clone()).collect()
    }

    /// One instrument, if listed.
    pub fn instrument(&self, symbol: &Symbol) -> Option<&Instrument> {
        self.market(symbol).map(|i| self.markets[i].instrument())
    }

    /// Top of book and last trade.
    pub fn quote(&self, symbol: &Symbol) -> Result<Quote, PaperError> {
        let i = self.market(symbol).ok_or_else(|| PaperError::UnknownSymbol(symbol.to_string()))?;
        Ok(self.markets[i].quote())
    }

    /// The first `depth` levels of each side of the current book (at most
    /// [`PaperConfig::depth`]), including what orders have consumed since
    /// the last tick.
    pub fn book(&self, symbol: &Symbol, depth: usize) -> Result<Book, PaperError> {
        let i = self.market(symbol).ok_or_else(|| PaperError::UnknownSymbol(symbol.to_string()))?;
        Ok(self.markets[i].book(depth))
    }

    /// Replaces a symbol's book until the next tick, e.g. to script a
    /// scenario in tests. Levels are sorted best first and empty ones
    /// dropped; prices should be on tick. The mid moves to the middle of
    /// the new best prices, and resting orders are not matched until the
    /// next tick.
    pub fn set_book(&mut self, symbol: &Symbol, bids: Vec<BookLevel>, asks: Vec<BookLevel>) -> Result<(), PaperError> {
        let i = self.market(symbol).ok_or_else(|| PaperError::UnknownSymbol(symbol.to_string()))?;
        self.markets[i].set_book(bids, asks, self.now);
        Ok(())
    }

    fn market(&self, symbol: &Symbol) -> Option<usize> {
        self.markets.iter().position(|m| m.symbol() == symbol)
    }

    // -- time ---------------------------------------------------------------

    /// Advances the simulation to `now`.
    ///
    /// DAY orders from an earlier UTC date expire; then, symbol by symbol,
    /// the mid takes a random-walk step for the time elapsed, the book is
    /// rebuilt around it, zero to two public trades print, and resting
    /// orders the new book crosses fill at their limit (no more than the
    /// crossing levels hold).
    ///
    /// Events, in order: for every symbol a `Quote`, a `Book` (of
    /// [`PaperConfig::depth`]) and its `Trade`s (public prints and our own
    /// fills); then `OrderUpdate`s of expired orders; then, per own order
    /// that traded, a `Fill` and its `OrderUpdate`.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<ServiceEvent> {
        let seconds = (now - self.now).num_milliseconds().max(0) as f64 / 1000.0;
        self.now = self.now.max(now);
        let depth = self.config.depth.max(1);

        let mut order_events = self.expire_day_orders(now);
        let mut market_events = Vec::new();
        for m in 0..self.markets.len() {
            let market = &mut self.markets[m];
            market.step(&mut self.rng, seconds);
            market.rebuild(&mut self.rng, depth, now);
            let prints = market.random_prints(&mut self.rng);
            let symbol = market.symbol().clone();

            let mut trades: Vec<ServiceEvent> = prints
                .into_iter()
                .map(|(side, price, quantity)| ServiceEvent::Trade(self.print(&symbol, side, price, quantity, now)))
                .collect();
            for (i, fill, trade) in self.match_resting(m, now) {
                trades.push(ServiceEvent::Trade(trade));
                order_events.push(ServiceEvent::Fill(fill));
                order_events.push(ServiceEvent::OrderUpdate(self.orders[i].report()));
            }

            let market = &self.markets[m];
            market_events.push(ServiceEvent::Quote(market.quote()));
            market_events.push(ServiceEvent::Book(market.book(depth)));
            market_events.extend(trades);
        }
        market_events.extend(order_events);
        market_events
    }

    /// Expires open DAY orders placed on an earlier UTC date than `now`'s.
    fn expire_day_orders(&mut self, now: DateTime<Utc>) -> Vec<ServiceEvent> {
        let today = now.date_naive();
        let expired: Vec<usize> = self
            .open
            .iter()
            .copied()
            .filter(|&i| self.orders[i].order.time_in_force == TimeInForce::Day && self.orders[i].day < today)
            .collect();
        expired
            .into_iter()
            .map(|i| {
                self.orders[i].finish(OrderStatus::Expired, DAY_EXPIRED, now);
                self.close(i);
                ServiceEvent::OrderUpdate(self.orders[i].report())
            })
            .collect()
    }

    /// Fills the resting orders of market `m` that its book now crosses,
    /// oldest first, each at its limit price.
    fn match_resting(&mut self, m: usize, now: DateTime<Utc>) -> Vec<(usize, Fill, Trade)> {
        let symbol = self.markets[m].symbol().clone();
        let resting: Vec<usize> =
            self.open.iter().copied().filter(|&i| self.orders[i].order.symbol == symbol).collect();
        let mut executions = Vec::new();
        for i in resting {
            let order = &self.orders[i];
            let Some(limit) = order.order.limit_price else {
                continue;
            };
            let side = order.order.side;
            let pieces = walk(self.markets[m].opposite(side), side, order.remaining(), Some(limit));
            let (quantity, _) = totals(&pieces);
            if quantity.is_zero() {
                continue;
            }
            self.markets[m].consume(side, quantity);
            let (fill, trade) = self.execute(i, limit, quantity, now);
            executions.push((i, fill, trade));
        }
        executions
    }

    // -- orders -------------------------------------------------------------

    /// Places an order. Idempotent on `(account, client_id)`: a repeat
    /// returns the existing order's current report and no events.
    ///
    /// Invalid orders (unknown symbol, bad quantity or price, insufficient
    /// funds) come back `Rejected` with a reason and change nothing. Valid
    /// ones trade at once against the current book; what is left rests (GTC,
    /// DAY limit orders, holding back funds) or is canceled (market and IOC).
    ///
    /// Events: per execution a `Fill` and its `Trade` print, then one
    /// `OrderUpdate` with the returned report.
    pub fn place(&mut self, order: VenueOrder, now: DateTime<Utc>) -> (VenueOrderReport, Vec<ServiceEvent>) {
        let key = (order.account.clone(), order.client_id.clone());
        if let Some(&i) = self.by_client_id.get(&key) {
            return (self.orders[i].report(), Vec::new());
        }

        let starting_cash = self.config.starting_cash;
        self.accounts.entry(order.account.clone()).or_insert_with(|| Account::new(starting_cash));
        let checked = self.check(&order);

        let i = self.orders.len();
        self.orders.push(OrderState {
            venue_order_id: format!("P-{}", self.next_order),
            status: OrderStatus::New,
            filled_quantity: Decimal::ZERO,
            filled_notional: Decimal::ZERO,
            reason: None,
            updated: now,
            reserved: Decimal::ZERO,
            day: now.date_naive(),
            fill_ids: Vec::new(),
            order,
        });
        self.next_order += 1;
        self.by_client_id.insert(key, i);

        let m = match checked {
            Ok(m) => m,
            Err(reason) => {
                self.orders[i].finish(OrderStatus::Rejected, &reason, now);
                let report = self.orders[i].report();
                return (report.clone(), vec![ServiceEvent::OrderUpdate(report)]);
            }
        };

        let mut events = Vec::new();
        for (fill, trade) in self.take_liquidity(i, m, now) {
            events.push(ServiceEvent::Fill(fill));
            events.push(ServiceEvent::Trade(trade));
        }
        self.rest_or_cancel(i, now);
        let report = self.orders[i].report();
        events.push(ServiceEvent::OrderUpdate(report.clone()));
        (report, events)
    }

    /// Why `order` cannot be accepted, if it cannot; else its market.
    fn check(&self, order: &VenueOrder) -> Result<usize, String> {
        let m = self.market(&order.symbol).ok_or_else(|| {
            format!("unknown symbol {}: list the instruments to see what the paper venue trades", order.symbol)
        })?;
        let market = &self.markets[m];
        let instrument = market.instrument();
        instrument.check_quantity(order.quantity)?;
        match (order.order_type, order.limit_price) {
            (OrderType::Limit, None) => return Err("a limit order needs a limit price".to_string()),
            (OrderType::Market, Some(_)) => {
                return Err("a market order takes no limit price: drop it or send a limit order".to_string())
            }
            (OrderType::Limit, Some(price)) => instrument.check_price(price)?,
            (OrderType::Market, None) => {}
        }

        let account = &self.accounts[&order.account];
        match order.side {
            Side::Buy => {
                let notional = match order.limit_price {
                    Some(limit) => order.quantity * limit,
                    None => totals(&walk(market.opposite(Side::Buy), Side::Buy, order.quantity, None)).1,
                };
                let need = notional * (Decimal::ONE + self.config.fee_rate);
                let available = account.available(&instrument.quote);
                if available < need {
                    return Err(format!(
                        "insufficient funds: need {} {quote}, available {} {quote}",
                        money(need, RoundingStrategy::AwayFromZero),
                        money(available, RoundingStrategy::ToZero),
                        quote = instrument.quote,
                    ));
                }
            }
            Side::Sell => {
                let available = account.available(&instrument.base);
                if available < order.quantity {
                    return Err(format!(
                        "insufficient funds: need {} {base}, available {} {base}; the paper venue does not allow short selling",
                        order.quantity,
                        available.normalize(),
                        base = instrument.base,
                    ));
                }
            }
        }
        Ok(m)
    }

    /// Trades a new order against the book of market `m`: market orders at
    /// any price, limit orders at or better than their limit.
    fn take_liquidity(&mut self, i: usize, m: usize, now: DateTime<Utc>) -> Vec<(Fill, Trade)> {
        let order = &self.orders[i].order;
        let side = order.side;
        let pieces = walk(self.markets[m].opposite(side), side, order.quantity, order.limit_price);
        self.markets[m].consume(side, totals(&pieces).0);
        pieces.into_iter().map(|p| self.execute(i, p.price, p.quantity, now)).collect()
    }

    /// After the first match: done, resting, or the remainder canceled.
    fn rest_or_cancel(&mut self, i: usize, now: DateTime<Utc>) {
        let state = &mut self.orders[i];
        if state.status == OrderStatus::Filled {
            return;
        }
        match (state.order.order_type, state.order.time_in_force) {
            (OrderType::Market, _) => state.finish(OrderStatus::Canceled, NO_LIQUIDITY, now),
            (OrderType::Limit, TimeInForce::Ioc) => state.finish(OrderStatus::Canceled, IOC_REMAINDER, now),
            (OrderType::Limit, TimeInForce::Gtc | TimeInForce::Day) => {
                if state.status == OrderStatus::New {
                    state.status = OrderStatus::Accepted;
                }
                state.updated = now;
                self.open.insert(i);
                self.update_reserve(i);
            }
        }
    }

    /// Cancels an open order and releases what it held back.
    pub fn cancel(
        &mut self,
        account: &str,
        client_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(VenueOrderReport, Vec<ServiceEvent>), PaperError> {
        let key = (account.to_string(), client_id.to_string());
        let &i = self.by_client_id.get(&key).ok_or_else(|| PaperError::UnknownOrder(client_id.to_string()))?;
        if !self.open.contains(&i) {
            let status = self.orders[i].status;
            return Err(PaperError::NotOpen { client_id: client_id.to_string(), status });
        }
        self.orders[i].finish(OrderStatus::Canceled, CANCELED_ON_REQUEST, now);
        self.close(i);
        let report = self.orders[i].report();
        Ok((report.clone(), vec![ServiceEvent::OrderUpdate(report)]))
    }

    /// One order's current report.
    pub fn order(&self, account: &str, client_id: &str) -> Option<VenueOrderReport> {
        let key = (account.to_string(), client_id.to_string());
        self.by_client_id.get(&key).map(|&i| self.orders[i].report())
    }

    /// One order's current report with the order itself, as open-order
    /// listings give it: what lets a node that never placed it adopt it.
    pub fn order_detailed(&self, account: &str, client_id: &str) -> Option<VenueOrderReport> {
        let key = (account.to_string(), client_id.to_string());
        let state = &self.orders[*self.by_client_id.get(&key)?];
        Some(VenueOrderReport { order: Some(Box::new(state.order.clone())), ..state.report() })
    }

    /// The account's resting orders, oldest first.
    pub fn open_orders(&self, account: &str) -> Vec<VenueOrderReport> {
        self.open
            .iter()
            .map(|&i| &self.orders[i])
            .filter(|o| o.order.account == account)
            .map(|o| VenueOrderReport { order: Some(Box::new(o.order.clone())), ..o.report() })
            .collect()
    }

    // -- execution and settlement -------------------------------------------

    /// Books one execution of order `i`: the order, the account's balances
    /// and position, the market's last price, and what the order holds back.
    fn execute(&mut self, i: usize, price: Decimal, quantity: Decimal, now: DateTime<Utc>) -> (Fill, Trade) {
        let notional = price * quantity;
        let fee = notional * self.config.fee_rate;

        let state = &mut self.orders[i];
        state.filled_quantity += quantity;
        state.filled_notional += notional;
        state.status = if state.remaining().is_zero() { OrderStatus::Filled } else { OrderStatus::PartiallyFilled };
        state.updated = now;
        let order = state.order.clone();
        let filled = state.status == OrderStatus::Filled;

        let m = self.market(&order.symbol).expect("orders are only accepted for listed symbols");
        let instrument = self.markets[m].instrument().clone();
        self.markets[m].last = Some(price);
        let account = self.accounts.get_mut(&order.account).expect("accounts exist before their orders");
        match order.side {
            Side::Buy => {
                account.holding(&instrument.quote).total -= notional + fee;
                account.holding(&instrument.base).total += quantity;
                account.positions.entry(order.symbol.clone()).or_default().buy(price, quantity);
            }
            Side::Sell => {
                account.holding(&instrument.base).total -= quantity;
                account.holding(&instrument.quote).total += notional - fee;
                account.positions.entry(order.symbol.clone()).or_default().sell(quantity);
            }
        }
        if filled {
            self.open.remove(&i);
        }
        self.update_reserve(i);

        let fill_id = format!("F-{}", self.next_fill);
        self.orders[i].fill_ids.push(fill_id.clone());
        let fill = Fill {
            fill_id,
            order_id: order.client_id.clone(),
            symbol: order.symbol.clone(),
            side: order.side,
            price,
            quantity,
            fee,
            ts: now,
        };
        self.next_fill += 1;
        let trade = self.print(&order.symbol, order.side, price, quantity, now);
        (fill, trade)
    }

    /// Takes order `i` off the book and releases what it held back.
    fn close(&mut self, i: usize) {
        self.open.remove(&i);
        self.update_reserve(i);
    }

    /// Sets what order `i` holds back to what it still needs: for a resting
    /// buy its remaining quantity at the limit plus fee, in the quote
    /// currency; for a resting sell its remaining quantity of the base;
    /// nothing once it is no longer resting.
    fn update_reserve(&mut self, i: usize) {
        let state = &self.orders[i];
        let Some(m) = self.market(&state.order.symbol) else {
            return;
        };
        let instrument = self.markets[m].instrument();
        let (asset, needed) = match state.order.side {
            Side::Buy => {
                let limit = state.order.limit_price.unwrap_or_default();
                (&instrument.quote, state.remaining() * limit * (Decimal::ONE + self.config.fee_rate))
            }
            Side::Sell => (&instrument.base, state.remaining()),
        };
        let needed = if self.open.contains(&i) { needed } else { Decimal::ZERO };
        let delta = needed - state.reserved;
        if delta.is_zero() {
            return;
        }
        let asset = asset.clone();
        let account = self.accounts.get_mut(&state.order.account).expect("accounts exist before their orders");
        account.holding(&asset).reserved += delta;
        self.orders[i].reserved = needed;
    }

    /// A trade print with a fresh id.
    fn print(&mut self, symbol: &Symbol, side: Side, price: Decimal, quantity: Decimal, now: DateTime<Utc>) -> Trade {
        let trade_id = format!("T-{}", self.next_trade);
        self.next_trade += 1;
        Trade { symbol: symbol.clone(), trade_id, price, quantity, side, ts: now }
    }

    // -- accounts -----------------------------------------------------------

    /// The account's assets; `available` excludes what open orders hold
    /// back. An unknown account shows its starting cash.
    pub fn balances(&self, account: &str) -> Vec<Balance> {
        let Some(account) = self.accounts.get(account) else {
            let cash = self.config.starting_cash;
            return vec![Balance { asset: CASH.to_string(), total: cash, available: cash }];
        };
        account
            .holdings
            .iter()
            .map(|(asset, h)| Balance { asset: asset.clone(), total: h.total, available: h.available() })
            .collect()
    }

    /// The account's open positions: net quantity and average entry price.
    pub fn positions(&self, account: &str) -> Vec<Position> {
        let Some(account) = self.accounts.get(account) else {
            return Vec::new();
        };
        account
            .positions
            .iter()
            .filter(|(_, lot)| !lot.quantity.is_zero())
            .map(|(symbol, lot)| Position {
                symbol: symbol.clone(),
                quantity: lot.quantity,
                average_price: lot.average_price,
            })
            .collect()
    }
}

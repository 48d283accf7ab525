//! The fake's market for one pair: a ten-level book on each side kept in
//! the protocol core's [`L2Book`] (so its CRC32 checksums are computed the
//! way the broker checks them), a small matching core that lets marketable
//! orders take liquidity, and the ticker and trades that follow.

use chrono::Utc;
use lido_shared::model::Side;
use lidod::venue::kraken::book::L2Book;
use lidod::venue::kraken::messages::{BookData, BookLevelMsg, Candle, MessageType, PublicTrade, TickerData, TradeData};
use lidod::venue::kraken::pairs::PairInfo;
use rust_decimal::Decimal;

/// Levels the fake keeps on each side.
pub const LEVELS: i64 = 10;

/// One pair's market.
pub struct FakeMarket {
    pub pair: PairInfo,
    book: L2Book,
    /// Numbers every book change, so a socket can skip changes older than
    /// the snapshot it sent.
    pub seq: u64,
    last: Decimal,
    ticks: u64,
    next_trade: u64,
    /// Every trade so far, for the REST `Trades` and `OHLC` calls.
    pub history: Vec<PublicTrade>,
}

/// One execution against the book.
pub struct Execution {
    pub price: Decimal,
    pub qty: Decimal,
    pub trade_id: u64,
}

impl FakeMarket {
    /// A trade id for a trade made outside the book (another trader taking
    /// a resting order), numbered with the book's own trades.
    pub fn next_trade_id(&mut self) -> u64 {
        self.next_trade += 1;
        self.next_trade - 1
    }

    /// A book around `mid`: ten levels a side, one tick apart.
    pub fn new(pair: PairInfo, mid: Decimal) -> Self {
        let mut book = L2Book::new(pair.symbol.clone(), 1000, pair.price_decimals, pair.lot_decimals);
        let level = |i: i64, sign: i64| BookLevelMsg {
            price: mid + pair.tick_size * Decimal::from((i + 1) * sign),
            qty: Decimal::new(i + 1, 1),
        };
        let bids: Vec<_> = (0..LEVELS).map(|i| level(i, -1)).collect();
        let asks: Vec<_> = (0..LEVELS).map(|i| level(i, 1)).collect();
        book.apply_snapshot(&bids, &asks, None, Some(Utc::now())).expect("a fresh book");
        Self { pair, book, seq: 0, last: mid, ticks: 0, next_trade: 1, history: Vec::new() }
    }

    /// The whole book as a `book` snapshot entry.
    pub fn snapshot(&self) -> BookData {
        let level = |(price, qty)| BookLevelMsg { price, qty };
        BookData {
            symbol: self.pair.ws_symbol().to_string(),
            bids: self.book.bids().map(level).collect(),
            asks: self.book.asks().map(level).collect(),
            checksum: Some(self.book.checksum()),
            timestamp: Some(Utc::now()),
        }
    }

    pub fn bids(&self) -> Vec<(Decimal, Decimal)> {
        self.book.bids().collect()
    }

    pub fn asks(&self) -> Vec<(Decimal, Decimal)> {
        self.book.asks().collect()
    }

    /// The ticker now.
    pub fn ticker(&self) -> TickerData {
        let (bid, bid_qty) = self.book.best_bid().unwrap_or_default();
        let (ask, ask_qty) = self.book.best_ask().unwrap_or_default();
        TickerData {
            symbol: self.pair.ws_symbol().to_string(),
            bid,
            bid_qty,
            ask,
            ask_qty,
            last: self.last,
            volume: None,
            vwap: None,
            low: None,
            high: None,
            change: None,
            change_pct: None,
        }
    }

    /// Activity: one level's size changes (a deeper level each time).
    pub fn tick(&mut self) -> BookData {
        self.ticks += 1;
        let depth = (self.ticks % 5) as usize + 2;
        let bid = self.ticks & 1 == 0;
        let levels = if bid { self.bids() } else { self.asks() };
        let (price, qty) = levels[depth.min(levels.len() - 1)];
        let lot = self.pair.lot_size() * Decimal::from(1000);
        let qty = if self.ticks % 4 < 2 { qty + lot } else { (qty - lot).max(lot) };
        let change = vec![BookLevelMsg { price, qty }];
        if bid {
            self.update(change, vec![])
        } else {
            self.update(vec![], change)
        }
    }

    /// Takes liquidity for an order of `qty` on `side` up to `limit`
    /// (`None`: a market order). Returns the executions and the book
    /// update they made (levels taken are replaced at the far end, so the
    /// book keeps ten levels).
    pub fn take(&mut self, side: Side, mut qty: Decimal, limit: Option<Decimal>) -> (Vec<Execution>, Option<BookData>) {
        let levels = match side {
            Side::Buy => self.asks(),
            Side::Sell => self.bids(),
        };
        let crosses = |p: Decimal| match (side, limit) {
            (_, None) => true,
            (Side::Buy, Some(l)) => p <= l,
            (Side::Sell, Some(l)) => p >= l,
        };
        let mut fills = Vec::new();
        let mut changes = Vec::new();
        for (price, available) in levels {
            if qty.is_zero() || !crosses(price) {
                break;
            }
            let taken = qty.min(available);
            qty -= taken;
            fills.push(Execution { price, qty: taken, trade_id: self.next_trade });
            self.history.push(PublicTrade {
                price,
                volume: taken,
                // Kraken writes seconds with four decimals.
                time: Decimal::new(Utc::now().timestamp_millis() * 10, 4),
                side,
                market: limit.is_none(),
                misc: String::new(),
                trade_id: Some(self.next_trade),
            });
            self.next_trade += 1;
            changes.push(BookLevelMsg { price, qty: available - taken });
        }
        if fills.is_empty() {
            return (fills, None);
        }
        self.last = fills.last().map(|f| f.price).unwrap_or(self.last);
        // Replace emptied levels beyond the far end of the book.
        let emptied = changes.iter().filter(|c| c.qty.is_zero()).count() as i64;
        let far = match side {
            Side::Buy => self.asks().last().map(|l| l.0),
            Side::Sell => self.bids().last().map(|l| l.0),
        }
        .unwrap_or(self.last);
        let step = match side {
            Side::Buy => self.pair.tick_size,
            Side::Sell => -self.pair.tick_size,
        };
        for i in 1..=emptied {
            changes.push(BookLevelMsg { price: far + step * Decimal::from(i), qty: Decimal::ONE });
        }
        let update = match side {
            Side::Buy => self.update(vec![], changes),
            Side::Sell => self.update(changes, vec![]),
        };
        (fills, Some(update))
    }

    /// `OHLC` candles of `interval` minutes over the trade history, from
    /// the candle holding `since` (seconds) on: `[time, open, high, low,
    /// close, vwap, volume, count]`, as Kraken builds them.
    pub fn candles(&self, interval: u32, since: i64) -> Vec<Candle> {
        let width = i64::from(interval) * 60;
        let mut out: Vec<Candle> = Vec::new();
        for t in &self.history {
            let secs = t.time.trunc().try_into().unwrap_or(0i64);
            let start = secs - secs.rem_euclid(width);
            if start + width <= since {
                continue;
            }
            match out.last_mut().filter(|c| c.0 == start) {
                Some(c) => {
                    let notional = c.5 * c.6 + t.price * t.volume;
                    c.2 = c.2.max(t.price);
                    c.3 = c.3.min(t.price);
                    c.4 = t.price;
                    c.6 += t.volume;
                    c.5 = (notional / c.6).round_dp(self.pair.price_decimals + 1);
                    c.7 += 1;
                }
                None => out.push(Candle(start, t.price, t.price, t.price, t.price, t.price, t.volume, 1)),
            }
        }
        out
    }

    /// The public trade messages for `fills` by a taker on `side`.
    pub fn trades(&self, side: Side, fills: &[Execution]) -> Vec<TradeData> {
        fills
            .iter()
            .map(|f| TradeData {
                symbol: self.pair.ws_symbol().to_string(),
                side,
                price: f.price,
                qty: f.qty,
                ord_type: Some("limit".into()),
                trade_id: f.trade_id,
                timestamp: Utc::now(),
            })
            .collect()
    }

    fn update(&mut self, bids: Vec<BookLevelMsg>, asks: Vec<BookLevelMsg>) -> BookData {
        let now = Some(Utc::now());
        self.book.apply_update(&bids, &asks, None, now).expect("the fake's own book is synced");
        self.seq += 1;
        BookData {
            symbol: self.pair.ws_symbol().to_string(),
            bids,
            asks,
            checksum: Some(self.book.checksum()),
            timestamp: now,
        }
    }
}

/// `book` data as a frame of `kind`.
pub fn book_frame(kind: MessageType, data: BookData) -> lidod::venue::kraken::messages::WsMessage {
    lidod::venue::kraken::messages::WsMessage::Book { kind, data: vec![data] }
}

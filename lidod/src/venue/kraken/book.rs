//! The L2 order book of the WebSocket v2 `book` channel, kept as Kraken
//! documents it ("Spot Websockets (v2) Book Checksum"):
//!
//! - a `snapshot` replaces the book; each `update` carries only the levels
//!   that changed, applied in order; `qty` 0 removes the level;
//! - after each message the book is cut to the subscribed depth (Kraken
//!   sends no `qty` 0 for levels that fall out of scope);
//! - every message carries a CRC32 `checksum` of the top 10 levels: for the
//!   asks (low to high) then the bids (high to low), each price and quantity
//!   as its decimal text with the `.` removed and the leading zeros
//!   stripped, all concatenated; CRC32 of that string, as an unsigned 32-bit
//!   integer.
//!
//! The text of a price or quantity is written with the pair's precision
//! (`pair_decimals` and `lot_decimals` from AssetPairs, `price_precision`
//! and `qty_precision` on the instrument channel), so a level read from a
//! JSON number (`0.1`) checksums like Kraken's `0.10000000`.
//!
//! On a mismatch [`L2Book::apply`] returns [`BookError::ChecksumMismatch`]
//! and the book stays unsynced (every later update is refused) until the
//! caller resubscribes and a fresh snapshot arrives.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lido_shared::model::{Book, BookLevel, Symbol};
use rust_decimal::Decimal;

use super::messages::{BookData, BookLevelMsg, MessageType};

/// Levels on each side that the checksum covers.
pub const CHECKSUM_LEVELS: usize = 10;

/// Depths Kraken accepts for a `book` subscription.
pub const DEPTHS: &[u32] = &[10, 25, 100, 500, 1000];

/// Why a book message could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("book checksum mismatch for {symbol}: kraken sent {expected}, local book gives {computed}; resubscribe")]
    ChecksumMismatch { symbol: String, expected: u32, computed: u32 },
    #[error("book update for {0} before a snapshot (or after a checksum mismatch); resubscribe")]
    NotSynced(String),
    #[error("book message for {got} applied to the book of {want}")]
    WrongSymbol { want: String, got: String },
}

/// One pair's book.
#[derive(Debug, Clone)]
pub struct L2Book {
    symbol: Symbol,
    depth: usize,
    price_decimals: u32,
    qty_decimals: u32,
    bids: BTreeMap<Reverse<Decimal>, Decimal>,
    asks: BTreeMap<Decimal, Decimal>,
    synced: bool,
    ts: Option<DateTime<Utc>>,
}

impl L2Book {
    /// An empty, unsynced book for `symbol` (the WebSocket v2 symbol, which
    /// is also the Lido symbol), subscribed at `depth`, with the pair's
    /// price and quantity decimals.
    pub fn new(symbol: Symbol, depth: usize, price_decimals: u32, qty_decimals: u32) -> Self {
        Self {
            symbol,
            depth: depth.max(1),
            price_decimals,
            qty_decimals,
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            synced: false,
            ts: None,
        }
    }

    pub fn symbol(&self) -> &Symbol {
        &self.symbol
    }

    /// Whether the book holds a verified snapshot and its updates.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Forgets everything, e.g. on reconnect: the next message must be a
    /// snapshot.
    pub fn reset(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.synced = false;
        self.ts = None;
    }

    /// Applies one `book` message's data for this symbol.
    pub fn apply(&mut self, kind: MessageType, data: &BookData) -> Result<(), BookError> {
        if !data.symbol.eq_ignore_ascii_case(self.symbol.as_str()) {
            return Err(BookError::WrongSymbol { want: self.symbol.to_string(), got: data.symbol.clone() });
        }
        match kind {
            MessageType::Snapshot => self.apply_snapshot(&data.bids, &data.asks, data.checksum, data.timestamp),
            MessageType::Update => self.apply_update(&data.bids, &data.asks, data.checksum, data.timestamp),
        }
    }

    /// Replaces the book with a snapshot and checks it.
    pub fn apply_snapshot(
        &mut self,
        bids: &[BookLevelMsg],
        asks: &[BookLevelMsg],
        checksum: Option<u32>,
        ts: Option<DateTime<Utc>>,
    ) -> Result<(), BookError> {
        self.bids.clear();
        self.asks.clear();
        self.synced = true;
        self.apply_levels(bids, asks, ts);
        self.verify(checksum)
    }

    /// Applies an update, in order, and checks it.
    pub fn apply_update(
        &mut self,
        bids: &[BookLevelMsg],
        asks: &[BookLevelMsg],
        checksum: Option<u32>,
        ts: Option<DateTime<Utc>>,
    ) -> Result<(), BookError> {
        if !self.synced {
            return Err(BookError::NotSynced(self.symbol.to_string()));
        }
        self.apply_levels(bids, asks, ts);
        self.verify(checksum)
    }

    fn apply_levels(&mut self, bids: &[BookLevelMsg], asks: &[BookLevelMsg], ts: Option<DateTime<Utc>>) {
        for l in bids {
            if l.qty.is_zero() {
                self.bids.remove(&Reverse(l.price));
            } else {
                self.bids.insert(Reverse(l.price), l.qty);
            }
        }
        for l in asks {
            if l.qty.is_zero() {
                self.asks.remove(&l.price);
            } else {
                self.asks.insert(l.price, l.qty);
            }
        }
        // Keep the best `depth` levels: drop the worst bids and asks.
        while self.bids.len() > self.depth {
            self.bids.pop_last();
        }
        while self.asks.len() > self.depth {
            self.asks.pop_last();
        }
        if ts.is_some() {
            self.ts = ts;
        }
    }

    fn verify(&mut self, expected: Option<u32>) -> Result<(), BookError> {
        let Some(expected) = expected else { return Ok(()) };
        let computed = self.checksum();
        if computed != expected {
            self.synced = false;
            return Err(BookError::ChecksumMismatch { symbol: self.symbol.to_string(), expected, computed });
        }
        Ok(())
    }

    /// Bids, best (highest) first.
    pub fn bids(&self) -> impl Iterator<Item = (Decimal, Decimal)> + '_ {
        self.bids.iter().map(|(Reverse(p), q)| (*p, *q))
    }

    /// Asks, best (lowest) first.
    pub fn asks(&self) -> impl Iterator<Item = (Decimal, Decimal)> + '_ {
        self.asks.iter().map(|(p, q)| (*p, *q))
    }

    pub fn best_bid(&self) -> Option<(Decimal, Decimal)> {
        self.bids().next()
    }

    pub fn best_ask(&self) -> Option<(Decimal, Decimal)> {
        self.asks().next()
    }

    /// The string the checksum is the CRC32 of.
    pub fn checksum_input(&self) -> String {
        let mut s = String::new();
        for (p, q) in self.asks().take(CHECKSUM_LEVELS) {
            s.push_str(&checksum_field(p, self.price_decimals));
            s.push_str(&checksum_field(q, self.qty_decimals));
        }
        for (p, q) in self.bids().take(CHECKSUM_LEVELS) {
            s.push_str(&checksum_field(p, self.price_decimals));
            s.push_str(&checksum_field(q, self.qty_decimals));
        }
        s
    }

    /// Kraken's CRC32 of the top of this book.
    pub fn checksum(&self) -> u32 {
        crc32fast::hash(self.checksum_input().as_bytes())
    }

    /// The Lido book, best levels first, at most `depth` levels a side.
    pub fn to_book(&self, depth: usize, now: DateTime<Utc>) -> Book {
        Book {
            symbol: self.symbol.clone(),
            bids: self.bids().take(depth).map(|(p, q)| BookLevel(p, q)).collect(),
            asks: self.asks().take(depth).map(|(p, q)| BookLevel(p, q)).collect(),
            ts: self.ts.unwrap_or(now),
        }
    }
}

/// A price or quantity as the checksum writes it: at least `decimals`
/// decimals, the `.` removed, leading zeros stripped (`0.00100000` with 8
/// decimals → `100000`; `45285.2` with 1 → `452852`).
pub fn checksum_field(value: Decimal, decimals: u32) -> String {
    let mut v = value;
    if v.scale() < decimals {
        v.rescale(decimals);
    }
    let text: String = v.to_string().chars().filter(|&c| c != '.').collect();
    text.trim_start_matches('0').to_string()
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::super::messages::{parse_ws, WsMessage};
    use super::*;

    /// Kraken's worked example ("Spot Websockets (v2) Book Checksum",
    /// docs.kraken.com): a BTC/USD snapshot whose checksum is 3310070434.
    const DOC_SNAPSHOT: &str = r#"{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD",
      "bids":[{"price":"45283.5","qty":"0.10000000"},{"price":"45283.4","qty":"1.54582015"},{"price":"45282.1","qty":"0.10000000"},
              {"price":"45281.0","qty":"0.10000000"},{"price":"45280.3","qty":"1.54592586"},{"price":"45279.0","qty":"0.07990000"},
              {"price":"45277.6","qty":"0.03310103"},{"price":"45277.5","qty":"0.30000000"},{"price":"45277.3","qty":"1.54602737"},
              {"price":"45276.6","qty":"0.15445238"}],
      "asks":[{"price":"45285.2","qty":"0.00100000"},{"price":"45286.4","qty":"1.54571953"},{"price":"45286.6","qty":"1.54571109"},
              {"price":"45289.6","qty":"1.54560911"},{"price":"45290.2","qty":"0.15890660"},{"price":"45291.8","qty":"1.54553491"},
              {"price":"45294.7","qty":"0.04454749"},{"price":"45296.1","qty":"0.35380000"},{"price":"45297.5","qty":"0.09945542"},
              {"price":"45299.5","qty":"0.18772827"}],
      "checksum":3310070434,"timestamp":"2023-10-06T17:35:55.440295Z"}]}"#;

    fn book_from(text: &str, depth: usize) -> (L2Book, Result<(), BookError>) {
        let WsMessage::Book { kind, data } = parse_ws(text).unwrap() else { panic!("not a book message") };
        let mut book = L2Book::new(Symbol::parse(&data[0].symbol).unwrap(), depth, 1, 8);
        let res = book.apply(kind, &data[0]);
        (book, res)
    }

    fn lvl(price: Decimal, qty: Decimal) -> BookLevelMsg {
        BookLevelMsg { price, qty }
    }

    #[test]
    fn matches_krakens_worked_example() {
        let (book, res) = book_from(DOC_SNAPSHOT, 10);
        assert_eq!(res, Ok(()));
        assert!(book.is_synced());
        assert!(book.checksum_input().starts_with("452852100000"), "doc step 1: {}", book.checksum_input());
        assert_eq!(book.checksum(), 3310070434);
        assert_eq!(book.best_bid(), Some((dec!(45283.5), dec!(0.1))));
        assert_eq!(book.best_ask(), Some((dec!(45285.2), dec!(0.001))));
    }

    #[test]
    fn json_numbers_checksum_like_krakens_strings() {
        // The same snapshot as WebSocket v2 really sends it: JSON numbers,
        // trailing zeros gone. The pair's decimals restore Kraken's text.
        let numeric = DOC_SNAPSHOT
            .replace(r#""price":""#, r#""price":"#)
            .replace(r#"","qty":""#, r#","qty":"#)
            .replace(r#""},"#, "},")
            .replace(r#""}],"#, "}],");
        assert!(numeric.contains(r#"{"price":45283.5,"qty":0.10000000}"#), "{numeric}");
        let (book, res) = book_from(&numeric, 10);
        assert_eq!(res, Ok(()));
        assert_eq!(book.checksum(), 3310070434);
    }

    #[test]
    fn checksum_fields_follow_the_documented_steps() {
        assert_eq!(checksum_field(dec!(45285.2), 1), "452852");
        assert_eq!(checksum_field(dec!(0.00100000), 8), "100000");
        assert_eq!(checksum_field(dec!(0.001), 8), "100000");
        assert_eq!(checksum_field(dec!(0.05000), 5), "5000");
        assert_eq!(checksum_field(dec!(45281), 1), "452810");
    }

    #[test]
    fn updates_insert_change_remove_and_truncate() {
        let (mut book, _) = book_from(DOC_SNAPSHOT, 10);
        // Remove the best bid, change the best ask, insert a better bid: the
        // book now has 10 bids again; a new ask inside pushes out the 10th.
        let bids = [lvl(dec!(45283.5), dec!(0)), lvl(dec!(45284.0), dec!(2))];
        let asks = [lvl(dec!(45285.2), dec!(0.5)), lvl(dec!(45285.0), dec!(1))];
        let mut expected = book.clone();
        expected.apply_levels(&bids, &asks, None);
        let sum = expected.checksum();
        assert_eq!(book.apply_update(&bids, &asks, Some(sum), None), Ok(()));
        assert_eq!(book.best_bid(), Some((dec!(45284.0), dec!(2))));
        assert_eq!(book.best_ask(), Some((dec!(45285.0), dec!(1))));
        assert_eq!(book.asks().count(), 10);
        assert_eq!(book.asks().last(), Some((dec!(45297.5), dec!(0.09945542))), "worst ask fell out of depth");
        assert_eq!(book.bids().count(), 10);
        assert!(!book.bids().any(|(p, _)| p == dec!(45283.5)));
    }

    #[test]
    fn several_updates_to_one_level_apply_in_order() {
        let (mut book, _) = book_from(DOC_SNAPSHOT, 10);
        let bids = [lvl(dec!(45283.4), dec!(0)), lvl(dec!(45283.4), dec!(3))];
        book.apply_update(&bids, &[], None, None).unwrap();
        assert_eq!(book.bids().nth(1), Some((dec!(45283.4), dec!(3))));
    }

    #[test]
    fn a_wrong_checksum_unsyncs_the_book_until_a_new_snapshot() {
        let (mut book, _) = book_from(DOC_SNAPSHOT, 10);
        let err = book.apply_update(&[lvl(dec!(45283.5), dec!(0.2))], &[], Some(1), None).unwrap_err();
        assert!(matches!(err, BookError::ChecksumMismatch { expected: 1, .. }), "{err}");
        assert!(!book.is_synced());
        assert_eq!(
            book.apply_update(&[], &[], None, None),
            Err(BookError::NotSynced("BTC/USD".into())),
            "updates after a mismatch are refused"
        );
        let WsMessage::Book { kind, data } = parse_ws(DOC_SNAPSHOT).unwrap() else { unreachable!() };
        assert_eq!(book.apply(kind, &data[0]), Ok(()));
        assert!(book.is_synced());
    }

    #[test]
    fn a_snapshot_with_a_bad_checksum_is_refused_too() {
        let bad = DOC_SNAPSHOT.replace("3310070434", "3310070435");
        let (book, res) = book_from(&bad, 10);
        assert!(matches!(res, Err(BookError::ChecksumMismatch { computed: 3310070434, .. })));
        assert!(!book.is_synced());
    }

    #[test]
    fn updates_before_a_snapshot_and_for_other_symbols_are_refused() {
        let mut book = L2Book::new(Symbol::parse("BTC/USD").unwrap(), 10, 1, 8);
        assert!(matches!(book.apply_update(&[], &[], None, None), Err(BookError::NotSynced(_))));
        let WsMessage::Book { kind, mut data } = parse_ws(DOC_SNAPSHOT).unwrap() else { unreachable!() };
        data[0].symbol = "ETH/USD".into();
        assert!(matches!(book.apply(kind, &data[0]), Err(BookError::WrongSymbol { .. })));
    }

    #[test]
    fn a_deeper_subscription_keeps_more_levels_but_checksums_ten() {
        let (mut book, _) = book_from(DOC_SNAPSHOT, 25);
        let deeper: Vec<BookLevelMsg> = (1..=5).map(|i| lvl(dec!(45270) - Decimal::from(i), dec!(1))).collect();
        book.apply_update(&deeper, &[], Some(3310070434), None).unwrap();
        assert_eq!(book.bids().count(), 15);
        let (shallow, _) = book_from(DOC_SNAPSHOT, 3);
        assert_eq!(shallow.bids().count(), 3);
        assert_eq!(shallow.asks().count(), 3);
    }

    #[test]
    fn converts_to_the_lido_book() {
        let (book, _) = book_from(DOC_SNAPSHOT, 10);
        let now = Utc::now();
        let b = book.to_book(2, now);
        assert_eq!(b.symbol.as_str(), "BTC/USD");
        assert_eq!(b.bids, vec![BookLevel(dec!(45283.5), dec!(0.1)), BookLevel(dec!(45283.4), dec!(1.54582015))]);
        assert_eq!(b.asks[0], BookLevel(dec!(45285.2), dec!(0.001)));
        assert_eq!(b.ts.to_rfc3339(), "2023-10-06T17:35:55.440295+00:00");
    }
}

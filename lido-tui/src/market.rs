//! The market view's state: the market list for the picker, the followed
//! market and symbol, recent quotes (for the chart), the book and the
//! node's order flow.

use std::collections::VecDeque;

use lido_shared::api::MarketInfo;
use lido_shared::model::{Book, Order, Quote};

use crate::action::FeedUpdate;

/// Quotes kept for the chart.
pub const QUOTE_HISTORY: usize = 120;
/// Orders kept in the order flow table.
pub const ORDER_HISTORY: usize = 100;
/// Book levels shown per side.
pub const BOOK_DEPTH: usize = 5;

/// Something fetched once.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Loaded<T> {
    #[default]
    NotLoaded,
    Loading,
    Ready(T),
    Failed(String),
}

/// The state of the market data stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum FeedState {
    #[default]
    Idle,
    Connecting,
    Live,
    Down(String),
}

/// One order as last seen on the watch stream.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderRow {
    pub node: String,
    pub order: Order,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MarketView {
    pub markets: Loaded<Vec<MarketInfo>>,
    /// The followed market and symbol.
    pub target: Option<(String, String)>,
    pub feed: FeedState,
    /// Oldest first.
    pub quotes: VecDeque<Quote>,
    pub book: Option<Book>,
    /// The last refusal from the stream (unknown symbol, …).
    pub notice: Option<String>,
    /// Newest first, one row per order (updated in place, moved to the top).
    pub orders: VecDeque<OrderRow>,
}

impl MarketView {
    /// Every (market, symbol) pair, for the picker.
    pub fn choices(&self) -> Vec<(String, String)> {
        let Loaded::Ready(markets) = &self.markets else {
            return Vec::new();
        };
        markets.iter().flat_map(|m| m.symbols.iter().map(|s| (m.name.clone(), s.to_string()))).collect()
    }

    /// Follows another market/symbol: its old data goes.
    pub fn set_target(&mut self, market: String, symbol: String) {
        self.target = Some((market, symbol));
        self.feed = FeedState::Connecting;
        self.quotes.clear();
        self.book = None;
        self.notice = None;
    }

    /// Whether `market`/`symbol` is the followed pair (updates from a task
    /// that was replaced are dropped).
    pub fn is_target(&self, market: &str, symbol: &str) -> bool {
        self.target.as_ref().is_some_and(|(m, s)| m == market && s.eq_ignore_ascii_case(symbol))
    }

    pub fn apply(&mut self, update: FeedUpdate) {
        match update {
            FeedUpdate::Live => {
                self.feed = FeedState::Live;
                self.notice = None;
            }
            FeedUpdate::Quote(quote) => {
                if self.quotes.len() == QUOTE_HISTORY {
                    self.quotes.pop_front();
                }
                self.quotes.push_back(quote);
            }
            FeedUpdate::Book(book) => self.book = Some(book.truncated(BOOK_DEPTH)),
            FeedUpdate::Refused(why) => self.notice = Some(why),
            FeedUpdate::Down { error, retry_in } => {
                self.feed = FeedState::Down(format!("{error}; retry in {:.1}s", retry_in.as_secs_f64()))
            }
        }
    }

    pub fn record_order(&mut self, node: String, order: Order) {
        self.orders.retain(|row| row.order.order_id != order.order_id);
        if self.orders.len() == ORDER_HISTORY {
            self.orders.pop_back();
        }
        self.orders.push_front(OrderRow { node, order });
    }

    /// Mid prices as chart points: (index, mid).
    pub fn mids(&self) -> Vec<(f64, f64)> {
        self.quotes
            .iter()
            .filter_map(|q| {
                let mid = f64::try_from(q.bid + q.ask).ok()? / 2.0;
                mid.is_finite().then_some(mid)
            })
            .enumerate()
            .map(|(i, mid)| (i as f64, mid))
            .collect()
    }
}

//! Everything that changes the console's state arrives as an [`Action`]:
//! keys from the input task, connection news and watch messages from the
//! network task, market data from the feed task.

use std::time::Duration;

use chrono::{DateTime, Utc};
use crossterm::event::KeyEvent;
use lido_shared::api::MarketInfo;
use lido_shared::cluster::WatchMessage;
use lido_shared::model::{Book, Quote};

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// A key press (other kinds are ignored).
    Key(KeyEvent),
    /// The terminal changed size: just redraw.
    Resize,
    /// Trying `url`; `attempt` is 0 for the first try after a success.
    Connecting {
        url: String,
        attempt: u32,
    },
    Connected {
        url: String,
        at: DateTime<Utc>,
    },
    /// The connection failed or dropped; the next try is in `retry_in`.
    Disconnected {
        url: String,
        error: String,
        attempt: u32,
        retry_in: Duration,
        at: DateTime<Utc>,
    },
    /// A message from `/v1/cluster/watch`.
    Message(WatchMessage),
    /// A command could not be sent.
    CommandFailed {
        id: u64,
        error: String,
    },
    /// The answer to `GET /v1/markets`.
    Markets(Result<Vec<MarketInfo>, String>),
    /// News from the market data task for `market`/`symbol`.
    Feed {
        market: String,
        symbol: String,
        update: FeedUpdate,
    },
}

/// What the market data task reports.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedUpdate {
    /// Subscribed on `/v1/stream`.
    Live,
    Quote(Quote),
    Book(Book),
    /// Lido refused something (unknown symbol, …); the feed goes on.
    Refused(String),
    /// The stream failed; the next try is in `retry_in`.
    Down {
        error: String,
        retry_in: Duration,
    },
}

//! Everything that changes the console's state arrives as an [`Action`]:
//! keys from the input task, connection news and watch messages from the
//! network task.

use std::time::Duration;

use chrono::{DateTime, Utc};
use crossterm::event::KeyEvent;
use lido_shared::cluster::WatchMessage;

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
}

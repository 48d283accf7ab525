//! What the state asks of the outside world: [`crate::app::App::update`]
//! returns [`Effect`]s and the run loop carries them out in tasks, so the
//! state never awaits.

use lido_shared::cluster::WatchCommand;

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send on the watch socket; the reply comes back as a message.
    Watch(WatchCommand),
    /// `GET /v1/markets` on `api_url`, answered with [`crate::action::Action::Markets`].
    LoadMarkets { api_url: String },
    /// Follow this market and symbol's quotes and book, replacing whatever
    /// was followed; `None` stops following.
    Feed(Option<FeedTarget>),
}

/// A market data subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedTarget {
    /// The node's algo API.
    pub api_url: String,
    pub market: String,
    pub symbol: String,
}

//! The market data task: one `/v1/stream` connection subscribed to a
//! symbol's quotes and book, turned into [`Action::Feed`]s. The book is also
//! polled from `/v1/book` when the stream has not sent one for a while (a
//! quiet book, or a node that does not stream books). Reconnects with
//! [`Backoff`] until cancelled; [`load_markets`] answers the picker.

use std::time::Duration;

use lido_shared::api::{Channel, ServerMessage};
use lido_shared::client::LidoClient;
use lido_shared::model::{Book, Quote};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::action::{Action, FeedUpdate};
use crate::backoff::Backoff;
use crate::effect::FeedTarget;
use crate::market::BOOK_DEPTH;

/// How long without a streamed book before `/v1/book` is polled.
const BOOK_STALE_AFTER: Duration = Duration::from_secs(2);

/// Fetches the market list for the picker.
pub async fn load_markets(client: LidoClient, actions: mpsc::Sender<Action>) {
    let result = client.markets().await.map_err(|e| e.to_string());
    let _ = actions.send(Action::Markets(result)).await;
}

/// Follows `target` until `cancel` fires or the console hangs up.
pub async fn run(client: LidoClient, target: FeedTarget, actions: mpsc::Sender<Action>, cancel: CancellationToken) {
    let mut backoff = Backoff::default();
    let send = |update| {
        let action = Action::Feed { market: target.market.clone(), symbol: target.symbol.clone(), update };
        let actions = actions.clone();
        async move { actions.send(action).await.is_ok() }
    };
    loop {
        let error = tokio::select! {
            _ = cancel.cancelled() => return,
            result = follow(&client, &target, &send, &mut backoff) => match result {
                Ok(()) => return,
                Err(error) => error,
            },
        };
        let retry_in = backoff.next_delay();
        if !send(FeedUpdate::Down { error, retry_in }).await {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(retry_in) => {}
        }
    }
}

/// One connection: `Ok` when the console hung up, `Err` when the stream failed.
async fn follow<F, Fut>(client: &LidoClient, target: &FeedTarget, send: &F, backoff: &mut Backoff) -> Result<(), String>
where
    F: Fn(FeedUpdate) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (market, symbol) = (target.market.as_str(), target.symbol.as_str());
    let mut stream = client.stream().await.map_err(|e| e.to_string())?;
    stream.subscribe(Channel::Quotes, market, Some(symbol)).await.map_err(|e| e.to_string())?;
    stream.subscribe(Channel::Book, market, Some(symbol)).await.map_err(|e| e.to_string())?;
    backoff.reset();
    if !send(FeedUpdate::Live).await {
        return Ok(());
    }
    let mut last_book = Instant::now();
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let update = tokio::select! {
            message = stream.next() => match message.map_err(|e| e.to_string())? {
                ServerMessage::Event(event) if event.data.is_null() => continue,
                ServerMessage::Event(event) => match event.channel {
                    Channel::Quotes => match event.decode::<Quote>() {
                        Ok(quote) => FeedUpdate::Quote(quote),
                        Err(e) => FeedUpdate::Refused(format!("bad quote: {e}")),
                    },
                    Channel::Book => match event.decode::<Book>() {
                        Ok(book) => {
                            last_book = Instant::now();
                            FeedUpdate::Book(book)
                        }
                        Err(e) => FeedUpdate::Refused(format!("bad book: {e}")),
                    },
                    _ => continue,
                },
                ServerMessage::Ack(_) | ServerMessage::Reply(_) => continue,
                ServerMessage::Error { error } => FeedUpdate::Refused(format!("{} ({})", error.message, error.code)),
            },
            _ = poll.tick() => {
                if last_book.elapsed() < BOOK_STALE_AFTER {
                    continue;
                }
                last_book = Instant::now();
                match client.book(market, symbol, BOOK_DEPTH).await {
                    Ok(book) => FeedUpdate::Book(book),
                    Err(e) => FeedUpdate::Refused(format!("book: {e}")),
                }
            }
        };
        if !send(update).await {
            return Ok(());
        }
    }
}

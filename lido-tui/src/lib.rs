//! lido-tui, Lido's live terminal console. It holds one WebSocket to an
//! InfrastructureManager's `/v1/cluster/watch`: status streams in, commands
//! go out on the same socket, replies come back correlated by id.
//! A second screen follows one market: quotes and book over the node's algo
//! stream, order flow over the watch socket.
//!
//! - [`cli`]: arguments (`--url` list, `--token`, `--readonly`).
//! - [`action`]: the [`action::Action`] enum, every input to the state.
//! - [`app`]: [`app::App`], the state and its one `update` function (keys,
//!   prompts, confirmations, replies, selection); it returns
//!   [`effect::Effect`]s for the run loop to carry out.
//! - [`model`]: applying watch events to the local cluster snapshot.
//! - [`rates`]: per-service messages/s and latency history for sparklines.
//! - [`market`]: the market view's state (picker list, quotes, book, orders).
//! - [`form`]: the spawn form; [`command`]: the `:` command line.
//! - [`keymap`]: keybindings as data, per mode (help text, dangerous flag).
//! - [`ui`]: drawing, a pure function of the state.
//! - [`net`]: the watch task, with [`backoff`] and URL rotation on reconnect;
//!   [`feed`]: the market data task.
//! - [`terminal`]: raw mode and the alternate screen, restored on drop and panic.

pub mod action;
pub mod app;
pub mod backoff;
pub mod cli;
pub mod command;
pub mod effect;
pub mod feed;
pub mod form;
pub mod keymap;
pub mod market;
pub mod model;
pub mod net;
pub mod rates;
pub mod terminal;
pub mod ui;

use std::time::Duration;

use anyhow::Context;
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use lido_shared::client::LidoClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::action::{Action, FeedUpdate};
use crate::app::App;
use crate::effect::Effect;

/// Runs the console until the operator quits.
pub async fn run(args: cli::Args) -> anyhow::Result<()> {
    let mut clients = Vec::new();
    for url in args.url.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
        let client = LidoClient::with_ca(url, args.ca.as_deref()).with_context(|| format!("bad --url {url:?}"))?;
        clients.push(match &args.token {
            Some(token) => client.with_token(token),
            None => client,
        });
    }
    anyhow::ensure!(!clients.is_empty(), "--url is empty");
    let urls = clients.iter().map(|c| c.base_url().to_string()).collect();

    let (action_tx, mut actions) = mpsc::channel(1024);
    let (command_tx, command_rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(net::run(clients, action_tx.clone(), command_rx, cancel.child_token()));
    tracker.spawn(read_input(action_tx.clone(), cancel.child_token()));

    let mut app = App::new(urls, args.readonly);
    let mut feed: Option<CancellationToken> = None;
    let result = async {
        let mut tui = terminal::Tui::enter().context("cannot set up the terminal")?;
        loop {
            tui.draw(&app)?;
            let Some(action) = actions.recv().await else {
                break;
            };
            let mut outgoing: Vec<_> = app.update(action).into_iter().collect();
            // Apply whatever else is queued before drawing again.
            while let Ok(action) = actions.try_recv() {
                outgoing.extend(app.update(action));
            }
            for effect in outgoing {
                match effect {
                    Effect::Watch(command) => {
                        let id = command.id();
                        if command_tx.try_send(command).is_err() {
                            app.update(Action::CommandFailed { id, error: "too many commands in flight".into() });
                        }
                    }
                    Effect::LoadMarkets { api_url } => match algo_client(&api_url, &args) {
                        Ok(client) => {
                            tracker.spawn(feed::load_markets(client, action_tx.clone()));
                        }
                        Err(error) => {
                            app.update(Action::Markets(Err(error)));
                        }
                    },
                    Effect::Feed(target) => {
                        if let Some(previous) = feed.take() {
                            previous.cancel();
                        }
                        let Some(target) = target else { continue };
                        match algo_client(&target.api_url, &args) {
                            Ok(client) => {
                                let token = cancel.child_token();
                                tracker.spawn(feed::run(client, target, action_tx.clone(), token.clone()));
                                feed = Some(token);
                            }
                            Err(error) => {
                                let update = FeedUpdate::Refused(error);
                                app.update(Action::Feed { market: target.market, symbol: target.symbol, update });
                            }
                        }
                    }
                }
            }
            if app.should_quit {
                break;
            }
        }
        anyhow::Ok(())
    }
    .await;
    cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
    result
}

/// A client for a node's algo API (market data), with the same token and CA.
fn algo_client(url: &str, args: &cli::Args) -> Result<LidoClient, String> {
    let client = LidoClient::with_ca(url, args.ca.as_deref()).map_err(|e| format!("bad algo API url {url:?}: {e}"))?;
    Ok(match args.token.as_deref() {
        Some(token) => client.with_token(token),
        None => client,
    })
}

/// Forwards key presses and resizes as actions.
async fn read_input(actions: mpsc::Sender<Action>, cancel: CancellationToken) {
    let mut events = EventStream::new();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            event = events.next() => event,
        };
        let action = match event {
            Some(Ok(Event::Key(key))) => Action::Key(key),
            Some(Ok(Event::Resize(..))) => Action::Resize,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return,
        };
        if actions.send(action).await.is_err() {
            return;
        }
    }
}

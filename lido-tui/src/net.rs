//! The network task: holds the one WebSocket to `/v1/cluster/watch`, turns
//! what arrives into [`Action`]s, and writes the console's commands to it.
//! When the connection fails or drops it waits (capped exponential backoff)
//! and tries the next URL; each new connection starts with a fresh snapshot.

use chrono::Utc;
use lido_shared::client::LidoClient;
use lido_shared::cluster::WatchCommand;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::action::Action;
use crate::backoff::Backoff;

/// Runs until `cancel` fires or the console hangs up.
pub async fn run(
    clients: Vec<LidoClient>,
    actions: mpsc::Sender<Action>,
    mut commands: mpsc::Receiver<WatchCommand>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut index = 0;
    let mut attempt = 0;
    loop {
        let client = &clients[index];
        let url = client.base_url().to_string();
        if actions.send(Action::Connecting { url: url.clone(), attempt }).await.is_err() {
            return;
        }
        let connected = tokio::select! {
            _ = cancel.cancelled() => return,
            result = client.watch() => result,
        };
        let error = match connected {
            Ok(mut watch) => {
                backoff.reset();
                attempt = 0;
                if actions.send(Action::Connected { url: url.clone(), at: Utc::now() }).await.is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        message = watch.next() => match message {
                            Ok(message) => {
                                if actions.send(Action::Message(message)).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => break e.to_string(),
                        },
                        command = commands.recv() => {
                            let Some(command) = command else { return };
                            if let Err(e) = watch.send(&command).await {
                                let error = e.to_string();
                                let _ = actions.send(Action::CommandFailed { id: command.id(), error: error.clone() }).await;
                                break error;
                            }
                        }
                    }
                }
            }
            Err(e) => e.to_string(),
        };
        attempt += 1;
        let retry_in = backoff.next_delay();
        if actions.send(Action::Disconnected { url, error, attempt, retry_in, at: Utc::now() }).await.is_err() {
            return;
        }
        index = (index + 1) % clients.len();
        // Commands typed while disconnected fail at once rather than firing later.
        let sleep = tokio::time::sleep(retry_in);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut sleep => break,
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    let failed = Action::CommandFailed { id: command.id(), error: "not connected".into() };
                    if actions.send(failed).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

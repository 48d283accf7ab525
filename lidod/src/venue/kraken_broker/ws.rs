//! What the public and the private WebSocket v2 connections share: dialing
//! with a time limit, the reconnect backoff, idle pings and the silence
//! after which a connection counts as dead.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::{Sink, SinkExt};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::venue::kraken::messages::WsRequest;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Limit on dialing and the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A `ping` goes out after this much silence (Kraken wants one at least
/// every minute on an idle connection; it sends heartbeats every second
/// once anything is subscribed).
pub const PING_AFTER: Duration = Duration::from_secs(3);
/// A connection silent this long (no heartbeat, no pong) is dropped and
/// dialed again.
pub const DEAD_AFTER: Duration = Duration::from_secs(8);
/// How often the idle check runs.
pub const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Dials `url` (ws:// or wss://), with Nagle's algorithm off: an order is
/// one small frame that must leave at once.
pub async fn connect(url: &str) -> Result<Ws, String> {
    let dial = tokio_tungstenite::connect_async_with_config(url, None, true);
    match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(format!("cannot connect to {url}: {e}")),
        Err(_) => Err(format!("cannot connect to {url}: no handshake within {CONNECT_TIMEOUT:?}")),
    }
}

/// A connection that stayed up this long was healthy: the next reconnect
/// starts the backoff from its shortest delay again.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// The delays between reconnects of one socket: capped, exponential, with
/// jitter, and reset only after a healthy connection, so a venue that
/// accepts and at once closes connections is not dialed in a tight loop.
pub struct Reconnects {
    backoff: Box<dyn Iterator<Item = Duration> + Send>,
}

impl Default for Reconnects {
    fn default() -> Self {
        Self { backoff: Box::new(reconnect_backoff()) }
    }
}

impl Reconnects {
    /// The wait before the next dial, after a connection that lasted
    /// `lasted` (`None`: the dial itself failed).
    pub fn next_delay(&mut self, lasted: Option<Duration>) -> Duration {
        if lasted.is_some_and(|d| d >= HEALTHY_AFTER) {
            self.backoff = Box::new(reconnect_backoff());
        }
        self.backoff.next().unwrap_or(DEAD_AFTER)
    }
}

/// Capped exponential delays with jitter between reconnects, forever.
pub fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sends one request frame.
pub async fn send<S, P>(sink: &mut S, request: &WsRequest<P>) -> Result<(), String>
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
    P: Serialize,
{
    let text = request.to_json().map_err(|e| format!("cannot encode {}: {e}", request.method))?;
    sink.send(Message::text(text)).await.map_err(|e| format!("cannot send {}: {e}", request.method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_grows_on_short_connections_and_resets_after_a_healthy_one() {
        let mut r = Reconnects::default();
        // Accepted and closed at once, again and again: the waits grow
        // (100, 200, 400, 800, 1600 ms before jitter).
        let short: Vec<Duration> = (0..6).map(|_| r.next_delay(Some(Duration::from_millis(50)))).collect();
        assert!(short[5] >= Duration::from_millis(3200), "{short:?}");
        // A failed dial does not reset it either.
        assert!(r.next_delay(None) >= Duration::from_millis(3200));
        // Up for a minute: the next wait is short again.
        assert!(r.next_delay(Some(Duration::from_secs(60))) < Duration::from_millis(250));
    }
}

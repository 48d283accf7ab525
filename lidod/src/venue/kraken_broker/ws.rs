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

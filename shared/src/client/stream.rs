use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::{ClientError, Placed};
use crate::api::{Channel, ClientMessage, PlaceOrder, ReplyOutcome, ServerMessage, StreamEvent, StreamReply};
use crate::cluster::{WatchCommand, WatchMessage};
use crate::model::Order;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `http://h:p` + `/path` → `ws://h:p/path`.
pub fn ws_url(base: &str, path: &str) -> Result<String, ClientError> {
    let rest = if let Some(r) = base.strip_prefix("http://") {
        format!("ws://{r}")
    } else if let Some(r) = base.strip_prefix("https://") {
        format!("wss://{r}")
    } else {
        return Err(ClientError::InvalidUrl(base.to_string()));
    };
    Ok(format!("{rest}{path}"))
}

/// Opens `url`; a `wss://` one is verified against `tls`'s CAs.
async fn connect(url: &str, token: Option<&str>, tls: &Arc<rustls::ClientConfig>) -> Result<Ws, ClientError> {
    let mut request = url.into_client_request()?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::Protocol("token is not a valid header value".into()))?;
        request.headers_mut().insert("authorization", value);
    }
    let connector = Some(Connector::Rustls(tls.clone()));
    // `true`: no Nagle delay on small frames (subscribes, pings).
    match tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector).await {
        Ok((ws, _)) => Ok(ws),
        // Lido refused the upgrade with an HTTP error: surface its body.
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            Err(ClientError::from_response(resp.status().as_u16(), body))
        }
        Err(e) => Err(ClientError::classify(url, e)),
    }
}

/// Reads the next JSON text frame, answering pings on the way.
async fn next_json<T: serde::de::DeserializeOwned>(ws: &mut Ws) -> Result<T, ClientError> {
    loop {
        let Some(msg) = ws.next().await else {
            return Err(ClientError::Closed);
        };
        match msg? {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| ClientError::Protocol(format!("{e}: {}", text.as_str())))
            }
            Message::Close(_) => return Err(ClientError::Closed),
            _ => continue,
        }
    }
}

/// The algo stream: subscribe to channels, read numbered events, place and
/// cancel orders.
pub struct Stream {
    ws: Ws,
    /// Messages read while waiting for an order reply, handed out by
    /// [`Self::next`] before anything newer.
    unread: VecDeque<ServerMessage>,
    /// The last order request id used.
    last_request: u64,
}

impl Stream {
    /// Connects, trusting the CAs of `tls` (see [`crate::tls::client_config`]).
    pub async fn connect(url: &str, token: Option<&str>, tls: &Arc<rustls::ClientConfig>) -> Result<Self, ClientError> {
        Ok(Self { ws: connect(url, token, tls).await?, unread: VecDeque::new(), last_request: 0 })
    }

    /// Places an order over the stream, as [`super::LidoClient::place_order`]
    /// does over REST, and waits for its reply; events that arrive meanwhile
    /// stay for [`Self::next`].
    pub async fn place_order(&mut self, order: &PlaceOrder) -> Result<Placed, ClientError> {
        let id = self.request_id();
        self.send(&ClientMessage::PlaceOrder { id: id.clone(), order: order.clone() }).await?;
        let (status, order) = self.reply(&id).await?;
        Ok(Placed { order, created: status == 201 })
    }

    /// Cancels an order over the stream and waits for its reply.
    pub async fn cancel_order(&mut self, order_id: &str) -> Result<Order, ClientError> {
        let id = self.request_id();
        self.send(&ClientMessage::CancelOrder { id: id.clone(), order_id: order_id.into() }).await?;
        Ok(self.reply(&id).await?.1)
    }

    fn request_id(&mut self) -> String {
        self.last_request += 1;
        format!("sdk-{}", self.last_request)
    }

    /// Reads until the reply to request `id`, keeping what comes before it.
    async fn reply(&mut self, id: &str) -> Result<(u16, Order), ClientError> {
        loop {
            match next_json(&mut self.ws).await? {
                ServerMessage::Reply(StreamReply { reply_to, status, outcome }) if reply_to == id => {
                    return match outcome {
                        ReplyOutcome::Order(order) => Ok((status, *order)),
                        ReplyOutcome::Error(error) => Err(ClientError::from_detail(status, error)),
                    }
                }
                other => self.unread.push_back(other),
            }
        }
    }

    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        let text = serde_json::to_string(msg).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Sends a raw text frame (for tests of bad input).
    pub async fn send_raw(&mut self, text: String) -> Result<(), ClientError> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn subscribe(&mut self, channel: Channel, market: &str, symbol: Option<&str>) -> Result<(), ClientError> {
        self.send(&ClientMessage::Subscribe { channel, market: market.into(), symbol: symbol.map(Into::into) }).await
    }

    pub async fn unsubscribe(
        &mut self,
        channel: Channel,
        market: &str,
        symbol: Option<&str>,
    ) -> Result<(), ClientError> {
        self.send(&ClientMessage::Unsubscribe { channel, market: market.into(), symbol: symbol.map(Into::into) }).await
    }

    /// The next message of any kind.
    pub async fn next(&mut self) -> Result<ServerMessage, ClientError> {
        match self.unread.pop_front() {
            Some(msg) => Ok(msg),
            None => next_json(&mut self.ws).await,
        }
    }

    /// The next data event, skipping acks; an error frame becomes an error.
    pub async fn next_event(&mut self, within: Duration) -> Result<StreamEvent, ClientError> {
        tokio::time::timeout(within, async {
            loop {
                match self.next().await? {
                    ServerMessage::Event(e) => return Ok(e),
                    ServerMessage::Ack(_) | ServerMessage::Reply(_) => continue,
                    ServerMessage::Error { error } => return Err(ClientError::from_detail(400, error)),
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout("a stream event".into()))?
    }

    pub async fn close(mut self) -> Result<(), ClientError> {
        self.ws.close(None).await?;
        Ok(())
    }
}

/// The operator stream `/v1/cluster/watch`.
pub struct ClusterWatch {
    ws: Ws,
}

impl ClusterWatch {
    /// Connects, trusting the CAs of `tls` (see [`crate::tls::client_config`]).
    pub async fn connect(url: &str, token: Option<&str>, tls: &Arc<rustls::ClientConfig>) -> Result<Self, ClientError> {
        Ok(Self { ws: connect(url, token, tls).await? })
    }

    pub async fn next(&mut self) -> Result<WatchMessage, ClientError> {
        next_json(&mut self.ws).await
    }

    /// Sends a command; its reply arrives in the stream with the same id.
    pub async fn send(&mut self, command: &WatchCommand) -> Result<(), ClientError> {
        let text = serde_json::to_string(command).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ws_url;

    #[test]
    fn http_to_ws() {
        assert_eq!(ws_url("http://127.0.0.1:7700", "/v1/stream").unwrap(), "ws://127.0.0.1:7700/v1/stream");
        assert_eq!(ws_url("https://lido.example", "/x").unwrap(), "wss://lido.example/x");
        assert!(ws_url("ftp://x", "/").is_err());
    }
}

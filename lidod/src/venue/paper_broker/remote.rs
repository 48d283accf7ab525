//! The paper broker on a shared paper exchange (option `exchange`): every
//! command goes over one WebSocket to `lidod venue paper`, and what the
//! exchange pushes comes back up the pipe.
//!
//! - The socket is re-dialed with backoff; while it is down the broker
//!   reports `venue_connected = 0`, so health and failover route around it.
//! - A `Ping` every second proves the socket; one unanswered for
//!   [`PING_TIMEOUT`] drops it.
//! - A place or cancel whose socket dropped before the answer has an unknown
//!   outcome: once a socket is back the order is looked up by its client id,
//!   and only an order the exchange does not have is placed again (a cancel
//!   is sent again only while the order is still open). With no socket back
//!   in [`SETTLE_WITHIN`] the answer is `outcome_unknown`, which the
//!   MarketManager settles the same way.
//! - Subscriptions are sent again on every new socket.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lido_shared::access::{Secret, CLUSTER_SECRET_HEADER};
use lido_shared::client::agent::{Agent, AgentConfig, CommandHandler, ServiceLink, StatusSender};
use lido_shared::cluster::{ServiceKind, ServiceState};
use lido_shared::exchange::{ExchangeFrame, ExchangeRequest};
use lido_shared::model::Symbol;
use lido_shared::pipe::{Command, Feed, Reply, ReplyBody, ServiceEvent, MAX_FRAME_BYTES};
use lido_shared::ErrorDetail;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::markets::OUTCOME_UNKNOWN;

/// How long one command waits for the exchange's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Silence on a ping after which the socket counts as dead.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an order command with an unknown outcome waits for a socket
/// to look the order up on.
const SETTLE_WITHIN: Duration = Duration::from_secs(6);
/// Longest wait between two dials.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long the broker waits for its first socket before checking in.
const FIRST_DIAL: Duration = Duration::from_secs(5);

/// Why a command got no answer.
#[derive(Debug)]
enum SendError {
    /// No socket: nothing was sent.
    NotSent,
    /// Sent, and the socket dropped or the answer did not come: the
    /// exchange may or may not have acted on it.
    Unknown(String),
}

struct Remote {
    url: String,
    secret: Secret,
    /// The current socket's outbound queue and its cancel; `None` while down.
    socket: Mutex<Option<(mpsc::UnboundedSender<Message>, CancellationToken)>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: AtomicU64,
    subscriptions: Mutex<HashSet<(Feed, Symbol)>>,
    /// How many sockets have come up so far (0: never connected).
    generation: watch::Sender<u64>,
    connected: watch::Sender<bool>,
    events: mpsc::Sender<ServiceEvent>,
}

/// Runs a paper broker on the shared exchange at `url` until `shutdown` or
/// a `Stop` from its manager.
pub(super) async fn run(
    name: String,
    manager_url: String,
    link: ServiceLink,
    url: String,
    pid: Option<u32>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (events_tx, events_rx) = mpsc::channel(65_536);
    let remote = Arc::new(Remote {
        url: url.clone(),
        secret: link.cluster_secret.clone(),
        socket: Mutex::new(None),
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        subscriptions: Mutex::new(HashSet::new()),
        generation: watch::channel(0).0,
        connected: watch::channel(false).0,
        events: events_tx,
    });
    let dialer = tokio::spawn(remote.clone().dial_loop(shutdown.clone()));
    // Check in with the exchange reachable if it is: the market reconciles
    // its orders as soon as the pipe is up.
    let mut generation = remote.generation.subscribe();
    if tokio::time::timeout(FIRST_DIAL, generation.wait_for(|g| *g > 0)).await.is_err() {
        warn!(%name, %url, "the paper exchange is not reachable yet; starting anyway, reported disconnected");
    }
    let mut agent_config = AgentConfig::new(name.clone(), ServiceKind::Broker, "paper", manager_url);
    agent_config.pid = pid;
    agent_config.link(link);
    let agent = Agent::start(agent_config, remote.clone(), events_rx, shutdown.clone()).await?;
    info!(%name, %url, "paper broker started on the shared paper exchange");
    let status = tokio::spawn(remote.clone().status_loop(agent.status_sender(), shutdown.clone()));
    let result = agent.wait().await;
    shutdown.cancel();
    let _ = dialer.await;
    let _ = status.await;
    info!(%name, "paper broker stopped");
    result.map_err(Into::into)
}

impl Remote {
    fn lock_socket(&self) -> std::sync::MutexGuard<'_, Option<(mpsc::UnboundedSender<Message>, CancellationToken)>> {
        self.socket.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Reply>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, HashSet<(Feed, Symbol)>> {
        self.subscriptions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Dials, serves a socket until it drops, and dials again with backoff.
    async fn dial_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut failures = 0u64;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match self.dial().await {
                Ok(ws) => {
                    backoff = Duration::from_millis(100);
                    failures = 0;
                    self.serve(ws, &shutdown).await;
                }
                Err(e) => {
                    failures += 1;
                    // One line per outage, not per dial.
                    if failures == 1 {
                        warn!(url = %self.url, error = %e, "cannot reach the paper exchange; retrying with backoff");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn dial(
        &self,
    ) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>
    {
        let mut request = self.url.as_str().into_client_request()?;
        let secret = HeaderValue::from_str(self.secret.expose())
            .map_err(|_| anyhow::anyhow!("the cluster secret is not a valid header value"))?;
        request.headers_mut().insert(CLUSTER_SECRET_HEADER, secret);
        let config = WebSocketConfig::default().max_message_size(Some(MAX_FRAME_BYTES));
        let dial = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let (ws, _) = tokio::time::timeout(REQUEST_TIMEOUT, dial)
            .await
            .map_err(|_| anyhow::anyhow!("timed out connecting to the paper exchange"))??;
        Ok(ws)
    }

    /// One socket's life: writer, reader, resubscriptions; returns when it drops.
    async fn serve(
        self: &Arc<Self>,
        ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        shutdown: &CancellationToken,
    ) {
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let cancel = shutdown.child_token();
        *self.lock_socket() = Some((tx, cancel.clone()));
        self.connected.send_replace(true);
        self.generation.send_modify(|g| *g += 1);
        info!(url = %self.url, "connected to the paper exchange");
        let subs: Vec<(Feed, Symbol)> = self.subs().iter().cloned().collect();
        for (feed, symbol) in subs {
            // Answers to these are not waited for: a bad symbol was refused the first time.
            let _ = self.send(Command::Subscribe { feed, symbol });
        }
        let writer = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                loop {
                    let message = tokio::select! {
                        _ = cancel.cancelled() => break,
                        m = rx.recv() => m,
                    };
                    let Some(message) = message else { break };
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
                cancel.cancel();
                let _ = sink.close().await;
            })
        };
        loop {
            let message = tokio::select! {
                _ = cancel.cancelled() => break,
                m = stream.next() => m,
            };
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            match serde_json::from_str::<ExchangeFrame>(&text) {
                Ok(ExchangeFrame::Reply { id, reply }) => {
                    if let Some(waiter) = self.lock_pending().remove(&id) {
                        let _ = waiter.send(reply);
                    }
                }
                // In order: an event reaches the pipe before the reply that
                // follows it on the socket is handed over.
                Ok(ExchangeFrame::Event { event }) => self.relay(event).await,
                Err(e) => warn!(error = %e, "unreadable frame from the paper exchange; ignored"),
            }
        }
        cancel.cancel();
        let _ = writer.await;
        *self.lock_socket() = None;
        self.connected.send_replace(false);
        // Everything in flight on this socket now has an unknown outcome.
        self.lock_pending().clear();
        warn!(url = %self.url, "the paper exchange connection dropped; reconnecting");
    }

    /// Hands an event on: market data only where subscribed (and dropped
    /// when the pipe is slow), order events always.
    async fn relay(&self, event: ServiceEvent) {
        match super::feed_of(&event) {
            Some(key) => {
                if self.subs().contains(&key) {
                    let _ = self.events.try_send(event);
                }
            }
            None => {
                let _ = self.events.send(event).await;
            }
        }
    }

    /// Queues a command on the current socket; its answer comes on the returned receiver.
    fn send(&self, command: Command) -> Result<oneshot::Receiver<Reply>, SendError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let text = serde_json::to_string(&ExchangeRequest { id, command })
            .map_err(|e| SendError::Unknown(format!("cannot encode the command: {e}")))?;
        let (tx, rx) = oneshot::channel();
        let socket = self.lock_socket();
        let Some((out, _)) = socket.as_ref() else { return Err(SendError::NotSent) };
        self.lock_pending().insert(id, tx);
        if out.send(Message::text(text)).is_err() {
            self.lock_pending().remove(&id);
            return Err(SendError::NotSent);
        }
        Ok(rx)
    }

    /// Sends a command and waits for its answer.
    async fn request(&self, command: Command, timeout: Duration) -> Result<Reply, SendError> {
        let rx = self.send(command)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(SendError::Unknown("the paper exchange connection dropped before the answer".into())),
            Err(_) => {
                Err(SendError::Unknown(format!("the paper exchange did not answer within {} s", timeout.as_secs())))
            }
        }
    }

    /// Waits until a socket is up, for at most `within`.
    async fn wait_connected(&self, within: Duration) -> bool {
        let mut connected = self.connected.subscribe();
        tokio::time::timeout(within, connected.wait_for(|up| *up)).await.is_ok_and(|r| r.is_ok())
    }

    /// Pings the exchange each second, drops a socket that stays silent,
    /// and reports whether the venue is connected.
    async fn status_loop(self: Arc<Self>, status: StatusSender, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if *self.connected.borrow() {
                if let Err(e) = self.request(Command::Ping, PING_TIMEOUT).await {
                    warn!(url = %self.url, error = ?e, "the paper exchange stopped answering; dropping the connection");
                    if let Some((_, cancel)) = self.lock_socket().as_ref() {
                        cancel.cancel();
                    }
                }
            }
            let up = *self.connected.borrow();
            let reconnects = self.generation.borrow().saturating_sub(1);
            let metrics = [("venue_connected", f64::from(u8::from(up))), ("exchange_reconnects", reconnects as f64)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let _ = self.events.try_send(ServiceEvent::Metrics(metrics));
            let detail = if up {
                format!("shared paper exchange {} connected", self.url)
            } else {
                format!("shared paper exchange {} unreachable; reconnecting", self.url)
            };
            status.send(ServiceState::Running, Some(detail));
        }
    }

    /// A place or cancel: sent, and if its outcome is unknown, looked up by
    /// client id on the next socket before anything is sent again.
    async fn order_command(&self, command: Command) -> Result<ReplyBody, ErrorDetail> {
        let (account, client_id) = match &command {
            Command::PlaceOrder { order } => (order.account.clone(), order.client_id.clone()),
            Command::CancelOrder { account, client_id } => (account.clone(), client_id.clone()),
            _ => unreachable!("only order commands come here"),
        };
        let cancel = matches!(command, Command::CancelOrder { .. });
        let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
        let mut why = match self.request(command.clone(), REQUEST_TIMEOUT).await {
            Ok(reply) => return into_result(reply),
            Err(SendError::NotSent) => return Err(not_connected(&self.url)),
            Err(SendError::Unknown(why)) => why,
        };
        warn!(order_id = %client_id, error = %why, "order command outcome unknown; looking the order up before resending");
        while tokio::time::Instant::now() < deadline {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self.wait_connected(left).await {
                break;
            }
            let status = Command::OrderStatus { account: account.clone(), client_id: client_id.clone() };
            let resend = match self.request(status, REQUEST_TIMEOUT).await {
                Ok(Reply::Ok(ReplyBody::Order(report))) => {
                    if !cancel || report.status.is_terminal() {
                        info!(order_id = %client_id, status = %report.status, "order found at the paper exchange; not resending");
                        return Ok(ReplyBody::Order(report));
                    }
                    true
                }
                Ok(Reply::Err(d)) if d.code == "unknown_order" => {
                    if cancel {
                        return Err(d);
                    }
                    true
                }
                Ok(other) => return into_result(other),
                Err(SendError::NotSent) => false,
                Err(SendError::Unknown(e)) => {
                    why = e;
                    false
                }
            };
            if resend {
                info!(order_id = %client_id, "resending the order command to the paper exchange");
                match self.request(command.clone(), REQUEST_TIMEOUT).await {
                    Ok(reply) => return into_result(reply),
                    Err(SendError::NotSent) => {}
                    Err(SendError::Unknown(e)) => why = e,
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ErrorDetail::new(OUTCOME_UNKNOWN, format!("{why}; the order is looked up again before any resend")))
    }
}

impl CommandHandler for Remote {
    async fn handle(&self, command: Command) -> Reply {
        let result = match command {
            Command::Ping => Ok(ReplyBody::Pong),
            Command::Stop => Ok(ReplyBody::Done),
            Command::PlaceOrder { .. } | Command::CancelOrder { .. } => self.order_command(command).await,
            Command::Subscribe { feed, ref symbol } => {
                let symbol = symbol.clone();
                let result = self.plain(command).await;
                if result.is_ok() {
                    self.subs().insert((feed, symbol));
                }
                result
            }
            Command::Unsubscribe { feed, ref symbol } => {
                self.subs().remove(&(feed, symbol.clone()));
                let _ = self.send(command);
                Ok(ReplyBody::Done)
            }
            command => self.plain(command).await,
        };
        match result {
            Ok(body) => Reply::Ok(body),
            Err(e) => Reply::Err(e),
        }
    }
}

impl Remote {
    /// A command that changes nothing: sent once, any failure is an error.
    async fn plain(&self, command: Command) -> Result<ReplyBody, ErrorDetail> {
        match self.request(command, REQUEST_TIMEOUT).await {
            Ok(reply) => into_result(reply),
            Err(SendError::NotSent) => Err(not_connected(&self.url)),
            Err(SendError::Unknown(why)) => Err(ErrorDetail::new("venue_unavailable", why)),
        }
    }
}

fn into_result(reply: Reply) -> Result<ReplyBody, ErrorDetail> {
    match reply {
        Reply::Ok(body) => Ok(body),
        Reply::Err(e) => Err(e),
    }
}

fn not_connected(url: &str) -> ErrorDetail {
    ErrorDetail::new(
        "venue_unavailable",
        format!("the shared paper exchange {url} is not connected; nothing was sent, retry shortly"),
    )
}

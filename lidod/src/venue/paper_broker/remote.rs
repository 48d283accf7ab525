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

impl Remote {
    /// Not connected yet; events for the pipe go to `events`.
    fn new(url: String, secret: Secret, events: mpsc::Sender<ServiceEvent>) -> Self {
        Self {
            url,
            secret,
            socket: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            subscriptions: Mutex::new(HashSet::new()),
            generation: watch::channel(0).0,
            connected: watch::channel(false).0,
            events,
        }
    }
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
    let remote = Arc::new(Remote::new(url.clone(), link.cluster_secret.clone(), events_tx));
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;

    use lido_shared::model::{OrderStatus, OrderType, Side, TimeInForce};
    use lido_shared::pipe::VenueOrder;
    use rust_decimal_macros::dec;
    use tokio::net::TcpListener;

    use super::*;
    use crate::venue::paper_broker::PaperOptions;
    use crate::venue::paper_exchange;

    const WAIT: Duration = Duration::from_secs(10);

    /// An in-process exchange on `listener`; cancel the token to stop it.
    fn exchange(
        listener: TcpListener,
        state: &Path,
        secret: &Secret,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let options = PaperOptions {
            state_file: Some(state.to_path_buf()),
            tick: Duration::from_millis(50),
            ..PaperOptions::default()
        };
        let stop = CancellationToken::new();
        let serve = paper_exchange::serve(listener, options, secret.clone(), stop.clone());
        (stop, tokio::spawn(async move { serve.await.unwrap() }))
    }

    fn remote(addr: SocketAddr, secret: &Secret) -> (Arc<Remote>, mpsc::Receiver<ServiceEvent>) {
        let (events, rx) = mpsc::channel(1024);
        let remote = Remote::new(format!("ws://{addr}/v1/exchange"), secret.clone(), events);
        (Arc::new(remote), rx)
    }

    fn order(client_id: &str) -> VenueOrder {
        VenueOrder {
            client_id: client_id.into(),
            account: "acme".into(),
            symbol: Symbol::parse("BTC/USD").unwrap(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            quantity: dec!(0.01),
            limit_price: Some(dec!(1000.0)),
            client_order_id: Some(format!("algo-{client_id}")),
        }
    }

    async fn place(r: &Remote, client_id: &str) -> Reply {
        r.handle(Command::PlaceOrder { order: order(client_id) }).await
    }

    #[tokio::test]
    async fn forwards_to_the_exchange_refuses_while_it_is_down_and_finds_orders_after_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("exchange.json");
        let secret = Secret::new("exchange-secret");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, served) = exchange(listener, &state, &secret);

        let (intruder, _) = remote(addr, &Secret::new("wrong"));
        assert!(intruder.dial().await.is_err(), "a wrong cluster secret is refused");

        let (r, mut events) = remote(addr, &secret);
        let shutdown = CancellationToken::new();
        let dialer = tokio::spawn(r.clone().dial_loop(shutdown.clone()));
        assert!(r.wait_connected(WAIT).await, "connects");
        let Reply::Ok(ReplyBody::Order(placed)) = place(&r, "o-1").await else { panic!("placed") };
        assert_eq!(placed.status, OrderStatus::Accepted);
        // The exchange's order update came up before the answer.
        let update = events.try_recv().expect("the order update is relayed before the reply");
        assert!(matches!(update, ServiceEvent::OrderUpdate(ref u) if u.client_id == "o-1"), "{update:?}");

        // The exchange goes away: nothing is sent, and the broker says so.
        stop.cancel();
        served.await.unwrap();
        let mut connected = r.connected.subscribe();
        tokio::time::timeout(WAIT, connected.wait_for(|up| !*up)).await.unwrap().unwrap();
        let Reply::Err(down) = place(&r, "o-2").await else { panic!("refused while down") };
        assert_eq!(down.code, "venue_unavailable");
        assert!(down.message.contains("nothing was sent"), "{}", down.message);

        // Back on the same address with its saved state: the broker re-dials,
        // and the same order again is the first one, not a second.
        let (stop, served) = exchange(TcpListener::bind(addr).await.unwrap(), &state, &secret);
        assert!(r.wait_connected(WAIT).await, "reconnects");
        let Reply::Ok(ReplyBody::Order(again)) = place(&r, "o-1").await else { panic!("answered") };
        assert_eq!(
            (again.client_id, again.venue_order_id, again.status),
            (placed.client_id, placed.venue_order_id, placed.status)
        );
        let Reply::Ok(ReplyBody::Orders(open)) = r.handle(Command::OpenOrders { account: "acme".into() }).await else {
            panic!("open orders")
        };
        assert_eq!(open.len(), 1, "o-2 never reached the exchange, o-1 is there once: {open:?}");
        assert_eq!(open[0].order.as_deref().and_then(|o| o.client_order_id.as_deref()), Some("algo-o-1"));

        shutdown.cancel();
        stop.cancel();
        served.await.unwrap();
        dialer.await.unwrap();
    }

    /// Between a broker and the exchange: forwards both ways, but on the
    /// first connection drops the socket instead of passing the answer to
    /// the first `place_order`, the outcome a broker cannot know. Counts
    /// the `place_order`s that pass.
    async fn lossy_proxy(exchange: SocketAddr, secret: Secret) -> (SocketAddr, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let places = Arc::new(AtomicU64::new(0));
        let counted = places.clone();
        tokio::spawn(async move {
            for first in [true, false] {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut client = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let mut request = format!("ws://{exchange}/v1/exchange").into_client_request().unwrap();
                request.headers_mut().insert(CLUSTER_SECRET_HEADER, HeaderValue::from_str(secret.expose()).unwrap());
                let (mut upstream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
                let mut place_id = None;
                loop {
                    tokio::select! {
                        m = client.next() => {
                            let Some(Ok(m)) = m else { break };
                            if let Message::Text(t) = &m {
                                let r: ExchangeRequest = serde_json::from_str(t).unwrap();
                                if matches!(r.command, Command::PlaceOrder { .. }) {
                                    counted.fetch_add(1, Ordering::SeqCst);
                                    place_id = Some(r.id);
                                }
                            }
                            if upstream.send(m).await.is_err() { break }
                        }
                        m = upstream.next() => {
                            let Some(Ok(m)) = m else { break };
                            if let Message::Text(t) = &m {
                                let f: ExchangeFrame = serde_json::from_str(t).unwrap();
                                if first && matches!(f, ExchangeFrame::Reply { id, .. } if Some(id) == place_id) {
                                    break; // the answer is lost with the socket
                                }
                            }
                            if client.send(m).await.is_err() { break }
                        }
                    }
                }
                if !first {
                    return;
                }
            }
        });
        (addr, places)
    }

    #[tokio::test]
    async fn an_order_whose_answer_was_lost_is_looked_up_not_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let secret = Secret::new("exchange-secret");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let exchange_addr = listener.local_addr().unwrap();
        let (stop, served) = exchange(listener, &dir.path().join("exchange.json"), &secret);
        let (proxy, places) = lossy_proxy(exchange_addr, secret.clone()).await;

        let (r, _events) = remote(proxy, &secret);
        let shutdown = CancellationToken::new();
        let dialer = tokio::spawn(r.clone().dial_loop(shutdown.clone()));
        assert!(r.wait_connected(WAIT).await, "connects");
        let Reply::Ok(ReplyBody::Order(report)) = place(&r, "o-1").await else { panic!("settled, not an error") };
        assert_eq!((report.client_id.as_str(), report.status), ("o-1", OrderStatus::Accepted));
        assert_eq!(places.load(Ordering::SeqCst), 1, "found by its client id, so never sent again");
        assert_eq!(*r.generation.borrow(), 2, "on a second socket");

        shutdown.cancel();
        stop.cancel();
        served.await.unwrap();
        dialer.await.unwrap();
    }
}

//! The manager side of the service pipe: dial the service's WebSocket (a
//! socket, or memory for a task in this process), send
//! commands and match replies by id, pass events on, heartbeat, and re-dial
//! with backoff when the socket drops (DESIGN.md, service protocol rule 3).
//!
//! Events and replies leave the pipe on one ordered channel ([`PipeEvent`]):
//! the owner hands a reply to its caller after applying every event the
//! service sent before it, so an order's acknowledgement never overtakes the
//! fills its venue call made.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use lido_shared::client::agent::memory;
use lido_shared::client::agent::Proof;
use lido_shared::cluster::ServiceState;
use lido_shared::pipe::{
    Command, ManagerFrame, OrderTrace, Reply, ReplyBody, ServiceEvent, ServiceFrame, HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_TIMEOUT_MS, MAX_FRAME_BYTES,
};
use lido_shared::ErrorDetail;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::UrlError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Why a command got no answer from the service.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PipeError {
    /// Nothing was sent: the pipe is down.
    #[error("service {0} is not connected")]
    NotConnected(String),
    /// Sent, but no reply in time: the outcome is unknown.
    #[error("service {0} did not answer in time")]
    Timeout(String),
    /// Sent, then the pipe dropped: the outcome is unknown.
    #[error("pipe to service {0} dropped before it answered")]
    Dropped(String),
    /// The service answered with an error.
    #[error("{0}")]
    Remote(ErrorDetail),
}

impl PipeError {
    /// True when the command may have taken effect at the service.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Dropped(_))
    }
}

/// What a pipe passes to its owner, in the order the service sent it.
#[derive(Debug)]
pub enum PipeEvent {
    Event(ServiceEvent),
    /// A command's answer. The owner calls [`PendingReply::deliver`] once the
    /// events before it are applied.
    Reply(PendingReply),
}

/// A reply on its way to the caller of [`PipeHandle::request`].
#[derive(Debug)]
pub struct PendingReply {
    caller: oneshot::Sender<Result<ReplyBody, PipeError>>,
    result: Result<ReplyBody, PipeError>,
}

impl PendingReply {
    /// Hands the reply to the waiting caller (a caller that gave up is fine).
    pub fn deliver(self) {
        let _ = self.caller.send(self.result);
    }
}

/// The channel a pipe passes its events and replies on, tagged with the service name.
pub type PipeEvents = mpsc::Sender<(String, PipeEvent)>;

/// What the pipe tells its owner besides events.
#[derive(Debug, Clone)]
pub enum PipeSignal {
    /// Connected; `generation` counts connections since the pipe was made.
    Up {
        generation: u64,
    },
    Down {
        reason: String,
    },
    Status {
        state: ServiceState,
        detail: Option<String>,
    },
}

/// The connection state, for routing decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeState {
    Connecting,
    Up,
    Closed,
}

/// A cloneable handle to one service's pipe.
#[derive(Clone)]
pub struct PipeHandle {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    url: watch::Sender<String>,
    requests: mpsc::Sender<Request>,
    state: watch::Sender<PipeState>,
    next_id: AtomicU64,
    /// Proven to the service on every dial: the cluster secret, or a hosted
    /// trader's own check-in key (new at each of its starts).
    proof: std::sync::Mutex<Proof>,
    /// The trust a `wss://` pipe is verified with (the node's CA, or a
    /// hosted trader's own certificate); read at each dial.
    tls: std::sync::Mutex<Option<Arc<rustls::ClientConfig>>>,
    cancel: CancellationToken,
    /// Last measured heartbeat latency (service clock to ours), microseconds.
    rtt_us: AtomicU64,
    /// Frames received from the service, for rates.
    received: AtomicU64,
}

struct Request {
    command: Command,
    trace: Option<OrderTrace>,
    deadline: Instant,
    reply: oneshot::Sender<Result<ReplyBody, PipeError>>,
}

impl PipeHandle {
    /// Starts dialing `url`. Events and replies go to `events`, signals to
    /// `signals`, both tagged with the service name.
    pub fn start(
        name: String,
        url: String,
        events: PipeEvents,
        signals: mpsc::UnboundedSender<(String, PipeSignal)>,
        proof: Proof,
        tls: Option<Arc<rustls::ClientConfig>>,
        cancel: CancellationToken,
    ) -> Self {
        let (req_tx, req_rx) = mpsc::channel(1024);
        let inner = Arc::new(Inner {
            name,
            url: watch::channel(url).0,
            requests: req_tx,
            state: watch::channel(PipeState::Connecting).0,
            next_id: AtomicU64::new(1),
            proof: std::sync::Mutex::new(proof),
            tls: std::sync::Mutex::new(tls),
            cancel,
            rtt_us: AtomicU64::new(0),
            received: AtomicU64::new(0),
        });
        tokio::spawn(dial_loop(inner.clone(), req_rx, events, signals));
        Self { inner }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn state(&self) -> PipeState {
        *self.inner.state.borrow()
    }

    pub fn is_up(&self) -> bool {
        self.state() == PipeState::Up
    }

    pub fn rtt(&self) -> Duration {
        Duration::from_micros(self.inner.rtt_us.load(Ordering::Relaxed))
    }

    /// Frames received since the pipe was made (all connections).
    pub fn received(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
    }

    /// Points the pipe at a new address (the service restarted) and re-dials.
    pub fn redial(&self, url: String) {
        self.inner.url.send_if_modified(|cur| {
            if *cur == url {
                return false;
            }
            *cur = url;
            true
        });
    }

    /// [`Self::redial`], verifying the service with `tls` and proving
    /// `proof` from the next dial on (a service that made itself a new
    /// certificate, a trader started with a new key).
    pub fn redial_with(&self, url: String, tls: Option<Arc<rustls::ClientConfig>>, proof: Proof) {
        *self.inner.tls.lock().unwrap_or_else(|p| p.into_inner()) = tls;
        *self.inner.proof.lock().unwrap_or_else(|p| p.into_inner()) = proof;
        self.redial(url);
    }

    /// Closes the pipe for good.
    pub fn close(&self) {
        self.inner.cancel.cancel();
    }

    /// Sends `command` and waits for the reply.
    pub async fn request(&self, command: Command, timeout: Duration) -> Result<ReplyBody, PipeError> {
        self.request_traced(command, None, timeout).await
    }

    /// Sends a command about an order, with the order's ids for the
    /// service's log lines, and waits for the reply. The time to an answer
    /// (the service's venue call and the pipe both ways) is recorded in
    /// `lido_broker_request_seconds`.
    pub async fn request_traced(
        &self,
        command: Command,
        trace: Option<OrderTrace>,
        timeout: Duration,
    ) -> Result<ReplyBody, PipeError> {
        if !self.is_up() {
            return Err(PipeError::NotConnected(self.inner.name.clone()));
        }
        let name = command.name();
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        let req = Request { command, trace, deadline: started + timeout, reply: tx };
        if self.inner.requests.send(req).await.is_err() {
            return Err(PipeError::NotConnected(self.inner.name.clone()));
        }
        let result = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(PipeError::Dropped(self.inner.name.clone())),
            Err(_) => Err(PipeError::Timeout(self.inner.name.clone())),
        };
        if matches!(result, Ok(_) | Err(PipeError::Remote(_))) {
            metrics::histogram!("lido_broker_request_seconds", "broker" => self.inner.name.clone(), "command" => name)
                .record(started.elapsed().as_secs_f64());
        }
        result
    }
}

async fn dial_loop(
    inner: Arc<Inner>,
    mut requests: mpsc::Receiver<Request>,
    events: PipeEvents,
    signals: mpsc::UnboundedSender<(String, PipeSignal)>,
) {
    let name = inner.name.clone();
    let mut url_rx = inner.url.subscribe();
    let mut backoff = new_backoff();
    let mut generation = 0u64;
    let mut delivered = Delivered::default();
    let config =
        WebSocketConfig::default().max_message_size(Some(MAX_FRAME_BYTES)).max_frame_size(Some(MAX_FRAME_BYTES));
    loop {
        let url = url_rx.borrow_and_update().clone();
        let dial = tokio::time::timeout(Duration::from_secs(3), dial(&url, &inner, config));
        let connected = tokio::select! {
            _ = inner.cancel.cancelled() => break,
            r = dial => r,
        };
        match connected {
            Ok(Ok(ws)) => {
                backoff = new_backoff();
                generation += 1;
                inner.state.send_replace(PipeState::Up);
                info!(service = %name, %url, generation, "pipe connected");
                let _ = signals.send((name.clone(), PipeSignal::Up { generation }));
                let reason = match ws {
                    Dialed::Socket(ws) => {
                        session(&inner, *ws, &mut requests, &events, &signals, &mut url_rx, &mut delivered).await
                    }
                    Dialed::Memory(ws) => {
                        session(&inner, *ws, &mut requests, &events, &signals, &mut url_rx, &mut delivered).await
                    }
                };
                inner.state.send_replace(PipeState::Connecting);
                fail_queued(&name, &mut requests);
                if inner.cancel.is_cancelled() {
                    info!(service = %name, "pipe closed");
                } else {
                    warn!(service = %name, %reason, "pipe down, re-dialing");
                }
                let _ = signals.send((name.clone(), PipeSignal::Down { reason }));
            }
            Ok(Err(e)) => match lido_shared::tls::untrusted(&e) {
                Some(reason) => warn!(service = %name, %url, %reason,
                    "the service's pipe certificate is not signed by the node's CA (tls_ca); re-dialing"),
                None => debug!(service = %name, %url, error = %e, "pipe dial failed"),
            },
            Err(_) => debug!(service = %name, %url, "pipe dial timed out"),
        }
        if inner.cancel.is_cancelled() {
            break;
        }
        let wait = backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = inner.cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = url_rx.changed() => {}
        }
    }
    inner.state.send_replace(PipeState::Closed);
    fail_queued(&name, &mut requests);
    debug!(service = %name, "pipe closed");
}

/// An open pipe: a socket to a service's process, or memory to a task in
/// this one (see [`memory`]).
enum Dialed {
    Socket(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Memory(Box<WebSocketStream<DuplexStream>>),
}

/// Opens the pipe WebSocket, proving the cluster secret in a header; a
/// `wss://` pipe must show a certificate the node's CA signed. A `mem://`
/// pipe is the same handshake and frames on an in-memory stream.
async fn dial(url: &str, inner: &Inner, config: WebSocketConfig) -> Result<Dialed, WsError> {
    let in_memory = memory::is_memory_url(url);
    let mut request =
        if in_memory { memory::handshake_url(url).into_client_request()? } else { url.into_client_request()? };
    let proof = inner.proof.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let value = HeaderValue::from_str(proof.secret().expose())
        .map_err(|_| WsError::Url(UrlError::UnableToConnect("bad cluster secret or service key".into())))?;
    request.headers_mut().insert(proof.header(), value);
    if in_memory {
        let stream = memory::connect(url)?;
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
        return Ok(Dialed::Memory(Box::new(ws)));
    }
    let trust = inner.tls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let connector = trust.map(Connector::Rustls);
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector).await?;
    Ok(Dialed::Socket(Box::new(ws)))
}

fn new_backoff() -> backon::ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(3))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Requests queued while the pipe was down were never sent.
fn fail_queued(name: &str, requests: &mut mpsc::Receiver<Request>) {
    while let Ok(req) = requests.try_recv() {
        let _ = req.reply.send(Err(PipeError::NotConnected(name.to_string())));
    }
}

/// Sends one frame; a peer that stopped reading cannot hold it longer than
/// the heartbeat timeout.
async fn send_text<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    frame: &ManagerFrame,
) -> Result<(), ()> {
    let text = serde_json::to_string(frame).map_err(|_| ())?;
    match tokio::time::timeout(Duration::from_millis(HEARTBEAT_TIMEOUT_MS), ws.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// What has been passed on of one service incarnation's numbered events.
#[derive(Default)]
struct Delivered {
    instance: Option<String>,
    last_seq: u64,
}

/// Runs one connection until it drops; returns why.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    inner: &Inner,
    mut ws: WebSocketStream<S>,
    requests: &mut mpsc::Receiver<Request>,
    events: &PipeEvents,
    signals: &mpsc::UnboundedSender<(String, PipeSignal)>,
    url_rx: &mut watch::Receiver<String>,
    delivered: &mut Delivered,
) -> String {
    let name = &inner.name;
    let mut pending: HashMap<u64, (Instant, oneshot::Sender<Result<ReplyBody, PipeError>>)> = HashMap::new();
    let mut heartbeat = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    let mut last_rx = Instant::now();
    let reason = loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => {
                let _ = ws.close(None).await;
                break "closed by manager".to_string();
            }
            _ = url_rx.changed() => break "service moved to a new address".to_string(),
            req = requests.recv() => {
                let Some(req) = req else { break "manager gone".to_string() };
                if Instant::now() >= req.deadline {
                    let _ = req.reply.send(Err(PipeError::NotConnected(name.clone())));
                    continue;
                }
                let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
                let frame = ManagerFrame::Command { id, command: req.command, trace: req.trace.map(Box::new) };
                if send_text(&mut ws, &frame).await.is_err() {
                    let _ = req.reply.send(Err(PipeError::Dropped(name.clone())));
                    break "send failed".to_string();
                }
                pending.insert(id, (req.deadline, req.reply));
            }
            _ = heartbeat.tick() => {
                if last_rx.elapsed() > Duration::from_millis(HEARTBEAT_TIMEOUT_MS) {
                    break "service heartbeat timed out".to_string();
                }
                let now = Instant::now();
                pending.retain(|_, (deadline, _)| *deadline + Duration::from_secs(1) > now);
                if send_text(&mut ws, &ManagerFrame::Heartbeat { ts: Utc::now() }).await.is_err() {
                    break "send failed".to_string();
                }
            }
            msg = ws.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => break format!("socket error: {e}"),
                    None => break "service closed the pipe".to_string(),
                };
                last_rx = Instant::now();
                inner.received.fetch_add(1, Ordering::Relaxed);
                let Message::Text(text) = msg else { continue };
                let frame = match serde_json::from_str::<ServiceFrame>(text.as_str()) {
                    Ok(f) => f,
                    Err(e) => {
                        warn!(service = %name, error = %e, "malformed frame from service, ignored");
                        continue;
                    }
                };
                match frame {
                    ServiceFrame::Reply { id, result } => {
                        let Some((_, caller)) = pending.remove(&id) else { continue };
                        let result = match result {
                            Reply::Ok(body) => Ok(body),
                            Reply::Err(detail) => Err(PipeError::Remote(detail)),
                        };
                        // Behind the events already passed on, never beside them.
                        if events.send((name.clone(), PipeEvent::Reply(PendingReply { caller, result }))).await.is_err() {
                            break "manager gone".to_string();
                        }
                    }
                    ServiceFrame::Hello { instance } => {
                        if delivered.instance.as_deref() != Some(instance.as_str()) {
                            // A new incarnation numbers its events from 1 again.
                            *delivered = Delivered { instance: Some(instance), last_seq: 0 };
                        }
                    }
                    ServiceFrame::Event { seq: None, event } => {
                        if events.send((name.clone(), PipeEvent::Event(event))).await.is_err() {
                            break "manager gone".to_string();
                        }
                    }
                    ServiceFrame::Event { seq: Some(seq), event } => {
                        // Replays repeat what was passed on already: drop those.
                        if seq > delivered.last_seq {
                            if events.send((name.clone(), PipeEvent::Event(event))).await.is_err() {
                                break "manager gone".to_string();
                            }
                            delivered.last_seq = seq;
                        }
                        if send_text(&mut ws, &ManagerFrame::Ack { seq: delivered.last_seq }).await.is_err() {
                            break "send failed".to_string();
                        }
                    }
                    ServiceFrame::Status { state, detail } => {
                        let _ = signals.send((name.clone(), PipeSignal::Status { state, detail }));
                    }
                    ServiceFrame::Heartbeat { ts } => {
                        let rtt = (Utc::now() - ts).num_microseconds().unwrap_or_default().max(0) as u64;
                        inner.rtt_us.store(rtt, Ordering::Relaxed);
                    }
                }
            }
        }
    };
    for (_, (_, tx)) in pending.drain() {
        let _ = tx.send(Err(PipeError::Dropped(name.clone())));
    }
    reason
}

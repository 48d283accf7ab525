//! The service side of the pipe, embedded by brokers and hosted traders.
//!
//! [`Agent::start`] binds a WebSocket on loopback, checks in with the
//! manager (retrying with backoff, and again whenever no manager has been
//! attached for a while), serves the pipe the manager dials, hands each
//! [`Command`] to the service's [`CommandHandler`] in arrival order, and
//! forwards the service's events. A command's reply leaves after every event
//! its handler emitted (one task, the event pump, sends both), so an order's
//! acknowledgement never overtakes its fills. Events that must not be lost (order
//! updates, fills) are numbered and kept until the manager acknowledges
//! them; every new pipe starts by replaying the unacknowledged ones, in
//! order (see [`crate::pipe`]).
//!
//! On a TLS node the pipe listener speaks TLS with the node's certificate
//! (`wss://`), and check-ins trust the node's CA (see [`crate::tls`]). A
//! service run as a task inside its node serves the pipe in memory instead
//! (`mem://`, see [`memory`]).

pub mod memory;

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::ClientError;
use crate::access::{Secret, CLUSTER_SECRET_ENV, CLUSTER_SECRET_HEADER};
use crate::cluster::{ServiceKind, ServiceState};
use crate::pipe::{
    CheckIn, CheckInReply, Command, ManagerFrame, OrderTrace, Reply, ReplyBody, ServiceEvent, ServiceFrame,
    CHECKIN_PATH, HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS, MAX_FRAME_BYTES,
};
use crate::tls::{Identity, TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV};
use crate::ErrorBody;

/// Most unacknowledged must-deliver events kept for replay.
const BACKLOG_LIMIT: usize = 100_000;
/// Check in again after this long without an attached pipe.
const RECHECKIN_AFTER: Duration = Duration::from_secs(10);
/// A manager that opens the pipe must finish its TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a service does with a command. Called one command at a time.
pub trait CommandHandler: Send + Sync + 'static {
    fn handle(&self, command: Command) -> impl Future<Output = Reply> + Send;
}

/// Who the service is and where its manager is.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub name: String,
    pub kind: ServiceKind,
    pub service_type: String,
    /// The manager's base URL, e.g. `http://127.0.0.1:7700`.
    pub manager_url: String,
    /// Address to listen on for the pipe (default 127.0.0.1).
    pub bind: IpAddr,
    /// The OS process id to report, if the service is its own process.
    pub pid: Option<u32>,
    /// The cluster secret, proven on check-in and required of the manager
    /// that dials the pipe. Defaults to `LIDO_CLUSTER_SECRET`.
    pub cluster_secret: Option<Secret>,
    /// A hosted trader's check-in key ([`SERVICE_KEY_ENV`]), used instead
    /// of the cluster secret when set: it checks this service in under its
    /// own name only, and its manager proves it back on the pipe.
    pub service_key: Option<Secret>,
    /// Serve the pipe over TLS with this certificate and key. Defaults to
    /// `LIDO_TLS_CERT` and `LIDO_TLS_KEY`.
    pub tls: Option<Identity>,
    /// The CA to trust when checking in over `https://` (the node's own
    /// certificate for a self-signed one); without it, the public CAs.
    /// Defaults to `LIDO_TLS_CA`.
    pub manager_ca: Option<PathBuf>,
    /// Serve the pipe in memory (`mem://`), for a service that runs as a
    /// task in its manager's process; `bind` and `tls` are then unused.
    pub in_memory: bool,
}

impl AgentConfig {
    pub fn new(
        name: impl Into<String>,
        kind: ServiceKind,
        service_type: impl Into<String>,
        manager_url: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            service_type: service_type.into(),
            manager_url: manager_url.into().trim_end_matches('/').to_string(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            pid: Some(std::process::id()),
            cluster_secret: std::env::var(CLUSTER_SECRET_ENV).ok().filter(|s| !s.is_empty()).map(Secret::new),
            service_key: std::env::var(SERVICE_KEY_ENV).ok().filter(|s| !s.is_empty()).map(Secret::new),
            tls: Identity::from_env().unwrap_or_else(|e| {
                warn!(error = %e, "the pipe is served without TLS");
                None
            }),
            manager_ca: crate::tls::ca_from_env(),
            in_memory: false,
        }
    }

    /// Takes the secret and TLS set-up its manager handed down.
    pub fn link(&mut self, link: ServiceLink) {
        self.cluster_secret = Some(link.cluster_secret);
        self.service_key = None;
        self.tls = link.tls;
        self.manager_ca = link.manager_ca;
        self.in_memory = link.in_memory;
    }
}

/// The environment variable that hands a hosted trader its check-in key.
pub const SERVICE_KEY_ENV: &str = "LIDO_SERVICE_KEY";
/// The header a check-in key is proven in (check-in, pipe dial).
pub const SERVICE_KEY_HEADER: &str = "lido-service-key";

/// What a service proves on check-in and requires of the manager that
/// dials its pipe: the cluster secret (brokers, services an operator runs),
/// or a hosted trader's check-in key, good for that one trader only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proof {
    ClusterSecret(Secret),
    ServiceKey(Secret),
}

impl Proof {
    pub fn header(&self) -> &'static str {
        match self {
            Self::ClusterSecret(_) => CLUSTER_SECRET_HEADER,
            Self::ServiceKey(_) => SERVICE_KEY_HEADER,
        }
    }

    pub fn secret(&self) -> &Secret {
        match self {
            Self::ClusterSecret(s) | Self::ServiceKey(s) => s,
        }
    }

    /// Whether a request's headers prove it, in constant time.
    fn proven_by(&self, headers: &tokio_tungstenite::tungstenite::http::HeaderMap) -> bool {
        let given = headers.get(self.header()).map(|v| v.as_bytes()).unwrap_or_default();
        bool::from(given.ct_eq(self.secret().expose().as_bytes()))
    }
}

/// What a node hands a service it starts: the cluster secret and, on a TLS
/// node, the certificate and key of the pipe listener and the CA to trust
/// on check-in; and, for a task in the node's own process, that the pipe
/// is served in memory.
#[derive(Clone, Debug)]
pub struct ServiceLink {
    pub cluster_secret: Secret,
    pub tls: Option<Identity>,
    pub manager_ca: Option<PathBuf>,
    /// Serve the pipe in memory (a task; never carried to a process).
    pub in_memory: bool,
}

impl ServiceLink {
    /// The TLS half from the environment a manager set (see [`Self::env`]).
    pub fn from_env(cluster_secret: Secret) -> Result<Self, crate::tls::TlsError> {
        Ok(Self { cluster_secret, tls: Identity::from_env()?, manager_ca: crate::tls::ca_from_env(), in_memory: false })
    }

    /// The environment that carries it to a child process: each variable
    /// with its value, or `None` for one to remove, so that a child never
    /// inherits another set-up from its parent's environment.
    pub fn env(&self) -> Vec<(&'static str, Option<String>)> {
        let path = |p: Option<&std::path::Path>| p.map(|p| p.display().to_string());
        vec![
            (CLUSTER_SECRET_ENV, Some(self.cluster_secret.expose().to_string())),
            (TLS_CERT_ENV, path(self.tls.as_ref().map(|t| t.cert.as_path()))),
            (TLS_KEY_ENV, path(self.tls.as_ref().map(|t| t.key.as_path()))),
            (TLS_CA_ENV, path(self.manager_ca.as_deref())),
        ]
    }
}

/// Cancels `shutdown` when stdin reaches end of file. A manager starts its
/// child services with a pipe on stdin that it never writes to, so this
/// fires when the manager dies, even by SIGKILL: children never outlive it.
///
/// The read runs on a plain thread, not tokio's blocking pool, so that it
/// never holds up the runtime's shutdown.
pub fn exit_with_parent(shutdown: CancellationToken) {
    let spawned = std::thread::Builder::new().name("parent-watch".into()).spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        // Cancel before anything else: with the manager gone, even writing a
        // log line may fail.
        shutdown.cancel();
        info!("parent manager gone (stdin closed); stopping");
        // Nobody is left to report to: if an orderly stop hangs, leave anyway.
        std::thread::sleep(PARENT_GONE_GRACE);
        std::process::exit(0);
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot watch the parent process");
    }
}

/// How long a service whose manager died may take to stop before it exits.
const PARENT_GONE_GRACE: Duration = Duration::from_secs(5);

/// A running agent.
pub struct Agent {
    ws_url: String,
    status: watch::Sender<(ServiceState, Option<String>)>,
    task: JoinHandle<Result<(), ClientError>>,
}

impl Agent {
    /// Binds the pipe listener and starts checking in. Returns at once.
    pub async fn start<H: CommandHandler>(
        config: AgentConfig,
        handler: Arc<H>,
        events: mpsc::Receiver<ServiceEvent>,
        shutdown: CancellationToken,
    ) -> Result<Self, ClientError> {
        let secret = match (config.service_key.clone(), config.cluster_secret.clone()) {
            (Some(key), _) => Proof::ServiceKey(key),
            (None, Some(secret)) => Proof::ClusterSecret(secret),
            (None, None) => {
                return Err(ClientError::Protocol(format!(
                    "no credential to check in with: set {CLUSTER_SECRET_ENV} to the cluster's secret (a hosted \
                     trader gets {SERVICE_KEY_ENV} from its TraderManager instead)"
                )))
            }
        };
        let instance = format!("{}-{}", std::process::id(), Utc::now().timestamp_nanos_opt().unwrap_or_default());
        let (listener, ws_url) = if config.in_memory {
            let listener = memory::MemoryListener::bind(&format!("{}-{instance}", config.name));
            let url = listener.url();
            (Listener::Memory(listener), url)
        } else {
            let listener = TcpListener::bind(SocketAddr::new(config.bind, 0))
                .await
                .map_err(|e| ClientError::Protocol(format!("cannot bind the pipe listener: {e}")))?;
            let addr = listener.local_addr().map_err(|e| ClientError::Protocol(e.to_string()))?;
            let acceptor = config.tls.as_ref().map(|id| id.server_config().map(TlsAcceptor::from)).transpose()?;
            let scheme = if acceptor.is_some() { "wss" } else { "ws" };
            (Listener::Tcp(listener, acceptor), format!("{scheme}://{addr}/pipe"))
        };
        let http = checkin_client(config.manager_ca.as_deref())?;
        let (status, _) = watch::channel((ServiceState::Running, None));
        let shared = Arc::new(Shared {
            current: watch::channel(None).0,
            status: status.clone(),
            last_attached: Mutex::new(Instant::now()),
            session: Mutex::new(None),
            instance: instance.clone(),
            unacked: Mutex::new(VecDeque::new()),
        });
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let checkin = CheckIn {
            name: config.name.clone(),
            kind: config.kind,
            service_type: config.service_type.clone(),
            ws_url: ws_url.clone(),
            pid: config.pid,
            instance,
        };
        info!(name = %config.name, kind = %config.kind, %ws_url, "service pipe listening");
        let task = tokio::spawn(run(
            config.manager_url,
            http,
            checkin,
            secret,
            listener,
            shared,
            handler,
            events,
            cmd_tx,
            cmd_rx,
            shutdown,
        ));
        Ok(Self { ws_url, status, task })
    }

    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }

    /// Reports a new state (sent on the pipe now and on every new pipe).
    pub fn set_status(&self, state: ServiceState, detail: Option<String>) {
        self.status.send_replace((state, detail));
    }

    /// A handle that reports states from another task, for services whose
    /// status changes while [`Agent::wait`] holds the agent.
    pub fn status_sender(&self) -> StatusSender {
        StatusSender(self.status.clone())
    }

    /// Waits until the agent stops (shutdown, `Stop` command, or a refused check-in).
    pub async fn wait(self) -> Result<(), ClientError> {
        self.task.await.map_err(|e| ClientError::Protocol(format!("agent task failed: {e}")))?
    }
}

/// Reports a service's state and detail on the pipe (see [`Agent::status_sender`]).
#[derive(Clone)]
pub struct StatusSender(watch::Sender<(ServiceState, Option<String>)>);

impl StatusSender {
    /// Reports a new state; an unchanged one is not sent again.
    pub fn send(&self, state: ServiceState, detail: Option<String>) {
        self.0.send_if_modified(|current| {
            let changed = current.0 != state || current.1 != detail;
            *current = (state, detail);
            changed
        });
    }
}

type Outbox = mpsc::Sender<ServiceFrame>;

struct Shared {
    /// The attached pipe's outbound queue.
    current: watch::Sender<Option<Outbox>>,
    status: watch::Sender<(ServiceState, Option<String>)>,
    last_attached: Mutex<Instant>,
    /// Cancels the attached session when a newer one replaces it.
    session: Mutex<Option<CancellationToken>>,
    /// This incarnation, announced on every pipe.
    instance: String,
    /// Must-deliver events the manager has not acknowledged, oldest first.
    unacked: Mutex<VecDeque<(u64, ServiceEvent)>>,
}

impl Shared {
    fn unacked(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, ServiceEvent)>> {
        self.unacked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The REST client of check-ins: trusts `ca` only if given, else the public CAs.
fn checkin_client(ca: Option<&std::path::Path>) -> Result<reqwest::Client, ClientError> {
    let trust = match ca {
        Some(ca) => crate::tls::private_client_config(ca)?,
        None => crate::tls::client_config(None)?,
    };
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(5)).use_preconfigured_tls((*trust).clone()).build()?)
}

#[allow(clippy::too_many_arguments)]
async fn run<H: CommandHandler>(
    manager_url: String,
    http: reqwest::Client,
    checkin: CheckIn,
    secret: Proof,
    listener: Listener,
    shared: Arc<Shared>,
    handler: Arc<H>,
    events: mpsc::Receiver<ServiceEvent>,
    cmd_tx: mpsc::Sender<Received>,
    cmd_rx: mpsc::Receiver<Received>,
    shutdown: CancellationToken,
) -> Result<(), ClientError> {
    let (reply_tx, reply_rx) = mpsc::channel(1024);
    let worker = tokio::spawn(command_worker(handler, cmd_rx, reply_tx, shutdown.clone()));
    let pump = tokio::spawn(event_pump(events, reply_rx, shared.clone(), shutdown.clone()));
    let accept = tokio::spawn(accept_loop(listener, secret.clone(), shared.clone(), cmd_tx, shutdown.clone()));
    let result = checkin_loop(&http, &manager_url, &checkin, &secret, &shared, &shutdown).await;
    if result.is_err() {
        shutdown.cancel();
    }
    shutdown.cancelled().await;
    let _ = accept.await;
    let _ = pump.await;
    let _ = worker.await;
    result
}

/// Checks in, then again whenever no manager has attached for a while.
async fn checkin_loop(
    http: &reqwest::Client,
    manager_url: &str,
    checkin: &CheckIn,
    secret: &Proof,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<(), ClientError> {
    let url = format!("{manager_url}{CHECKIN_PATH}");
    let mut backoff = backoff();
    let mut checked_in = false;
    loop {
        let attached = shared.current.borrow().is_some();
        let detached_for = shared.last_attached.lock().map(|t| t.elapsed()).unwrap_or_default();
        let due = !checked_in || (!attached && detached_for >= RECHECKIN_AFTER);
        let mut wait = Duration::from_millis(500);
        if due {
            match http.post(&url).header(secret.header(), secret.secret().expose()).json(checkin).send().await {
                Ok(resp) if resp.status().is_success() => {
                    let reply: Option<CheckInReply> = resp.json().await.ok();
                    info!(name = %checkin.name, node = ?reply.map(|r| r.node), "checked in with manager");
                    checked_in = true;
                    backoff = self::backoff();
                    if let Ok(mut t) = shared.last_attached.lock() {
                        *t = Instant::now();
                    }
                }
                Ok(resp) if resp.status().is_client_error() => {
                    let status = resp.status().as_u16();
                    let body: Option<ErrorBody> = resp.json().await.ok();
                    let (code, message) =
                        body.map_or(("refused".into(), "check-in refused".into()), |b| (b.error.code, b.error.message));
                    warn!(name = %checkin.name, status, %code, %message, "manager refused check-in");
                    return Err(ClientError::Api { status, code, message });
                }
                Ok(resp) => {
                    checked_in = false;
                    warn!(name = %checkin.name, status = resp.status().as_u16(), "check-in failed, retrying");
                    wait = backoff.next().unwrap_or(Duration::from_secs(5));
                }
                Err(e) => {
                    checked_in = false;
                    match crate::tls::untrusted(&e) {
                        Some(reason) => warn!(name = %checkin.name, %reason, %url,
                            "manager's certificate not trusted (set LIDO_TLS_CA to the CA that signed it); retrying"),
                        None => debug!(name = %checkin.name, error = %e, "manager unreachable, retrying check-in"),
                    }
                    wait = backoff.next().unwrap_or(Duration::from_secs(5));
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The reconnect policy: 100 ms doubling to 5 s, with jitter, forever.
fn backoff() -> backon::ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Where the pipe is served: a socket (with TLS on a TLS node), or memory.
enum Listener {
    Tcp(TcpListener, Option<TlsAcceptor>),
    Memory(memory::MemoryListener),
}

async fn accept_loop(
    mut listener: Listener,
    secret: Proof,
    shared: Arc<Shared>,
    cmd_tx: mpsc::Sender<Received>,
    shutdown: CancellationToken,
) {
    loop {
        let token = shutdown.child_token();
        match &mut listener {
            Listener::Memory(memory) => {
                let stream = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = memory.accept() => match accepted {
                        Some(stream) => stream,
                        None => break,
                    },
                };
                tokio::spawn(pipe_session(stream, secret.clone(), shared.clone(), cmd_tx.clone(), token));
            }
            Listener::Tcp(tcp, acceptor) => {
                let stream = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = tcp.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            warn!(error = %e, "pipe accept failed");
                            continue;
                        }
                    },
                };
                // Replies and events are small frames: send each at once
                // (Nagle with delayed ACKs would hold them up to 40 ms).
                let _ = stream.set_nodelay(true);
                let Some(acceptor) = acceptor.clone() else {
                    tokio::spawn(pipe_session(stream, secret.clone(), shared.clone(), cmd_tx.clone(), token));
                    continue;
                };
                let (secret, shared, cmd_tx) = (secret.clone(), shared.clone(), cmd_tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => pipe_session(tls, secret, shared, cmd_tx, token).await,
                        Ok(Err(e)) => warn!(error = %e, "pipe TLS handshake failed"),
                        Err(_) => warn!("pipe TLS handshake timed out"),
                    }
                });
            }
        }
    }
    if let Ok(mut slot) = shared.session.lock() {
        if let Some(old) = slot.take() {
            old.cancel();
        }
    }
}

/// Accepts a manager's dial if it proves what this service proved on
/// check-in (the cluster secret, or its own check-in key); the new session
/// then replaces the attached one.
async fn pipe_session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    secret: Proof,
    shared: Arc<Shared>,
    cmd_tx: mpsc::Sender<Received>,
    token: CancellationToken,
) {
    let config =
        WebSocketConfig::default().max_message_size(Some(MAX_FRAME_BYTES)).max_frame_size(Some(MAX_FRAME_BYTES));
    // The callback's types are tungstenite's; its error is an HTTP response.
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| {
        if secret.proven_by(req.headers()) {
            return Ok(resp);
        }
        let mut refusal =
            ErrorResponse::new(Some(format!("the pipe needs its manager's proof in the {} header", secret.header())));
        *refusal.status_mut() = StatusCode::UNAUTHORIZED;
        Err(refusal)
    };
    let mut ws = match tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)).await {
        Ok(ws) => ws,
        Err(e) => {
            warn!(error = %e, "pipe handshake refused or failed");
            return;
        }
    };
    if let Ok(mut slot) = shared.session.lock() {
        if let Some(old) = slot.replace(token.clone()) {
            old.cancel();
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel::<ServiceFrame>(8192);
    shared.current.send_replace(Some(out_tx.clone()));
    // Who we are, then everything not yet acknowledged, oldest first. Events
    // the pump queues meanwhile follow; any it queues twice the manager drops.
    let replay: Vec<(u64, ServiceEvent)> = shared.unacked().iter().cloned().collect();
    let hello = ServiceFrame::Hello { instance: shared.instance.clone() };
    let mut greeted = send_frame(&mut ws, &hello).await.is_ok();
    for (seq, event) in replay.iter().cloned() {
        greeted = greeted && send_frame(&mut ws, &ServiceFrame::Event { seq: Some(seq), event }).await.is_ok();
    }
    info!(replayed = replay.len(), "manager attached to pipe");
    let mut status_rx = shared.status.subscribe();
    let (state, detail) = status_rx.borrow_and_update().clone();
    let _ = out_tx.try_send(ServiceFrame::Status { state, detail });
    let mut heartbeat = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    let mut last_rx = Instant::now();
    let reason = loop {
        if !greeted {
            break "send failed";
        }
        tokio::select! {
            _ = token.cancelled() => {
                // Flush what is queued (a final reply, fills) before closing.
                while let Ok(frame) = out_rx.try_recv() {
                    if send_frame(&mut ws, &frame).await.is_err() { break; }
                }
                let _ = ws.close(None).await;
                break "closed by service";
            }
            Some(frame) = out_rx.recv() => {
                if send_frame(&mut ws, &frame).await.is_err() { break "send failed"; }
            }
            _ = heartbeat.tick() => {
                if last_rx.elapsed() > Duration::from_millis(HEARTBEAT_TIMEOUT_MS) { break "manager heartbeat timed out"; }
                if send_frame(&mut ws, &ServiceFrame::Heartbeat { ts: Utc::now() }).await.is_err() { break "send failed"; }
            }
            Ok(()) = status_rx.changed() => {
                let (state, detail) = status_rx.borrow_and_update().clone();
                if send_frame(&mut ws, &ServiceFrame::Status { state, detail }).await.is_err() { break "send failed"; }
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { break "manager closed the pipe" };
                last_rx = Instant::now();
                let Message::Text(text) = msg else { continue };
                match serde_json::from_str::<ManagerFrame>(text.as_str()) {
                    Ok(ManagerFrame::Heartbeat { .. }) => {}
                    Ok(ManagerFrame::Ack { seq }) => {
                        let mut unacked = shared.unacked();
                        while unacked.front().is_some_and(|(s, _)| *s <= seq) {
                            unacked.pop_front();
                        }
                    }
                    Ok(ManagerFrame::Command { id, command, trace }) => {
                        if cmd_tx.send(Received { id, command, trace, out: out_tx.clone() }).await.is_err() { break "service stopping"; }
                    }
                    Err(e) => warn!(error = %e, "malformed frame on pipe, ignored"),
                }
            }
        }
    };
    // Detach, unless a newer session already took over.
    shared.current.send_if_modified(|cur| match cur {
        Some(tx) if tx.same_channel(&out_tx) => {
            *cur = None;
            true
        }
        _ => false,
    });
    if let Ok(mut t) = shared.last_attached.lock() {
        *t = Instant::now();
    }
    info!(reason, "pipe detached");
}

async fn send_frame<S>(ws: &mut S, frame: &ServiceFrame) -> Result<(), ()>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let text = serde_json::to_string(frame).map_err(|_| ())?;
    // A peer that stopped reading must not wedge the session: a send that
    // cannot finish within the heartbeat timeout ends it.
    match tokio::time::timeout(Duration::from_millis(HEARTBEAT_TIMEOUT_MS), ws.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// A command's reply and the pipe session the command came on.
type ReplyOut = (ServiceFrame, Outbox);

/// A command as it came off a pipe session.
struct Received {
    id: u64,
    command: Command,
    trace: Option<Box<OrderTrace>>,
    out: Outbox,
}

async fn command_worker<H: CommandHandler>(
    handler: Arc<H>,
    mut rx: mpsc::Receiver<Received>,
    replies: mpsc::Sender<ReplyOut>,
    shutdown: CancellationToken,
) {
    loop {
        let Received { id, command, trace, out } = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = rx.recv() => match next { Some(n) => n, None => return },
        };
        let stop = command == Command::Stop;
        let span = command_span(id, &command, trace.as_deref());
        let result = async {
            // Commands about an order are logged (they matter one by one);
            // the rest only when debugging.
            if trace.is_some() {
                info!("order command received");
            } else {
                debug!("command received");
            }
            let result = match command {
                Command::Ping => Reply::Ok(ReplyBody::Pong),
                command => handler.handle(command).await,
            };
            let ok = matches!(result, Reply::Ok(_));
            if trace.is_some() {
                info!(ok, "order command answered");
            } else {
                debug!(ok, "command answered");
            }
            result
        }
        .instrument(span)
        .await;
        // Through the pump, behind the events the handler emitted.
        let _ = replies.send((ServiceFrame::Reply { id, result }, out)).await;
        if stop {
            info!("stop requested by manager");
            // Let the session flush the reply before everything closes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            shutdown.cancel();
            return;
        }
    }
}

/// The span a command is handled in: its id and name, and for a command
/// about an order, the order's ids, customer and market as the manager sent them.
fn command_span(id: u64, command: &Command, trace: Option<&OrderTrace>) -> tracing::Span {
    match trace {
        Some(t) => tracing::info_span!(
            "command",
            id,
            cmd = command.name(),
            order_id = %t.order_id,
            client_order_id = %t.client_order_id,
            customer = %t.customer,
            market = %t.market,
        ),
        None => tracing::debug_span!("command", id, cmd = command.name()),
    }
}

/// Forwards events to the attached pipe, and replies to the session their
/// command came on. Before a reply it forwards every event queued when the
/// reply was taken: those include all its handler emitted. Must-deliver
/// events are numbered and kept until acknowledged; market data is sent if
/// a pipe can take it now, and dropped otherwise.
async fn event_pump(
    mut events: mpsc::Receiver<ServiceEvent>,
    mut replies: mpsc::Receiver<ReplyOut>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut pump = Pump { shared, next_seq: 1 };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = events.recv() => match ev {
                Some(ev) => pump.forward(ev, &shutdown).await,
                None => break,
            },
            reply = replies.recv() => {
                let Some((frame, out)) = reply else { break };
                for _ in 0..events.len() {
                    let Ok(ev) = events.try_recv() else { break };
                    pump.forward(ev, &shutdown).await;
                }
                let _ = out.send(frame).await;
            }
        }
    }
}

/// The event pump's numbering of must-deliver events.
struct Pump {
    shared: Arc<Shared>,
    next_seq: u64,
}

impl Pump {
    async fn forward(&mut self, event: ServiceEvent, shutdown: &CancellationToken) {
        let out = self.shared.current.borrow().clone();
        if !event.must_deliver() {
            if let Some(tx) = out {
                let _ = tx.try_send(ServiceFrame::Event { seq: None, event });
            }
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        push_unacked(&mut self.shared.unacked(), seq, event.clone());
        if let Some(tx) = out {
            // Waits for room rather than skipping: a skipped event would only
            // be replayed on the next pipe. A closed session is fine: the next
            // one replays it.
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tx.send(ServiceFrame::Event { seq: Some(seq), event }) => {}
            }
        }
    }
}

fn push_unacked(unacked: &mut VecDeque<(u64, ServiceEvent)>, seq: u64, event: ServiceEvent) {
    if unacked.len() >= BACKLOG_LIMIT {
        warn!(limit = BACKLOG_LIMIT, "no manager has acknowledged order events for too long; dropping the oldest");
        unacked.pop_front();
    }
    unacked.push_back((seq, event));
}

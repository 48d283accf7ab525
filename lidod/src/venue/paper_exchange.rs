//! The shared paper exchange: `lidod venue paper --listen ADDR --data-dir DIR`.
//!
//! One process holds one [`PaperVenue`] (the paper broker's options, its
//! state saved the same way, in `DIR/paper/exchange.json` unless
//! `state_file` names another), ticks it, and serves it on a WebSocket at
//! [`EXCHANGE_PATH`] to every node's `paper` broker that has the option
//! `exchange=ws://ADDR/v1/exchange`. So an order outlives the node that
//! placed it, as on a real venue: another node finds it there.
//!
//! The protocol is in [`lido_shared::exchange`]. A socket needs the cluster
//! secret (header `lido-cluster-secret`, compared in constant time). Market
//! data goes to the sockets subscribed to it; order updates and fills of
//! every account go to every socket, all of a change's events before the
//! reply to the command that made it. A socket whose queue overflows is
//! closed (its broker reconnects and reconciles) rather than lose an order
//! event.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use lido_shared::access::Secret;
use lido_shared::exchange::{ExchangeFrame, ExchangeRequest, EXCHANGE_PATH};
use lido_shared::model::Symbol;
use lido_shared::pipe::{Command, Feed, Reply, ReplyBody, ServiceEvent, MAX_FRAME_BYTES};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::paper::PaperVenue;
use super::paper_broker::{self, PaperOptions};

/// Frames queued for one socket before it counts as too slow and is closed.
const QUEUE: usize = 65_536;

/// What `lidod venue paper` was given.
pub struct ExchangeArgs {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The paper options (`seed`, `tick_ms`, `starting_cash`, `fee_rate`, `state_file`).
    pub options: BTreeMap<String, String>,
    /// The cluster's secret; else `LIDO_CLUSTER_SECRET`, else `DIR/cluster-secret`.
    pub cluster_secret_file: Option<PathBuf>,
}

struct Connection {
    out: mpsc::Sender<ExchangeFrame>,
    subscriptions: HashSet<(Feed, Symbol)>,
    /// Closes the socket (its queue overflowed).
    close: CancellationToken,
}

struct Exchange {
    venue: Mutex<PaperVenue>,
    state_file: Option<PathBuf>,
    secret: Secret,
    connections: Mutex<HashMap<u64, Connection>>,
    next_connection: AtomicU64,
    /// Held from a change of the venue until its events are queued on every
    /// socket: events leave in the order the venue made them.
    changes: tokio::sync::Mutex<()>,
}

/// Binds, prints `exchange ws://ADDR/v1/exchange` as the first line on
/// stdout, and serves until `shutdown`.
pub async fn run(args: ExchangeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut options = args.options.clone();
    if options.contains_key("exchange") {
        anyhow::bail!("option exchange is for a paper broker, not for the exchange itself; drop it");
    }
    let default_state = args.data_dir.join("paper").join("exchange.json");
    options.entry("state_file".to_string()).or_insert_with(|| default_state.display().to_string());
    let options = PaperOptions::parse(&options).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data dir {}", args.data_dir.display()))?;
    let secret = crate::auth::secret::load(args.cluster_secret_file.as_deref(), Some(&args.data_dir))?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}; is another exchange running? use --listen to pick another address", args.listen)
    })?;
    let addr = listener.local_addr()?;
    // Machine-readable first line: tests and scripts read the URL here.
    println!("exchange ws://{addr}{EXCHANGE_PATH}");
    std::io::stdout().flush()?;
    serve(listener, options, secret, shutdown).await
}

/// Serves the exchange on `listener` until `shutdown`: the venue (restored
/// from `options.state_file` if it has one), its tick loop, the WebSocket.
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: PaperOptions,
    secret: Secret,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let venue = paper_broker::open_venue(&options)?;
    let exchange = Arc::new(Exchange {
        venue: Mutex::new(venue),
        state_file: options.state_file.clone(),
        secret,
        connections: Mutex::new(HashMap::new()),
        next_connection: AtomicU64::new(1),
        changes: tokio::sync::Mutex::new(()),
    });
    let addr = listener.local_addr()?;
    info!(%addr, seed = options.seed, tick_ms = options.tick.as_millis() as u64, "paper exchange listening");
    let ticker = tokio::spawn(exchange.clone().tick_loop(options.tick, shutdown.clone()));
    let app = Router::new().route(EXCHANGE_PATH, get(upgrade)).with_state(exchange.clone());
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await;
    shutdown.cancel();
    let _ = ticker.await;
    // Open sockets end with the exchange (graceful shutdown does not wait for upgraded ones).
    for (_, c) in exchange.connections().drain() {
        c.close.cancel();
    }
    info!("paper exchange stopped");
    served.context("the paper exchange listener failed")
}

async fn upgrade(State(exchange): State<Arc<Exchange>>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    if let Err(e) = crate::auth::secret::check(&headers, &exchange.secret) {
        warn!("paper exchange connection refused: no or wrong cluster secret");
        return e.into_response();
    }
    ws.max_message_size(MAX_FRAME_BYTES).on_upgrade(move |socket| exchange.serve(socket))
}

impl Exchange {
    fn venue(&self) -> std::sync::MutexGuard<'_, PaperVenue> {
        self.venue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Connection>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn tick_loop(self: Arc<Self>, tick: Duration, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let _turn = self.changes.lock().await;
            let events = paper_broker::tick_venue(&mut self.venue(), self.state_file.as_deref());
            self.broadcast(events);
        }
    }

    fn persist(&self, venue: &PaperVenue) {
        paper_broker::persist(self.state_file.as_deref(), venue);
    }

    /// Queues events: market data on the sockets subscribed to it (dropped
    /// when a socket is slow), order events on every socket (a socket that
    /// cannot take one is closed, so it reconnects and reconciles).
    fn broadcast(&self, events: Vec<ServiceEvent>) {
        if events.is_empty() {
            return;
        }
        let mut connections = self.connections();
        let mut overflowed = Vec::new();
        for event in events {
            let feed = paper_broker::feed_of(&event);
            for (&id, c) in connections.iter() {
                match &feed {
                    Some(key) => {
                        if c.subscriptions.contains(key) {
                            let _ = c.out.try_send(ExchangeFrame::Event { event: event.clone() });
                        }
                    }
                    None => {
                        if c.out.try_send(ExchangeFrame::Event { event: event.clone() }).is_err() {
                            overflowed.push(id);
                        }
                    }
                }
            }
        }
        for id in overflowed {
            if let Some(c) = connections.remove(&id) {
                warn!(connection = id, "a broker's socket fell behind on order events; closing it");
                c.close.cancel();
            }
        }
    }

    /// One broker's socket: commands in order, answers and events out.
    async fn serve(self: Arc<Self>, socket: WebSocket) {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let (out, mut rx) = mpsc::channel::<ExchangeFrame>(QUEUE);
        let close = CancellationToken::new();
        self.connections()
            .insert(id, Connection { out: out.clone(), subscriptions: HashSet::new(), close: close.clone() });
        info!(connection = id, "broker connected to the paper exchange");
        let (mut sink, mut stream) = socket.split();
        let writer = {
            let close = close.clone();
            tokio::spawn(async move {
                loop {
                    let frame = tokio::select! {
                        _ = close.cancelled() => break,
                        f = rx.recv() => f,
                    };
                    let Some(frame) = frame else { break };
                    let text = match serde_json::to_string(&frame) {
                        Ok(t) => t,
                        Err(e) => {
                            error!(error = %e, "cannot encode a paper exchange frame");
                            continue;
                        }
                    };
                    if sink.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                close.cancel();
                let _ = sink.close().await;
            })
        };
        loop {
            let message = tokio::select! {
                _ = close.cancelled() => break,
                m = stream.next() => m,
            };
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            let request = match serde_json::from_str::<ExchangeRequest>(&text) {
                Ok(r) => r,
                Err(e) => {
                    warn!(connection = id, error = %e, "unreadable request on the paper exchange; ignored");
                    continue;
                }
            };
            let reply = self.handle(id, request.command).await;
            if out.try_send(ExchangeFrame::Reply { id: request.id, reply }).is_err() {
                warn!(connection = id, "a broker's socket fell behind; closing it");
                break;
            }
        }
        close.cancel();
        self.connections().remove(&id);
        let _ = writer.await;
        info!(connection = id, "broker disconnected from the paper exchange");
    }

    async fn handle(&self, connection: u64, command: Command) -> Reply {
        let result = match command {
            Command::Subscribe { feed, symbol } => {
                let first = paper_broker::snapshot(&self.venue(), feed, &symbol);
                match first {
                    Ok(first) => {
                        if let Some(c) = self.connections().get_mut(&connection) {
                            if let Some(event) = first {
                                let _ = c.out.try_send(ExchangeFrame::Event { event });
                            }
                            c.subscriptions.insert((feed, symbol));
                        }
                        Ok(ReplyBody::Done)
                    }
                    Err(e) => Err(paper_broker::detail(&e)),
                }
            }
            Command::Unsubscribe { feed, symbol } => {
                if let Some(c) = self.connections().get_mut(&connection) {
                    c.subscriptions.remove(&(feed, symbol));
                }
                Ok(ReplyBody::Done)
            }
            // A broker's Stop is its own; the exchange keeps running.
            Command::Stop => Ok(ReplyBody::Done),
            command => {
                let _turn = if paper_broker::needs_turn(&command) { Some(self.changes.lock().await) } else { None };
                let executed = {
                    let mut venue = self.venue();
                    let executed = paper_broker::execute(&mut venue, command, Utc::now());
                    if executed.changed {
                        self.persist(&venue);
                    }
                    executed
                };
                self.broadcast(executed.events);
                executed.result
            }
        };
        match result {
            Ok(body) => Reply::Ok(body),
            Err(e) => Reply::Err(e),
        }
    }
}

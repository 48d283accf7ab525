//! The `paper` broker service: a [`PaperVenue`] driven by a clock, behind
//! the service pipe. Runs as `lidod service broker paper …` or as a task.
//!
//! With a `state_file` (the BrokerManager gives each paper broker
//! `<data_dir>/paper/<name>.json`) the venue's accounts and orders outlive
//! the process, as a real exchange's do: the state is rewritten atomically
//! ([`super::file::replace`]) after every change and before the change
//! is answered or reported, and read back at start. So a broker killed with
//! `kill -9` comes back with its resting orders and balances, and a
//! restarted node can reconcile its journal against it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use lido_shared::client::agent::{Agent, AgentConfig, CommandHandler, ServiceLink};
use lido_shared::cluster::ServiceKind;
use lido_shared::model::Symbol;
use lido_shared::pipe::{Command, Feed, Reply, ReplyBody, ServiceEvent};
use lido_shared::ErrorDetail;
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::file;
use super::paper::{PaperConfig, PaperError, PaperState, PaperVenue};

mod remote;

/// Options a paper broker takes (`--set k=v`).
#[derive(Clone, Debug, PartialEq)]
pub struct PaperOptions {
    pub seed: u64,
    pub tick: Duration,
    pub starting_cash: Decimal,
    pub fee_rate: Decimal,
    /// Where the venue state is kept; `None` keeps it in memory only.
    pub state_file: Option<PathBuf>,
    /// A shared paper exchange (`ws://host:port/v1/exchange`, see
    /// [`super::paper_exchange`]): every command goes there, and the local
    /// venue and its options above are unused. `None`: today's in-process venue.
    pub exchange: Option<String>,
}

impl Default for PaperOptions {
    fn default() -> Self {
        Self {
            seed: 42,
            tick: Duration::from_millis(250),
            starting_cash: Decimal::from(100_000),
            fee_rate: Decimal::new(1, 3),
            state_file: None,
            exchange: None,
        }
    }
}

impl PaperOptions {
    pub const KEYS: &'static [&'static str] =
        &["seed", "tick_ms", "starting_cash", "fee_rate", "state_file", "exchange"];

    /// Parses options; unknown keys and bad values are errors naming the key.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut out = Self::default();
        for (k, v) in options {
            match k.as_str() {
                "seed" => out.seed = v.parse().map_err(|_| format!("option seed must be a whole number, got {v:?}"))?,
                "tick_ms" => {
                    let ms: u64 = v.parse().map_err(|_| format!("option tick_ms must be a whole number, got {v:?}"))?;
                    if !(1..=60_000).contains(&ms) {
                        return Err(format!("option tick_ms must be between 1 and 60000, got {ms}"));
                    }
                    out.tick = Duration::from_millis(ms);
                }
                "starting_cash" => {
                    out.starting_cash = Decimal::from_str(v)
                        .ok()
                        .filter(|d| *d >= Decimal::ZERO)
                        .ok_or_else(|| format!("option starting_cash must be a non-negative decimal, got {v:?}"))?
                }
                "fee_rate" => {
                    out.fee_rate = Decimal::from_str(v)
                        .ok()
                        .filter(|d| *d >= Decimal::ZERO && *d < Decimal::ONE)
                        .ok_or_else(|| format!("option fee_rate must be a decimal in [0, 1), got {v:?}"))?
                }
                "state_file" => out.state_file = (v != "none" && !v.is_empty()).then(|| PathBuf::from(v)),
                "exchange" => {
                    let ok = (v.starts_with("ws://") || v.starts_with("wss://")) && v.len() > "ws://".len();
                    if !ok {
                        return Err(format!(
                            "option exchange must be the shared paper exchange's URL (ws://HOST:PORT/v1/exchange), got {v:?}"
                        ));
                    }
                    out.exchange = Some(v.clone());
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?} for a paper broker; known: {}",
                        Self::KEYS.join(", ")
                    ))
                }
            }
        }
        Ok(out)
    }
}

struct PaperBroker {
    venue: Mutex<PaperVenue>,
    state_file: Option<PathBuf>,
    subscriptions: Mutex<HashSet<(Feed, Symbol)>>,
    events: mpsc::Sender<ServiceEvent>,
    /// Held from a change of the venue until its events are queued, and by
    /// order lookups: a status never counts a fill not yet handed on.
    changes: tokio::sync::Mutex<()>,
}

/// Runs a paper broker until `shutdown` or a `Stop` from its manager.
pub async fn run(
    name: String,
    manager_url: String,
    link: ServiceLink,
    options: PaperOptions,
    pid: Option<u32>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(url) = options.exchange.clone() {
        return remote::run(name, manager_url, link, url, pid, shutdown).await;
    }
    let (events_tx, events_rx) = mpsc::channel(65_536);
    let venue = open_venue(&options)?;
    let broker = Arc::new(PaperBroker {
        venue: Mutex::new(venue),
        state_file: options.state_file.clone(),
        subscriptions: Mutex::new(HashSet::new()),
        events: events_tx,
        changes: tokio::sync::Mutex::new(()),
    });
    let mut agent_config = AgentConfig::new(name.clone(), ServiceKind::Broker, "paper", manager_url);
    agent_config.pid = pid;
    agent_config.link(link);
    let agent = Agent::start(agent_config, broker.clone(), events_rx, shutdown.clone()).await?;
    info!(%name, seed = options.seed, tick_ms = options.tick.as_millis() as u64, "paper broker started");
    let ticker = tokio::spawn(broker.clone().tick_loop(options.tick, shutdown.clone()));
    let result = agent.wait().await;
    shutdown.cancel();
    let _ = ticker.await;
    info!(%name, "paper broker stopped");
    result.map_err(Into::into)
}

impl PaperBroker {
    fn venue(&self) -> std::sync::MutexGuard<'_, PaperVenue> {
        self.venue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, HashSet<(Feed, Symbol)>> {
        self.subscriptions.lock().unwrap_or_else(|p| p.into_inner())
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
            let events = tick_venue(&mut self.venue(), self.state_file.as_deref());
            self.emit(events).await;
        }
    }

    /// Writes the venue state to the state file, if there is one, before
    /// anything about the change leaves. Called with the venue locked, so
    /// writes never overtake each other.
    fn persist(&self, venue: &PaperVenue) {
        persist(self.state_file.as_deref(), venue);
    }

    /// Sends order events always, market data only where subscribed.
    async fn emit(&self, events: Vec<ServiceEvent>) {
        for event in events {
            match feed_of(&event) {
                Some(key) => {
                    if self.subs().contains(&key) {
                        // Market data is dropped, not queued, when the pipe is slow.
                        let _ = self.events.try_send(event);
                    }
                }
                None => {
                    let _ = self.events.send(event).await;
                }
            }
        }
    }
}

impl CommandHandler for PaperBroker {
    async fn handle(&self, command: Command) -> Reply {
        let result: Result<ReplyBody, ErrorDetail> = match command {
            Command::Ping => Ok(ReplyBody::Pong),
            Command::Stop => Ok(ReplyBody::Done),
            Command::Subscribe { feed, symbol } => match snapshot(&self.venue(), feed, &symbol) {
                Ok(first) => {
                    self.subs().insert((feed, symbol));
                    if let Some(ev) = first {
                        let _ = self.events.try_send(ev);
                    }
                    Ok(ReplyBody::Done)
                }
                Err(e) => Err(detail(&e)),
            },
            Command::Unsubscribe { feed, symbol } => {
                self.subs().remove(&(feed, symbol));
                Ok(ReplyBody::Done)
            }
            command => {
                // Order commands and lookups hold the turn: a status never
                // counts a fill not yet handed on.
                let _turn = if needs_turn(&command) { Some(self.changes.lock().await) } else { None };
                let executed = {
                    let mut venue = self.venue();
                    let executed = execute(&mut venue, command, Utc::now());
                    if executed.changed {
                        self.persist(&venue);
                    }
                    executed
                };
                self.emit(executed.events).await;
                executed.result
            }
        };
        match result {
            Ok(body) => Reply::Ok(body),
            Err(e) => Reply::Err(e),
        }
    }
}

/// What one command did to a paper venue.
pub(crate) struct Executed {
    pub result: Result<ReplyBody, ErrorDetail>,
    /// To hand on before the reply.
    pub events: Vec<ServiceEvent>,
    /// The venue changed: save its state before anything leaves.
    pub changed: bool,
}

/// Runs a venue command on `venue` (everything but `Ping`, `Stop` and the
/// subscriptions, which belong to a connection): the one place the paper
/// broker and the shared paper exchange both answer from.
pub(crate) fn execute(venue: &mut PaperVenue, command: Command, now: chrono::DateTime<Utc>) -> Executed {
    let read = |result| Executed { result, events: Vec::new(), changed: false };
    match command {
        Command::Ping => read(Ok(ReplyBody::Pong)),
        Command::Stop | Command::Subscribe { .. } | Command::Unsubscribe { .. } => read(Ok(ReplyBody::Done)),
        Command::Instruments => read(Ok(ReplyBody::Instruments(venue.instruments()))),
        Command::Quote { symbol } => read(venue.quote(&symbol).map(ReplyBody::Quote).map_err(|e| detail(&e))),
        Command::Book { symbol, depth } => {
            read(venue.book(&symbol, depth).map(ReplyBody::Book).map_err(|e| detail(&e)))
        }
        Command::PlaceOrder { order } => {
            let (report, events) = venue.place(order, now);
            Executed { result: Ok(ReplyBody::Order(report)), events, changed: true }
        }
        Command::CancelOrder { account, client_id } => match venue.cancel(&account, &client_id, now) {
            Ok((report, events)) => Executed { result: Ok(ReplyBody::Order(report)), events, changed: true },
            Err(e) => read(Err(detail(&e))),
        },
        // With the order itself: a node that never placed it can adopt it.
        Command::OrderStatus { account, client_id } => read(
            venue
                .order_detailed(&account, &client_id)
                .map(ReplyBody::Order)
                .ok_or_else(|| ErrorDetail::new("unknown_order", format!("the venue has no order {client_id}"))),
        ),
        Command::OpenOrders { account } => read(Ok(ReplyBody::Orders(venue.open_orders(&account)))),
        Command::Balances { account } => read(Ok(ReplyBody::Balances(venue.balances(&account)))),
        Command::Positions { account } => read(Ok(ReplyBody::Positions(venue.positions(&account)))),
    }
}

/// The first event of a new subscription (a quote or book snapshot), or why
/// the symbol cannot be subscribed.
pub(crate) fn snapshot(venue: &PaperVenue, feed: Feed, symbol: &Symbol) -> Result<Option<ServiceEvent>, PaperError> {
    match feed {
        Feed::Quotes => venue.quote(symbol).map(ServiceEvent::Quote).map(Some),
        Feed::Book => venue.book(symbol, 20).map(ServiceEvent::Book).map(Some),
        Feed::Trades => venue.quote(symbol).map(|_| None),
    }
}

/// The feed a market data event belongs to; `None` for order events.
pub(crate) fn feed_of(event: &ServiceEvent) -> Option<(Feed, Symbol)> {
    match event {
        ServiceEvent::Quote(q) => Some((Feed::Quotes, q.symbol.clone())),
        ServiceEvent::Trade(t) => Some((Feed::Trades, t.symbol.clone())),
        ServiceEvent::Book(b) => Some((Feed::Book, b.symbol.clone())),
        _ => None,
    }
}

/// One tick of the venue; its state is saved before an order event it
/// made leaves (the broker's and the shared exchange's tick loops).
pub(crate) fn tick_venue(venue: &mut PaperVenue, state_file: Option<&Path>) -> Vec<ServiceEvent> {
    let events = venue.tick(Utc::now());
    if events.iter().any(ServiceEvent::must_deliver) {
        persist(state_file, venue);
    }
    events
}

/// Writes the venue state to `state_file`, if there is one. Called with the
/// venue locked, so writes never overtake each other.
pub(crate) fn persist(state_file: Option<&Path>, venue: &PaperVenue) {
    let Some(path) = state_file else { return };
    if let Err(e) = save_state(path, &venue.state()) {
        error!(path = %path.display(), error = %e, "cannot save the paper venue state; a restart would lose it");
    }
}

/// Reads a saved venue state; `None` if there is none yet.
pub(crate) fn load_state(path: &Path) -> anyhow::Result<Option<PaperState>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("cannot read the paper venue state {}: {e}", path.display()),
    };
    let state = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!("the paper venue state {} is unreadable: {e}; move it away to start afresh", path.display())
    })?;
    Ok(Some(state))
}

/// Replaces the state file atomically: a crash leaves the old or the new
/// file, never half of one.
pub(crate) fn save_state(path: &Path, state: &PaperState) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    file::replace(path, &bytes, file::Access::Default)
}

/// A paper venue as `options` configure it, restored from its state file
/// when it has one (the paper broker's own venue, or the shared exchange's).
pub(crate) fn open_venue(options: &PaperOptions) -> anyhow::Result<PaperVenue> {
    let config = PaperConfig {
        seed: options.seed,
        starting_cash: options.starting_cash,
        fee_rate: options.fee_rate,
        ..PaperConfig::default()
    };
    let mut venue = PaperVenue::new(config, Utc::now());
    if let Some(path) = &options.state_file {
        if let Some(state) = load_state(path)? {
            venue.restore(state);
            info!(path = %path.display(), "paper venue state restored");
        }
    }
    Ok(venue)
}

/// Whether a command takes the venue's turn: order commands and order
/// lookups do, so a status never counts a fill not yet handed on; market
/// data, balances and pings do not wait behind them.
pub(crate) fn needs_turn(command: &Command) -> bool {
    matches!(
        command,
        Command::PlaceOrder { .. }
            | Command::CancelOrder { .. }
            | Command::OrderStatus { .. }
            | Command::OpenOrders { .. }
    )
}

pub(crate) fn detail(e: &PaperError) -> ErrorDetail {
    ErrorDetail::new(e.code(), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_refuse_unknown_keys() {
        let mut o = BTreeMap::new();
        o.insert("seed".to_string(), "7".to_string());
        o.insert("tick_ms".to_string(), "50".to_string());
        let p = PaperOptions::parse(&o).unwrap();
        assert_eq!(p.seed, 7);
        assert_eq!(p.tick, Duration::from_millis(50));
        o.insert("sede".to_string(), "1".to_string());
        assert!(PaperOptions::parse(&o).unwrap_err().contains("unknown option \"sede\""));
        let mut bad = BTreeMap::new();
        bad.insert("tick_ms".to_string(), "0".to_string());
        assert!(PaperOptions::parse(&bad).is_err());
    }

    #[test]
    fn state_file_round_trips_atomically() {
        let dir = std::env::temp_dir().join(format!("lido-paper-test-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join("paper").join("p1.json");
        assert!(load_state(&path).unwrap().is_none(), "no file yet: a fresh venue");
        let venue = PaperVenue::new(PaperConfig::default(), Utc::now());
        save_state(&path, &venue.state()).unwrap();
        assert!(load_state(&path).unwrap().is_some());
        std::fs::write(&path, "{").unwrap();
        assert!(load_state(&path).unwrap_err().to_string().contains("move it away"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

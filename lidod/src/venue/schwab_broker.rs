//! The `schwab` broker service (alias `tdameritrade`): one Schwab login and
//! account behind the service pipe. Runs as `lidod service broker schwab …`
//! or as a task.
//!
//! - Commands go to Schwab's REST API through [`SchwabRest`]: quotes,
//!   orders (market hours checked first), cancel, order status, balances and
//!   positions. Schwab orders carry no client id, so the broker keeps Lido's
//!   id ↔ Schwab's order id in its orders file ([`OrderMap`]), recording
//!   each order before it is sent: a restarted broker still knows its
//!   orders, reports them to reconciliation and lists them (with what they
//!   ask for) as open orders, so a node whose journal lacks one adopts it.
//!   An order whose send failed in a way that may have reached Schwab, or
//!   whose answer a crash lost, is looked up among the recent orders before
//!   anything else happens, never sent twice.
//! - The streamer task logs in to the socket named by `userPreference`,
//!   subscribes ACCT_ACTIVITY and the quote symbols Lido asked for, and
//!   reconnects with capped backoff, logging in and subscribing again.
//!   Schwab allows one streamer connection per login (a second LOGIN closes
//!   the first with code 12), so the node's brokers of one login take turns
//!   by an OS file lock per login ([`streamer_lock_path`], named by a hash
//!   of Schwab's customer id, never a token): the holder streams; another
//!   serves its subscribed quotes from REST `/marketdata/v1/quotes`, one
//!   call per `poll_ms`, says so in its status detail, and takes the
//!   streamer over when the holder goes (the kernel releases its lock).
//! - The poller asks Schwab for each open order when account activity names
//!   it, and every `poll_ms` anyway, and emits new fills and status changes.
//! - The status loop refreshes the access token before it expires and turns
//!   the service `degraded`, with a log line, when the refresh token has
//!   less than a day left.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::{SinkExt, StreamExt};
use lido_shared::client::agent::{Agent, AgentConfig, CommandHandler, ServiceLink};
use lido_shared::cluster::{ServiceKind, ServiceState};
use lido_shared::model::{AssetClass, Balance, Instrument, Position, Quote, Symbol};
use lido_shared::pipe::{Command, Feed, Reply, ReplyBody, ServiceEvent, VenueOrder, VenueOrderReport};
use lido_shared::ErrorDetail;
use rust_decimal::Decimal;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::schwab::error::SchwabError;
use super::schwab::hours::{self, Session};
use super::schwab::order_map::{MappedOrder, OrderMap};
use super::schwab::orders;
use super::schwab::rest::{
    AppCredentials, RestConfig, SchwabRest, DEFAULT_ORDERS_PER_MINUTE, DEFAULT_REQUESTS_PER_MINUTE,
};
use super::schwab::stream::{self, Incoming, LevelOne};
use super::schwab::token::{TokenFile, PRODUCTION_AUTH_URL};
use super::schwab::wire::{self, MarketHours, OrderRequest};
use crate::markets::{test_pause, OUTCOME_UNKNOWN};
use crate::venue::kraken::lock::FileLock;

/// Options a Schwab broker takes (`--set k=v`).
#[derive(Clone, Debug, PartialEq)]
pub struct SchwabOptions {
    /// Environment variables holding the app key and secret (never their values).
    pub app_key_env: String,
    pub app_secret_env: String,
    pub token_file: PathBuf,
    /// Lido's order ids ↔ Schwab's (the BrokerManager puts it in the node's data dir).
    pub orders_file: PathBuf,
    pub api_url: String,
    pub auth_url: String,
    /// Overrides the streamer URL from `userPreference`.
    pub streamer_url: Option<String>,
    /// The app's registered callback URL (used by the login).
    pub redirect_uri: String,
    /// The account number to trade; the first linked account when absent.
    pub account: Option<String>,
    /// The tickers this broker offers.
    pub symbols: Vec<Symbol>,
    /// Orders go `SEAMLESS` (pre- and post-market too) instead of `NORMAL`.
    pub extended_hours: bool,
    pub requests_per_minute: u32,
    /// Order requests (place, cancel) a minute for the account: Schwab's
    /// default is 120, set per app on Schwab's side.
    pub orders_per_minute: u32,
    /// How often open orders are polled besides account activity.
    pub poll: Duration,
    /// How long an order whose send had no answer stays `outcome unknown`
    /// when Schwab's order list does not show it, before it is declared not
    /// placed (Schwab's order list may lag the POST).
    pub unknown_quiet: Duration,
}

impl SchwabOptions {
    pub const KEYS: &'static [&'static str] = &[
        "app_key_env",
        "app_secret_env",
        "token_file",
        "orders_file",
        "api_url",
        "auth_url",
        "streamer_url",
        "redirect_uri",
        "account",
        "symbols",
        "extended_hours",
        "requests_per_minute",
        "orders_per_minute",
        "poll_ms",
        "unknown_quiet_ms",
    ];

    /// The defaults for the broker named `name`.
    pub fn defaults(name: &str) -> Self {
        Self {
            app_key_env: "SCHWAB_APP_KEY".into(),
            app_secret_env: "SCHWAB_APP_SECRET".into(),
            token_file: default_token_file(name),
            orders_file: default_file(name, "orders.json"),
            api_url: super::schwab::rest::PRODUCTION_API_URL.into(),
            auth_url: PRODUCTION_AUTH_URL.into(),
            streamer_url: None,
            redirect_uri: "https://127.0.0.1".into(),
            account: None,
            symbols: ["AAPL", "MSFT", "SPY"].iter().filter_map(|s| Symbol::parse(s).ok()).collect(),
            extended_hours: false,
            requests_per_minute: DEFAULT_REQUESTS_PER_MINUTE,
            orders_per_minute: DEFAULT_ORDERS_PER_MINUTE,
            poll: Duration::from_secs(5),
            unknown_quiet: DEFAULT_UNKNOWN_QUIET,
        }
    }

    /// Parses options; unknown keys and bad values are errors naming the key.
    pub fn parse(name: &str, options: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut out = Self::defaults(name);
        for (k, v) in options {
            match k.as_str() {
                "app_key_env" => out.app_key_env = non_empty(k, v)?,
                "app_secret_env" => out.app_secret_env = non_empty(k, v)?,
                "token_file" => out.token_file = PathBuf::from(non_empty(k, v)?),
                "orders_file" => out.orders_file = PathBuf::from(non_empty(k, v)?),
                "api_url" => out.api_url = url(k, v)?,
                "auth_url" => out.auth_url = url(k, v)?,
                "streamer_url" => out.streamer_url = Some(url(k, v)?),
                "redirect_uri" => out.redirect_uri = url(k, v)?,
                "account" => out.account = Some(non_empty(k, v)?),
                "symbols" => {
                    out.symbols = v
                        .split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| {
                            Symbol::parse(s)
                                .ok()
                                .filter(|sym| sym.quote().is_none())
                                .ok_or_else(|| format!("option symbols: {s:?} is not an equity ticker"))
                        })
                        .collect::<Result<_, _>>()?;
                    if out.symbols.is_empty() {
                        return Err("option symbols must name at least one ticker".into());
                    }
                }
                "extended_hours" => {
                    out.extended_hours =
                        v.parse().map_err(|_| format!("option extended_hours must be true or false, got {v:?}"))?
                }
                "requests_per_minute" => out.requests_per_minute = in_range(k, v, 1, 10_000)?,
                "orders_per_minute" => out.orders_per_minute = in_range(k, v, 1, 10_000)?,
                "unknown_quiet_ms" => out.unknown_quiet = Duration::from_millis(in_range(k, v, 1_000, 3_600_000)?),
                "poll_ms" => out.poll = Duration::from_millis(in_range(k, v, 50, 600_000)?),
                other => {
                    return Err(format!(
                        "unknown option {other:?} for a schwab broker; known: {}",
                        Self::KEYS.join(", ")
                    ))
                }
            }
        }
        Ok(out)
    }

    /// The app key and secret from the environment variables the options name.
    pub fn app_credentials(&self) -> Result<AppCredentials, String> {
        let read = |var: &str, what: &str| {
            std::env::var(var).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
                format!("the Schwab app {what} is not set: export {var} (or name another variable with the option {what}_env)")
            })
        };
        Ok(AppCredentials { key: read(&self.app_key_env, "key")?, secret: read(&self.app_secret_env, "secret")? })
    }
}

/// `$HOME/.config/lido/schwab-NAME.json`, where the login writes the tokens.
pub fn default_token_file(name: &str) -> PathBuf {
    default_file(name, "json")
}

/// `$HOME/.config/lido/schwab-NAME.EXTENSION`.
fn default_file(name: &str, extension: &str) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".config").join("lido").join(format!("schwab-{name}.{extension}"))
}

/// A whole number from `min` to `max`, or an error naming the option.
fn in_range<T>(key: &str, v: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    v.parse()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("option {key} must be {min} to {max}, got {v:?}"))
}

fn non_empty(key: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() {
        return Err(format!("option {key} must not be empty"));
    }
    Ok(v.to_string())
}

fn url(key: &str, v: &str) -> Result<String, String> {
    reqwest::Url::parse(v.trim()).map_err(|e| format!("option {key} must be a URL, got {v:?}: {e}"))?;
    Ok(v.trim().trim_end_matches('/').to_string())
}

/// How long cached market hours are trusted.
const HOURS_TTL: TimeDelta = TimeDelta::minutes(15);
/// How long a send without an answer stays `outcome unknown` when Schwab's
/// order list does not show it (the option `unknown_quiet_ms`).
pub const DEFAULT_UNKNOWN_QUIET: Duration = Duration::from_secs(300);
/// Lookups right after a send without an answer, before answering
/// `outcome unknown` (the poller and the market keep looking after).
const LOOKUP_ATTEMPTS: u32 = 3;
/// How long the streamer stays away after Schwab closed it with code 12
/// (another connection of the same login took it), doubling up to
/// [`STREAM_YIELD_MAX`]: two brokers of one login do not evict each other
/// in a loop.
const STREAM_YIELD: Duration = Duration::from_secs(300);
const STREAM_YIELD_MAX: Duration = Duration::from_secs(3600);
/// Silence after which the streamer socket is considered dead (Schwab
/// sends a heartbeat every few seconds).
const STREAM_SILENCE: Duration = Duration::from_secs(60);
/// How often tokens are checked.
const TOKEN_CHECK: Duration = Duration::from_secs(30);

/// What the broker knows of a Lido order at Schwab besides its map entry.
#[derive(Default)]
struct Tracked {
    order_id: i64,
    last: Option<VenueOrderReport>,
    fills_seen: HashSet<String>,
}

/// The broker's orders: the map (on disk) and what is derived from it.
struct Book {
    map: OrderMap,
    /// Orders with a Schwab id, by Lido's id.
    by_client: HashMap<String, Tracked>,
    by_schwab: HashMap<i64, String>,
    /// Sends whose outcome is unknown and whose lookup failed (or that a
    /// restart interrupted): each is looked up again (never re-sent) until
    /// Schwab surely has it or surely not.
    unsettled: HashSet<String>,
}

impl Book {
    /// The book of a (re)started broker: every mapped order with a Schwab
    /// id is tracked, every one without is unsettled.
    fn from_map(map: OrderMap) -> Self {
        let mut book = Self { map, by_client: HashMap::new(), by_schwab: HashMap::new(), unsettled: HashSet::new() };
        let entries: Vec<_> = book.map.iter().map(|m| (m.order.client_id.clone(), m.schwab_id)).collect();
        for (client_id, schwab_id) in entries {
            match schwab_id {
                Some(order_id) => book.track(&client_id, order_id),
                None => _ = book.unsettled.insert(client_id),
            }
        }
        book
    }

    fn track(&mut self, client_id: &str, order_id: i64) {
        self.by_schwab.insert(order_id, client_id.to_string());
        self.by_client.insert(client_id.to_string(), Tracked { order_id, ..Tracked::default() });
    }

    /// Whether Schwab reported the order ended (it is then not polled).
    fn closed(&self, client_id: &str) -> bool {
        self.map.get(client_id).is_some_and(|m| m.closed_at.is_some())
    }
}

struct SchwabBroker {
    rest: SchwabRest,
    options: SchwabOptions,
    /// The account's hash value, which trader calls take.
    account_hash: String,
    orders: Mutex<Book>,
    hours: Mutex<Option<(DateTime<Utc>, MarketHours)>>,
    /// Symbols with a quote subscription (the streamer keeps Schwab in step).
    quote_subs: watch::Sender<BTreeSet<Symbol>>,
    /// Wakes the poller (with the order account activity named, if any).
    poll_wake: mpsc::Sender<Option<i64>>,
    events: mpsc::Sender<ServiceEvent>,
    /// Held while an order's answer is read and its new fills are handed
    /// on: a status answered while the poller is emitting fills for the
    /// same order waits for them, so no reply overtakes the fills it counts.
    observing: tokio::sync::Mutex<()>,
    /// Set while another broker of this login holds the streamer: what the
    /// status detail says about where quotes come from.
    stream_note: watch::Sender<Option<String>>,
}

/// Runs a Schwab broker until `shutdown` or a `Stop` from its manager.
/// `broker_type` is `schwab` or its alias `tdameritrade`.
pub async fn run(
    name: String,
    broker_type: String,
    manager_url: String,
    link: ServiceLink,
    options: SchwabOptions,
    pid: Option<u32>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if broker_type == "tdameritrade" {
        info!(%name, "TD Ameritrade's API was retired when TD Ameritrade moved to Charles Schwab; using the Schwab Trader API that replaced it");
    }
    let app = options.app_credentials().map_err(anyhow::Error::msg)?;
    let config = RestConfig {
        api_url: options.api_url.clone(),
        auth_url: options.auth_url.clone(),
        requests_per_minute: options.requests_per_minute,
        orders_per_minute: options.orders_per_minute,
        ..RestConfig::default()
    };
    let map = OrderMap::load(&options.orders_file)?;
    let book = Book::from_map(map);
    info!(%name, orders_file = %options.orders_file.display(), tracked = book.by_client.len(),
        unsettled = book.unsettled.len(), "schwab order map loaded");
    let rest = SchwabRest::new(config, app, TokenFile::new(&options.token_file))?;
    let account_hash = resolve_account(&rest, options.account.as_deref()).await?;
    let (events_tx, events_rx) = mpsc::channel(65_536);
    let (poll_tx, poll_rx) = mpsc::channel(256);
    let broker = Arc::new(SchwabBroker {
        rest,
        options: options.clone(),
        account_hash,
        orders: Mutex::new(book),
        hours: Mutex::new(None),
        quote_subs: watch::channel(BTreeSet::new()).0,
        poll_wake: poll_tx,
        events: events_tx,
        observing: tokio::sync::Mutex::new(()),
        stream_note: watch::channel(None).0,
    });
    let mut agent_config = AgentConfig::new(name.clone(), ServiceKind::Broker, broker_type, manager_url);
    agent_config.pid = pid;
    agent_config.link(link);
    let agent = Agent::start(agent_config, broker.clone(), events_rx, shutdown.clone()).await?;
    info!(%name, api_url = %options.api_url, extended_hours = options.extended_hours, "schwab broker started");
    let streamer = tokio::spawn(broker.clone().stream_loop(shutdown.clone()));
    let poller = tokio::spawn(broker.clone().poll_loop(poll_rx, shutdown.clone()));
    broker.token_loop(&name, &agent, &shutdown).await;
    let result = agent.wait().await;
    let _ = streamer.await;
    let _ = poller.await;
    info!(%name, "schwab broker stopped");
    result.map_err(Into::into)
}

/// The hash value of `account` (or of the first linked account).
async fn resolve_account(rest: &SchwabRest, account: Option<&str>) -> Result<String, SchwabError> {
    let numbers = rest.account_numbers().await?;
    let found = match account {
        Some(a) => numbers.iter().find(|n| n.account_number == a),
        None => numbers.first(),
    };
    found.map(|n| n.hash_value.clone()).ok_or_else(|| {
        SchwabError::Config(match account {
            Some(a) => format!("account {a} is not linked to this Schwab login; check the option account"),
            None => "this Schwab login has no linked account".into(),
        })
    })
}

impl SchwabBroker {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.orders.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn session(&self) -> Session {
        if self.options.extended_hours {
            Session::Seamless
        } else {
            Session::Normal
        }
    }

    /// Refreshes the access token ahead of expiry, reports the refresh
    /// token's time left (the figure `refresh_token_expiry_seconds`, on
    /// /metrics as `lido_schwab_refresh_token_expiry_seconds{broker}`),
    /// warns in the log when under two days are left, and turns the service
    /// `degraded` with what to do when the login is dead (the refresh was
    /// refused or the refresh token ended), `running` again once a new login
    /// has written the token file. Until shutdown.
    async fn token_loop(&self, name: &str, agent: &Agent, shutdown: &CancellationToken) {
        let mut interval = tokio::time::interval(TOKEN_CHECK);
        let mut warned = false;
        let mut note = self.stream_note.subscribe();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
                Ok(()) = note.changed() => {}
            }
            let refreshed = match self.rest.login_needed().await {
                Some(why) => Err(why),
                None => self.rest.access_token(false).await.map_err(|e| e.to_string()),
            };
            let tokens = self.rest.tokens().await;
            let left = (tokens.refresh_expires_at - Utc::now()).num_seconds().max(0);
            let figures = [("refresh_token_expiry_seconds".to_string(), left as f64)].into();
            let _ = self.events.try_send(ServiceEvent::Metrics(figures));
            let (state, detail) = token_status(name, &tokens, self.rest.login_needed().await, Utc::now());
            match (&refreshed, state) {
                (_, ServiceState::Degraded) => {
                    warn!(%name, detail = detail.as_deref().unwrap_or_default(), "schwab login needed")
                }
                (Err(e), _) => warn!(%name, error = %e, "schwab token refresh failed"),
                _ => {}
            }
            match tokens.refresh_warning(Utc::now()) {
                Some(_) if !warned && state == ServiceState::Running => {
                    warn!(%name, expires_at = %tokens.refresh_expires_at,
                        "the Schwab refresh token expires in {} h; log in again with `lidoctl broker auth schwab --name {name}`",
                        left / 3600);
                    warned = true;
                }
                Some(_) => {}
                None => warned = false,
            }
            let stream_note = note.borrow_and_update().clone();
            let detail = match (detail, stream_note) {
                (Some(d), Some(n)) => Some(format!("{d}; {n}")),
                (d, n) => d.or(n),
            };
            agent.set_status(state, detail);
        }
    }

    // ── orders ──

    async fn place(&self, order: VenueOrder) -> Result<VenueOrderReport, SchwabError> {
        let client_id = order.client_id.clone();
        if self.book().by_client.contains_key(&client_id) {
            return self.status_of(&client_id).await;
        }
        if self.book().unsettled.contains(&client_id) {
            // Sent before with no known outcome: send again only once Schwab
            // surely does not have it (found nowhere after the quiet period).
            match self.status_of(&client_id).await {
                Err(SchwabError::NotFound { .. }) => {}
                other => return other,
            }
        }
        if self.book().map.get(&client_id).is_some() {
            return Err(in_flight(&client_id));
        }
        // What Schwab cannot take is refused before any call (the
        // instruction is settled below, from the position).
        let first = orders::request(&order, self.session(), Decimal::ZERO)?;
        self.check_hours(session_of(&first)).await?;
        let position = self.position(&order.symbol).await?;
        let request = orders::request(&order, self.session(), position)?;
        let sent_at = Utc::now();
        self.record(&order, &request, sent_at)?;
        let result = self.rest.place_order(&self.account_hash, &request).await;
        test_pause("schwab_after_post", &client_id).await;
        let order_id = match result {
            Ok(id) => id,
            Err(e) if e.maybe_sent() => {
                warn!(%client_id, error = %e, "order send may have reached Schwab; looking it up");
                let found = self.find_sent_soon(&request, sent_at).await;
                match found {
                    Ok(Some(id)) => id,
                    Ok(None) | Err(_) => {
                        // Schwab's order list may lag the POST: the order stays
                        // unknown (never re-sent) until the list shows it or the
                        // quiet period ends; the poller and the market keep looking.
                        self.book().unsettled.insert(client_id.clone());
                        let lookup = match found {
                            Err(lookup) => format!("could not be looked up ({lookup})"),
                            _ => "is not in the order list yet".into(),
                        };
                        return Err(SchwabError::Transport {
                            message: format!(
                                "{e}; the order {lookup}: its outcome stays unknown, and it is not sent again, \
                                 until Schwab lists it or {} s have passed",
                                self.options.unknown_quiet.as_secs()
                            ),
                            maybe_sent: true,
                        });
                    }
                }
            }
            Err(e) => {
                self.forget(&client_id);
                return Err(e);
            }
        };
        info!(%client_id, order_id, symbol = %order.symbol, "order placed at schwab");
        self.track(&client_id, order_id);
        let report = self.status_of(&client_id).await.unwrap_or_else(|_| VenueOrderReport {
            client_id: client_id.clone(),
            venue_order_id: order_id.to_string(),
            status: lido_shared::model::OrderStatus::Accepted,
            filled_quantity: Decimal::ZERO,
            average_price: None,
            reason: None,
            ts: Utc::now(),
            order: Some(Box::new(order)),
            trade_ids: Vec::new(),
        });
        Ok(report)
    }

    /// The account's position in `symbol` (long positive, short negative).
    async fn position(&self, symbol: &Symbol) -> Result<Decimal, SchwabError> {
        let positions = self.positions().await?;
        Ok(positions.iter().filter(|p| &p.symbol == symbol).map(|p| p.quantity).sum())
    }

    /// Records an order in the orders file before it is sent; if that
    /// fails, the order is not sent.
    fn record(&self, order: &VenueOrder, request: &OrderRequest, sent_at: DateTime<Utc>) -> Result<(), SchwabError> {
        let entry =
            MappedOrder { order: order.clone(), request: request.clone(), sent_at, schwab_id: None, closed_at: None };
        let mut book = self.book();
        book.map.record(entry).map_err(|e| {
            SchwabError::Storage(format!(
                "cannot record the order in the Schwab orders file {} ({e}), so it was not sent; \
                 check the disk and the broker option orders_file",
                book.map.path().display()
            ))
        })
    }

    /// Right after a send with unknown outcome: a few lookups, half a second apart.
    async fn find_sent_soon(&self, request: &OrderRequest, sent_at: DateTime<Utc>) -> Result<Option<i64>, SchwabError> {
        let mut last = Ok(None);
        for attempt in 0..LOOKUP_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            last = self.find_sent(request, sent_at).await;
            if let Ok(Some(_)) = last {
                break;
            }
        }
        last
    }

    /// The id of the order `request` made, if Schwab's order list shows it:
    /// an order not tracked yet with the same fields, entered from a minute
    /// before `sent_at` to the end of the quiet period
    /// ([`orders::same_order`]). `Ok(None)` says only "not listed yet".
    async fn find_sent(&self, request: &OrderRequest, sent_at: DateTime<Utc>) -> Result<Option<i64>, SchwabError> {
        let until = sent_at + self.quiet();
        let now = Utc::now();
        let list = self
            .rest
            .orders(&self.account_hash, sent_at - orders::CLOCK_SKEW, now.max(until) + TimeDelta::minutes(1), None)
            .await?;
        let book = self.book();
        let found = list
            .iter()
            .find(|o| !book.by_schwab.contains_key(&o.order_id) && orders::same_order(o, request, sent_at, until));
        Ok(found.map(|o| o.order_id))
    }

    fn quiet(&self) -> TimeDelta {
        TimeDelta::from_std(self.options.unknown_quiet).unwrap_or(TimeDelta::minutes(5))
    }

    /// Looks an unsettled send up again: tracks it if Schwab lists it,
    /// forgets it once the quiet period has passed without Schwab listing
    /// it (the caller then sees `NotFound`, and only then may it be sent
    /// again); before that it stays unknown (an error that may have been sent).
    async fn settle_unsettled(&self, client_id: &str) -> Result<(), SchwabError> {
        let pending = {
            let book = self.book();
            let sent = book.map.get(client_id).filter(|_| book.unsettled.contains(client_id));
            sent.map(|m| (m.request.clone(), m.sent_at))
        };
        let Some((request, sent_at)) = pending else { return Ok(()) };
        let found = self.find_sent(&request, sent_at).await.map_err(|e| SchwabError::Transport {
            message: format!("order {client_id} was sent without an answer and cannot be looked up now ({e})"),
            maybe_sent: true,
        })?;
        let quiet_over = Utc::now() > sent_at + self.quiet();
        match found {
            Some(order_id) => {
                if !self.book().unsettled.remove(client_id) {
                    return Ok(());
                }
                info!(%client_id, order_id, "unsettled order found at schwab");
                self.track(client_id, order_id);
            }
            None if quiet_over => {
                if !self.book().unsettled.remove(client_id) {
                    return Ok(());
                }
                info!(%client_id, quiet_s = self.options.unknown_quiet.as_secs(),
                    "unsettled order is not at schwab after the quiet period: it was not placed");
                self.forget(client_id);
            }
            None => {
                return Err(SchwabError::Transport {
                    message: format!(
                        "order {client_id} was sent without an answer and Schwab does not list it yet; its outcome \
                         stays unknown until it is listed or {} s after the send",
                        self.options.unknown_quiet.as_secs()
                    ),
                    maybe_sent: true,
                })
            }
        }
        Ok(())
    }

    /// Tracks an order Schwab has, noting its id in the orders file.
    fn track(&self, client_id: &str, order_id: i64) {
        let mut book = self.book();
        if let Err(e) = book.map.set_schwab_id(client_id, order_id) {
            // Still recoverable after a restart: the entry without an id is looked up.
            error!(%client_id, order_id, error = %e, "cannot note schwab's order id in the orders file");
        }
        book.track(client_id, order_id);
    }

    /// Drops an order Schwab surely does not have from the orders file.
    fn forget(&self, client_id: &str) {
        if let Err(e) = self.book().map.remove(client_id) {
            error!(%client_id, error = %e, "cannot remove an unsent order from the orders file");
        }
    }

    /// Refuses an order outside the session it asks for.
    async fn check_hours(&self, session: Session) -> Result<(), SchwabError> {
        let now = Utc::now();
        let cached = self.hours.lock().ok().and_then(|h| h.clone()).filter(|(at, _)| now - *at < HOURS_TTL);
        let hours = match cached {
            Some((_, h)) => h,
            None => {
                let h = self.rest.equity_hours(hours::exchange_date(now)).await?;
                if let Ok(mut slot) = self.hours.lock() {
                    *slot = Some((now, h.clone()));
                }
                h
            }
        };
        hours::check(&hours, session, now)
    }

    async fn cancel(&self, client_id: &str) -> Result<VenueOrderReport, SchwabError> {
        let order_id = self.order_id(client_id)?;
        self.rest.cancel_order(&self.account_hash, order_id).await?;
        info!(%client_id, order_id, "cancel sent to schwab");
        self.status_of(client_id).await
    }

    /// Schwab's id for an order; an order recorded but not yet answered is
    /// still being sent, which is not `NotFound` (that would invite a resend).
    fn order_id(&self, client_id: &str) -> Result<i64, SchwabError> {
        let book = self.book();
        match (book.by_client.get(client_id), book.map.get(client_id)) {
            (Some(t), _) => Ok(t.order_id),
            (None, Some(_)) => Err(in_flight(client_id)),
            (None, None) => {
                Err(SchwabError::NotFound { message: format!("no order {client_id} was placed through this broker") })
            }
        }
    }

    /// Asks Schwab for the order and emits what changed.
    async fn status_of(&self, client_id: &str) -> Result<VenueOrderReport, SchwabError> {
        self.settle_unsettled(client_id).await?;
        let order_id = self.order_id(client_id)?;
        let order = self.rest.order(&self.account_hash, order_id).await?;
        self.observe(client_id, &order).await
    }

    /// Emits new fills, then the order update if status or filled quantity
    /// moved; an ended order is marked closed in the orders file first.
    async fn observe(&self, client_id: &str, order: &wire::Order) -> Result<VenueOrderReport, SchwabError> {
        let _turn = self.observing.lock().await;
        let now = Utc::now();
        let (report, new_fills, changed) = {
            let mut book = self.book();
            let Some(mapped) = book.map.get(client_id).map(|m| m.order.clone()) else {
                return Err(SchwabError::NotFound { message: format!("order {client_id} is not in the orders file") });
            };
            let report = orders::report(client_id, &mapped.account, order, now);
            if report.status.is_terminal() && !book.closed(client_id) {
                if let Err(e) = book.map.close(client_id, now) {
                    error!(%client_id, error = %e, "cannot mark an ended order in the orders file");
                }
            }
            let Some(t) = book.by_client.get_mut(client_id) else { return Ok(report) };
            let fills = orders::fills(client_id, &mapped.symbol, mapped.side, order, now);
            let new: Vec<_> = fills.into_iter().filter(|f| t.fills_seen.insert(f.fill_id.clone())).collect();
            let changed = t
                .last
                .as_ref()
                .is_none_or(|l| l.status != report.status || l.filled_quantity != report.filled_quantity);
            t.last = Some(report.clone());
            (report, new, changed)
        };
        for fill in new_fills {
            let _ = self.events.send(ServiceEvent::Fill(fill)).await;
        }
        if changed {
            let _ = self.events.send(ServiceEvent::OrderUpdate(report.clone())).await;
        }
        Ok(report)
    }

    /// Polls open orders: all of them on the timer, the named one on activity.
    async fn poll_loop(self: Arc<Self>, mut wake: mpsc::Receiver<Option<i64>>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.options.poll);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let named = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => None,
                w = wake.recv() => w.flatten(),
            };
            let targets: Vec<String> = {
                let book = self.book();
                match named.and_then(|id| book.by_schwab.get(&id)) {
                    Some(client) => vec![client.clone()],
                    // Sends still unknown are looked for on every round too.
                    None => book
                        .by_client
                        .iter()
                        .filter(|(c, t)| !book.closed(c) && t.last.as_ref().is_none_or(|l| l.status.is_open()))
                        .map(|(c, _)| c.clone())
                        .chain(book.unsettled.iter().cloned())
                        .collect(),
                }
            };
            for client_id in targets {
                if let Err(e) = self.status_of(&client_id).await {
                    warn!(%client_id, error = %e, "schwab order poll failed");
                }
            }
        }
    }

    // ── account and market data ──

    async fn balances(&self) -> Result<Vec<Balance>, SchwabError> {
        let account = self.rest.account(&self.account_hash).await?.securities_account;
        let (total, available) = account.current_balances.usd(&account.account_type);
        Ok(vec![Balance { asset: "USD".into(), total, available }])
    }

    async fn positions(&self) -> Result<Vec<Position>, SchwabError> {
        let account = self.rest.account(&self.account_hash).await?.securities_account;
        Ok(account
            .positions
            .into_iter()
            .filter_map(|p| {
                let symbol = Symbol::parse(&p.instrument.symbol).ok()?;
                let quantity = p.long_quantity - p.short_quantity;
                Some(Position { symbol, quantity, average_price: Some(p.average_price) })
            })
            .collect())
    }

    async fn quote(&self, symbol: &Symbol) -> Result<Quote, ErrorDetail> {
        let entries = self.rest.quotes(&[symbol.as_str()]).await.map_err(|e| detail(&e))?;
        let entry = entries
            .into_iter()
            .find(|e| e.symbol == symbol.as_str())
            .ok_or_else(|| ErrorDetail::new("unknown_symbol", format!("Schwab has no quote for {symbol}")))?;
        Ok(rest_quote(symbol.clone(), &entry))
    }

    fn instruments(&self) -> Vec<Instrument> {
        self.options
            .symbols
            .iter()
            .map(|s| Instrument {
                symbol: s.clone(),
                asset_class: AssetClass::Equity,
                base: s.as_str().into(),
                quote: "USD".into(),
                tick_size: Decimal::new(1, 2),
                lot_size: Decimal::ONE,
                min_quantity: Decimal::ONE,
            })
            .collect()
    }

    async fn subscribe(&self, feed: Feed, symbol: Symbol) -> Result<ReplyBody, ErrorDetail> {
        if feed != Feed::Quotes {
            return Err(ErrorDetail::new(
                "unsupported_feed",
                format!("a schwab broker streams quotes only (LEVELONE_EQUITIES), not {feed:?}"),
            ));
        }
        let first = self.quote(&symbol).await?;
        self.quote_subs.send_modify(|s| {
            s.insert(symbol);
        });
        let _ = self.events.try_send(ServiceEvent::Quote(first));
        Ok(ReplyBody::Done)
    }

    // ── streamer ──

    /// Keeps one streamer session up, with capped backoff between tries.
    /// Schwab allows one streamer connection per user: when another
    /// connection of the same login takes it (code 12), this broker yields
    /// for [`STREAM_YIELD`], doubling to [`STREAM_YIELD_MAX`], instead of
    /// taking it back at once (two brokers of one login would otherwise
    /// evict each other in a loop); its quotes are then the REST snapshots.
    async fn stream_loop(self: Arc<Self>, shutdown: CancellationToken) {
        // Held until the broker stops: the kernel releases it then.
        let Some(_streamer) = self.take_streamer(&shutdown).await else { return };
        let mut backoff = stream_backoff();
        let mut yield_for = STREAM_YIELD;
        loop {
            let end = self.stream_session(&shutdown).await;
            if shutdown.is_cancelled() {
                return;
            }
            if end.logged_in && !end.evicted {
                backoff = stream_backoff();
                yield_for = STREAM_YIELD;
            }
            let wait = if end.evicted {
                let wait = yield_for;
                yield_for = (yield_for * 2).min(STREAM_YIELD_MAX);
                error!(reason = %end.reason, retry_in_s = wait.as_secs(),
                    "schwab closed this streamer because another connection of the same login took it \
                     (Schwab allows one per user); yielding instead of taking it back: run one schwab broker \
                     per login on a node for streamed quotes");
                wait
            } else {
                backoff.next().unwrap_or(Duration::from_secs(30))
            };
            warn!(reason = %end.reason, retry_in_ms = wait.as_millis() as u64, "schwab streamer disconnected");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Waits until this broker holds its login's streamer lock on this
    /// node, serving the subscribed quotes from REST meanwhile (one
    /// `/marketdata/v1/quotes` call for all of them per `poll_ms`, at least
    /// a second apart). The lock (`None` if it cannot be used at all, then
    /// the broker streams without it); `None` outer on shutdown.
    async fn take_streamer(&self, shutdown: &CancellationToken) -> Option<Option<FileLock>> {
        let pace = self.options.poll.max(Duration::from_secs(1));
        let mut path = None;
        let mut waiting = false;
        loop {
            if path.is_none() {
                match self.rest.user_preference().await {
                    Ok(p) => match p.streamer_info.first() {
                        Some(info) => {
                            path = Some(streamer_lock_path(&self.options.orders_file, &info.schwab_client_customer_id))
                        }
                        None => warn!("userPreference has no streamerInfo; cannot tell this login's streamer lock"),
                    },
                    Err(e) => warn!(error = %e, "cannot read userPreference for the streamer lock; trying again"),
                }
            }
            if let Some(path) = &path {
                match FileLock::acquire(path, Duration::ZERO).await {
                    Ok(lock) => {
                        if waiting {
                            info!("the other schwab broker of this login let go of the streamer; taking it over");
                            self.stream_note.send_replace(None);
                        }
                        return Some(Some(lock));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        if !waiting {
                            info!(lock = %path.display(), "another schwab broker of this login holds the streamer on this node; serving quotes from REST until it goes");
                            self.stream_note.send_replace(Some(format!(
                                "quotes polled from REST every {} ms: another broker of this Schwab login holds the \
                                 streamer (Schwab allows one per login)",
                                pace.as_millis()
                            )));
                            waiting = true;
                        }
                        self.poll_quotes().await;
                    }
                    Err(e) => {
                        warn!(lock = %path.display(), error = %e, "cannot use the schwab streamer lock; streaming without it");
                        return Some(None);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(pace) => {}
            }
        }
    }

    /// One REST quotes call for every subscribed symbol, handed on as quotes.
    async fn poll_quotes(&self) {
        let symbols: Vec<Symbol> = self.quote_subs.borrow().iter().cloned().collect();
        if symbols.is_empty() {
            return;
        }
        let names: Vec<&str> = symbols.iter().map(Symbol::as_str).collect();
        match self.rest.quotes(&names).await {
            Ok(entries) => {
                for symbol in symbols {
                    if let Some(entry) = entries.iter().find(|e| e.symbol == symbol.as_str()) {
                        // Market data is dropped, not queued, when the pipe is slow.
                        let _ = self.events.try_send(ServiceEvent::Quote(rest_quote(symbol, entry)));
                    }
                }
            }
            Err(e) => warn!(error = %e, "schwab REST quotes failed; trying again next poll"),
        }
    }

    async fn stream_session(&self, shutdown: &CancellationToken) -> SessionEnd {
        let mut end = SessionEnd { logged_in: false, evicted: false, reason: String::new() };
        end.reason = match self.stream_session_inner(shutdown, &mut end).await {
            Ok(()) => "closed".to_string(),
            Err(e) => e,
        };
        end
    }

    async fn stream_session_inner(&self, shutdown: &CancellationToken, end: &mut SessionEnd) -> Result<(), String> {
        let preference = self.rest.user_preference().await.map_err(|e| e.to_string())?;
        let mut info = preference.streamer_info.into_iter().next().ok_or("userPreference has no streamerInfo")?;
        if let Some(url) = &self.options.streamer_url {
            info.streamer_socket_url.clone_from(url);
        }
        let (mut ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_with_config(info.streamer_socket_url.as_str(), None, true),
        )
        .await
        .map_err(|_| "streamer connect timed out".to_string())?
        .map_err(|e| format!("cannot connect to the streamer: {e}"))?;
        let mut request_id = 0u64;
        let token = self.rest.access_token(false).await.map_err(|e| e.to_string())?;
        send_json(&mut ws, &stream::login(&info, request_id, &token)).await?;
        let mut level_one = LevelOne::default();
        let mut subs_rx = self.quote_subs.subscribe();
        loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = ws.close(None).await;
                    return Ok(());
                }
                Ok(()) = subs_rx.changed(), if end.logged_in => {
                    let symbols: Vec<Symbol> = subs_rx.borrow_and_update().iter().cloned().collect();
                    request_id += 1;
                    send_json(&mut ws, &stream::subscribe_quotes(&info, request_id, &symbols)).await?;
                    continue;
                }
                next = tokio::time::timeout(STREAM_SILENCE, ws.next()) => match next {
                    Err(_) => return Err("no heartbeat from the streamer".into()),
                    Ok(None) => return Err("the streamer closed the socket".into()),
                    Ok(Some(Err(e))) => return Err(format!("streamer socket failed: {e}")),
                    Ok(Some(Ok(Message::Text(text)))) => text,
                    Ok(Some(Ok(Message::Close(_)))) => return Err("the streamer closed the socket".into()),
                    Ok(Some(Ok(_))) => continue,
                },
            };
            let incoming: Incoming = match serde_json::from_str(frame.as_str()) {
                Ok(i) => i,
                Err(e) => {
                    warn!(error = %e, "unreadable streamer frame, ignored");
                    continue;
                }
            };
            if let Some(msg) = stream::closed_by_schwab(&incoming) {
                end.evicted = true;
                return Err(format!("the streamer closed the connection (code 12): {msg}"));
            }
            for response in &incoming.response {
                if response.service == "ADMIN" && response.command == "LOGIN" {
                    if response.content.code != stream::code::SUCCESS {
                        // A denied login is most often a stale access token:
                        // the next session logs in with a new one.
                        if let Err(e) = self.rest.access_token(true).await {
                            warn!(error = %e, "cannot fetch a new access token after a denied streamer login");
                        }
                        return Err(format!(
                            "streamer login refused (code {}): {}",
                            response.content.code, response.content.msg
                        ));
                    }
                    end.logged_in = true;
                    info!("schwab streamer logged in");
                    request_id += 1;
                    send_json(&mut ws, &stream::subscribe_account(&info, request_id)).await?;
                    level_one.clear();
                    let symbols: Vec<Symbol> = subs_rx.borrow_and_update().iter().cloned().collect();
                    if !symbols.is_empty() {
                        request_id += 1;
                        send_json(&mut ws, &stream::subscribe_quotes(&info, request_id, &symbols)).await?;
                    }
                } else if response.content.code != 0 {
                    warn!(service = %response.service, code = response.content.code, msg = %response.content.msg, "streamer refused a request");
                }
            }
            for data in &incoming.data {
                self.on_stream_data(data, &mut level_one);
            }
        }
    }

    fn on_stream_data(&self, data: &stream::Data, level_one: &mut LevelOne) {
        match data.service.as_str() {
            "LEVELONE_EQUITIES" => {
                let subscribed = self.quote_subs.borrow().clone();
                for entry in &data.content {
                    if let Some(quote) = level_one.apply(entry, Utc::now()) {
                        if subscribed.contains(&quote.symbol) {
                            // Market data is dropped, not queued, when the pipe is slow.
                            let _ = self.events.try_send(ServiceEvent::Quote(quote));
                        }
                    }
                }
            }
            "ACCT_ACTIVITY" => {
                for activity in data.content.iter().filter_map(stream::activity) {
                    info!(message_type = %activity.message_type, order_id = ?activity.order_id, "schwab account activity");
                    let _ = self.poll_wake.try_send(activity.order_id);
                }
            }
            _ => {}
        }
    }
}

/// The lock file of one login's streamer on this node: beside the orders
/// file (in the node's data dir), named by a hash of Schwab's customer id
/// (`schwabClientCustomerId`), never by a token.
fn streamer_lock_path(orders_file: &std::path::Path, customer_id: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(customer_id.as_bytes()));
    let dir = orders_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    dir.join(format!("schwab-login-{}.streamer.lock", &digest[..16]))
}

/// A REST quote (sizes in shares) as Lido's.
fn rest_quote(symbol: Symbol, entry: &wire::QuoteEntry) -> Quote {
    Quote {
        symbol,
        bid: entry.quote.bid_price,
        ask: entry.quote.ask_price,
        bid_size: entry.quote.bid_size,
        ask_size: entry.quote.ask_size,
        last: entry.quote.last_price,
        ts: wire::from_millis(entry.quote.quote_time).unwrap_or_else(Utc::now),
    }
}

struct SessionEnd {
    logged_in: bool,
    /// Schwab closed it with code 12 (another connection of the login).
    evicted: bool,
    reason: String,
}

/// Reconnects: 250 ms doubling to 30 s, with jitter, forever.
fn stream_backoff() -> backon::ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn send_json<S, T>(ws: &mut S, value: &T) -> Result<(), String>
where
    S: futures_util::Sink<Message> + Unpin,
    S::Error: std::fmt::Display,
    T: serde::Serialize,
{
    let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
    ws.send(Message::text(text)).await.map_err(|e| format!("streamer send failed: {e}"))
}

impl CommandHandler for SchwabBroker {
    async fn handle(&self, command: Command) -> Reply {
        let result: Result<ReplyBody, ErrorDetail> = match command {
            Command::Ping => Ok(ReplyBody::Pong),
            Command::Stop => Ok(ReplyBody::Done),
            Command::Instruments => Ok(ReplyBody::Instruments(self.instruments())),
            Command::Subscribe { feed, symbol } => self.subscribe(feed, symbol).await,
            Command::Unsubscribe { feed: _, symbol } => {
                self.quote_subs.send_modify(|s| {
                    s.remove(&symbol);
                });
                Ok(ReplyBody::Done)
            }
            Command::Quote { symbol } => self.quote(&symbol).await.map(ReplyBody::Quote),
            Command::Book { .. } => Err(ErrorDetail::new(
                "unsupported_feed",
                "a schwab broker has no order book (Schwab's level two needs separate permissions)",
            )),
            // A send that may have reached Schwab is the manager's to settle
            // (it asks OrderStatus, which looks the order up again here).
            Command::PlaceOrder { order } => self.place(order).await.map(ReplyBody::Order).map_err(|e| match e {
                e if e.maybe_sent() => ErrorDetail::new(OUTCOME_UNKNOWN, e.to_string()),
                e => detail(&e),
            }),
            Command::CancelOrder { client_id, .. } => {
                self.cancel(&client_id).await.map(ReplyBody::Order).map_err(|e| order_detail(&e))
            }
            // A send still unknown answers `outcome_unknown`, never
            // `unknown_order` (which invites a resend).
            Command::OrderStatus { client_id, .. } => {
                self.status_of(&client_id).await.map(ReplyBody::Order).map_err(|e| match e {
                    e if e.maybe_sent() => ErrorDetail::new(OUTCOME_UNKNOWN, e.to_string()),
                    e => order_detail(&e),
                })
            }
            Command::OpenOrders { account } => {
                self.open_orders(&account).await.map(ReplyBody::Orders).map_err(|e| detail(&e))
            }
            Command::Balances { .. } => self.balances().await.map(ReplyBody::Balances).map_err(|e| detail(&e)),
            Command::Positions { .. } => self.positions().await.map(ReplyBody::Positions).map_err(|e| detail(&e)),
        };
        match result {
            Ok(body) => Reply::Ok(body),
            Err(e) => Reply::Err(e),
        }
    }
}

impl SchwabBroker {
    /// Every open order `account` placed here, with what it asks for: the
    /// last report, or Schwab's answer for an order not seen since a
    /// restart (unsettled sends are looked up first).
    async fn open_orders(&self, account: &str) -> Result<Vec<VenueOrderReport>, SchwabError> {
        let (mut open, unseen) = {
            let book = self.book();
            let mut open = Vec::new();
            let mut unseen = Vec::new();
            for m in book.map.iter().filter(|m| m.order.account == account && m.closed_at.is_none()) {
                let id = &m.order.client_id;
                match book.by_client.get(id).and_then(|t| t.last.clone()) {
                    Some(last) => open.extend(last.status.is_open().then_some(last)),
                    None => unseen.push(id.clone()),
                }
            }
            (open, unseen)
        };
        for client_id in unseen {
            match self.status_of(&client_id).await {
                Ok(report) if report.status.is_open() => open.push(report),
                Ok(_) | Err(SchwabError::NotFound { .. }) => {}
                // A send whose outcome is still unknown is not listed (it is
                // no known order) and does not fail the others.
                Err(e) if e.maybe_sent() => warn!(%client_id, error = %e, "order outcome still unknown; not listed"),
                Err(e) => return Err(e),
            }
        }
        Ok(open)
    }
}

/// The service state for the tokens: `degraded` with what to do when the
/// login is dead (`login_needed` says why), else `running`, with the
/// refresh token's end as detail once under two days are left.
fn token_status(
    name: &str,
    tokens: &super::schwab::token::Tokens,
    login_needed: Option<String>,
    now: DateTime<Utc>,
) -> (ServiceState, Option<String>) {
    if let Some(why) = login_needed {
        return (
            ServiceState::Degraded,
            Some(format!(
                "log in again: `lidoctl broker auth schwab --name {name}` ({why}); every order is refused until then"
            )),
        );
    }
    match tokens.refresh_warning(now) {
        Some(left) => (
            ServiceState::Running,
            Some(format!(
                "the Schwab refresh token expires in {} h (at {}); log in again with `lidoctl broker auth schwab --name {name}`",
                left.as_secs() / 3600,
                tokens.refresh_expires_at.to_rfc3339()
            )),
        ),
        None => (ServiceState::Running, None),
    }
}

/// The session an order JSON asks for.
fn session_of(request: &OrderRequest) -> Session {
    if request.session == Session::Seamless.wire() {
        Session::Seamless
    } else {
        Session::Normal
    }
}

/// An order whose send has not been answered yet: its outcome is unknown.
fn in_flight(client_id: &str) -> SchwabError {
    SchwabError::Transport {
        message: format!("order {client_id} is still being sent to Schwab; ask again shortly"),
        maybe_sent: true,
    }
}

fn detail(e: &SchwabError) -> ErrorDetail {
    ErrorDetail::new(e.code(), e.to_string())
}

/// As [`detail`], with Schwab's 404 as the pipe's `unknown_order`.
fn order_detail(e: &SchwabError) -> ErrorDetail {
    match e {
        SchwabError::NotFound { message } => ErrorDetail::new("unknown_order", message.clone()),
        other => detail(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Schwab's token endpoint answers a login or refresh with.
    fn login_response(access: &str, refresh: &str) -> super::super::schwab::token::TokenResponse {
        super::super::schwab::token::TokenResponse {
            expires_in: 1800,
            token_type: "Bearer".into(),
            scope: None,
            refresh_token: refresh.into(),
            access_token: access.into(),
            id_token: None,
        }
    }

    #[test]
    fn options_parse_and_refuse_bad_values() {
        let mut o = BTreeMap::new();
        o.insert("symbols".to_string(), "aapl, msft".to_string());
        o.insert("api_url".to_string(), "http://127.0.0.1:9/".to_string());
        o.insert("extended_hours".to_string(), "true".to_string());
        let p = SchwabOptions::parse("s1", &o).unwrap();
        assert_eq!(p.symbols, vec![Symbol::parse("AAPL").unwrap(), Symbol::parse("MSFT").unwrap()]);
        assert_eq!(p.api_url, "http://127.0.0.1:9");
        assert!(p.extended_hours);
        assert!(p.token_file.ends_with(".config/lido/schwab-s1.json"));
        assert!(p.orders_file.ends_with(".config/lido/schwab-s1.orders.json"));
        o.insert("orders_file".to_string(), "/data/schwab/s1.orders.json".to_string());
        assert_eq!(SchwabOptions::parse("s1", &o).unwrap().orders_file, PathBuf::from("/data/schwab/s1.orders.json"));
        o.insert("symbols".to_string(), "BTC/USD".to_string());
        assert!(SchwabOptions::parse("s1", &o).unwrap_err().contains("not an equity ticker"));
        let unknown: BTreeMap<_, _> = [("app_key".to_string(), "x".to_string())].into();
        assert!(SchwabOptions::parse("s1", &unknown).unwrap_err().contains("unknown option \"app_key\""));
        let bad_url: BTreeMap<_, _> = [("auth_url".to_string(), "nope".to_string())].into();
        assert!(SchwabOptions::parse("s1", &bad_url).is_err());
    }

    #[test]
    fn the_account_option_reaches_the_schwab_broker() {
        // `account` is also the MarketManager's sibling key: it used to be
        // taken out before the schwab options were read, so every broker
        // traded the first linked account.
        let o: BTreeMap<_, _> = [("account".to_string(), "87654321".to_string())].into();
        match crate::venue::BrokerOptions::parse("schwab", "s1", &o).unwrap() {
            crate::venue::BrokerOptions::Schwab { options, .. } => {
                assert_eq!(options.account.as_deref(), Some("87654321"))
            }
            other => panic!("not a schwab broker: {other:?}"),
        }
        let q: BTreeMap<_, _> = [
            ("unknown_quiet_ms".to_string(), "600000".to_string()),
            ("orders_per_minute".to_string(), "60".to_string()),
        ]
        .into();
        let p = SchwabOptions::parse("s1", &q).unwrap();
        assert_eq!((p.unknown_quiet, p.orders_per_minute), (Duration::from_secs(600), 60));
        assert_eq!(SchwabOptions::defaults("s1").unknown_quiet, Duration::from_secs(300));
        assert!(SchwabOptions::parse("s1", &[("unknown_quiet_ms".to_string(), "10".to_string())].into()).is_err());
    }

    #[test]
    fn a_dead_login_degrades_the_broker_with_what_to_do() {
        use super::super::schwab::token::Tokens;
        let now = Utc::now();
        let response = login_response("a", "r");
        let fresh = Tokens::from_login(response.clone(), now);
        assert_eq!(token_status("s1", &fresh, None, now), (ServiceState::Running, None));
        let (state, detail) = token_status("s1", &fresh, Some("token refresh refused: invalid_grant".into()), now);
        assert_eq!(state, ServiceState::Degraded);
        assert!(detail.unwrap().starts_with("log in again: `lidoctl broker auth schwab --name s1`"));
        let old = Tokens::from_login(response, now - TimeDelta::days(6));
        let (state, detail) = token_status("s1", &old, None, now);
        assert_eq!(state, ServiceState::Running, "a warning, not yet a dead login");
        assert!(detail.unwrap().contains("expires in 24 h"));
    }

    /// A Schwab stand-in for the broker's unit tests: raw JSON shaped as
    /// the Trader API documents it (accountNumbers, securitiesAccount with
    /// MARGIN and CASH balances, orders with `Location`, order lists), with
    /// switches for what a test needs (an order list that lags the POST,
    /// lost answers, 429s). It shares no type with the adapter.
    mod schwab_stub {
        use std::sync::{Arc, Mutex};

        use axum::extract::{Path, State};
        use axum::http::{header, HeaderMap, StatusCode};
        use axum::response::{IntoResponse, Response};
        use axum::routing::{get, post};
        use axum::{Json, Router};
        use serde_json::{json, Value};

        #[derive(Default)]
        pub struct Stub {
            /// Order JSON posted, in order.
            pub posts: Vec<Value>,
            /// Orders Schwab holds (as GET answers them).
            pub orders: Vec<Value>,
            /// Order list calls that still answer without the newest order.
            pub list_lag: u32,
            /// Answer each POST with 502 after taking the order.
            pub lose_answers: bool,
            /// Answer the next POST with 429 and this Retry-After.
            pub throttle_next: Option<u64>,
            /// Long position of AAPL.
            pub aapl_long: i64,
            /// Extra raw elements of every order list (OCO parents…).
            pub foreign: Vec<Value>,
            pub calls: u32,
            /// Token endpoint calls.
            pub token_calls: u32,
        }

        pub type Shared = Arc<Mutex<Stub>>;

        pub async fn start(stub: Stub) -> (String, Shared) {
            let shared: Shared = Arc::new(Mutex::new(stub));
            let app = Router::new()
                .route("/trader/v1/accounts/accountNumbers", get(account_numbers))
                .route("/trader/v1/accounts/{hash}", get(account))
                .route("/trader/v1/accounts/{hash}/orders", post(place).get(list))
                .route("/trader/v1/accounts/{hash}/orders/{id}", get(one))
                .route("/marketdata/v1/markets", get(hours))
                .route("/v1/oauth/token", post(token))
                .with_state(shared.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            (url, shared)
        }

        fn count(s: &Shared) {
            s.lock().unwrap().calls += 1;
        }

        // Trader API, Accounts: GET /accounts/accountNumbers (example answer shape).
        async fn account_numbers(State(s): State<Shared>) -> Json<Value> {
            count(&s);
            Json(json!([
                {"accountNumber": "12345678", "hashValue": "HASHMARGIN"},
                {"accountNumber": "87654321", "hashValue": "HASHCASH"}
            ]))
        }

        // Trader API, Accounts: GET /accounts/{accountNumber}?fields=positions;
        // MarginBalance and CashBalance schemas for currentBalances.
        async fn account(State(s): State<Shared>, Path(hash): Path<String>) -> Json<Value> {
            count(&s);
            let long = s.lock().unwrap().aapl_long;
            let positions: Vec<Value> = (long > 0)
                .then(|| {
                    json!({"shortQuantity": 0, "averagePrice": 190.1, "longQuantity": long,
                    "instrument": {"assetType": "EQUITY", "cusip": "037833100", "symbol": "AAPL"}, "marketValue": 1901})
                })
                .into_iter()
                .collect();
            Json(if hash == "HASHCASH" {
                json!({"securitiesAccount": {"type": "CASH", "accountNumber": "87654321", "roundTrips": 0,
                    "isDayTrader": false, "isClosingOnlyRestricted": false, "pfcbFlag": false, "positions": positions,
                    "currentBalances": {"accruedInterest": 0, "cashBalance": 2500.5, "cashReceipts": 0,
                        "liquidationValue": 2500.5, "cashAvailableForTrading": 2000.5,
                        "cashAvailableForWithdrawal": 2000.5, "totalCash": 2500.5, "unsettledCash": 500}}})
            } else {
                json!({"securitiesAccount": {"type": "MARGIN", "accountNumber": "12345678", "roundTrips": 0,
                    "isDayTrader": false, "isClosingOnlyRestricted": false, "pfcbFlag": false, "positions": positions,
                    "currentBalances": {"availableFunds": 5000.25, "buyingPower": 10000.5, "cashBalance": 5000.25,
                        "liquidationValue": 6710.45, "marginBalance": 0}}})
            })
        }

        // Trader API, Orders: POST /accounts/{accountNumber}/orders answers
        // 201 with an empty body and the new order in `Location`.
        async fn place(State(s): State<Shared>, Path(hash): Path<String>, Json(body): Json<Value>) -> Response {
            let mut st = s.lock().unwrap();
            st.calls += 1;
            if let Some(secs) = st.throttle_next.take() {
                return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, secs.to_string())], "").into_response();
            }
            let id = 1_000_000 + st.posts.len() as i64;
            st.posts.push(body.clone());
            let leg = &body["orderLegCollection"][0];
            let entered = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%z").to_string();
            let mut order = json!({"session": body["session"], "duration": body["duration"],
                "orderType": body["orderType"], "complexOrderStrategyType": "NONE", "quantity": leg["quantity"],
                "filledQuantity": 0, "remainingQuantity": leg["quantity"], "requestedDestination": "AUTO",
                "orderLegCollection": [{"orderLegType": "EQUITY", "legId": 1, "instrument": leg["instrument"],
                    "instruction": leg["instruction"], "positionEffect": "OPENING", "quantity": leg["quantity"]}],
                "orderStrategyType": "SINGLE", "orderId": id, "cancelable": true, "editable": true,
                "status": "WORKING", "enteredTime": entered, "accountNumber": 12345678});
            if let Some(p) = body.get("price") {
                order["price"] = p.clone();
            }
            st.orders.push(order);
            if st.lose_answers {
                return (StatusCode::BAD_GATEWAY, "upstream connect error").into_response();
            }
            let location = format!("https://api.schwabapi.com/trader/v1/accounts/{hash}/orders/{id}");
            (StatusCode::CREATED, [(header::LOCATION, location)]).into_response()
        }

        // Trader API, Orders: GET /accounts/{accountNumber}/orders (a list;
        // Schwab's may lag a POST whose answer was lost).
        async fn list(State(s): State<Shared>) -> Json<Value> {
            let mut st = s.lock().unwrap();
            st.calls += 1;
            let mut listed: Vec<Value> = st.foreign.clone();
            if st.list_lag > 0 {
                st.list_lag -= 1;
                listed.extend(st.orders.iter().rev().skip(1).cloned());
            } else {
                listed.extend(st.orders.iter().cloned());
            }
            Json(Value::Array(listed))
        }

        async fn one(State(s): State<Shared>, Path((_, id)): Path<(String, i64)>) -> Response {
            let st = s.lock().unwrap();
            match st.orders.iter().find(|o| o["orderId"] == id) {
                Some(o) => Json(o.clone()).into_response(),
                None => {
                    (StatusCode::NOT_FOUND, Json(json!({"message": "Order not found", "errors": []}))).into_response()
                }
            }
        }

        // OAuth: POST /v1/oauth/token with grant_type=refresh_token; a dead
        // refresh token answers 400 invalid_grant (as schwab-py's and
        // Schwabdev's users report it).
        async fn token(
            State(s): State<Shared>,
            axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>,
        ) -> Response {
            s.lock().unwrap().token_calls += 1;
            if form.get("refresh_token").map(String::as_str) == Some("dead") {
                let body = json!({"error": "invalid_grant", "error_description": "refresh token is invalid"});
                return (StatusCode::BAD_REQUEST, Json(body)).into_response();
            }
            Json(json!({"expires_in": 1800, "token_type": "Bearer", "scope": "api",
                "refresh_token": form.get("refresh_token"), "access_token": "fresh", "id_token": "x"}))
            .into_response()
        }

        // Market Data API: GET /markets?markets=equity, open around now.
        async fn hours(_: HeaderMap) -> Json<Value> {
            let now = chrono::Utc::now();
            let t = |h: i64| (now + chrono::TimeDelta::hours(h)).to_rfc3339();
            Json(json!({"equity": {"EQ": {"date": now.format("%Y-%m-%d").to_string(), "marketType": "EQUITY",
                "product": "EQ", "productName": "equity", "isOpen": true, "sessionHours": {
                    "preMarket": [{"start": t(-3), "end": t(-1)}],
                    "regularMarket": [{"start": t(-1), "end": t(1)}],
                    "postMarket": [{"start": t(1), "end": t(3)}]}}}}))
        }
    }

    /// A broker on the stub, with fresh tokens and its files in `dir`.
    async fn broker_on(
        url: &str,
        dir: &std::path::Path,
        tune: impl FnOnce(&mut SchwabOptions),
    ) -> (Arc<SchwabBroker>, mpsc::Receiver<ServiceEvent>) {
        use super::super::schwab::token::Tokens;
        let mut options = SchwabOptions::defaults("s1");
        options.api_url = url.to_string();
        options.auth_url = url.to_string();
        options.token_file = dir.join("tokens.json");
        options.orders_file = dir.join("orders.json");
        tune(&mut options);
        let response = login_response("a", "r");
        TokenFile::new(&options.token_file).save(&Tokens::from_login(response, Utc::now())).unwrap();
        let config = RestConfig {
            api_url: options.api_url.clone(),
            auth_url: options.auth_url.clone(),
            orders_per_minute: options.orders_per_minute,
            ..RestConfig::default()
        };
        let app = AppCredentials { key: "k".into(), secret: "s".into() };
        let rest = SchwabRest::new(config, app, TokenFile::new(&options.token_file)).unwrap();
        let account_hash = resolve_account(&rest, options.account.as_deref()).await.unwrap();
        let (events, events_rx) = mpsc::channel(1024);
        let broker = Arc::new(SchwabBroker {
            rest,
            account_hash,
            orders: Mutex::new(Book::from_map(OrderMap::load(&options.orders_file).unwrap())),
            options,
            hours: Mutex::new(None),
            quote_subs: watch::channel(BTreeSet::new()).0,
            poll_wake: mpsc::channel(16).0,
            events,
            observing: tokio::sync::Mutex::new(()),
            stream_note: watch::channel(None).0,
        });
        (broker, events_rx)
    }

    fn order(client_id: &str, side: lido_shared::model::Side, quantity: Decimal) -> VenueOrder {
        VenueOrder {
            client_id: client_id.into(),
            account: "acme".into(),
            symbol: Symbol::parse("AAPL").unwrap(),
            side,
            order_type: lido_shared::model::OrderType::Limit,
            time_in_force: lido_shared::model::TimeInForce::Day,
            quantity,
            limit_price: Some(Decimal::new(15000, 2)),
            client_order_id: None,
        }
    }

    #[tokio::test]
    async fn an_order_the_list_does_not_show_yet_stays_unknown_and_is_never_sent_again() {
        use lido_shared::model::Side;
        let dir = tempfile::tempdir().unwrap();
        // The POST's answer is lost and the order list lags it.
        let (url, stub) =
            schwab_stub::start(schwab_stub::Stub { lose_answers: true, list_lag: 50, ..Default::default() }).await;
        let (broker, _events) = broker_on(&url, dir.path(), |_| {}).await;
        let e = broker.place(order("o-1", Side::Buy, Decimal::TEN)).await.unwrap_err();
        assert!(e.maybe_sent(), "outcome unknown, not 'not placed': {e}");
        assert!(e.to_string().contains("not sent again"), "{e}");
        // What the market does next: ask for it, and place it again only on
        // `unknown_order`. Each answer is still unknown: no second POST.
        for _ in 0..3 {
            let status = broker.handle(Command::OrderStatus { account: "acme".into(), client_id: "o-1".into() }).await;
            let Reply::Err(d) = status else { panic!("the order is not known yet: {status:?}") };
            assert_eq!(d.code, OUTCOME_UNKNOWN, "{d:?}");
            let again = broker.place(order("o-1", Side::Buy, Decimal::TEN)).await.unwrap_err();
            assert!(again.maybe_sent(), "{again}");
        }
        assert_eq!(stub.lock().unwrap().posts.len(), 1, "one POST, whatever the lookups said");
        // Once the list shows it, it is tracked under Schwab's id.
        stub.lock().unwrap().list_lag = 0;
        let report = broker.status_of("o-1").await.unwrap();
        assert_eq!(report.venue_order_id, "1000000");
        assert_eq!(stub.lock().unwrap().posts.len(), 1);
    }

    #[tokio::test]
    async fn an_order_never_listed_is_declared_not_placed_only_after_the_quiet_period() {
        use lido_shared::model::Side;
        let dir = tempfile::tempdir().unwrap();
        let (url, stub) =
            schwab_stub::start(schwab_stub::Stub { lose_answers: true, list_lag: u32::MAX, ..Default::default() })
                .await;
        let (broker, _events) = broker_on(&url, dir.path(), |o| o.unknown_quiet = Duration::from_millis(1500)).await;
        assert!(broker.place(order("o-2", Side::Buy, Decimal::ONE)).await.unwrap_err().maybe_sent());
        assert!(broker.status_of("o-2").await.unwrap_err().maybe_sent(), "within the quiet period");
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let gone = broker.status_of("o-2").await.unwrap_err();
        assert!(matches!(gone, SchwabError::NotFound { .. }), "{gone}");
        assert_eq!(stub.lock().unwrap().posts.len(), 1);
    }

    #[tokio::test]
    async fn the_token_file_is_read_again_before_a_refresh_and_a_refused_refresh_needs_a_login() {
        use super::super::schwab::token::Tokens;
        let response = login_response;
        let dir = tempfile::tempdir().unwrap();
        let (url, stub) = schwab_stub::start(schwab_stub::Stub::default()).await;
        let file = TokenFile::new(dir.path().join("tokens.json"));
        // Tokens due for a refresh, with a refresh token Schwab no longer takes.
        let now = Utc::now();
        file.save(&Tokens::from_login(response("old", "dead"), now - TimeDelta::minutes(29))).unwrap();
        let config = RestConfig { api_url: url.clone(), auth_url: url.clone(), ..RestConfig::default() };
        let app = AppCredentials { key: "k".into(), secret: "s".into() };
        let rest = SchwabRest::new(config, app, file.clone()).unwrap();
        let e = rest.access_token(false).await.unwrap_err();
        assert_eq!(e.code(), "venue_unauthorized");
        let why = rest.login_needed().await.expect("the login is dead");
        assert!(why.contains("refresh refused"), "{why}");
        assert!(rest.access_token(false).await.is_err());
        assert_eq!(stub.lock().unwrap().token_calls, 1, "a dead refresh token is not tried again and again");
        // `lidoctl broker auth` writes a new login: the running client takes it.
        file.save(&Tokens::from_login(response("new", "r2"), Utc::now())).unwrap();
        assert_eq!(rest.login_needed().await, None);
        assert_eq!(rest.access_token(false).await.unwrap(), "new");
        // A forced refresh (after a 401) reads the file first and refreshes
        // the newest tokens there, never the older ones it holds.
        let mut due = Tokens::from_login(response("due", "r3"), Utc::now() - TimeDelta::minutes(29));
        due.refresh_expires_at = Utc::now() + TimeDelta::days(9);
        file.save(&due).unwrap();
        assert_eq!(rest.access_token(true).await.unwrap(), "fresh");
        assert_eq!(rest.tokens().await.refresh_token, "r3", "refreshed with the newest refresh token");
        assert_eq!(file.load().unwrap().access_token, "fresh");
    }

    #[tokio::test]
    async fn the_account_option_picks_the_cash_account_and_its_balances() {
        let dir = tempfile::tempdir().unwrap();
        let (url, _stub) = schwab_stub::start(schwab_stub::Stub::default()).await;
        let (broker, _events) = broker_on(&url, dir.path(), |o| o.account = Some("87654321".into())).await;
        assert_eq!(broker.account_hash, "HASHCASH");
        let b = broker.balances().await.unwrap();
        assert_eq!((b[0].total, b[0].available), (Decimal::new(25005, 1), Decimal::new(20005, 1)));
        std::fs::create_dir_all(dir.path().join("m")).unwrap();
        let (margin, _events) = broker_on(&url, &dir.path().join("m"), |_| {}).await;
        assert_eq!(margin.account_hash, "HASHMARGIN", "the first linked account without the option");
    }

    #[tokio::test]
    async fn sells_follow_the_position_and_odd_orders_in_the_list_are_skipped() {
        use lido_shared::model::Side;
        let dir = tempfile::tempdir().unwrap();
        // An OCO parent (no orderLegCollection, childOrderStrategies) and an
        // order of a kind Lido does not know, as the Trader API's order
        // list may return them beside single orders.
        let oco = serde_json::json!({"orderStrategyType": "OCO", "orderId": 77, "status": "WORKING",
            "childOrderStrategies": [{"orderType": "LIMIT", "orderStrategyType": "SINGLE"}]});
        let odd = serde_json::json!({"orderId": 78, "orderType": "NET_DEBIT", "status": "WORKING"});
        let stub = schwab_stub::Stub { aapl_long: 10, foreign: vec![oco, odd], ..Default::default() };
        let (url, stub) = schwab_stub::start(stub).await;
        let (broker, _events) = broker_on(&url, dir.path(), |_| {}).await;
        let e = broker.place(order("s-1", Side::Sell, Decimal::new(15, 0))).await.unwrap_err();
        assert_eq!(e.code(), "position_crossing");
        assert!(stub.lock().unwrap().posts.is_empty(), "refused before sending");
        broker.place(order("s-2", Side::Sell, Decimal::TEN)).await.unwrap();
        stub.lock().unwrap().aapl_long = 0;
        broker.place(order("s-3", Side::Sell, Decimal::ONE)).await.unwrap();
        let posts = stub.lock().unwrap().posts.clone();
        let instructions: Vec<_> = posts.iter().map(|p| p["orderLegCollection"][0]["instruction"].clone()).collect();
        assert_eq!(instructions, [serde_json::json!("SELL"), serde_json::json!("SELL_SHORT")]);
        let now = Utc::now();
        let listed = broker.rest.orders("HASHMARGIN", now - TimeDelta::hours(1), now, None).await.unwrap();
        assert_eq!(listed.len(), 2, "the two single orders, the odd ones skipped");
    }

    #[tokio::test]
    async fn the_order_budget_refuses_before_schwab_and_a_429_holds_every_call() {
        use lido_shared::model::Side;
        let dir = tempfile::tempdir().unwrap();
        let (url, stub) = schwab_stub::start(schwab_stub::Stub::default()).await;
        let (broker, _events) = broker_on(&url, dir.path(), |o| o.orders_per_minute = 2).await;
        broker.place(order("b-1", Side::Buy, Decimal::ONE)).await.unwrap();
        broker.place(order("b-2", Side::Buy, Decimal::ONE)).await.unwrap();
        let e = broker.place(order("b-3", Side::Buy, Decimal::ONE)).await.unwrap_err();
        assert_eq!(e.code(), "rate_limited");
        assert!(e.to_string().contains("2 order requests a minute"), "{e}");
        assert_eq!(stub.lock().unwrap().posts.len(), 2);
        assert!(broker.book().map.get("b-3").is_none(), "not sent, so not kept");

        let dir = tempfile::tempdir().unwrap();
        let (url, stub) = schwab_stub::start(schwab_stub::Stub { throttle_next: Some(30), ..Default::default() }).await;
        let (broker, _events) = broker_on(&url, dir.path(), |_| {}).await;
        let e = broker.place(order("t-1", Side::Buy, Decimal::ONE)).await.unwrap_err();
        assert_eq!(e, SchwabError::RateLimited { retry_after: Some(Duration::from_secs(30)) });
        let calls = stub.lock().unwrap().calls;
        let held = broker.balances().await.unwrap_err();
        assert_eq!(held.code(), "rate_limited", "{held}");
        assert_eq!(stub.lock().unwrap().calls, calls, "nothing reaches Schwab during the back-off");
    }

    #[test]
    fn missing_app_key_names_the_variable_not_a_value() {
        let mut o = SchwabOptions::defaults("s1");
        o.app_key_env = "LIDO_TEST_SURELY_UNSET_KEY".into();
        let e = o.app_credentials().unwrap_err();
        assert!(e.contains("export LIDO_TEST_SURELY_UNSET_KEY"), "{e}");
    }
}

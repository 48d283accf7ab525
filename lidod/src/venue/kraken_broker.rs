//! The `kraken` broker service: Kraken Spot behind the service pipe. Runs
//! as `lidod service broker kraken …` or as a task.
//!
//! - Instruments come from REST AssetPairs (loaded on first use, reloaded
//!   every `pairs_refresh_ms` and after the public socket reconnects,
//!   [`pair_cache`]), so `BTC/USD` ↔ `XXBTZUSD` / `XBTUSD` is never hard-coded.
//! - Market data: `Subscribe` opens WebSocket v2 `ticker` / `book` /
//!   `trade` subscriptions ([`public_ws`]); `Quote` and `Book` answer from
//!   those live feeds when subscribed, else from REST Ticker / Depth.
//! - Orders: checked against the pair's tick size, lot decimals and
//!   `ordermin` before they leave, then sent with `cl_ord_id` = Lido's
//!   order id: over the private socket's `add_order` / `cancel_order` when
//!   it is up (no HTTP round trip, no nonce), else REST AddOrder /
//!   CancelOrder. Either way a failure is followed up as
//!   [`KrakenError::retry_advice`] says: an outcome left unknown is looked
//!   up by `cl_ord_id` (OpenOrders, then ClosedOrders) before any resend,
//!   so a retry can never create a second order. Kraken's refusals reach
//!   the algo with Kraken's own words.
//! - Order updates and fills come from the private `executions` channel
//!   ([`private_ws`]), when keys are configured. Without keys the broker
//!   still streams public data; private commands fail with `no_credentials`.
//! - Status: the REST call counter level and current wait, connections and
//!   subscriptions per connection, once a second (the service state's detail and a
//!   `Metrics` event).
//! - Public connections: `connections` always open, another opened when
//!   every open one is within `subscription_headroom` of
//!   `max_subscriptions_per_connection`, and idle extras closed, each
//!   decision reported with its reason ([`public_ws`]). More sockets do not
//!   raise the order rate: Kraken counts REST calls per API key and orders
//!   per pair and account; the broker reports how much of those budgets is
//!   used (`rest_budget_used`, `trading_budget_used`). Orders and their state belong to the
//!   account, not to a socket: any connection or REST can query or cancel
//!   an order placed through another.

pub mod account;
pub mod options;
pub mod pair_cache;
pub mod private_ws;
pub mod public_ws;
mod resync;
mod ws;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use lido_shared::client::agent::{Agent, AgentConfig, CommandHandler, ServiceLink};
use lido_shared::cluster::{ServiceKind, ServiceState};
use lido_shared::model::{OrderStatus, OrderType, Symbol, TimeInForce};
use lido_shared::pipe::{Command, Reply, ReplyBody, ServiceEvent, VenueOrder, VenueOrderReport};
use lido_shared::ErrorDetail;
use rust_decimal::prelude::ToPrimitive;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use account::{Charge, SharedTrading};
pub use options::KrakenOptions;
use pair_cache::PairCache;
use private_ws::{OrderCall, OrderIndex, OrderMeta, SocketOrders};
use public_ws::{PublicConfig, PublicFeeds};

use super::kraken::envelope::{ErrorCode, KrakenError, RequestKind, RetryAdvice};
use super::kraken::messages::{
    lido_balances, unix_seconds, AddOrderRequest, CancelOrderParams, CancelOrderRequest, OpenOrdersRequest, OrderInfo,
    Token,
};
use super::kraken::pairs::{PairInfo, PairMap};
use super::kraken::ratelimit::TradeAction;
use super::kraken::rest::{local_refusal, KrakenRest, RestConfig};
use super::kraken::sign::NonceSource;
use crate::autoscale::figures;
use crate::markets::OUTCOME_UNKNOWN;

/// Attempts at one AddOrder or CancelOrder, the first included.
const ORDER_ATTEMPTS: usize = 4;
/// How long an order-status lookup waits for the executions snapshot of
/// the private socket's current connection (under the market's 10 s venue
/// time-out).
const SYNC_WAIT: Duration = Duration::from_secs(5);
/// How long a cancel's answer waits for the executions feed to report the
/// order canceled before asking REST.
const CANCEL_FEED_WAIT: Duration = Duration::from_secs(2);
/// How often status figures go up.
const STATUS_EVERY: Duration = Duration::from_secs(1);

struct KrakenBroker {
    rest: Arc<KrakenRest>,
    /// AssetPairs, reloaded every `pairs_refresh` and after the public
    /// socket connects again ([`pair_cache`]).
    pairs: PairCache,
    public: PublicFeeds,
    index: Arc<OrderIndex>,
    /// The account's per-pair trading counters, shared with the node's
    /// other brokers on this key ([`account`]).
    trading: SharedTrading,
    executions_connected: Arc<AtomicBool>,
    /// Order calls over the private socket; `None` without keys.
    socket: Option<SocketOrders>,
}

/// Runs a Kraken broker until `shutdown` or a `Stop` from its manager.
pub async fn run(
    name: String,
    manager_url: String,
    link: ServiceLink,
    options: KrakenOptions,
    pid: Option<u32>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let credentials = options.credentials().map_err(anyhow::Error::msg)?;
    let has_keys = credentials.is_some();
    let (nonces, account_dir) = nonce_source(&options, credentials.as_ref().map(|c| c.key.as_str()))?;
    let rest_config = RestConfig {
        base_url: options.rest_url.clone(),
        timeout: options.rest_timeout,
        limits: options.tier.rest_limits(),
        ..RestConfig::default()
    };
    let rest = Arc::new(KrakenRest::new(rest_config, credentials, nonces)?);
    let (events_tx, events_rx) = mpsc::channel(65_536);
    let index = Arc::new(OrderIndex::default());
    let executions_connected = Arc::new(AtomicBool::new(false));
    let socket = has_keys.then(|| {
        private_ws::start(
            options.ws_auth_url.clone(),
            rest.clone(),
            index.clone(),
            events_tx.clone(),
            executions_connected.clone(),
            options.rest_timeout,
            shutdown.clone(),
        )
    });
    let broker = Arc::new(KrakenBroker {
        rest: rest.clone(),
        pairs: PairCache::new(options.pairs_refresh),
        public: PublicFeeds::start(
            PublicConfig {
                url: options.ws_url.clone(),
                connections: options.connections,
                max_subscriptions_per_connection: options.max_subscriptions_per_connection,
                subscription_headroom: options.headroom(),
                book_depth: options.book_depth,
            },
            events_tx.clone(),
            shutdown.clone(),
        ),
        index,
        trading: SharedTrading::new(account_dir, options.tier.trading_limits()),
        executions_connected,
        socket,
    });
    let mut agent_config = AgentConfig::new(name.clone(), ServiceKind::Broker, "kraken", manager_url);
    agent_config.pid = pid;
    agent_config.link(link);
    let agent = Agent::start(agent_config, broker.clone(), events_rx, shutdown.clone()).await?;
    info!(%name, rest_url = %options.rest_url, ws_url = %options.ws_url, keys = has_keys, "kraken broker started");
    let status = tokio::spawn(broker.clone().status_loop(agent.status_sender(), events_tx, has_keys, shutdown.clone()));
    tokio::spawn(broker.clone().pairs_loop(shutdown.clone()));
    let result = agent.wait().await;
    shutdown.cancel();
    let _ = status.await;
    info!(%name, "kraken broker stopped");
    result.map_err(Into::into)
}

impl KrakenBroker {
    /// Reports rate-limit and connection figures once a second.
    async fn status_loop(
        self: Arc<Self>,
        status: lido_shared::client::agent::StatusSender,
        events: mpsc::Sender<ServiceEvent>,
        has_keys: bool,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let live = self.public.live();
            let loads = self.public.loads();
            let level = self.rest.rate_limit_level();
            let wait_ms = self.rest.rate_limit_wait().as_millis() as f64;
            let connected = live.connected.load(Ordering::Relaxed);
            let executions = self.executions_connected.load(Ordering::Relaxed);
            let public = self.public.config();
            let trading_used = self.trading.busiest_share();
            // Every public socket is connected, or the first is still on its
            // first dial (not known to be down): routing reads this.
            let first_dial = connected == 0 && live.reconnects.load(Ordering::Relaxed) == 0;
            let venue_connected = connected >= loads.len() || first_dial;
            let mut report: BTreeMap<String, f64> = [
                ("rest_counter", level),
                ("rest_wait_ms", wait_ms),
                (figures::REST_BUDGET_USED, self.rest.rate_limit_share()),
                (figures::TRADING_BUDGET_USED, trading_used),
                ("ws_connected", connected as f64),
                ("venue_connected", f64::from(u8::from(venue_connected))),
                ("ws_subscriptions", self.public.subscriptions() as f64),
                (figures::VENUE_CONNECTIONS, loads.len() as f64),
                (figures::MAX_SUBSCRIPTIONS, public.max_subscriptions_per_connection as f64),
                (figures::HEADROOM, public.subscription_headroom as f64),
                ("ws_reconnects", live.reconnects.load(Ordering::Relaxed) as f64),
                ("book_resyncs", live.book_resyncs.load(Ordering::Relaxed) as f64),
                ("executions_connected", f64::from(u8::from(executions))),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            for (index, load) in loads.iter().enumerate() {
                report.insert(format!("{}{index}", figures::PER_CONNECTION), *load as f64);
            }
            let _ = events.try_send(ServiceEvent::Metrics(report));
            // Public data and REST orders work without the executions feed, so
            // the broker stays routable; the detail says what is missing.
            let detail = format!(
                "rest counter {level:.2}, wait {wait_ms} ms; public ws {connected} of {} up, {} subscriptions {loads:?} by connection, {} book resyncs; executions {}",
                loads.len(),
                self.public.subscriptions(),
                live.book_resyncs.load(Ordering::Relaxed),
                match (has_keys, executions) {
                    (false, _) => "off (no api key)",
                    (true, true) => "up",
                    (true, false) => "down",
                }
            );
            status.send(ServiceState::Running, Some(detail));
        }
    }

    /// AssetPairs, (re)loaded when due; a reload reaches the live books
    /// (a pair's new decimals resubscribe its book, [`PublicFeeds::refresh`]).
    async fn pairs(&self) -> Result<Arc<PairMap>, ErrorDetail> {
        let sessions = self.public.live().sessions.load(Ordering::Relaxed);
        let map =
            self.pairs.get(Instant::now(), sessions, || self.rest.asset_pairs()).await.map_err(|e| venue_error(&e))?;
        self.public.refresh(&map).await;
        Ok(map)
    }

    /// Reloads AssetPairs in the background when they are due, so the
    /// order path seldom waits for it.
    async fn pairs_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let sessions = self.public.live().sessions.load(Ordering::Relaxed);
            if self.pairs.is_due(Instant::now(), sessions).await {
                let _ = self.pairs().await;
            }
        }
    }

    async fn pair(&self, symbol: &Symbol) -> Result<PairInfo, ErrorDetail> {
        self.pairs()
            .await?
            .by_symbol(symbol)
            .cloned()
            .ok_or_else(|| ErrorDetail::new("unknown_symbol", format!("kraken has no pair {symbol} (see AssetPairs)")))
    }

    async fn quote(&self, symbol: &Symbol) -> Result<ReplyBody, ErrorDetail> {
        if let Some(q) = self.public.quote(symbol) {
            return Ok(ReplyBody::Quote(q));
        }
        let pair = self.pair(symbol).await?;
        // The Ticker's touch sizes are "lot volumes" with three decimals
        // (Kraken's example: `"b":["52609.60000","1","1.000"]`); the book's
        // top level is exact, so the touch comes from Depth, the last price
        // from Ticker.
        let (ticker, depth) = tokio::try_join!(self.rest.ticker(&pair.altname), self.rest.depth(&pair.altname, 1))
            .map_err(|e| venue_error(&e))?;
        let mut quote = ticker.1.to_quote(pair.symbol, Utc::now());
        if let (Some(bid), Some(ask)) = (depth.1.bids.first(), depth.1.asks.first()) {
            (quote.bid, quote.bid_size, quote.ask, quote.ask_size) = (bid.0, bid.1, ask.0, ask.1);
        }
        Ok(ReplyBody::Quote(quote))
    }

    async fn book(&self, symbol: &Symbol, depth: usize) -> Result<ReplyBody, ErrorDetail> {
        if let Some(b) = self.public.book(symbol, depth) {
            return Ok(ReplyBody::Book(b));
        }
        let pair = self.pair(symbol).await?;
        let count = depth.clamp(1, 500) as u32;
        let (_, book) = self.rest.depth(&pair.altname, count).await.map_err(|e| venue_error(&e))?;
        Ok(ReplyBody::Book(book.to_book(pair.symbol, Utc::now())))
    }

    /// Checks, then places, an order; never twice (see the module docs).
    async fn place(&self, order: VenueOrder) -> Result<ReplyBody, ErrorDetail> {
        let pair = self.pair(&order.symbol).await?;
        venue_gate(self.public.live().system().as_deref(), &pair, true)?;
        let request = add_order_request(&order, &pair)?;
        let kind = RequestKind::AddOrder { client_order_id: true };
        let mut delays = retry_delays();
        // Whether an earlier attempt may have reached Kraken: then a final
        // refusal (e.g. a duplicate cl_ord_id) is checked against Kraken first.
        let mut maybe_sent = false;
        for attempt in 1..=ORDER_ATTEMPTS {
            if let Err(refused) = self.charge(&pair, TradeAction::Add).await {
                // Not sent: unless an earlier attempt may have placed it.
                if maybe_sent {
                    if let Some((txid, info)) = self.find_maybe_sent(&order.client_id).await? {
                        return Ok(ReplyBody::Order(order_report(&order.client_id, &txid, &info)));
                    }
                }
                return Err(refused);
            }
            let err = match self.send_add(&request, &pair).await {
                Ok((txid, via)) => {
                    self.remember(&txid, &order.client_id, &pair, order.side, Some(account::now_micros()));
                    info!(order_id = %order.client_id, %txid, via, "kraken accepted the order");
                    return Ok(ReplyBody::Order(report(&order.client_id, &txid, OrderStatus::Accepted)));
                }
                Err(e) => e,
            };
            let advice = err.retry_advice(kind);
            warn!(order_id = %order.client_id, attempt, error = %err, ?advice, "kraken AddOrder failed");
            maybe_sent |= !err.certainly_not_executed();
            if err.code() == Some(ErrorCode::OrderRateLimit) {
                // Kraken's counter is full: never resent; the broker backs
                // off this pair until the counter has decayed.
                let refusal = self.kraken_rate_limited(&pair).await;
                if maybe_sent {
                    if let Some((txid, info)) = self.find_maybe_sent(&order.client_id).await? {
                        return Ok(ReplyBody::Order(order_report(&order.client_id, &txid, &info)));
                    }
                }
                return Err(refusal);
            }
            if advice == RetryAdvice::DoNotRetry || attempt == ORDER_ATTEMPTS {
                if maybe_sent {
                    if let Some((txid, info)) = self.find_maybe_sent(&order.client_id).await? {
                        return Ok(ReplyBody::Order(order_report(&order.client_id, &txid, &info)));
                    }
                }
                let refused =
                    err.certainly_not_executed() || (advice == RetryAdvice::DoNotRetry && err.code().is_some());
                if refused {
                    return Err(venue_error(&err));
                }
                // Unknown outcome: say so, and the market settles it with OrderStatus.
                return Err(ErrorDetail::new(OUTCOME_UNKNOWN, err.to_string()));
            }
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
            if advice == RetryAdvice::ReconcileThenRetry {
                if let Some((txid, info)) = self.find_maybe_sent(&order.client_id).await? {
                    info!(order_id = %order.client_id, %txid, "order found at kraken after an unknown outcome; not resending");
                    return Ok(ReplyBody::Order(order_report(&order.client_id, &txid, &info)));
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn cancel(&self, client_id: &str) -> Result<ReplyBody, ErrorDetail> {
        let request = if is_txid(client_id) {
            CancelOrderRequest::Txid(client_id.to_string())
        } else {
            CancelOrderRequest::ClOrdId(client_id.to_string())
        };
        if self.public.live().system().as_deref() == Some("maintenance") {
            return Err(ErrorDetail::new(
                "venue_maintenance",
                "kraken is in maintenance (WebSocket v2 status channel); the cancel was not sent, retry after it",
            ));
        }
        let known = self.index.meta_of(client_id);
        // The pair's counter is charged by the order's age; an order whose
        // age is unknown is charged as the youngest (the most a cancel costs).
        let pair = match &known {
            Some(meta) => self.pairs().await.ok().and_then(|p| p.by_symbol(&meta.symbol).cloned()),
            None => None,
        };
        let age = known
            .as_ref()
            .and_then(|m| m.placed_micros)
            .map(|t| Duration::from_micros(account::now_micros().saturating_sub(t)))
            .unwrap_or(Duration::ZERO);
        let mut delays = retry_delays();
        for attempt in 1..=ORDER_ATTEMPTS {
            if let Some(pair) = &pair {
                self.charge(pair, TradeAction::Cancel { age }).await?;
            }
            let err = match self.send_cancel(&request).await {
                Ok(()) => break,
                Err(e) => e,
            };
            if err.code() == Some(ErrorCode::OrderRateLimit) {
                return Err(match &pair {
                    Some(pair) => self.kraken_rate_limited(pair).await,
                    None => ErrorDetail::new("rate_limited", format!("{}; not resent", err.reason())),
                });
            }
            if err.code() == Some(ErrorCode::UnknownOrder) {
                if let Some(r) = self.index.feed_report(client_id).filter(|r| r.status.is_terminal()) {
                    return Err(ErrorDetail::new(
                        "order_not_open",
                        format!("kraken order {} is already {}", r.venue_order_id, r.status),
                    ));
                }
                return match self.find(client_id).await? {
                    Some((txid, info)) => Err(ErrorDetail::new(
                        "order_not_open",
                        format!("kraken order {txid} is already {}", info.lido_status()),
                    )),
                    None => Err(venue_error(&err)),
                };
            }
            if err.retry_advice(RequestKind::Cancel) == RetryAdvice::DoNotRetry || attempt == ORDER_ATTEMPTS {
                return Err(venue_error(&err));
            }
            warn!(order_id = %client_id, attempt, error = %err, "kraken CancelOrder failed; retrying");
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
        }
        self.canceled_report(client_id).await
    }

    /// The answer to a cancel Kraken acknowledged: the order's final state
    /// from the executions feed when it arrives within [`CANCEL_FEED_WAIT`]
    /// (no REST call), else from REST; and if REST cannot say, canceled as
    /// Kraken acknowledged (with the fills the feed had), never an error.
    async fn canceled_report(&self, client_id: &str) -> Result<ReplyBody, ErrorDetail> {
        if self.socket.is_some() {
            let deadline = tokio::time::Instant::now() + CANCEL_FEED_WAIT;
            loop {
                if let Some(r) = self.index.feed_report(client_id).filter(|r| r.status.is_terminal()) {
                    return Ok(ReplyBody::Order(r));
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        match self.report_of(client_id).await {
            Ok(body) => Ok(body),
            Err(e) => {
                warn!(order_id = %client_id, error = %e, "kraken acknowledged the cancel; its state is not known yet");
                let mut r = self.index.feed_report(client_id).unwrap_or_else(|| {
                    report(client_id, &self.index.txid_of(client_id).unwrap_or_default(), OrderStatus::Canceled)
                });
                if !r.status.is_terminal() {
                    r.status = OrderStatus::Canceled;
                }
                r.reason = Some("canceled (kraken acknowledged the cancel)".into());
                Ok(ReplyBody::Order(r))
            }
        }
    }

    /// The private socket, when it can take order calls now.
    fn live_socket(&self) -> Option<&SocketOrders> {
        self.socket.as_ref().filter(|s| s.is_up())
    }

    /// One AddOrder attempt, over the private socket when it is up, else
    /// REST; the Kraken id and the way it went.
    async fn send_add(
        &self,
        request: &AddOrderRequest,
        pair: &PairInfo,
    ) -> Result<(String, &'static str), KrakenError> {
        let Some(socket) = self.live_socket() else {
            let result = self.rest.add_order(request).await?;
            return Ok((result.txid.first().cloned().unwrap_or_default(), "rest"));
        };
        // The socket session puts its own token in.
        let params = request
            .ws_params(pair.ws_symbol(), Token(String::new()))
            .map_err(|why| local_refusal(ErrorCode::InvalidArguments, "EGeneral:Invalid arguments", &why))?;
        let ack = socket.call(OrderCall::Add(params)).await?;
        Ok((ack.order_id, "websocket"))
    }

    /// One CancelOrder attempt, over the private socket when it is up, else
    /// REST.
    async fn send_cancel(&self, request: &CancelOrderRequest) -> Result<(), KrakenError> {
        let Some(socket) = self.live_socket() else {
            return self.rest.cancel_order(request).await.map(|_| ());
        };
        let (order_id, cl_ord_id) = match request {
            CancelOrderRequest::Txid(t) => (Some(vec![t.clone()]), None),
            CancelOrderRequest::ClOrdId(c) => (None, Some(vec![c.clone()])),
        };
        let params = CancelOrderParams { order_id, cl_ord_id, token: Token(String::new()) };
        socket.call(OrderCall::Cancel(params)).await.map(|_| ())
    }

    /// Waits until every fill Kraken had when the private socket's current
    /// connection subscribed has been handed on as an event (the
    /// `executions` snapshot), so a status or listing answered after it
    /// never counts a fill the market has not seen (see [`private_ws`]).
    /// Without keys there is no feed and nothing to wait for.
    async fn executions_synced(&self) -> Result<(), ErrorDetail> {
        let Some(socket) = &self.socket else { return Ok(()) };
        if socket.synced(SYNC_WAIT).await {
            return Ok(());
        }
        Err(ErrorDetail::new(
            "executions_not_synced",
            format!(
                "the kraken executions feed has not delivered its snapshot within {SYNC_WAIT:?}, so fills may still be \
                 on their way; ask again"
            ),
        ))
    }

    /// The order's state at Kraken, by Lido's id, after the fills the
    /// executions feed had for it.
    async fn status_of(&self, client_id: &str) -> Result<ReplyBody, ErrorDetail> {
        self.executions_synced().await?;
        // The feed is synced, so its latest state for the order is current:
        // no REST call (no nonce, no call counter) for what it already told.
        // The feed does not describe an order (pair, type, price): one this
        // broker never placed or listed (another node's, on the same
        // account) is looked up over REST, so it can be adopted.
        if let Some(r) = self.index.feed_report(client_id).filter(|r| r.order.is_some() || self.index.knows(client_id))
        {
            return Ok(ReplyBody::Order(r));
        }
        self.report_of(client_id).await
    }

    /// The order's state at Kraken now, without waiting for the executions
    /// feed: the answer to a cancel, which must not fail because the feed is
    /// away (the order store books fills from feeds and reconciliation only,
    /// never from this report).
    async fn report_of(&self, client_id: &str) -> Result<ReplyBody, ErrorDetail> {
        match self.find(client_id).await? {
            Some((txid, info)) => Ok(ReplyBody::Order(self.described_report(client_id, &txid, &info, "").await)),
            None => Err(ErrorDetail::new("unknown_order", format!("kraken has no order with cl_ord_id {client_id}"))),
        }
    }

    /// Looks an order up by `cl_ord_id`: QueryOrders when its txid is
    /// known (or is the id itself: an order placed outside Lido, known by
    /// its txid), else OpenOrders, then ClosedOrders.
    async fn find(&self, client_id: &str) -> Result<Option<(String, OrderInfo)>, ErrorDetail> {
        let known = self.index.txid_of(client_id).or_else(|| is_txid(client_id).then(|| client_id.to_string()));
        if let Some(txid) = known {
            let mut found = self.rest.query_orders(&[txid]).await.map_err(|e| venue_error(&e))?;
            if let Some(entry) = found.pop_first() {
                return Ok(Some(entry));
            }
        }
        let filter = OpenOrdersRequest { trades: true, cl_ord_id: Some(client_id.to_string()) };
        let open = self.rest.open_orders(&filter).await.map_err(|e| venue_error(&e))?;
        if let Some(entry) = open.open.into_iter().next() {
            return Ok(Some(entry));
        }
        let closed = self.rest.closed_orders(&filter).await.map_err(|e| venue_error(&e))?;
        Ok(closed.closed.into_iter().next())
    }

    /// [`Self::find`] for an order that may have reached Kraken: a failed
    /// lookup leaves the outcome unknown (never a rejection).
    async fn find_maybe_sent(&self, client_id: &str) -> Result<Option<(String, OrderInfo)>, ErrorDetail> {
        self.find(client_id).await.map_err(|e| {
            ErrorDetail::new(
                OUTCOME_UNKNOWN,
                format!("order {client_id} may be at kraken; looking it up failed: {}", e.message),
            )
        })
    }

    /// Every open order of the account, with its details (for adoption).
    /// One placed outside Lido, without a `cl_ord_id`, goes by its txid.
    async fn open_orders(&self, account: &str) -> Result<ReplyBody, ErrorDetail> {
        self.executions_synced().await?;
        let listing = OpenOrdersRequest { trades: true, cl_ord_id: None };
        let open = self.rest.open_orders(&listing).await.map_err(|e| venue_error(&e))?;
        let mut reports = Vec::with_capacity(open.open.len());
        for (txid, info) in &open.open {
            let client_id = info.cl_ord_id.as_deref().unwrap_or(txid);
            reports.push(self.described_report(client_id, txid, info, account).await);
        }
        Ok(ReplyBody::Orders(reports))
    }

    /// The report of an order with the order itself, its pair mapped back
    /// to Lido's symbol; the order is remembered for the executions feed.
    /// Without the order when its pair or order type is not one Lido
    /// trades (it is then reported, never adopted).
    async fn described_report(&self, client_id: &str, txid: &str, info: &OrderInfo, account: &str) -> VenueOrderReport {
        let pair = self.pairs().await.ok().and_then(|p| p.resolve(&info.descr.pair).cloned());
        let order = pair.as_ref().and_then(|p| venue_order(client_id, account, p, info));
        if let Some(order) = &order {
            let placed = (info.opentm * rust_decimal::Decimal::from(1_000_000)).trunc().to_u64();
            self.remember(txid, client_id, pair.as_ref().expect("the order has a pair"), order.side, placed);
        }
        VenueOrderReport { order: order.map(Box::new), ..order_report(client_id, txid, info) }
    }

    fn remember(
        &self,
        txid: &str,
        client_id: &str,
        pair: &PairInfo,
        side: lido_shared::model::Side,
        placed_micros: Option<u64>,
    ) {
        let meta = OrderMeta { client_id: client_id.to_string(), symbol: pair.symbol.clone(), side, placed_micros };
        self.index.remember(txid, meta);
    }

    /// Counts `action` on the pair's trading counter (Kraken's "Spot
    /// Trading Limits"), or refuses it with `rate_limited` before Kraken
    /// would: the counter, its threshold and decay, and when to retry.
    async fn charge(&self, pair: &PairInfo, action: TradeAction) -> Result<(), ErrorDetail> {
        match self.trading.charge(&pair.altname, action).await {
            Ok(Charge::Counted) => Ok(()),
            Ok(Charge::Refused(r)) => {
                warn!(pair = %pair.symbol, ?action, refusal = %r, "order action refused before kraken's trading limit");
                Err(ErrorDetail::new("rate_limited", refusal_message(&r, pair)))
            }
            Err(e) => Err(ErrorDetail::new(
                "venue_unavailable",
                format!("cannot read the account's kraken trading counters: {e}; nothing was sent"),
            )),
        }
    }

    /// Kraken answered `EOrder:Rate limit exceeded` on `pair`: the counter
    /// is full (every broker on the account then waits for its decay).
    async fn kraken_rate_limited(&self, pair: &PairInfo) -> ErrorDetail {
        if let Err(e) = self.trading.saturate(&pair.altname).await {
            warn!(error = %e, "cannot record kraken's rate limit in the account's counters");
        }
        let limits = self.trading.limits();
        let decay = limits.decay_micro_per_sec as f64 / 1e6;
        let retry = (f64::from(limits.max) / decay.max(f64::MIN_POSITIVE)).ceil();
        ErrorDetail::new(
            "rate_limited",
            format!(
                "kraken refused with EOrder:Rate limit exceeded for {} (trading counter over its threshold {}, decays \
                 {decay}/s); not resent, retry in up to {retry} s",
                pair.symbol, limits.max
            ),
        )
    }
}

/// Lido's own words for a refusal before Kraken's trading limit, with the
/// pair as the algo names it.
fn refusal_message(r: &super::kraken::ratelimit::TradingRefusal, pair: &PairInfo) -> String {
    r.to_string().replacen(&format!("for {}:", pair.altname), &format!("for {}:", pair.symbol), 1)
}

impl CommandHandler for KrakenBroker {
    async fn handle(&self, command: Command) -> Reply {
        let result = match command {
            Command::Ping => Ok(ReplyBody::Pong),
            Command::Stop => Ok(ReplyBody::Done),
            Command::Instruments => self.pairs().await.map(|p| ReplyBody::Instruments(p.instruments())),
            Command::Subscribe { feed, symbol } => match self.pair(&symbol).await {
                Ok(pair) => {
                    self.public.subscribe(feed, &pair).await;
                    Ok(ReplyBody::Done)
                }
                Err(e) => Err(e),
            },
            Command::Unsubscribe { feed, symbol } => {
                self.public.unsubscribe(feed, &symbol).await;
                Ok(ReplyBody::Done)
            }
            Command::Quote { symbol } => self.quote(&symbol).await,
            Command::Book { symbol, depth } => self.book(&symbol, depth).await,
            Command::PlaceOrder { order } => self.place(order).await,
            Command::CancelOrder { client_id, .. } => self.cancel(&client_id).await,
            Command::OrderStatus { client_id, .. } => self.status_of(&client_id).await,
            Command::OpenOrders { account } => self.open_orders(&account).await,
            Command::Balances { .. } => {
                self.rest.balance().await.map(|b| ReplyBody::Balances(lido_balances(&b))).map_err(|e| venue_error(&e))
            }
            Command::Positions { .. } => Err(ErrorDetail::new(
                "unsupported",
                "a kraken spot account holds balances, not positions; ask for balances",
            )),
        };
        match result {
            Ok(body) => Reply::Ok(body),
            Err(e) => Reply::Err(e),
        }
    }
}

/// Whether Kraken takes a new order now, by the engine's state from the
/// WebSocket v2 `status` channel (`system`) and the pair's AssetPairs
/// `status`: in `maintenance` nothing is sent (`venue_maintenance`, 503);
/// in `cancel_only` new orders are refused (`market_cancel_only`, 503;
/// cancels go through); in `post_only` (engine or pair) orders are refused
/// with `market_post_only`, since Lido's orders are not post-only.
fn venue_gate(system: Option<&str>, pair: &PairInfo, new_order: bool) -> Result<(), ErrorDetail> {
    use super::kraken::pairs::PairStatus;
    if system == Some("maintenance") {
        return Err(ErrorDetail::new(
            "venue_maintenance",
            "kraken is in maintenance (WebSocket v2 status channel); the order was not sent, retry after it",
        ));
    }
    if !new_order {
        return Ok(());
    }
    if system == Some("cancel_only") || pair.status == PairStatus::CancelOnly {
        return Err(ErrorDetail::new(
            "market_cancel_only",
            format!("kraken takes cancels only on {} now; the order was not sent", pair.symbol),
        ));
    }
    if system == Some("post_only") || pair.status == PairStatus::PostOnly {
        return Err(ErrorDetail::new(
            "market_post_only",
            format!("kraken takes post-only limit orders only on {} now; the order was not sent", pair.symbol),
        ));
    }
    Ok(())
}

/// The AddOrder for `order`, checked against the pair (status, `ordermin`,
/// lot, tick, `costmin`) and with its quantity and price at the pair's
/// decimals, so nothing leaves that Kraken would refuse for its digits.
fn add_order_request(order: &VenueOrder, pair: &PairInfo) -> Result<AddOrderRequest, ErrorDetail> {
    let invalid = |m: String| ErrorDetail::new("invalid_order", format!("{m} (checked against kraken's AssetPairs)"));
    pair.check_order(order.order_type, order.quantity, order.limit_price).map_err(invalid)?;
    let price = order.limit_price.filter(|_| order.order_type == OrderType::Limit);
    Ok(AddOrderRequest {
        pair: pair.altname.clone(),
        side: order.side,
        order_type: order.order_type,
        volume: pair.wire_quantity(order.quantity).map_err(invalid)?,
        price: price.map(|p| pair.wire_price(p)).transpose().map_err(invalid)?,
        time_in_force: order.time_in_force,
        post_only: false,
        cl_ord_id: Some(order.client_id.clone()),
        validate: false,
    })
}

/// The nonce source for this broker: with keys, the one file the node's
/// brokers on the same key share (under the account folder beside
/// `nonce_file`, named by a hash of the key), never below this broker's
/// own earlier nonce file; without keys, `nonce_file` (public calls only).
/// Also the account folder, for the trading counters.
fn nonce_source(
    options: &KrakenOptions,
    api_key: Option<&str>,
) -> anyhow::Result<(NonceSource, Option<std::path::PathBuf>)> {
    let load = |path: &std::path::Path| {
        NonceSource::load(path)
            .map_err(|e| anyhow::anyhow!("cannot read the nonce file {}: {e}; fix or remove it", path.display()))
    };
    let own = load(&options.nonce_file)?;
    let Some(key) = api_key else { return Ok((own, None)) };
    let base = options.nonce_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let dir = account::account_dir(base, key);
    let mut shared = load(&dir.join("nonce"))?;
    shared.raise_floor(own.last());
    Ok((shared, Some(dir)))
}

/// Backoff between attempts at one order action.
fn retry_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build()
}

/// A Kraken failure as the pipe's error: the typed code, Kraken's words.
fn venue_error(e: &KrakenError) -> ErrorDetail {
    if e.code() == Some(ErrorCode::InvalidKey) && e.certainly_not_executed() && e.reason().contains("no api key") {
        return ErrorDetail::new(
            "no_credentials",
            "this kraken broker has no api key: set the environment variables named by api_key_env and api_secret_env",
        );
    }
    match e.code() {
        Some(code) => ErrorDetail::new(code.as_str(), e.reason()),
        None => ErrorDetail::new("venue_unavailable", e.to_string()),
    }
}

fn report(client_id: &str, txid: &str, status: OrderStatus) -> VenueOrderReport {
    VenueOrderReport {
        client_id: client_id.to_string(),
        venue_order_id: txid.to_string(),
        status,
        filled_quantity: rust_decimal::Decimal::ZERO,
        average_price: None,
        reason: None,
        ts: Utc::now(),
        order: None,
        trade_ids: Vec::new(),
    }
}

fn order_report(client_id: &str, txid: &str, info: &OrderInfo) -> VenueOrderReport {
    VenueOrderReport {
        client_id: client_id.to_string(),
        venue_order_id: txid.to_string(),
        status: info.lido_status(),
        filled_quantity: info.vol_exec,
        average_price: Some(info.price).filter(|p| !p.is_zero() && !info.vol_exec.is_zero()),
        reason: info.reason.clone(),
        ts: info.closetm.or(Some(info.opentm)).and_then(unix_seconds).unwrap_or_else(Utc::now),
        order: None,
        trade_ids: info.trades.clone().unwrap_or_default(),
    }
}

/// The order as Kraken holds it (`descr`, `vol`), in Lido's words; `None`
/// for order types Lido does not place (stop-loss, take-profit, …).
/// Kraken's order info does not echo the time in force; an order still
/// open is taken as good till canceled.
fn venue_order(client_id: &str, account: &str, pair: &PairInfo, info: &OrderInfo) -> Option<VenueOrder> {
    let order_type = match info.descr.ordertype.as_str() {
        "limit" => OrderType::Limit,
        "market" => OrderType::Market,
        _ => return None,
    };
    Some(VenueOrder {
        client_id: client_id.to_string(),
        account: account.to_string(),
        symbol: pair.symbol.clone(),
        side: info.descr.side,
        order_type,
        time_in_force: TimeInForce::Gtc,
        quantity: info.vol,
        limit_price: (order_type == OrderType::Limit).then_some(info.descr.price),
        client_order_id: None,
    })
}

/// Whether `id` has the shape of a Kraken order id (`OQCLML-BW3P3-BUCMWZ`),
/// which Lido's own ids (UUIDs) never have.
fn is_txid(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.iter().map(|p| p.len()).eq([6, 5, 6])
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use lido_shared::model::Side;
    use rust_decimal::Decimal;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::venue::kraken::pairs::AssetPair;

    /// An OpenOrders entry as Kraken documents it ("Get Open Orders").
    const OPEN_ORDER: &str = r#"{"refid":null,"userref":0,"status":"open","opentm":1688666559.8974,
        "starttm":0,"expiretm":0,"descr":{"pair":"XBTUSD","type":"buy","ordertype":"limit","price":"30010.0",
        "price2":"0","leverage":"none","order":"buy 1.25000000 XBTUSD @ limit 30010.0","close":""},
        "vol":"1.25000000","vol_exec":"0.37500000","cost":"11253.7","fee":"0.00000","price":"30010.0",
        "stopprice":"0.00000","limitprice":"0.00000","misc":"","oflags":"fciq","trades":["TCCCTY-WE2O6-P3NB37"]}"#;

    fn btc_usd() -> PairInfo {
        let pair: AssetPair = serde_json::from_str(
            r#"{"altname":"XBTUSD","wsname":"XBT/USD","base":"XXBT","quote":"ZUSD","pair_decimals":1,
                "lot_decimals":8,"ordermin":"0.0001","tick_size":"0.1","status":"online"}"#,
        )
        .unwrap();
        let map = PairMap::from_asset_pairs(&BTreeMap::from([("XXBTZUSD".to_string(), pair)]));
        map.resolve("XBTUSD").expect("the pair").clone()
    }

    #[test]
    fn an_open_kraken_order_reads_as_the_lido_order_it_is() {
        let info: OrderInfo = serde_json::from_str(OPEN_ORDER).unwrap();
        let order = venue_order("OQCLML-BW3P3-BUCMWZ", "acme", &btc_usd(), &info).expect("a limit order");
        assert_eq!(order.symbol.as_str(), "BTC/USD");
        assert_eq!(
            (order.side, order.order_type, order.time_in_force),
            (Side::Buy, OrderType::Limit, TimeInForce::Gtc)
        );
        assert_eq!((order.quantity, order.limit_price), (dec!(1.25), Some(dec!(30010.0))));
        let report = order_report("OQCLML-BW3P3-BUCMWZ", "OQCLML-BW3P3-BUCMWZ", &info);
        assert_eq!((report.status, report.filled_quantity), (OrderStatus::PartiallyFilled, dec!(0.375)));
    }

    #[test]
    fn orders_lido_does_not_place_are_not_described() {
        let mut info: OrderInfo = serde_json::from_str(OPEN_ORDER).unwrap();
        info.descr.ordertype = "stop-loss".into();
        assert_eq!(venue_order("c-1", "acme", &btc_usd(), &info), None);
    }

    fn limit_buy(quantity: Decimal, price: Decimal) -> VenueOrder {
        VenueOrder {
            client_id: "6f1c2b1e-4c1d-4f7a-9a51-2d8e0f3b7c11".into(),
            account: "acme".into(),
            symbol: Symbol::parse("BTC/USD").unwrap(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            quantity,
            limit_price: Some(price),
            client_order_id: None,
        }
    }

    #[test]
    fn orders_leave_at_the_pair_s_decimals() {
        // XBTUSD: pair_decimals 1, lot_decimals 8 (AssetPairs example).
        let order = limit_buy(dec!(0.0100000000000), dec!(30010.000));
        let request = add_order_request(&order, &btc_usd()).unwrap();
        let form = request.form(1).unwrap();
        let field = |k: &str| form.iter().find(|(f, _)| *f == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!((field("volume"), field("price")), ("0.01".to_string(), "30010".to_string()));
        let ws = request.ws_params("BTC/USD", Token("t".into())).unwrap();
        let json = serde_json::to_string(&ws).unwrap();
        assert!(json.contains(r#""order_qty":0.01,"#) && json.contains(r#""limit_price":30010,"#), "{json}");
    }

    #[test]
    fn a_price_off_the_tick_or_too_fine_a_quantity_is_refused_not_rounded() {
        let err = add_order_request(&limit_buy(dec!(0.01), dec!(30010.05)), &btc_usd()).unwrap_err();
        assert_eq!(err.code, "invalid_order");
        assert!(err.message.contains("30010.05"), "{}", err.message);
        let err = add_order_request(&limit_buy(dec!(0.000000001), dec!(30010.0)), &btc_usd()).unwrap_err();
        assert_eq!(err.code, "invalid_order");
    }

    /// A broker whose REST endpoint answers nothing and that has no
    /// private socket: whatever it answers, it answered without REST.
    fn broker_without_rest(shutdown: &CancellationToken) -> KrakenBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = RestConfig {
            base_url: format!("http://127.0.0.1:{port}"),
            timeout: Duration::from_secs(2),
            ..RestConfig::default()
        };
        let rest = Arc::new(KrakenRest::new(config, None, NonceSource::in_memory()).unwrap());
        let (events, _) = mpsc::channel(16);
        KrakenBroker {
            rest,
            pairs: PairCache::new(Duration::from_secs(300)),
            public: PublicFeeds::start(
                PublicConfig {
                    url: format!("ws://127.0.0.1:{port}"),
                    connections: 1,
                    max_subscriptions_per_connection: 10,
                    subscription_headroom: 1,
                    book_depth: 10,
                },
                events,
                shutdown.clone(),
            ),
            index: Arc::new(OrderIndex::default()),
            trading: SharedTrading::new(None, crate::venue::kraken::ratelimit::Tier::Starter.trading_limits()),
            executions_connected: Arc::new(AtomicBool::new(false)),
            socket: None,
        }
    }

    #[tokio::test]
    async fn a_status_the_executions_feed_already_told_spends_no_rest_call() {
        let shutdown = CancellationToken::new();
        let broker = broker_without_rest(&shutdown);
        let id = "6f1c2b1e-4c1d-4f7a-9a51-2d8e0f3b7c11";
        // Unknown to the feed: only REST can say, and REST is down.
        assert!(broker.status_of(id).await.is_err());
        // The feed reported it canceled: an order only the feed has seen
        // (another node's, on the same account) still needs REST for its
        // details (pair, type, price), so it can be adopted.
        broker.index.record_report(&report(id, "OQCLML-BW3P3-BUCMWZ", OrderStatus::Canceled));
        assert!(broker.status_of(id).await.is_err(), "looked up over REST, which is down");
        // One this broker placed is answered from the feed.
        let meta = OrderMeta {
            client_id: id.to_string(),
            symbol: Symbol::parse("BTC/USD").expect("a symbol"),
            side: Side::Buy,
            placed_micros: Some(1),
        };
        broker.index.remember("OQCLML-BW3P3-BUCMWZ", meta);
        let Ok(ReplyBody::Order(r)) = broker.status_of(id).await else { panic!("answered from the feed") };
        assert_eq!((r.status, r.venue_order_id.as_str()), (OrderStatus::Canceled, "OQCLML-BW3P3-BUCMWZ"));
        // A cancel Kraken acknowledged is reported canceled even when REST
        // cannot be asked, never as a failure.
        let other = "7a2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b";
        let Ok(ReplyBody::Order(r)) = broker.canceled_report(other).await else { panic!("canceled") };
        assert_eq!(r.status, OrderStatus::Canceled);
        shutdown.cancel();
    }

    #[test]
    fn the_engine_and_pair_status_gate_new_orders() {
        use crate::venue::kraken::pairs::PairStatus;
        let online = btc_usd();
        assert!(venue_gate(Some("online"), &online, true).is_ok());
        assert!(venue_gate(None, &online, true).is_ok());
        assert_eq!(venue_gate(Some("maintenance"), &online, true).unwrap_err().code, "venue_maintenance");
        assert_eq!(venue_gate(Some("maintenance"), &online, false).unwrap_err().code, "venue_maintenance");
        assert_eq!(venue_gate(Some("cancel_only"), &online, true).unwrap_err().code, "market_cancel_only");
        assert!(venue_gate(Some("cancel_only"), &online, false).is_ok(), "cancels go through");
        assert_eq!(venue_gate(Some("post_only"), &online, true).unwrap_err().code, "market_post_only");
        let pair_cancel_only = PairInfo { status: PairStatus::CancelOnly, ..btc_usd() };
        assert_eq!(venue_gate(Some("online"), &pair_cancel_only, true).unwrap_err().code, "market_cancel_only");
        let pair_post_only = PairInfo { status: PairStatus::PostOnly, ..btc_usd() };
        assert_eq!(venue_gate(None, &pair_post_only, true).unwrap_err().code, "market_post_only");
    }

    #[test]
    fn kraken_order_ids_are_told_from_lido_ids() {
        assert!(is_txid("OQCLML-BW3P3-BUCMWZ"));
        assert!(!is_txid("6f1c2b1e-4c1d-4f7a-9a51-2d8e0f3b7c11"));
        assert!(!is_txid("oqclml-bw3p3-bucmwz"));
        assert!(!is_txid("OQCLML-BW3P3"));
    }
}

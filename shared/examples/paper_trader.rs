//! An example algo: a small momentum strategy on the paper market, using
//! only the Rust client. Run it by hand against a node:
//!
//! ```text
//! LIDO_API_URL=http://127.0.0.1:7700 cargo run -p lido-shared --example paper_trader
//! ```
//!
//! or hosted by the node's TraderManager, which sets the environment and
//! supervises it:
//!
//! ```text
//! lidoctl spawn trader --name t1 --set exec=target/debug/examples/paper_trader --set customer=acme
//! ```
//!
//! Strategy: watch one symbol's quotes; after `LIDO_OPT_RUN` mid-price rises
//! in a row, buy `LIDO_OPT_QTY` with an IOC limit at the ask; after as many
//! falls, sell what it holds the same way. Every order carries a unique
//! client order id, so a retried request can never double an order.

use std::time::Duration;

use lido_shared::api::{Channel, PlaceOrder};
use lido_shared::client::agent::{exit_with_parent, Agent, AgentConfig, CommandHandler};
use lido_shared::client::{ClientError, LidoClient};
use lido_shared::cluster::ServiceKind;
use lido_shared::model::{OrderType, Quote, Side, TimeInForce};
use lido_shared::pipe::{Command, Reply, ReplyBody};
use lido_shared::ErrorDetail;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

struct Settings {
    api_url: String,
    token: Option<String>,
    /// A private CA to trust on an https:// API (a TLS node hands its own).
    ca: Option<std::path::PathBuf>,
    market: String,
    symbol: String,
    quantity: Decimal,
    run: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Ok(Self {
            api_url: var("LIDO_API_URL").unwrap_or_else(|| "http://127.0.0.1:7700".into()),
            token: var("LIDO_TOKEN"),
            ca: var(lido_shared::tls::CA_ENV).map(Into::into),
            market: var("LIDO_OPT_MARKET").unwrap_or_else(|| "paper".into()),
            symbol: var("LIDO_OPT_SYMBOL").unwrap_or_else(|| "BTC/USD".into()),
            quantity: var("LIDO_OPT_QTY").unwrap_or_else(|| "0.001".into()).parse()?,
            run: var("LIDO_OPT_RUN").unwrap_or_else(|| "3".into()).parse()?,
        })
    }
}

/// Answers the manager: `Stop` ends the strategy.
struct Control {
    shutdown: CancellationToken,
}

impl CommandHandler for Control {
    async fn handle(&self, command: Command) -> Reply {
        match command {
            Command::Stop => {
                self.shutdown.cancel();
                Reply::Ok(ReplyBody::Done)
            }
            other => Reply::Err(ErrorDetail::new("unsupported", format!("a trader does not handle {other:?}"))),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("info").init();
    let settings = Settings::from_env()?;
    let shutdown = CancellationToken::new();

    // Hosted by a TraderManager: check in like any service.
    let agent = match (std::env::var("LIDO_SERVICE_NAME"), std::env::var("LIDO_MANAGER_URL")) {
        (Ok(name), Ok(manager)) => {
            if std::env::var("LIDO_EXIT_WITH_PARENT").is_ok() {
                exit_with_parent(shutdown.clone());
            }
            let kind_type = std::env::var("LIDO_SERVICE_TYPE").unwrap_or_else(|_| "paper_trader".into());
            let config = AgentConfig::new(name, ServiceKind::Trader, kind_type, manager);
            let (_events, events_rx) = tokio::sync::mpsc::channel(16);
            let control = std::sync::Arc::new(Control { shutdown: shutdown.clone() });
            Some((Agent::start(config, control, events_rx, shutdown.clone()).await?, _events))
        }
        _ => None,
    };

    let mut client = LidoClient::with_ca(settings.api_url.clone(), settings.ca.as_deref())?;
    if let Some(token) = &settings.token {
        client = client.with_token(token.clone());
    }
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = trade(&client, &settings) => r?,
        _ = tokio::signal::ctrl_c() => shutdown.cancel(),
    }
    shutdown.cancel();
    if let Some((agent, _)) = agent {
        let _ = agent.wait().await;
    }
    tracing::info!("paper trader stopped");
    Ok(())
}

/// Trades until stopped; a lost stream or a market not ready yet is retried
/// with backoff, as an algo should.
async fn trade(client: &LidoClient, s: &Settings) -> anyhow::Result<()> {
    let run_id = chrono::Utc::now().timestamp_millis();
    let mut state = Strategy { run_id, ..Strategy::default() };
    let mut delay = Duration::from_millis(200);
    loop {
        match trade_once(client, s, &mut state).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "trading interrupted");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[derive(Default)]
struct Strategy {
    run_id: i64,
    last_mid: Option<Decimal>,
    streak: i64,
    held: Decimal,
    orders: u64,
}

async fn trade_once(client: &LidoClient, s: &Settings, st: &mut Strategy) -> Result<(), ClientError> {
    let mut stream = client.stream().await?;
    stream.subscribe(Channel::Quotes, &s.market, Some(&s.symbol)).await?;
    tracing::info!(market = %s.market, symbol = %s.symbol, "trading");
    loop {
        let ev = match stream.next_event(Duration::from_secs(30)).await {
            Ok(ev) => ev,
            Err(ClientError::Timeout(_)) => continue,
            Err(e) => return Err(e),
        };
        if ev.gap.is_some() {
            st.last_mid = None;
            st.streak = 0;
            continue;
        }
        let q: Quote = ev.decode().map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mid = (q.bid + q.ask) / Decimal::TWO;
        if let Some(prev) = st.last_mid {
            st.streak = match mid.cmp(&prev) {
                std::cmp::Ordering::Greater => st.streak.max(0) + 1,
                std::cmp::Ordering::Less => st.streak.min(0) - 1,
                std::cmp::Ordering::Equal => st.streak,
            };
        }
        st.last_mid = Some(mid);
        let (side, price, qty) = if st.streak >= s.run as i64 {
            (Side::Buy, q.ask, s.quantity)
        } else if st.streak <= -(s.run as i64) && st.held > Decimal::ZERO {
            (Side::Sell, q.bid, st.held)
        } else {
            continue;
        };
        st.streak = 0;
        st.orders += 1;
        let order = PlaceOrder {
            market: s.market.clone(),
            symbol: s.symbol.clone(),
            side,
            order_type: OrderType::Limit,
            quantity: qty,
            limit_price: Some(price),
            time_in_force: TimeInForce::Ioc,
            client_order_id: Some(format!("pt-{}-{}", st.run_id, st.orders)),
        };
        match client.place_order(&order).await {
            Ok(placed) => {
                let o = placed.order;
                match side {
                    Side::Buy => st.held += o.filled_quantity,
                    Side::Sell => st.held -= o.filled_quantity,
                }
                tracing::info!(?side, %price, status = %o.status, filled = %o.filled_quantity, held = %st.held, "order");
            }
            Err(e) => tracing::warn!(error = %e, "order refused"),
        }
    }
}

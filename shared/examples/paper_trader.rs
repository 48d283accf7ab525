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
            other => Reply::Err(ErrorDetail::new(
                "unsupported",
                format!("a trader does not handle {other:?}"),
            )),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("info")
        .init();
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
            let control = std::sync::Arc::new(Control {
                shutdown: shutdown.clone(),
            });
            Some((
                Agent::start(config, control, events_rx, shutdown.clone()).await?,
                _events,
            ))
        }
        _ => None,
    };

    let mut client = LidoClient::new(settings.api_url.clone())?;
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

async fn trade(client: &LidoClient, s: &Settings) -> anyhow::Result<()> {
    let run_id = chrono::Utc::now().timestamp_millis();
    let mut stream = client.stream().await?;
    stream.subscribe(Channel::Quotes, &s.market, Some(&s.symbol)).await?;
    tracing::info!(market = %s.market, symbol = %s.symbol, "trading");
    let mut last_mid: Option<Decimal> = None;
    let mut streak: i64 = 0;
    let mut held = Decimal::ZERO;
    let mut n = 0u64;
    loop {
        let ev = match stream.next_event(Duration::from_secs(30)).await {
            Ok(ev) => ev,
            Err(ClientError::Timeout(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        if ev.gap.is_some() {
            last_mid = None;
            streak = 0;
            continue;
        }
        let q: Quote = ev.decode()?;
        let mid = (q.bid + q.ask) / Decimal::TWO;
        if let Some(prev) = last_mid {
            streak = match mid.cmp(&prev) {
                std::cmp::Ordering::Greater => streak.max(0) + 1,
                std::cmp::Ordering::Less => streak.min(0) - 1,
                std::cmp::Ordering::Equal => streak,
            };
        }
        last_mid = Some(mid);
        let (side, price, qty) = if streak >= s.run as i64 {
            (Side::Buy, q.ask, s.quantity)
        } else if streak <= -(s.run as i64) && held > Decimal::ZERO {
            (Side::Sell, q.bid, held)
        } else {
            continue;
        };
        streak = 0;
        n += 1;
        let order = PlaceOrder {
            market: s.market.clone(),
            symbol: s.symbol.clone(),
            side,
            order_type: OrderType::Limit,
            quantity: qty,
            limit_price: Some(price),
            time_in_force: TimeInForce::Ioc,
            client_order_id: Some(format!("pt-{run_id}-{n}")),
        };
        match client.place_order(&order).await {
            Ok(placed) => {
                let o = placed.order;
                match side {
                    Side::Buy => held += o.filled_quantity,
                    Side::Sell => held -= o.filled_quantity,
                }
                tracing::info!(?side, %price, status = %o.status, filled = %o.filled_quantity, %held, "order");
            }
            Err(e) => tracing::warn!(error = %e, "order refused"),
        }
    }
}

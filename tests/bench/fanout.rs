//! Market-data fan-out: the Kraken fake's BTC/USD ticker, at a fixed
//! offered rate, fanned out to N WebSocket subscribers living in another
//! process (`lido-bench subscribe`), through lidod (kraken broker →
//! market manager → `/v1/stream`) and through the floor: a bare
//! [`Reference`] server (tokio broadcast + tokio-tungstenite) fed by the
//! same venue socket.
//!
//! Both stamp a quote with the wall clock when its venue frame arrives
//! (lidod's broker in `Quote::ts`, the reference alike); a subscriber
//! measures now − `ts`. Sender and subscribers share this machine's clock.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use lido_shared::api::{Channel, StreamEvent};
use lido_shared::cluster::RunMode;
use lido_shared::model::Symbol;
use lido_tests::kraken_fake::{FakeConfig, FakeKraken};
use lidod::venue::kraken::messages::{parse_ws, WsMessage};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::stats::Percentiles;

/// What one subscriber process saw, over all its connections.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    pub connections: usize,
    pub messages: u64,
    pub seconds: f64,
    /// Gap markers, sequence holes and conflated quotes: messages a
    /// subscriber never got one by one.
    pub drops: u64,
    pub latency: Percentiles,
}

impl Delivery {
    pub fn per_second(&self) -> f64 {
        self.messages as f64 / self.seconds.max(f64::EPSILON)
    }
}

/// One fan-out measurement of lidod and the reference at one size.
pub struct FanOut {
    pub subscribers: usize,
    pub lidod: Delivery,
    pub reference: Delivery,
    /// lidod's RSS growth per subscription (bytes).
    pub rss_per_subscription: Option<u64>,
}

/// `lido-bench subscribe …`: the subscriber process.
#[derive(clap::Args, Debug)]
pub struct SubscribeArgs {
    /// `ws://…/v1/stream` of lidod, or the reference server's URL.
    #[arg(long)]
    url: String,
    /// The algo session (lidod); none for the reference.
    #[arg(long)]
    token: Option<String>,
    #[arg(long)]
    connections: usize,
    /// Seconds measured, after `warmup` unmeasured ones.
    #[arg(long)]
    seconds: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

/// A fake whose BTC/USD ticker goes out `rate` times a second.
pub fn fake_config(rate: u32) -> FakeConfig {
    FakeConfig { tick: Duration::from_secs_f64(1.0 / f64::from(rate)), ..FakeConfig::default() }
}

/// lidod, then the reference, at each size in `sizes`, at `rate` msgs/s.
pub async fn run(lidod: &crate::Lidod, rate: u32, sizes: &[usize], seconds: f64) -> anyhow::Result<Vec<FanOut>> {
    let mut results = Vec::new();
    for &subscribers in sizes {
        let (lidod_delivery, rss) = through_lidod(lidod, rate, subscribers, seconds).await?;
        let reference = through_reference(rate, subscribers, seconds).await?;
        results.push(FanOut { subscribers, lidod: lidod_delivery, reference, rss_per_subscription: rss });
    }
    Ok(results)
}

/// Offered rates tried for the highest rate held, lowest first; the
/// fake's ticker interval is whole milliseconds, so 1,000 is its ceiling.
pub const RATE_STEPS: [u32; 5] = [100, 200, 400, 800, 1000];

/// The median fan-out latency a step may have to count as held. A server
/// that keeps up has a steady latency; one falling behind sees its lag grow
/// through the window, and its median with it, even before a buffer
/// overflows into a drop.
pub const KEPT_UP_P50: Duration = Duration::from_millis(100);

/// Each server's steps up [`RATE_STEPS`] at one size, stopping at its first
/// step not held (see [`MaxRate::holds`]).
pub struct MaxRate {
    pub subscribers: usize,
    pub lidod: Vec<(u32, Delivery)>,
    pub reference: Vec<(u32, Delivery)>,
}

impl MaxRate {
    /// Whether a step held its rate: no drop (a gap marker, a sequence hole
    /// or a conflated quote) and the median subscriber within
    /// [`KEPT_UP_P50`] of the venue.
    pub fn holds(d: &Delivery) -> bool {
        d.drops == 0 && d.messages > 0 && d.latency.p50 <= KEPT_UP_P50
    }

    /// The highest rate a server's steps held, and whether that was the
    /// last step tried (so the server may hold more).
    pub fn held(steps: &[(u32, Delivery)]) -> (Option<u32>, bool) {
        let held = steps.iter().take_while(|(_, d)| Self::holds(d)).last().map(|(rate, _)| *rate);
        (held, steps.iter().all(|(_, d)| Self::holds(d)))
    }
}

/// The highest rate held, for lidod and the reference, with `subscribers`
/// subscribers (bounded by [`RATE_STEPS`]).
pub async fn max_rate(lidod: &crate::Lidod, subscribers: usize, seconds: f64) -> anyhow::Result<MaxRate> {
    let mut result = MaxRate { subscribers, lidod: Vec::new(), reference: Vec::new() };
    for rate in RATE_STEPS {
        let delivery = through_lidod(lidod, rate, subscribers, seconds).await?.0;
        let held = MaxRate::holds(&delivery);
        result.lidod.push((rate, delivery));
        if !held {
            break;
        }
    }
    for rate in RATE_STEPS {
        let delivery = through_reference(rate, subscribers, seconds).await?;
        let held = MaxRate::holds(&delivery);
        result.reference.push((rate, delivery));
        if !held {
            break;
        }
    }
    Ok(result)
}

/// `subscribers` subscribers of lidod fed at `rate`; with lidod's RSS
/// growth per subscription.
async fn through_lidod(
    lidod: &crate::Lidod,
    rate: u32,
    subscribers: usize,
    seconds: f64,
) -> anyhow::Result<(Delivery, Option<u64>)> {
    let fake = FakeKraken::start(fake_config(rate)).await;
    let daemon = lidod.with_kraken(&fake.url, RunMode::Process, &[], "")?;
    let session = daemon.daemon.client().open_session("bench-subscribers").await?;
    let url = format!("{}/v1/stream", session.market_manager_url.replacen("http://", "ws://", 1));
    daemon.algo().await?;
    let pid = daemon.daemon.pid();
    let before = crate::daemon::rss_bytes(pid)?;
    let mut on_ready = |_: ()| {
        let after = crate::daemon::rss_bytes(pid).unwrap_or(before);
        Some(after.saturating_sub(before) / subscribers as u64)
    };
    subscribe_from_child(&url, Some(&session.session_id), subscribers, seconds, &mut on_ready).await
}

/// `subscribers` subscribers of the bare reference fed at `rate`.
async fn through_reference(rate: u32, subscribers: usize, seconds: f64) -> anyhow::Result<Delivery> {
    let fake = FakeKraken::start(fake_config(rate)).await;
    let reference = Reference::start(&fake.ws_url()).await?;
    Ok(subscribe_from_child(&reference.url, None, subscribers, seconds, &mut |_| None).await?.0)
}

/// Runs `lido-bench subscribe` and reads its result; `on_ready` runs once
/// every connection is subscribed (to read lidod's memory).
async fn subscribe_from_child(
    url: &str,
    token: Option<&str>,
    connections: usize,
    seconds: f64,
    on_ready: &mut dyn FnMut(()) -> Option<u64>,
) -> anyhow::Result<(Delivery, Option<u64>)> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["subscribe", "--url", url, "--connections", &connections.to_string()]);
    cmd.args(["--seconds", &seconds.to_string()]);
    if let Some(token) = token {
        cmd.args(["--token", token]);
    }
    let mut child = cmd.stdout(Stdio::piped()).kill_on_drop(true).spawn().context("starting the subscriber")?;
    let mut lines = BufReader::new(child.stdout.take().context("subscriber stdout")?).lines();
    let mut ready = None;
    while let Some(line) = lines.next_line().await? {
        if line == "ready" {
            ready = on_ready(());
        } else if let Some(json) = line.strip_prefix("result ") {
            child.wait().await?;
            return Ok((serde_json::from_str(json)?, ready));
        }
    }
    bail!("the subscriber process ended without a result ({})", child.wait().await?)
}

/// The subscriber process: opens every connection, says `ready`, counts
/// for `warmup + seconds`, prints `result {json}`.
pub async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    let mut sockets = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let mut request = args.url.as_str().into_client_request()?;
        if let Some(token) = &args.token {
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.context("connecting a subscriber")?;
        if args.token.is_some() {
            let sub = r#"{"op":"subscribe","channel":"quotes","market":"crypto","symbol":"BTC/USD"}"#;
            ws.send(Message::text(sub)).await?;
        }
        sockets.push(ws);
    }
    println!("ready");
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let until = measure_from + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = sockets.into_iter().map(|ws| tokio::spawn(count(ws, measure_from, until))).collect();
    let mut total = Delivery { connections: args.connections, seconds: args.seconds, ..Delivery::default() };
    let mut latencies = Vec::new();
    for task in tasks {
        let (messages, drops, mut lat) = task.await?;
        total.messages += messages;
        total.drops += drops;
        latencies.append(&mut lat);
    }
    total.latency = Percentiles::of(latencies);
    println!("result {}", serde_json::to_string(&total)?);
    Ok(())
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One connection: messages and drops in the window, latencies.
async fn count(mut ws: Socket, from: Instant, until: Instant) -> (u64, u64, Vec<Duration>) {
    let (mut messages, mut drops, mut latencies, mut last_seq) = (0, 0, Vec::new(), None::<u64>);
    let deadline = tokio::time::Instant::from_std(until);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, ws.next()).await {
        let Message::Text(text) = frame else { continue };
        let Ok(event) = serde_json::from_str::<StreamEvent>(text.as_str()) else { continue };
        let now = Utc::now();
        let measured = Instant::now() >= from;
        let hole = last_seq.is_some_and(|s| event.seq != s + 1);
        last_seq = Some(event.seq);
        if measured {
            drops += u64::from(hole || event.gap.is_some()) + event.conflated.unwrap_or(0);
        }
        let ts = event.data.get("ts").and_then(|t| t.as_str()).and_then(|t| t.parse::<DateTime<Utc>>().ok());
        if let (true, Some(ts)) = (measured, ts) {
            messages += 1;
            latencies.push((now - ts).to_std().unwrap_or_default());
        }
    }
    (messages, drops, latencies)
}

/// The floor: one venue socket, each ticker stamped and serialized once,
/// a tokio broadcast channel, and a task per subscriber writing frames.
pub struct Reference {
    pub url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Reference {
    pub async fn start(venue_ws: &str) -> anyhow::Result<Self> {
        let (tx, _) = broadcast::channel::<Utf8Bytes>(1024);
        let (mut venue, _) = tokio_tungstenite::connect_async(venue_ws).await.context("connecting to the fake")?;
        let sub = r#"{"method":"subscribe","params":{"channel":"ticker","symbol":["BTC/USD"]}}"#;
        venue.send(Message::text(sub)).await?;
        let feed_tx = tx.clone();
        let feed = tokio::spawn(async move {
            let symbol = Symbol::parse("BTC/USD").expect("a symbol");
            let mut seq = 0;
            while let Some(Ok(Message::Text(text))) = venue.next().await {
                let Ok(WsMessage::Ticker { data, .. }) = parse_ws(text.as_str()) else { continue };
                for ticker in data {
                    seq += 1;
                    let event = StreamEvent {
                        channel: Channel::Quotes,
                        market: "crypto".into(),
                        symbol: Some("BTC/USD".into()),
                        seq,
                        data: serde_json::to_value(ticker.to_quote(symbol.clone(), Utc::now())).unwrap_or_default(),
                        gap: None,
                        conflated: None,
                    };
                    let _ = feed_tx.send(serde_json::to_string(&event).unwrap_or_default().into());
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut rx = tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                    loop {
                        match rx.recv().await {
                            Ok(frame) => {
                                if ws.send(Message::Text(frame)).await.is_err() {
                                    return;
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                });
            }
        });
        Ok(Self { url, tasks: vec![feed, server] })
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: u32, p50_ms: u64, drops: u64) -> (u32, Delivery) {
        let latency = Percentiles { n: 10, p50: Duration::from_millis(p50_ms), ..Percentiles::default() };
        (rate, Delivery { connections: 10, messages: 10, seconds: 1.0, drops, latency })
    }

    #[test]
    fn a_rate_is_held_without_drops_and_with_the_median_subscriber_keeping_up() {
        let steps = [step(100, 10, 0), step(200, 90, 0), step(400, 600, 0)];
        assert_eq!(MaxRate::held(&steps), (Some(200), false), "400 fell behind without dropping");
        assert_eq!(MaxRate::held(&[step(100, 10, 0), step(200, 10, 3)]), (Some(100), false), "a drop");
        assert_eq!(MaxRate::held(&steps[..2]), (Some(200), true), "every step held");
        assert_eq!(MaxRate::held(&[step(100, 150, 0)]), (None, false));
    }
}

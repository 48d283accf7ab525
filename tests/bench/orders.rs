//! Order round trip: an algo places a resting limit order on BTC/USD and
//! waits for the venue's acknowledgement, against the Kraken fake: through
//! lidod's REST API (lidod → kraken broker → fake) and its WebSocket entry
//! (`place_order` on `/v1/stream`), straight to the fake (the floor), and
//! through a bare forwarding proxy in its own process ([`crate::proxy`]:
//! HTTP or tokio-tungstenite in, reqwest keep-alive out, no logic), and
//! through the same proxy journaling each call durably before it forwards
//! it (the floor for anything that keeps DESIGN.md's safety rule). The
//! fakes run in a venue process of their own ([`crate::venue`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use lido_shared::api::PlaceOrder;
use lido_shared::client::Placed;
use lido_shared::cluster::RunMode;
use lido_shared::model::{OrderStatus, OrderType, Side, TimeInForce};
use lido_tests::kraken_fake::FakeConfig;
use lidod::venue::kraken::messages::AddOrderRequest;
use lidod::venue::kraken::sign::Signer;
use rust_decimal::Decimal;
use tokio_tungstenite::tungstenite::Message;

use crate::proxy::{ProxyProcess, WsCall};
use crate::stats::Percentiles;
use crate::venue::VenueProcess;

/// The order every path places: 0.0001 BTC at 10,000 USD, far below the
/// fake's market, so it rests and the acknowledgement carries no fill.
const PRICE: i64 = 10_000;

pub struct RoundTrips {
    pub lidod_rest: Percentiles,
    /// The same, with `journal_synchronous = "normal"`: the intent is not
    /// fsynced either, so the difference is what the one fsync costs.
    pub lidod_rest_normal: Percentiles,
    /// The same as `lidod_rest`, with the broker run as a task inside
    /// lidod (`mode = "task"`): the pipe in memory, no process between.
    pub lidod_rest_task: Percentiles,
    /// Through lidod, placed on `/v1/stream` instead of REST.
    pub lidod_ws: Percentiles,
    pub direct: Percentiles,
    /// Through the proxy process's HTTP entry.
    pub proxy: Percentiles,
    /// Through the proxy process's WebSocket entry.
    pub proxy_ws: Percentiles,
    /// Through the journaling proxy's HTTP entry: one fsynced SQLite
    /// insert per call before it is forwarded.
    pub proxy_journaled: Percentiles,
    /// Where the REST paths' time goes: full, normal, then task.
    pub breakdown: [Breakdown; 3],
}

/// Means over the measured orders of one lidod REST path, from the
/// client's clock and the daemon's own histograms (`/metrics`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Breakdown {
    /// The algo's round trip.
    pub client: Duration,
    /// `lido_http_request_seconds{method="POST",route="/v1/orders"}`: the
    /// request inside lidod, from its route to the answer's head.
    pub http: Duration,
    /// `lido_order_round_trip_seconds`: the MarketManager's place, from
    /// the checked request to the applied answer (journal, route, broker).
    pub place: Duration,
    /// `lido_broker_request_seconds{command="place_order"}`: the pipe both
    /// ways, the broker process and its venue call.
    pub broker: Duration,
    /// `lido_journal_commit_seconds{kind="intent"}`: the new order's
    /// journal commit, its fsync included (none with `normal`).
    pub intent: Duration,
    /// The direct path's mean in the same rounds (the venue alone).
    pub venue: Duration,
}

/// A histogram's running sum and count, summed over its label sets.
#[derive(Debug, Default, Clone, Copy)]
struct SumCount(f64, f64);

impl SumCount {
    fn mean_since(self, earlier: Self) -> Duration {
        let n = self.1 - earlier.1;
        Duration::from_secs_f64(if n > 0.0 { (self.0 - earlier.0) / n } else { 0.0 })
    }
}

/// The order request, place, broker-call and intent-commit histograms of a
/// daemon, read now.
async fn histograms(http: &reqwest::Client, url: &str) -> anyhow::Result<[SumCount; 4]> {
    let text = http.get(format!("{url}/metrics")).send().await?.error_for_status()?.text().await?;
    let mut out = [SumCount::default(); 4];
    // `name{labels} value` lines; comments and other series are skipped.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let slot = match name.rsplit_once('_') {
            Some(("lido_http_request_seconds", part))
                if labels.contains("method=\"POST\"") && labels.contains("route=\"/v1/orders\"") =>
            {
                (&mut out[0], part)
            }
            Some(("lido_order_round_trip_seconds", part)) => (&mut out[1], part),
            Some(("lido_broker_request_seconds", part)) if labels.contains("command=\"place_order\"") => {
                (&mut out[2], part)
            }
            Some(("lido_journal_commit_seconds", part)) if labels.contains("kind=\"intent\"") => (&mut out[3], part),
            _ => continue,
        };
        let value: f64 = value.parse().with_context(|| format!("a /metrics line: {line}"))?;
        match slot {
            (sc, "sum") => sc.0 += value,
            (sc, "count") => sc.1 += value,
            _ => {}
        }
    }
    Ok(out)
}

/// A fake with balances no benchmark run exhausts.
pub fn rich_fake_config() -> FakeConfig {
    let mut config = FakeConfig::default();
    config.balances.insert("ZUSD".into(), Decimal::from(1_000_000_000u64));
    config
}

/// Time between one round of the paths and the next. Kraken counts
/// every AddOrder on a per-pair trading counter (a Pro account: 180 points,
/// decaying 3.75 a second) and the kraken broker holds an order back rather
/// than break that budget, as an algo talking to Kraken itself must. Paced
/// at 300 ms the counter stays near zero, so the figures are the latency of
/// each path, not the venue's budget (unpaced, a burst of 200 orders waits
/// about a second each in the broker: that is the rate limit, by design).
const PACE: Duration = Duration::from_millis(300);

/// `n` rounds after `warmup` unmeasured ones. Each round places one order
/// through each lidod (each with its own fake: brokers and the direct
/// client keep separate nonces and trading budgets), one straight to the
/// fifth fake and one through each proxy entry to it, back to back and
/// each first in turn, so drift in the machine's load hits all paths alike.
pub async fn run(lidod: &crate::Lidod, n: usize, warmup: usize) -> anyhow::Result<RoundTrips> {
    let mut venue = VenueProcess::start(5).await?;
    let [rest_fake, normal_fake, task_fake, ws_fake, fake] =
        <[String; 5]>::try_from(std::mem::take(&mut venue.urls))
            .map_err(|urls| anyhow::anyhow!("the venue process gave {} fakes", urls.len()))?;
    let daemon = lidod.with_kraken(&rest_fake, RunMode::Process, &[], "")?;
    let algo = daemon.algo().await?;
    let normal_daemon = lidod.with_kraken(&normal_fake, RunMode::Process, &[], "journal_synchronous = \"normal\"")?;
    let normal_algo = normal_daemon.algo().await?;
    let task_daemon = lidod.with_kraken(&task_fake, RunMode::Task, &[], "")?;
    let task_algo = task_daemon.algo().await?;
    let ws_daemon = lidod.with_kraken(&ws_fake, RunMode::Process, &[], "")?;
    let mut ws_algo = ws_daemon.algo().await?.stream().await?;

    let proxy = ProxyProcess::start(&fake, None).await?;
    let journal_dir = tempfile::tempdir()?;
    let journaling_proxy = ProxyProcess::start(&fake, Some(journal_dir.path())).await?;
    let direct_client = DirectClient::new(&fake, &rich_fake_config(), "d")?;
    // Same key and nonce counter, their own client order ids.
    let proxied_client = DirectClient { base: proxy.http_url.clone(), tag: "p", ..direct_client.clone() };
    let journaled_client = DirectClient { base: journaling_proxy.http_url.clone(), tag: "j", ..direct_client.clone() };
    let mut ws_proxied =
        WsProxyClient::connect(&proxy.ws_url, DirectClient { tag: "w", ..direct_client.clone() }).await?;

    const PATHS: usize = 8;
    let mut samples: [Vec<Duration>; PATHS] = std::array::from_fn(|_| Vec::with_capacity(n));
    let http = reqwest::Client::new();
    let rest_urls = [daemon.daemon.url.clone(), normal_daemon.daemon.url.clone(), task_daemon.daemon.url.clone()];
    let mut at_warm = [[SumCount::default(); 4]; 3];
    for i in 0..warmup + n {
        if i == warmup {
            for (at, url) in at_warm.iter_mut().zip(&rest_urls) {
                *at = histograms(&http, url).await?;
            }
        }
        let next_round = tokio::time::sleep(PACE);
        let mut round = [Duration::ZERO; PATHS];
        // Each path goes first in turn: the first call after the pause
        // wakes parked threads, and no path should always pay for that.
        for k in 0..PATHS {
            let path = (i + k) % PATHS;
            round[path] = match path {
                0 => timed(async { accepted(algo.place_order(&order(i)).await?) }).await?,
                1 => timed(async { accepted(normal_algo.place_order(&order(i)).await?) }).await?,
                2 => timed(async { accepted(task_algo.place_order(&order(i)).await?) }).await?,
                3 => timed(async { accepted(ws_algo.place_order(&order(i)).await?) }).await?,
                4 => timed(direct_client.add_order(i)).await?,
                5 => timed(proxied_client.add_order(i)).await?,
                6 => timed(ws_proxied.add_order(i)).await?,
                _ => timed(journaled_client.add_order(i)).await?,
            };
        }
        if i >= warmup {
            for (s, d) in samples.iter_mut().zip(round) {
                s.push(d);
            }
        }
        next_round.await;
    }
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / u32::try_from(v.len().max(1)).unwrap_or(u32::MAX);
    let mut breakdown = [Breakdown::default(); 3];
    for (k, url) in rest_urls.iter().enumerate() {
        let [request, place, broker, intent] = histograms(&http, url).await?;
        breakdown[k] = Breakdown {
            client: mean(&samples[k]),
            http: request.mean_since(at_warm[k][0]),
            place: place.mean_since(at_warm[k][1]),
            broker: broker.mean_since(at_warm[k][2]),
            intent: intent.mean_since(at_warm[k][3]),
            venue: mean(&samples[4]),
        };
    }
    drop((daemon, normal_daemon, task_daemon, ws_daemon, proxy, journaling_proxy, venue));
    let [lidod_rest, lidod_rest_normal, lidod_rest_task, lidod_ws, direct, proxy, proxy_ws, proxy_journaled] =
        samples.map(Percentiles::of);
    Ok(RoundTrips {
        lidod_rest,
        lidod_rest_normal,
        lidod_rest_task,
        lidod_ws,
        direct,
        proxy,
        proxy_ws,
        proxy_journaled,
        breakdown,
    })
}

async fn timed<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<Duration> {
    let started = Instant::now();
    f.await?;
    Ok(started.elapsed())
}

/// Round `i`'s order through lidod: a resting limit buy.
fn order(i: usize) -> PlaceOrder {
    PlaceOrder {
        market: "crypto".into(),
        symbol: "BTC/USD".into(),
        side: Side::Buy,
        order_type: OrderType::Limit,
        quantity: Decimal::new(1, 4),
        limit_price: Some(Decimal::from(PRICE)),
        time_in_force: TimeInForce::Gtc,
        client_order_id: Some(format!("b-{i}")),
    }
}

/// Checks lidod's answer is the venue's acknowledgement of a new order.
fn accepted(placed: Placed) -> anyhow::Result<()> {
    if !placed.created || placed.order.status != OrderStatus::Accepted {
        bail!("lidod answered {:?} to a resting limit order: {:?}", placed.order.status, placed.order.reason);
    }
    Ok(())
}

/// An algo speaking Kraken's REST API itself: signed AddOrder, keep-alive.
#[derive(Clone)]
pub struct DirectClient {
    base: String,
    key: String,
    signer: Arc<Signer>,
    http: reqwest::Client,
    nonce: Arc<AtomicU64>,
    /// Prefix of the `cl_ord_id`s, unique per client.
    tag: &'static str,
}

impl DirectClient {
    pub fn new(base: &str, config: &FakeConfig, tag: &'static str) -> anyhow::Result<Self> {
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64;
        Ok(Self {
            base: base.to_string(),
            key: config.api_key.clone(),
            signer: Arc::new(Signer::new(&config.api_secret).context("the fake's secret")?),
            http: reqwest::Client::new(),
            nonce: Arc::new(AtomicU64::new(start)),
            tag,
        })
    }

    /// Round `i`'s AddOrder, signed: Kraken's method, key, signature, body.
    fn signed_add_order(&self, i: usize) -> anyhow::Result<WsCall> {
        let request = AddOrderRequest {
            pair: "XBTUSD".into(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            volume: Decimal::new(1, 4),
            price: Some(Decimal::from(PRICE)),
            time_in_force: TimeInForce::Gtc,
            post_only: false,
            cl_ord_id: Some(format!("{}-{i}", self.tag)),
            validate: false,
        };
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let body = request.post_data(nonce).map_err(anyhow::Error::msg)?;
        let api_sign = self.signer.sign("/0/private/AddOrder", nonce, &body);
        Ok(WsCall { method: "AddOrder".into(), api_key: self.key.clone(), api_sign, body })
    }

    /// AddOrder over HTTP, checked for Kraken's empty `error` list.
    pub async fn add_order(&self, i: usize) -> anyhow::Result<()> {
        let call = self.signed_add_order(i)?;
        let answer: serde_json::Value = self
            .http
            .post(format!("{}/0/private/{}", self.base, call.method))
            .header("API-Key", call.api_key)
            .header("API-Sign", call.api_sign)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(call.body)
            .send()
            .await?
            .json()
            .await?;
        no_error(&answer)
    }
}

fn no_error(answer: &serde_json::Value) -> anyhow::Result<()> {
    match answer["error"].as_array() {
        Some(errors) if errors.is_empty() => Ok(()),
        _ => bail!("the fake refused AddOrder: {answer}"),
    }
}

/// The same algo's calls through the proxy's WebSocket entry: one signed
/// call per frame, the venue's answer as the reply frame.
pub struct WsProxyClient {
    signer: DirectClient,
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl WsProxyClient {
    pub async fn connect(url: &str, signer: DirectClient) -> anyhow::Result<Self> {
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        Ok(Self { signer, socket })
    }

    pub async fn add_order(&mut self, i: usize) -> anyhow::Result<()> {
        let call = self.signer.signed_add_order(i)?;
        self.socket.send(Message::text(serde_json::to_string(&call)?)).await?;
        match self.socket.next().await {
            Some(Ok(Message::Text(text))) => no_error(&serde_json::from_str(text.as_str())?),
            other => bail!("the proxy's socket answered {other:?}"),
        }
    }
}

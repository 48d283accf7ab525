//! Order round trip: an algo places a resting limit order on BTC/USD and
//! waits for the venue's acknowledgement, three ways, against the Kraken
//! fake: through lidod's REST API (lidod → kraken broker → fake), straight
//! to the fake (the floor), and through a bare forwarding proxy (axum in,
//! reqwest keep-alive out, no logic), and through lidod's WebSocket entry
//! (`place_order` on `/v1/stream`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use lido_shared::api::PlaceOrder;
use lido_shared::client::Placed;
use lido_shared::model::{OrderStatus, OrderType, Side, TimeInForce};
use lido_tests::kraken_fake::{FakeConfig, FakeKraken};
use lidod::venue::kraken::messages::AddOrderRequest;
use lidod::venue::kraken::sign::Signer;
use rust_decimal::Decimal;

use crate::stats::Percentiles;

/// The order every path places: 0.0001 BTC at 10,000 USD, far below the
/// fake's market, so it rests and the acknowledgement carries no fill.
const PRICE: i64 = 10_000;

pub struct RoundTrips {
    pub lidod_rest: Percentiles,
    /// The same, with `journal_synchronous = "normal"`: the intent is not
    /// fsynced either, so the difference is what the one fsync costs.
    pub lidod_rest_normal: Percentiles,
    /// Through lidod, placed on `/v1/stream` instead of REST.
    pub lidod_ws: Percentiles,
    pub direct: Percentiles,
    pub proxy: Percentiles,
}

/// A fake with balances no benchmark run exhausts.
pub fn rich_fake_config() -> FakeConfig {
    let mut config = FakeConfig::default();
    config.balances.insert("ZUSD".into(), Decimal::from(1_000_000_000u64));
    config
}

/// Time between one round of the three paths and the next. Kraken counts
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
/// other fake and one through the proxy to it, back to back, so drift in
/// the machine's load hits all paths alike.
pub async fn run(lidod: &crate::Lidod, n: usize, warmup: usize) -> anyhow::Result<RoundTrips> {
    let lidod_fake = FakeKraken::start(rich_fake_config()).await;
    let daemon = lidod.with_kraken(&lidod_fake, &[], "")?;
    let algo = daemon.algo().await?;
    let normal_fake = FakeKraken::start(rich_fake_config()).await;
    let normal_daemon = lidod.with_kraken(&normal_fake, &[], "journal_synchronous = \"normal\"")?;
    let normal_algo = normal_daemon.algo().await?;
    let ws_fake = FakeKraken::start(rich_fake_config()).await;
    let ws_daemon = lidod.with_kraken(&ws_fake, &[], "")?;
    let mut ws_algo = ws_daemon.algo().await?.stream().await?;

    let fake = FakeKraken::start(rich_fake_config()).await;
    let proxy = Proxy::start(&fake.url).await?;
    let direct_client = DirectClient::new(&fake.url, &rich_fake_config(), "d")?;
    // Same key and nonce counter, its own client order ids.
    let proxied_client = DirectClient { base: proxy.url.clone(), tag: "p", ..direct_client.clone() };

    let mut samples: [Vec<Duration>; 5] = std::array::from_fn(|_| Vec::with_capacity(n));
    for i in 0..warmup + n {
        let next_round = tokio::time::sleep(PACE);
        let round = [
            timed(async { accepted(algo.place_order(&order(i)).await?) }).await?,
            timed(async { accepted(normal_algo.place_order(&order(i)).await?) }).await?,
            timed(async { accepted(ws_algo.place_order(&order(i)).await?) }).await?,
            timed(direct_client.add_order(i)).await?,
            timed(proxied_client.add_order(i)).await?,
        ];
        if i >= warmup {
            for (s, d) in samples.iter_mut().zip(round) {
                s.push(d);
            }
        }
        next_round.await;
    }
    drop((daemon, normal_daemon, ws_daemon));
    let [lidod_rest, lidod_rest_normal, lidod_ws, direct, proxy] = samples.map(Percentiles::of);
    Ok(RoundTrips { lidod_rest, lidod_rest_normal, lidod_ws, direct, proxy })
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

    /// AddOrder, checked for Kraken's empty `error` list.
    pub async fn add_order(&self, i: usize) -> anyhow::Result<()> {
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
        let path = "/0/private/AddOrder";
        let answer: serde_json::Value = self
            .http
            .post(format!("{}{path}", self.base))
            .header("API-Key", &self.key)
            .header("API-Sign", self.signer.sign(path, nonce, &body))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?
            .json()
            .await?;
        match answer["error"].as_array() {
            Some(errors) if errors.is_empty() => Ok(()),
            _ => bail!("the fake refused AddOrder: {answer}"),
        }
    }
}

/// A bare forwarding proxy: every `POST /0/private/{method}` goes on to
/// the venue with its body and signing headers; the answer comes back
/// as is.
pub struct Proxy {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Upstream {
    base: Arc<str>,
    http: reqwest::Client,
}

impl Proxy {
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let state = Upstream { base: upstream.into(), http: reqwest::Client::new() };
        let app = Router::new().route("/0/private/{method}", post(forward)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, task })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    State(up): State<Upstream>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Bytes, axum::http::StatusCode> {
    let mut request = up.http.post(format!("{}/0/private/{method}", up.base)).body(body);
    for name in ["API-Key", "API-Sign", "Content-Type"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let response = request.send().await.map_err(|_| axum::http::StatusCode::BAD_GATEWAY)?;
    response.bytes().await.map_err(|_| axum::http::StatusCode::BAD_GATEWAY)
}

//! The Kraken Spot REST client: the protocol core ([`super::sign`],
//! [`super::envelope`], [`super::messages`], [`super::pairs`],
//! [`super::ratelimit`]) over HTTP.
//!
//! - Public calls are `GET {base}/0/public/<Method>?…`.
//! - Private calls are `POST {base}/0/private/<Method>` with the
//!   form-encoded body `nonce=…&…` and the headers `API-Key` and `API-Sign`
//!   (see [`super::sign`]). They go out one at a time, so their nonces reach
//!   Kraken in increasing order (across the node's broker processes on one
//!   key too: a file-backed nonce source is taken under its file lock,
//!   held until the request is sent), and each first waits on the REST call
//!   counter ([`KrakenRest::rate_limit_wait`] shows that wait for status).
//! - Every failure is a [`KrakenError`]: Kraken's own error strings typed,
//!   and transport failures with `maybe_sent` telling whether the request
//!   may have reached Kraken (a refused connection did not; a timeout after
//!   sending may have).
//!
//! The client does not retry; the broker service decides with
//! [`KrakenError::retry_advice`]. Credentials never appear in logs or
//! errors: [`Credentials`]' `Debug` is redacted.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tokio::sync::Mutex as AsyncMutex;

use super::envelope::{self, ErrorCode, KrakenError};
use super::messages::{
    AddOrderRequest, AddOrderResult, BalanceResult, CancelOrderRequest, CancelResult, ClosedOrdersResult, DepthBook,
    OhlcResult, OpenOrdersRequest, OpenOrdersResult, QueryOrdersRequest, QueryOrdersResult, QueryTradesRequest,
    QueryTradesResult, ServerTime, TickerInfo, TradesResult, WebSocketsToken,
};
use super::pairs::PairMap;
use super::ratelimit::{rest_cost, CallCounter, Limits, Tier};
use super::sign::{form_encode, NonceSource, Signer};

/// Kraken's production REST endpoint.
pub const PRODUCTION_URL: &str = "https://api.kraken.com";

/// An API key and its secret. Neither is ever printed.
#[derive(Clone)]
pub struct Credentials {
    pub key: String,
    pub secret: Signer,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials { key: <redacted>, secret: <redacted> }")
    }
}

/// How to reach Kraken.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// `https://api.kraken.com`, or a fake's `http://127.0.0.1:PORT`; no
    /// trailing slash needed.
    pub base_url: String,
    /// Limit on a whole request, sending included.
    pub timeout: Duration,
    /// Limit on establishing the connection (capped at `timeout`).
    pub connect_timeout: Duration,
    /// The account's REST call counter.
    pub limits: Limits,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            base_url: PRODUCTION_URL.to_string(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            limits: Tier::Starter.rest_limits(),
        }
    }
}

/// A Kraken REST client for one account (or none: public calls only).
#[derive(Debug)]
pub struct KrakenRest {
    http: reqwest::Client,
    base_url: String,
    credentials: Option<Credentials>,
    /// Held for the whole of a private call: nonces leave in order.
    nonces: AsyncMutex<NonceSource>,
    counter: Mutex<CallCounter>,
    /// The longest a request may take; also the longest wait for the
    /// nonce lock another broker process holds.
    timeout: Duration,
}

impl KrakenRest {
    /// A client for `config`; `credentials` `None` allows public calls only.
    pub fn new(config: RestConfig, credentials: Option<Credentials>, nonces: NonceSource) -> Result<Self, KrakenError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout.min(config.timeout))
            .user_agent(concat!("lido/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| KrakenError::Transport {
                message: format!("cannot build http client: {e}"),
                maybe_sent: false,
            })?;
        Ok(Self {
            http,
            base_url: config.base_url.trim_end_matches('/').to_string(),
            credentials,
            nonces: AsyncMutex::new(nonces),
            counter: Mutex::new(CallCounter::new(config.limits)),
            timeout: config.timeout,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// How long a private call of cost 1 would wait now for the call
    /// counter (zero when it can go at once), for status.
    pub fn rate_limit_wait(&self) -> Duration {
        self.lock_counter().cost_wait(1, Instant::now())
    }

    /// The call counter's level as a share of its maximum (0 to 1), for status.
    pub fn rate_limit_share(&self) -> f64 {
        let counter = self.lock_counter();
        counter.level(Instant::now()) / f64::from(counter.limits().max.max(1))
    }

    /// The call counter's level now, in points, for status.
    pub fn rate_limit_level(&self) -> f64 {
        self.lock_counter().level(Instant::now())
    }

    // ── public ──

    pub async fn server_time(&self) -> Result<ServerTime, KrakenError> {
        self.public("Time", &[]).await
    }

    /// All tradable pairs, by every name.
    pub async fn asset_pairs(&self) -> Result<PairMap, KrakenError> {
        let body = self.public_body("AssetPairs", &[]).await?;
        PairMap::from_body(&body)
    }

    /// The ticker of one pair (any name Kraken accepts: `XBTUSD`,
    /// `XXBTZUSD`), with the result key Kraken filed it under.
    pub async fn ticker(&self, pair: &str) -> Result<(String, TickerInfo), KrakenError> {
        let result: std::collections::BTreeMap<String, TickerInfo> = self.public("Ticker", &[("pair", pair)]).await?;
        result.into_iter().next().ok_or(KrakenError::EmptyResult)
    }

    /// The order book of one pair, `count` levels a side, with its result
    /// key.
    pub async fn depth(&self, pair: &str, count: u32) -> Result<(String, DepthBook), KrakenError> {
        let count = count.to_string();
        let result: std::collections::BTreeMap<String, DepthBook> =
            self.public("Depth", &[("pair", pair), ("count", &count)]).await?;
        result.into_iter().next().ok_or(KrakenError::EmptyResult)
    }

    /// Public trades of one pair since `since` (the `last` cursor of the
    /// previous answer, a nanosecond timestamp; `None`: the most recent).
    pub async fn trades(&self, pair: &str, since: Option<&str>) -> Result<TradesResult, KrakenError> {
        let mut query = vec![("pair", pair)];
        query.extend(since.map(|s| ("since", s)));
        self.public("Trades", &query).await
    }

    /// OHLC candles of one pair, `interval` minutes wide (1, 5, 15, 30, 60,
    /// 240, 1440, 10080, 21600), from the candle holding `since` (seconds).
    pub async fn ohlc(&self, pair: &str, interval: u32, since: Option<i64>) -> Result<OhlcResult, KrakenError> {
        let (interval, since) = (interval.to_string(), since.map(|s| s.to_string()));
        let mut query = vec![("pair", pair), ("interval", interval.as_str())];
        query.extend(since.as_deref().map(|s| ("since", s)));
        self.public("OHLC", &query).await
    }

    // ── private ──

    pub async fn balance(&self) -> Result<BalanceResult, KrakenError> {
        self.private("Balance", |nonce| Ok(vec![("nonce", nonce.to_string())])).await
    }

    pub async fn open_orders(&self, request: &OpenOrdersRequest) -> Result<OpenOrdersResult, KrakenError> {
        self.private("OpenOrders", |nonce| Ok(request.form(nonce))).await
    }

    /// Closed orders, newest first, filtered like OpenOrders (e.g. by
    /// `cl_ord_id`).
    pub async fn closed_orders(&self, request: &OpenOrdersRequest) -> Result<ClosedOrdersResult, KrakenError> {
        self.private("ClosedOrders", |nonce| Ok(request.form(nonce))).await
    }

    /// A token for the private WebSocket (`wss://ws-auth.kraken.com/v2`).
    pub async fn websockets_token(&self) -> Result<WebSocketsToken, KrakenError> {
        self.private("GetWebSocketsToken", |nonce| Ok(vec![("nonce", nonce.to_string())])).await
    }

    /// Orders by Kraken id (1 to 50 of them), open or closed, with the ids
    /// of their trades.
    pub async fn query_orders(&self, txids: &[String]) -> Result<QueryOrdersResult, KrakenError> {
        let request = QueryOrdersRequest { txids: txids.to_vec(), trades: true };
        self.private("QueryOrders", |nonce| request.form(nonce)).await
    }

    /// Trades by Kraken trade id (1 to 20 of them): price, volume, fee.
    pub async fn query_trades(&self, txids: &[String]) -> Result<QueryTradesResult, KrakenError> {
        let request = QueryTradesRequest { txids: txids.to_vec() };
        self.private("QueryTrades", |nonce| request.form(nonce)).await
    }

    /// Places an order. With `cl_ord_id` set, an outcome left unknown by a
    /// transport error can be looked up before any resend.
    pub async fn add_order(&self, request: &AddOrderRequest) -> Result<AddOrderResult, KrakenError> {
        self.private("AddOrder", |nonce| request.form(nonce)).await
    }

    /// Cancels an order by Kraken id or by client order id.
    pub async fn cancel_order(&self, request: &CancelOrderRequest) -> Result<CancelResult, KrakenError> {
        self.private("CancelOrder", |nonce| Ok(request.form(nonce))).await
    }

    /// Cancels every open order of the account; `count` says how many.
    pub async fn cancel_all(&self) -> Result<CancelResult, KrakenError> {
        self.private("CancelAll", |nonce| Ok(vec![("nonce", nonce.to_string())])).await
    }

    // ── plumbing ──

    async fn public<T: DeserializeOwned>(&self, method: &str, query: &[(&str, &str)]) -> Result<T, KrakenError> {
        let body = self.public_body(method, query).await?;
        envelope::decode(&body)
    }

    async fn public_body(&self, method: &str, query: &[(&str, &str)]) -> Result<String, KrakenError> {
        let mut url = format!("{}/0/public/{method}", self.base_url);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&form_encode(query));
        }
        let response = self.http.get(&url).send().await.map_err(transport)?;
        read_body(response).await
    }

    /// Signs and sends one private call; `form` builds the fields, `nonce`
    /// first, for the nonce it is given.
    async fn private<T, F>(&self, method: &str, form: F) -> Result<T, KrakenError>
    where
        T: DeserializeOwned,
        F: FnOnce(u64) -> Result<Vec<(&'static str, String)>, String>,
    {
        let Some(credentials) = &self.credentials else {
            return Err(local_refusal(ErrorCode::InvalidKey, "EAPI:Invalid key", "no api key configured"));
        };
        let mut nonces = self.nonces.lock().await;

        let cost = rest_cost(method);
        // Other broker processes on this key take nonces from the same
        // file: hold its lock until this request is sent, so nonces reach
        // Kraken in the order they were taken. The key's REST call counter
        // lives beside it ([`SharedCounter`]), read and counted under the
        // same lock; a wait for the counter lets go of the lock meanwhile.
        let lock_wait = self.timeout;
        let shared = nonces.lock_path().map(|lock| SharedCounter::beside(&lock));
        let file_lock = loop {
            let file_lock = match nonces.lock_path() {
                Some(path) => Some(super::lock::FileLock::acquire(&path, lock_wait).await.map_err(|e| {
                    KrakenError::Transport { message: format!("cannot take the nonce lock: {e}"), maybe_sent: false }
                })?),
                None => None,
            };
            if let Some(shared) = &shared {
                shared.load_into(&mut self.lock_counter());
            }
            let wait = self.lock_counter().cost_wait(cost, Instant::now());
            if wait.is_zero() {
                break file_lock;
            }
            drop(file_lock);
            tracing::debug!(method, wait_ms = wait.as_millis() as u64, "waiting for the kraken call counter");
            tokio::time::sleep(wait).await;
        };
        let nonce = nonces.next().map_err(|e| KrakenError::Transport {
            message: format!("cannot record the next nonce: {e}"),
            maybe_sent: false,
        })?;
        let fields = form(nonce)
            .map_err(|why| local_refusal(ErrorCode::InvalidArguments, "EGeneral:Invalid arguments", &why))?;
        let post_data = form_encode(&fields);
        let path = format!("/0/private/{method}");
        let signature = credentials.secret.sign(&path, nonce, &post_data);
        self.lock_counter().record(cost, Instant::now());
        if let Some(shared) = &shared {
            shared.store(&self.lock_counter());
        }

        let sent = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("API-Key", &credentials.key)
            .header("API-Sign", signature)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded; charset=utf-8")
            .body(post_data)
            .send()
            .await;
        drop(file_lock);
        drop(nonces);

        let body = read_body(sent.map_err(transport)?).await?;
        let result = envelope::decode(&body);
        if let Err(e) = &result {
            if e.code() == Some(ErrorCode::ApiRateLimit) {
                self.lock_counter().saturate(Instant::now());
                self.share_saturation().await;
            }
            tracing::debug!(method, error = %e, "kraken private call failed");
        }
        result
    }

    /// Kraken said the key's call counter is full: every broker process on
    /// the key hears it (best effort: the next call reads the file).
    async fn share_saturation(&self) {
        let Some(lock) = self.nonces.lock().await.lock_path() else { return };
        let Ok(_held) = super::lock::FileLock::acquire(&lock, self.timeout).await else { return };
        let shared = SharedCounter::beside(&lock);
        let mut counter = self.lock_counter();
        shared.load_into(&mut counter);
        counter.saturate(Instant::now());
        shared.store(&counter);
    }

    fn lock_counter(&self) -> std::sync::MutexGuard<'_, CallCounter> {
        // The counter is plain data: a panic elsewhere cannot leave it torn.
        self.counter.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The REST call counter of one API key, shared by the node's broker
/// processes on the key: `rest_counter.json` beside the key's nonce file
/// (in the account folder named by a hash of the key, never the key),
/// holding the level in millionths of a point and when it was written
/// (Unix microseconds), read and written only under the nonce lock. Each
/// process decays the level by the wall-clock time since, so Kraken's one
/// counter per key is modelled once, not once per process.
#[derive(Debug)]
struct SharedCounter {
    path: std::path::PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CounterFile {
    level_micro: u64,
    at_micros: u64,
}

impl SharedCounter {
    fn beside(lock: &std::path::Path) -> Self {
        Self { path: lock.with_file_name("rest_counter.json") }
    }

    /// Sets `counter` to the shared level, decayed to now; a missing file
    /// leaves it as it is, an unreadable one is logged and replaced.
    fn load_into(&self, counter: &mut CallCounter) {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the shared kraken call counter; counting in this process only");
                return;
            }
        };
        let Ok(file) = serde_json::from_slice::<CounterFile>(&bytes) else {
            tracing::warn!(path = %self.path.display(), "the shared kraken call counter is unreadable; it is written again on the next call");
            return;
        };
        let elapsed = unix_micros().saturating_sub(file.at_micros);
        let decay = u128::from(elapsed) * u128::from(counter.limits().decay_micro_per_sec) / 1_000_000;
        let level = file.level_micro.saturating_sub(u64::try_from(decay).unwrap_or(u64::MAX));
        counter.set_level(level, Instant::now());
    }

    /// Writes `counter`'s level now for the other processes.
    fn store(&self, counter: &CallCounter) {
        let file = CounterFile { level_micro: counter.level_micro(Instant::now()), at_micros: unix_micros() };
        let written =
            serde_json::to_vec(&file).map_err(std::io::Error::other).and_then(|b| std::fs::write(&self.path, b));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the shared kraken call counter; other brokers on this key will not see this call");
        }
    }
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// A request refused here, before it left; it never reached Kraken.
pub fn local_refusal(code: ErrorCode, kraken_words: &str, why: &str) -> KrakenError {
    KrakenError::Api { code, reason: format!("{kraken_words}: {why} (refused before sending)") }
}

/// The body of an answer. Kraken answers 200 even for its errors; any other
/// status whose body is not Kraken's envelope came from a proxy in between.
async fn read_body(response: reqwest::Response) -> Result<String, KrakenError> {
    let status = response.status();
    let body = response.text().await.map_err(transport)?;
    if status.is_success() || serde_json::from_str::<envelope::Envelope>(&body).is_ok() {
        return Ok(body);
    }
    Err(KrakenError::Transport {
        message: format!("http {status} from kraken"),
        // A 5xx may come after the request reached Kraken; a 4xx from a
        // proxy (429, 403) refused it before.
        maybe_sent: !status.is_client_error(),
    })
}

/// A reqwest failure as a transport error. A failure to connect means
/// nothing was sent; any later failure (a timeout, a dropped connection, a
/// body cut short) may come after Kraken received the request.
fn transport(e: reqwest::Error) -> KrakenError {
    let maybe_sent = !(e.is_connect() || e.is_builder());
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "failed"
    };
    // Kraken URLs carry no secrets; the error's source chain is the cause.
    let mut message = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    KrakenError::Transport { message, maybe_sent }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print() {
        let c = Credentials { key: "my-public-key".into(), secret: Signer::new("c2VjcmV0").unwrap() };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("my-public-key") && !dbg.contains("c2VjcmV0"), "{dbg}");
    }

    #[tokio::test]
    async fn a_refused_connection_was_not_sent() {
        // Bind then drop a listener: nothing listens on that port.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = RestConfig {
            base_url: format!("http://127.0.0.1:{port}"),
            timeout: Duration::from_secs(2),
            ..RestConfig::default()
        };
        let rest = KrakenRest::new(config, None, NonceSource::in_memory()).unwrap();
        let err = rest.server_time().await.unwrap_err();
        assert!(matches!(err, KrakenError::Transport { maybe_sent: false, .. }), "{err:?}");
    }

    /// A Kraken stand-in that answers every private call with an empty
    /// Balance; its base URL.
    async fn answering_server() -> String {
        let app = axum::Router::new().route(
            "/0/private/{method}",
            axum::routing::post(|| async { r#"{"error":[],"result":{"ZUSD":"1.0000"}}"# }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn two_brokers_on_one_key_spend_one_rest_call_counter() {
        // Two clients on one nonce file stand for two broker processes on
        // one API key. Starter's maximum (15) with next to no decay, so a
        // slow machine cannot make room between the calls.
        let tmp = tempfile::tempdir().unwrap();
        let nonce_file = tmp.path().join("account-0123456789abcdef/nonce");
        let config = RestConfig {
            base_url: answering_server().await,
            timeout: Duration::from_secs(5),
            limits: Limits::new(15, 1),
            ..RestConfig::default()
        };
        let client = || {
            let credentials = Credentials { key: "key".into(), secret: Signer::new("c2VjcmV0").unwrap() };
            KrakenRest::new(config.clone(), Some(credentials), NonceSource::load(&nonce_file).unwrap()).unwrap()
        };
        let (a, b) = (client(), client());
        for _ in 0..8 {
            a.balance().await.unwrap();
        }
        for _ in 0..7 {
            b.balance().await.unwrap();
        }
        assert!((b.rate_limit_level() - 15.0).abs() < 0.01, "b counted a's calls too: {}", b.rate_limit_level());
        // The key's counter is full: a's next call waits, whoever spent it.
        let next = tokio::time::timeout(Duration::from_millis(300), a.balance()).await;
        assert!(next.is_err(), "a 16th call went out past kraken's counter of 15");
        assert!(a.rate_limit_wait() > Duration::from_secs(60), "{:?}", a.rate_limit_wait());
    }

    #[tokio::test]
    async fn private_calls_need_a_key() {
        let rest = KrakenRest::new(RestConfig::default(), None, NonceSource::in_memory()).unwrap();
        let err = rest.balance().await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidKey));
        assert!(err.certainly_not_executed());
    }
}

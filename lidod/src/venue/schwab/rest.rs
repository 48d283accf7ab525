//! The Schwab REST client: market data (`{api_url}/marketdata/v1/…`),
//! trader (`{api_url}/trader/v1/…`) and the OAuth token endpoint
//! (`{auth_url}/v1/oauth/token`).
//!
//! - Every call carries `Authorization: Bearer <access token>`. The token is
//!   refreshed before it expires ([`Tokens::needs_refresh`]) and written to
//!   the token file; a `401` (Schwab invalidated the token early) refreshes
//!   once and repeats the call: a 401 means Schwab did not act on it.
//! - Calls wait on a client-side budget (`governor`, default 120 a minute)
//!   so Schwab's 429 is not reached in normal use. Order requests (place,
//!   cancel) also spend the account's order budget (Schwab's default: 120
//!   order requests a minute per account, set per app on Schwab's side,
//!   hence the option); when it is spent they are refused at once with
//!   Lido's own `rate_limited` naming the limit, never queued. A 429 from
//!   Schwab arrives as [`SchwabError::RateLimited`] and starts a back-off:
//!   until its `Retry-After` (or [`DEFAULT_BACKOFF`]) every call is refused
//!   without reaching Schwab.
//! - Tokens: the token file is shared (every broker of the login and
//!   `lidoctl broker auth` write it), so it is read again before each
//!   refresh and newer tokens there are adopted; a refresh never replaces
//!   newer tokens in the file ([`Tokens::newer_than`]). A refused refresh
//!   marks the login dead ([`SchwabRest::login_needed`]) until a new login
//!   writes the file: no further refresh is tried meanwhile.
//! - No retries beyond that 401: the broker decides, and never re-sends an
//!   order whose outcome is unknown ([`SchwabError::maybe_sent`]).
//! - The app key, secret and tokens never reach a log or an error.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lido_shared::model::{Bar, Symbol};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;
use tracing::{info, warn};

use super::error::SchwabError;
use super::orders::order_id_from_location;
use super::token::{TokenFile, TokenResponse, Tokens, PRODUCTION_AUTH_URL};
use super::wire::{
    format_query_time, AccountAnswer, AccountNumber, MarketHours, MarketHoursAnswer, Order, OrderRequest, PriceHistory,
    QuoteEntry, UserPreference,
};

/// Schwab's production API host.
pub const PRODUCTION_API_URL: &str = "https://api.schwabapi.com";
/// Schwab's documented trader limit: 120 requests a minute.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 120;
/// Schwab's default order limit: 120 order requests a minute per account.
pub const DEFAULT_ORDERS_PER_MINUTE: u32 = 120;
/// How long calls pause after a 429 that names no `Retry-After`.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);

/// The app's key and secret (HTTP Basic on the token endpoint). Never printed.
#[derive(Clone)]
pub struct AppCredentials {
    pub key: String,
    pub secret: String,
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppCredentials { key: <redacted>, secret: <redacted> }")
    }
}

/// Where Schwab is and how fast to call it.
#[derive(Debug, Clone)]
pub struct RestConfig {
    pub api_url: String,
    pub auth_url: String,
    pub timeout: Duration,
    pub requests_per_minute: u32,
    /// Order requests (place, cancel) a minute for the account.
    pub orders_per_minute: u32,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            api_url: PRODUCTION_API_URL.into(),
            auth_url: PRODUCTION_AUTH_URL.into(),
            timeout: Duration::from_secs(10),
            requests_per_minute: DEFAULT_REQUESTS_PER_MINUTE,
            orders_per_minute: DEFAULT_ORDERS_PER_MINUTE,
        }
    }
}

/// An HTTP client for Schwab's endpoints (shared by the broker and the login).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, SchwabError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("lido/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SchwabError::Config(format!("cannot build an http client: {e}")))
}

/// `POST {auth_url}/v1/oauth/token` with HTTP Basic app credentials and `form`.
pub async fn token_request(
    http: &reqwest::Client,
    auth_url: &str,
    app: &AppCredentials,
    form: &[(&str, &str)],
) -> Result<TokenResponse, SchwabError> {
    let url = format!("{}/v1/oauth/token", auth_url.trim_end_matches('/'));
    let response = http.post(url).basic_auth(&app.key, Some(&app.secret)).form(form).send().await.map_err(transport)?;
    decode(response).await
}

/// Exchanges the code from the redirect URL for the first tokens.
pub async fn exchange_code(
    http: &reqwest::Client,
    auth_url: &str,
    app: &AppCredentials,
    code: &str,
    redirect_uri: &str,
) -> Result<Tokens, SchwabError> {
    let form = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri)];
    let response = token_request(http, auth_url, app, &form).await?;
    Ok(Tokens::from_login(response, Utc::now()))
}

/// A client for one Schwab login.
pub struct SchwabRest {
    http: reqwest::Client,
    api_url: String,
    auth_url: String,
    app: AppCredentials,
    tokens: AsyncMutex<Tokens>,
    token_file: TokenFile,
    limiter: DefaultDirectRateLimiter,
    orders_per_minute: u32,
    order_limiter: DefaultDirectRateLimiter,
    /// After Schwab's 429: no call leaves before this.
    backoff_until: StdMutex<Option<Instant>>,
    /// Why the login is dead (the refresh was refused), until a new login.
    login_needed: StdMutex<Option<String>>,
}

impl fmt::Debug for SchwabRest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchwabRest").field("api_url", &self.api_url).finish_non_exhaustive()
    }
}

impl SchwabRest {
    /// A client with the tokens in `token_file`.
    pub fn new(config: RestConfig, app: AppCredentials, token_file: TokenFile) -> Result<Self, SchwabError> {
        let tokens = token_file.load()?;
        let per_minute = NonZeroU32::new(config.requests_per_minute)
            .ok_or_else(|| SchwabError::Config("requests_per_minute must be at least 1".into()))?;
        let orders_per_minute = NonZeroU32::new(config.orders_per_minute)
            .ok_or_else(|| SchwabError::Config("orders_per_minute must be at least 1".into()))?;
        Ok(Self {
            http: http_client(config.timeout)?,
            api_url: config.api_url.trim_end_matches('/').to_string(),
            auth_url: config.auth_url,
            app,
            tokens: AsyncMutex::new(tokens),
            token_file,
            limiter: RateLimiter::direct(Quota::per_minute(per_minute)),
            orders_per_minute: config.orders_per_minute,
            order_limiter: RateLimiter::direct(Quota::per_minute(orders_per_minute)),
            backoff_until: StdMutex::new(None),
            login_needed: StdMutex::new(None),
        })
    }

    /// Why a person must log in again (`lidoctl broker auth`), if so: the
    /// refresh was refused or the refresh token ended, and no newer tokens
    /// have appeared in the token file since.
    pub async fn login_needed(&self) -> Option<String> {
        let mut tokens = self.tokens.lock().await;
        self.adopt_newer(&mut tokens);
        if tokens.refresh_expired(Utc::now()) {
            return Some(format!("the refresh token expired at {}", tokens.refresh_expires_at.to_rfc3339()));
        }
        lock(&self.login_needed).clone()
    }

    /// Takes the token file's tokens when they are newer than `tokens` (a
    /// login or another broker of the login wrote them); a new login clears
    /// the dead-login mark.
    fn adopt_newer(&self, tokens: &mut Tokens) -> bool {
        let Ok(on_disk) = self.token_file.load() else { return false };
        if !on_disk.newer_than(tokens) {
            return false;
        }
        if on_disk.refresh_token != tokens.refresh_token {
            *lock(&self.login_needed) = None;
            info!(refresh_expires_at = %on_disk.refresh_expires_at, "schwab tokens of a new login taken from the token file");
        }
        *tokens = on_disk;
        true
    }

    /// Spends one order request of the account's budget, or refuses at once.
    fn spend_order_budget(&self) -> Result<(), SchwabError> {
        self.check_backoff()?;
        self.order_limiter.check().map_err(|_| SchwabError::Refused {
            code: "rate_limited",
            message: format!(
                "Schwab's order limit ({} order requests a minute for this account, the broker option \
                 orders_per_minute) is spent; nothing was sent, retry in a few seconds",
                self.orders_per_minute
            ),
        })
    }

    /// Refuses while a back-off after Schwab's 429 lasts.
    fn check_backoff(&self) -> Result<(), SchwabError> {
        let mut until = lock(&self.backoff_until);
        match *until {
            Some(t) if Instant::now() < t => {
                Err(SchwabError::RateLimited { retry_after: Some(round_up_secs(t - Instant::now())) })
            }
            Some(_) => {
                *until = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Starts the back-off after Schwab's 429.
    fn back_off(&self, retry_after: Option<Duration>) {
        let wait = retry_after.unwrap_or(DEFAULT_BACKOFF);
        warn!(wait_s = wait.as_secs(), "schwab answered 429; no call leaves until the back-off ends");
        *lock(&self.backoff_until) = Some(Instant::now() + wait);
    }

    /// The tokens' lifetimes now (for status and warnings).
    pub async fn tokens(&self) -> Tokens {
        self.tokens.lock().await.clone()
    }

    /// A valid access token, refreshed first when due (or when `force`).
    /// Newer tokens in the token file are taken first (a login since, or
    /// another broker's refresh), and a refresh never replaces newer ones.
    pub async fn access_token(&self, force: bool) -> Result<String, SchwabError> {
        let mut tokens = self.tokens.lock().await;
        let now = Utc::now();
        if !force && !tokens.needs_refresh(now) {
            return Ok(tokens.access_token.clone());
        }
        if self.adopt_newer(&mut tokens) && !tokens.needs_refresh(now) {
            return Ok(tokens.access_token.clone());
        }
        if tokens.refresh_expired(now) {
            return Err(SchwabError::Unauthorized {
                message: format!("the refresh token expired at {}", tokens.refresh_expires_at.to_rfc3339()),
            });
        }
        if let Some(why) = lock(&self.login_needed).clone() {
            return Err(SchwabError::Unauthorized { message: why });
        }
        let form = [("grant_type", "refresh_token"), ("refresh_token", tokens.refresh_token.as_str())];
        let response = token_request(&self.http, &self.auth_url, &self.app, &form).await.map_err(|e| match e {
            SchwabError::Rejected { message, .. } | SchwabError::Unauthorized { message } => {
                let message = format!("token refresh refused: {message}");
                *lock(&self.login_needed) = Some(message.clone());
                SchwabError::Unauthorized { message }
            }
            other => other,
        })?;
        let refreshed = tokens.refreshed(response, now);
        // The file may have changed during the call: never go back.
        match self.token_file.load() {
            Ok(on_disk) if on_disk.newer_than(&refreshed) => {
                info!("newer schwab tokens appeared in the token file during a refresh; keeping them");
                *tokens = on_disk;
            }
            _ => {
                *tokens = refreshed;
                self.token_file.save(&tokens)?;
                info!(expires_at = %tokens.access_expires_at, "schwab access token refreshed");
            }
        }
        Ok(tokens.access_token.clone())
    }

    // ── market data ──

    /// `GET /marketdata/v1/quotes?symbols=…&fields=quote`; unknown symbols are left out.
    pub async fn quotes(&self, symbols: &[&str]) -> Result<Vec<QuoteEntry>, SchwabError> {
        let joined = symbols.join(",");
        let answer: serde_json::Map<String, serde_json::Value> =
            self.get("/marketdata/v1/quotes", &[("symbols", &joined), ("fields", "quote")]).await?;
        answer
            .into_iter()
            .filter(|(k, _)| k != "errors")
            .map(|(_, v)| serde_json::from_value(v).map_err(|e| SchwabError::Decode(format!("quote: {e}"))))
            .collect()
    }

    /// `GET /marketdata/v1/pricehistory`: bars of `frequency` minutes over
    /// the last `days` days.
    pub async fn price_history(&self, symbol: &Symbol, days: u32, frequency: u32) -> Result<Vec<Bar>, SchwabError> {
        let (days, frequency) = (days.to_string(), frequency.to_string());
        let query = [
            ("symbol", symbol.as_str()),
            ("periodType", "day"),
            ("period", &days),
            ("frequencyType", "minute"),
            ("frequency", &frequency),
        ];
        let history: PriceHistory = self.get("/marketdata/v1/pricehistory", &query).await?;
        Ok(history.bars(symbol))
    }

    /// `GET /marketdata/v1/markets?markets=equity&date=…`: the `EQ` product's hours.
    pub async fn equity_hours(&self, date: NaiveDate) -> Result<MarketHours, SchwabError> {
        let date = date.format("%Y-%m-%d").to_string();
        let mut answer: MarketHoursAnswer =
            self.get("/marketdata/v1/markets", &[("markets", "equity"), ("date", &date)]).await?;
        answer
            .remove("equity")
            .and_then(|mut products| products.remove("EQ").or_else(|| products.into_values().next()))
            .ok_or_else(|| SchwabError::Decode("market hours without an equity entry".into()))
    }

    // ── trader ──

    pub async fn account_numbers(&self) -> Result<Vec<AccountNumber>, SchwabError> {
        self.get("/trader/v1/accounts/accountNumbers", &[]).await
    }

    pub async fn account(&self, hash: &str) -> Result<AccountAnswer, SchwabError> {
        self.get(&format!("/trader/v1/accounts/{hash}"), &[("fields", "positions")]).await
    }

    pub async fn user_preference(&self) -> Result<UserPreference, SchwabError> {
        self.get("/trader/v1/userPreference", &[]).await
    }

    /// Places an order (spending the order budget); the new order's id
    /// from the `Location` header.
    pub async fn place_order(&self, hash: &str, order: &OrderRequest) -> Result<i64, SchwabError> {
        self.spend_order_budget()?;
        let body = serde_json::to_vec(order).map_err(|e| SchwabError::Invalid(format!("order not encodable: {e}")))?;
        let path = format!("/trader/v1/accounts/{hash}/orders");
        let response = self.send(Method::POST, &path, &[], Some(body)).await?;
        let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
        location
            .and_then(order_id_from_location)
            .ok_or_else(|| SchwabError::Decode("order accepted without a Location header naming the new order".into()))
    }

    pub async fn order(&self, hash: &str, order_id: i64) -> Result<Order, SchwabError> {
        self.get(&format!("/trader/v1/accounts/{hash}/orders/{order_id}"), &[]).await
    }

    pub async fn cancel_order(&self, hash: &str, order_id: i64) -> Result<(), SchwabError> {
        self.spend_order_budget()?;
        let path = format!("/trader/v1/accounts/{hash}/orders/{order_id}");
        self.send(Method::DELETE, &path, &[], None).await.map(drop)
    }

    /// Orders entered between `from` and `to`, of one Schwab `status` or
    /// all. Each order is read on its own: one this client cannot read (an
    /// OCO or TRIGGER parent with `childOrderStrategies`, no
    /// `orderLegCollection`, a value Lido does not know) is logged and left
    /// out, never failing the rest.
    pub async fn orders(
        &self,
        hash: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        status: Option<&str>,
    ) -> Result<Vec<Order>, SchwabError> {
        let (from, to) = (format_query_time(from), format_query_time(to));
        let mut query = vec![("fromEnteredTime", from.as_str()), ("toEnteredTime", to.as_str())];
        query.extend(status.map(|s| ("status", s)));
        let list: Vec<serde_json::Value> = self.get(&format!("/trader/v1/accounts/{hash}/orders"), &query).await?;
        Ok(decode_orders(list))
    }

    // ── plumbing ──

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, SchwabError> {
        decode(self.send(Method::GET, path, query, None).await?).await
    }

    /// Sends one call within the budget; on a 401 refreshes the token and
    /// sends it once more.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, SchwabError> {
        let url = format!("{}{path}", self.api_url);
        let mut force_refresh = false;
        loop {
            self.check_backoff()?;
            self.limiter.until_ready().await;
            let token = self.access_token(force_refresh).await?;
            let mut request = self.http.request(method.clone(), &url).bearer_auth(token).query(query);
            if let Some(body) = &body {
                request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
            }
            let response = request.send().await.map_err(transport)?;
            if response.status() == StatusCode::UNAUTHORIZED && !force_refresh {
                warn!(%path, "schwab refused the access token; refreshing it and trying once more");
                force_refresh = true;
                continue;
            }
            let checked = check(response).await;
            if let Err(SchwabError::RateLimited { retry_after }) = &checked {
                self.back_off(*retry_after);
            }
            return checked;
        }
    }
}

/// Each order of an order list that reads as an [`Order`]; the others are
/// logged (with their id and strategy) and skipped.
pub fn decode_orders(list: Vec<serde_json::Value>) -> Vec<Order> {
    list.into_iter()
        .filter_map(|v| match serde_json::from_value::<Order>(v.clone()) {
            Ok(o) => Some(o),
            Err(e) => {
                warn!(order_id = %v.get("orderId").unwrap_or(&serde_json::Value::Null),
                    strategy = %v.get("orderStrategyType").unwrap_or(&serde_json::Value::Null),
                    error = %e, "schwab order this broker cannot read, skipped");
                None
            }
        })
        .collect()
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn round_up_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

async fn check(response: reqwest::Response) -> Result<reqwest::Response, SchwabError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after =
        response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = response.text().await.unwrap_or_default();
    Err(SchwabError::from_response(status.as_u16(), retry_after.as_deref(), &body))
}

async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, SchwabError> {
    let response = check(response).await?;
    let bytes = response.bytes().await.map_err(transport)?;
    serde_json::from_slice(&bytes).map_err(|e| SchwabError::Decode(e.to_string()))
}

/// A transport failure; only a refused or failed connection surely did not send.
fn transport(e: reqwest::Error) -> SchwabError {
    let maybe_sent = !e.is_connect() && !e.is_builder();
    // reqwest's message names the URL, which carries no secret (tokens travel in headers).
    SchwabError::Transport { message: e.to_string(), maybe_sent }
}

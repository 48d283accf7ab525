//! The Schwab REST client and OAuth login (`lidod::venue::schwab`) against
//! the fake Schwab (`lido_tests::schwab_fake`), both in this process on
//! 127.0.0.1.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use lido_shared::model::{OrderType, Side, Symbol, TimeInForce};
use lido_shared::pipe::VenueOrder;
use lido_tests::schwab_fake::{FakeConfig, FakeSchwab};
use lidod::venue::schwab::error::SchwabError;
use lidod::venue::schwab::hours::Session;
use lidod::venue::schwab::orders;
use lidod::venue::schwab::rest::{self, AppCredentials, RestConfig, SchwabRest};
use lidod::venue::schwab::token::{self, TokenFile, Tokens};
use rust_decimal_macros::dec;

const WITHIN: Duration = Duration::from_secs(10);

struct Client {
    fake: FakeSchwab,
    rest: SchwabRest,
    file: TokenFile,
    dir: std::path::PathBuf,
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn app(fake: &FakeSchwab) -> AppCredentials {
    AppCredentials { key: fake.config().app_key.clone(), secret: fake.config().app_secret.clone() }
}

async fn client(name: &str) -> Client {
    let fake = FakeSchwab::start(FakeConfig::default()).await;
    let dir = std::env::temp_dir().join(format!("lido-schwab-rest-{}-{name}", std::process::id()));
    let file = TokenFile::new(dir.join("tokens.json"));
    let tokens: Tokens = serde_json::from_value(fake.issue_tokens()).unwrap();
    file.save(&tokens).unwrap();
    let config = RestConfig { api_url: fake.url.clone(), auth_url: fake.url.clone(), ..RestConfig::default() };
    let rest = SchwabRest::new(config, app(&fake), file.clone()).unwrap();
    Client { fake, rest, file, dir }
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WITHIN, f).await.expect("call finished within 10 s")
}

#[tokio::test]
async fn login_by_authorization_code_then_calls_with_the_token() {
    let fake = FakeSchwab::start(FakeConfig::default()).await;
    let redirect = &fake.config().redirect_uri;
    let url = token::authorize_url(&fake.url, &fake.config().app_key, redirect).unwrap();
    // The browser's part: follow the authorize URL to the redirect.
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer = bounded(no_redirect.get(url).send()).await.unwrap();
    let location = answer.headers()[reqwest::header::LOCATION].to_str().unwrap().to_string();
    assert!(location.starts_with("https://127.0.0.1/?code="), "{location}");
    let code = token::code_from_redirect(&location).unwrap();
    assert!(code.ends_with('@'), "the %40 is decoded");

    let http = rest::http_client(WITHIN).unwrap();
    let tokens = bounded(rest::exchange_code(&http, &fake.url, &app(&fake), &code, redirect)).await.unwrap();
    assert_eq!(tokens.access_token, fake.tokens().0);
    assert!(tokens.refresh_expires_at > Utc::now() + TimeDelta::days(6));
    let reused = bounded(rest::exchange_code(&http, &fake.url, &app(&fake), &code, redirect)).await;
    assert!(matches!(reused, Err(SchwabError::Rejected { status: 400, .. })), "{reused:?}");
    let wrong = AppCredentials { key: fake.config().app_key.clone(), secret: "wrong".into() };
    let refused = bounded(rest::exchange_code(&http, &fake.url, &wrong, "x", redirect)).await.unwrap_err();
    assert!(matches!(refused, SchwabError::Unauthorized { .. }), "{refused:?}");
}

#[tokio::test]
async fn a_401_refreshes_once_and_saves_the_new_token() {
    let c = client("refresh").await;
    bounded(c.rest.account_numbers()).await.unwrap();
    c.fake.expire_access_token();
    let numbers = bounded(c.rest.account_numbers()).await.unwrap();
    assert_eq!(numbers[0].account_number, "12345678");
    assert_eq!(c.fake.refresh_grants(), 1);
    assert_eq!(c.file.load().unwrap().access_token, c.fake.tokens().0);
}

#[tokio::test]
async fn rate_limit_is_typed_with_retry_after() {
    let c = client("ratelimit").await;
    c.fake.rate_limit_next(1);
    let e = bounded(c.rest.quotes(&["AAPL"])).await.unwrap_err();
    assert_eq!(e, SchwabError::RateLimited { retry_after: Some(Duration::from_secs(2)) });
    assert_eq!(e.code(), "rate_limited");
    // Retry-After is honored: calls are held until it has passed.
    assert_eq!(bounded(c.rest.quotes(&["AAPL"])).await.unwrap_err().code(), "rate_limited");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(bounded(c.rest.quotes(&["AAPL"])).await.unwrap()[0].quote.bid_price, dec!(190.25));
}

#[tokio::test]
async fn quotes_history_hours_and_orders() {
    let c = client("orders").await;
    let quotes = bounded(c.rest.quotes(&["AAPL", "NOPE"])).await.unwrap();
    assert_eq!(quotes.len(), 1, "unknown symbols are left out");
    let bars = bounded(c.rest.price_history(&Symbol::parse("AAPL").unwrap(), 1, 5)).await.unwrap();
    assert_eq!(bars.len(), 2);
    assert_eq!((bars[0].symbol.as_str(), bars[0].high, bars[0].close), ("AAPL", dec!(191.25), dec!(190.25)));
    assert!(bars[0].start < bars[1].start);
    let hours = bounded(c.rest.equity_hours(Utc::now().date_naive())).await.unwrap();
    assert!(lidod::venue::schwab::hours::check(&hours, Session::Normal, Utc::now()).is_ok());

    let hash = bounded(c.rest.account_numbers()).await.unwrap()[0].hash_value.clone();
    let order = VenueOrder {
        client_id: "o-1".into(),
        account: "acme".into(),
        symbol: Symbol::parse("AAPL").unwrap(),
        side: Side::Buy,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        quantity: dec!(3),
        limit_price: Some(dec!(100)),
        client_order_id: None,
    };
    let request = orders::request(&order, Session::Normal, rust_decimal::Decimal::ZERO).unwrap();
    let sent_at = Utc::now();
    let id = bounded(c.rest.place_order(&hash, &request)).await.unwrap();
    let got = bounded(c.rest.order(&hash, id)).await.unwrap();
    assert_eq!((got.status.as_str(), got.quantity), ("WORKING", dec!(3)));
    assert!(orders::same_order(&got, &request, sent_at, Utc::now() + TimeDelta::minutes(5)));
    let now = Utc::now();
    let from = now - TimeDelta::hours(1);
    let working = bounded(c.rest.orders(&hash, from, now + TimeDelta::minutes(1), Some("WORKING"))).await.unwrap();
    assert_eq!(working.iter().map(|o| o.order_id).collect::<Vec<_>>(), vec![id]);
    bounded(c.rest.cancel_order(&hash, id)).await.unwrap();
    let filled = bounded(c.rest.orders(&hash, from, now + TimeDelta::minutes(1), Some("WORKING"))).await.unwrap();
    assert!(filled.is_empty());
    let again = bounded(c.rest.cancel_order(&hash, id)).await.unwrap_err();
    assert!(
        matches!(&again, SchwabError::Rejected { status: 400, message } if message.contains("cannot be canceled")),
        "{again:?}"
    );
    let missing = bounded(c.rest.order(&hash, 42)).await.unwrap_err();
    assert_eq!(missing.code(), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lidoctl_broker_auth_writes_an_owner_only_token_file() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    let fake = FakeSchwab::start(FakeConfig::default()).await;
    let (key, secret) = (fake.config().app_key.clone(), fake.config().app_secret.clone());
    let authorize = token::authorize_url(&fake.url, &key, &fake.config().redirect_uri).unwrap();
    // The browser's part: log in, get redirected with a code.
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer = bounded(no_redirect.get(authorize.clone()).send()).await.unwrap();
    let redirected = answer.headers()[reqwest::header::LOCATION].to_str().unwrap().to_string();

    let dir = std::env::temp_dir().join(format!("lido-schwab-auth-{}", std::process::id()));
    let token_file = dir.join("s9.json");
    let mut child = Command::new(lido_tests::lidoctl_path())
        .args(["broker", "auth", "schwab", "--name", "s9"])
        .args(["--set", &format!("auth_url={}", fake.url), "--set", &format!("token_file={}", token_file.display())])
        .env("SCHWAB_APP_KEY", &key)
        .env("SCHWAB_APP_SECRET", &secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{redirected}").unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.lines().next(), Some(authorize.as_str()), "the URL to open comes first");
    assert!(stderr.contains("paste"), "{stderr}");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let saved = TokenFile::new(&token_file).load().unwrap();
    assert_eq!(saved.access_token, fake.tokens().0);
    for secret in [secret.as_str(), &saved.access_token, &saved.refresh_token] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "a secret was printed");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// ── the fake's rules, spoken to in raw JSON ──

/// A raw HTTP client holding the fake's current access token.
struct Raw {
    http: reqwest::Client,
    base: String,
    hash: String,
}

impl Raw {
    fn new(fake: &FakeSchwab) -> Self {
        Self { http: reqwest::Client::new(), base: fake.url.clone(), hash: fake.account().1 }
    }

    async fn call(
        &self,
        fake: &FakeSchwab,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(fake.tokens().0);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = bounded(request.send()).await.unwrap();
        let status = answer.status().as_u16();
        let text = bounded(answer.text()).await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    async fn place(&self, fake: &FakeSchwab, body: serde_json::Value) -> (u16, serde_json::Value) {
        let path = format!("/trader/v1/accounts/{}/orders", self.hash);
        self.call(fake, reqwest::Method::POST, &path, Some(body)).await
    }
}

fn equity_order(
    order_type: &str,
    session: &str,
    duration: &str,
    price: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut order = serde_json::json!({"orderType": order_type, "session": session, "duration": duration,
        "orderStrategyType": "SINGLE", "orderLegCollection": [{"instruction": "BUY", "quantity": 2,
        "instrument": {"symbol": "AAPL", "assetType": "EQUITY"}}]});
    if let Some(price) = price {
        order["price"] = price;
    }
    order
}

#[tokio::test]
async fn order_posts_are_checked_against_schwabs_schema_and_rules() {
    let fake = FakeSchwab::start(FakeConfig::default()).await;
    let raw = Raw::new(&fake);
    // Schwab refuses IMMEDIATE_OR_CANCEL for equities (schwab-py issue 226).
    let (status, body) =
        raw.place(&fake, equity_order("LIMIT", "NORMAL", "IMMEDIATE_OR_CANCEL", Some(100.into()))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Invalid value 'IMMEDIATE_OR_CANCEL'");
    // A market order outside the regular session.
    let (status, _) = raw.place(&fake, equity_order("MARKET", "SEAMLESS", "DAY", None)).await;
    assert_eq!(status, 400);
    // Sub-penny price, missing limit price, fractional shares, unknown enum.
    for bad in [
        equity_order("LIMIT", "NORMAL", "DAY", Some(serde_json::json!(100.001))),
        equity_order("LIMIT", "NORMAL", "DAY", None),
        {
            let mut o = equity_order("LIMIT", "NORMAL", "DAY", Some(100.into()));
            o["orderLegCollection"][0]["quantity"] = serde_json::json!(1.5);
            o
        },
        equity_order("LIMIT", "NORMAL", "GTC", Some(100.into())),
    ] {
        let (status, body) = raw.place(&fake, bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert!(body["message"].is_string() && body["errors"].is_array(), "Schwab's ServiceError: {body}");
    }
    assert_eq!(fake.order_count(), 0, "nothing refused is booked");
    // The price as a number or a string, as Schwab accepts.
    let (status, _) = raw.place(&fake, equity_order("LIMIT", "NORMAL", "DAY", Some("100.50".into()))).await;
    assert_eq!(status, 201);
    let (status, _) = raw.place(&fake, equity_order("LIMIT", "NORMAL", "GOOD_TILL_CANCEL", Some(100.5.into()))).await;
    assert_eq!(status, 201);
    assert_eq!(fake.orders_matching("AAPL", dec!(2), Some(dec!(100.5))), 2, "compared as exact decimals");
    // The switch a test turns off to let IOC through.
    fake.set_reject_refused_durations(false);
    let (status, _) = raw.place(&fake, equity_order("LIMIT", "NORMAL", "IMMEDIATE_OR_CANCEL", Some(100.into()))).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn the_order_budget_answers_429_then_refills() {
    let fake = FakeSchwab::start(FakeConfig::default()).await;
    let raw = Raw::new(&fake);
    fake.set_orders_per_minute(Some(2));
    for _ in 0..2 {
        let (status, _) = raw.place(&fake, equity_order("LIMIT", "NORMAL", "DAY", Some(100.into()))).await;
        assert_eq!(status, 201);
    }
    let (status, body) = raw.place(&fake, equity_order("LIMIT", "NORMAL", "DAY", Some(100.into()))).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["message"].as_str().unwrap().contains("order request limit"), "{body}");
    assert_eq!(fake.order_count(), 2);
    fake.advance_clock(TimeDelta::seconds(61));
    let (status, _) = raw.place(&fake, equity_order("LIMIT", "NORMAL", "DAY", Some(100.into()))).await;
    assert_eq!(status, 201, "a minute later the budget is back");
}

#[tokio::test]
async fn a_new_order_reaches_the_lists_after_the_lag_and_a_hung_post_still_places() {
    let fake = FakeSchwab::start(FakeConfig::default()).await;
    let raw = Raw::new(&fake);
    fake.set_list_lag(Duration::from_secs(5));
    let (status, _) = raw.place(&fake, equity_order("LIMIT", "NORMAL", "DAY", Some(100.into()))).await;
    assert_eq!(status, 201);
    let now = Utc::now();
    let list = format!(
        "/trader/v1/accounts/{}/orders?fromEnteredTime={}&toEnteredTime={}",
        raw.hash,
        (now - TimeDelta::hours(1)).format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        (now + TimeDelta::hours(1)).format("%Y-%m-%dT%H:%M:%S%.3fZ")
    );
    let (_, listed) = raw.call(&fake, reqwest::Method::GET, &list, None).await;
    assert_eq!(listed, serde_json::json!([]), "not listed yet");
    fake.advance_clock(TimeDelta::seconds(6));
    let (_, listed) = raw.call(&fake, reqwest::Method::GET, &list, None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // An order whose answer is lost: placed, but the POST outlives the client's time-out.
    fake.hang_next_order_after_effect(Duration::from_secs(5));
    let path = format!("{}/trader/v1/accounts/{}/orders", raw.base, raw.hash);
    let hung = raw
        .http
        .post(path)
        .bearer_auth(fake.tokens().0)
        .json(&equity_order("LIMIT", "NORMAL", "DAY", Some(99.into())))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    assert_eq!(fake.orders_matching("AAPL", dec!(2), Some(dec!(99))), 1, "the venue has it");

    // An order another app placed: an OCO with its two children.
    let oco = fake.place_foreign_oco("AAPL", dec!(2));
    let (_, got) =
        raw.call(&fake, reqwest::Method::GET, &format!("/trader/v1/accounts/{}/orders/{oco}", raw.hash), None).await;
    assert_eq!(got["orderStrategyType"], "OCO");
    assert_eq!(got["childOrderStrategies"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn margin_and_cash_accounts_carry_their_own_balance_fields() {
    let config = FakeConfig::default().with_cash_account("87654321", "CASHHASH", dec!(2500.75));
    let fake = FakeSchwab::start(config).await;
    let raw = Raw::new(&fake);
    let (_, numbers) = raw.call(&fake, reqwest::Method::GET, "/trader/v1/accounts/accountNumbers", None).await;
    assert_eq!(numbers.as_array().unwrap().len(), 2);
    let (_, margin) = raw.call(&fake, reqwest::Method::GET, &format!("/trader/v1/accounts/{}", raw.hash), None).await;
    let margin = &margin["securitiesAccount"];
    assert_eq!(margin["type"], "MARGIN");
    assert!(margin.get("positions").is_none(), "positions only with fields=positions");
    assert_eq!(margin["currentBalances"]["availableFunds"], serde_json::json!(100000));
    assert!(margin["currentBalances"].get("cashAvailableForWithdrawal").is_none());
    let (_, cash) = raw.call(&fake, reqwest::Method::GET, "/trader/v1/accounts/CASHHASH?fields=positions", None).await;
    let cash = &cash["securitiesAccount"];
    assert_eq!(cash["type"], "CASH");
    assert!(cash["positions"].is_array());
    assert_eq!(cash["currentBalances"]["cashAvailableForTrading"], serde_json::json!(2500.75));
    assert!(cash["currentBalances"].get("availableFunds").is_none());
    assert!(cash["currentBalances"].get("buyingPower").is_none());
}

#[tokio::test]
async fn tokens_expire_on_schwabs_clock_and_a_dead_refresh_token_is_refused() {
    let c = client("expiry").await;
    let raw = Raw::new(&c.fake);
    c.fake.advance_clock(TimeDelta::minutes(31));
    let (status, body) = raw.call(&c.fake, reqwest::Method::GET, "/trader/v1/accounts/accountNumbers", None).await;
    assert_eq!(status, 401, "an access token lives 30 minutes: {body}");
    // The adapter refreshes and goes on.
    bounded(c.rest.account_numbers()).await.unwrap();
    assert_eq!(c.fake.refresh_grants(), 1);

    c.fake.advance_clock(TimeDelta::days(7));
    let basic = format!("{}:{}", c.fake.config().app_key, c.fake.config().app_secret);
    use base64::Engine;
    let answer = bounded(
        reqwest::Client::new()
            .post(format!("{}/v1/oauth/token", c.fake.url))
            .header("Authorization", format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(basic)))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", c.fake.tokens().1.as_str())])
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_token_type");
    assert!(body["error_description"].as_str().unwrap().contains("refresh_token_authentication_error"));
    let refused = bounded(c.rest.account_numbers()).await;
    assert!(matches!(refused, Err(SchwabError::Unauthorized { .. })), "credentials that stopped working: {refused:?}");
}

#[tokio::test]
async fn the_streamer_allows_one_connection_per_user_and_sends_sizes_in_lots() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let fake = FakeSchwab::start(FakeConfig::default()).await;
    let raw = Raw::new(&fake);
    let (_, prefs) = raw.call(&fake, reqwest::Method::GET, "/trader/v1/userPreference", None).await;
    let info = prefs["streamerInfo"][0].clone();
    let url = info["streamerSocketUrl"].as_str().unwrap().to_string();
    let request = |id: u32, service: &str, command: &str, parameters: serde_json::Value| {
        Message::text(
            serde_json::json!({"requests": [{"service": service, "command": command, "requestid": id.to_string(),
                "SchwabClientCustomerId": info["schwabClientCustomerId"], "SchwabClientCorrelId": "t-1",
                "parameters": parameters}]})
            .to_string(),
        )
    };
    let login = serde_json::json!({"Authorization": fake.tokens().0, "SchwabClientChannel": info["schwabClientChannel"],
        "SchwabClientFunctionId": info["schwabClientFunctionId"]});
    // Frames until one matching `pick`, skipping heartbeats.
    async fn until<S>(socket: &mut S, pick: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value>
    where
        S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    {
        for _ in 0..50 {
            match tokio::time::timeout(WITHIN, socket.next()).await.ok()?? {
                Ok(Message::Text(t)) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    if pick(&v) {
                        return Some(v);
                    }
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    }
    let code = |v: &serde_json::Value| v["response"][0]["content"]["code"].as_i64();

    let (mut first, _) = bounded(tokio_tungstenite::connect_async(&url)).await.unwrap();
    first.send(request(0, "ADMIN", "LOGIN", login.clone())).await.unwrap();
    assert_eq!(until(&mut first, |v| v.get("response").is_some()).await.as_ref().and_then(code), Some(0));
    first
        .send(request(1, "LEVELONE_EQUITIES", "SUBS", serde_json::json!({"keys": "AAPL", "fields": "0,1,2,3,4,5"})))
        .await
        .unwrap();
    let quote = until(&mut first, |v| v["data"][0]["service"] == "LEVELONE_EQUITIES").await.unwrap();
    let entry = &quote["data"][0]["content"][0];
    assert_eq!((entry["1"].clone(), entry["4"].clone(), entry["5"].clone()), (190.25.into(), 3.into(), 2.into()));
    assert!(entry.get("8").is_none(), "only the fields asked for");

    let (mut second, _) = bounded(tokio_tungstenite::connect_async(&url)).await.unwrap();
    second.send(request(0, "ADMIN", "LOGIN", login)).await.unwrap();
    assert_eq!(until(&mut second, |v| v.get("response").is_some()).await.as_ref().and_then(code), Some(0));
    let kicked = until(&mut first, |v| v.get("response").is_some()).await;
    assert_eq!(kicked.as_ref().and_then(code), Some(12), "the older connection is closed: {kicked:?}");
    assert!(until(&mut first, |_| true).await.is_none(), "and its socket ends");
}

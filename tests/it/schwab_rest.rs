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

//! The Kraken REST client (`lidod::venue::kraken::rest`) against the fake
//! Kraken (`lido_tests::kraken_fake`), both on 127.0.0.1.

use std::time::Duration;

use lido_shared::model::{OrderStatus, OrderType, Side, Symbol, TimeInForce};
use lido_tests::kraken_fake::{FakeConfig, FakeKraken, DUPLICATE_ORDER};
use lidod::venue::kraken::envelope::{ErrorCode, KrakenError, RequestKind, RetryAdvice};
use lidod::venue::kraken::messages::{AddOrderRequest, CancelOrderRequest, OpenOrdersRequest};
use lidod::venue::kraken::rest::{Credentials, KrakenRest, RestConfig};
use lidod::venue::kraken::sign::{NonceSource, Signer};
use rust_decimal_macros::dec;

const WITHIN: Duration = Duration::from_secs(10);

fn config(fake: &FakeKraken, timeout: Duration) -> RestConfig {
    RestConfig { base_url: fake.url.clone(), timeout, ..RestConfig::default() }
}

fn client_with(fake: &FakeKraken, secret: &str, nonces: NonceSource, timeout: Duration) -> KrakenRest {
    let credentials = Credentials { key: FakeConfig::default().api_key, secret: Signer::new(secret).unwrap() };
    KrakenRest::new(config(fake, timeout), Some(credentials), nonces).unwrap()
}

fn client(fake: &FakeKraken) -> KrakenRest {
    client_with(fake, &FakeConfig::default().api_secret, NonceSource::in_memory(), WITHIN)
}

fn limit_buy(volume: rust_decimal::Decimal, price: rust_decimal::Decimal, cl_ord_id: &str) -> AddOrderRequest {
    AddOrderRequest {
        pair: "XBTUSD".into(),
        side: Side::Buy,
        order_type: OrderType::Limit,
        volume,
        price: Some(price),
        time_in_force: TimeInForce::Gtc,
        post_only: true,
        cl_ord_id: Some(cl_ord_id.into()),
        validate: false,
    }
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WITHIN, f).await.expect("call finished within 10 s")
}

#[tokio::test]
async fn public_calls_map_pairs_both_ways() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let rest = KrakenRest::new(config(&fake, WITHIN), None, NonceSource::in_memory()).unwrap();

    let time = bounded(rest.server_time()).await.unwrap();
    assert!(time.unixtime > 1_600_000_000, "{time:?}");

    let pairs = bounded(rest.asset_pairs()).await.unwrap();
    assert_eq!(pairs.len(), 2);
    let btc = pairs.by_symbol(&Symbol::parse("BTC/USD").unwrap()).expect("BTC/USD");
    assert_eq!((btc.key.as_str(), btc.altname.as_str()), ("XXBTZUSD", "XBTUSD"));
    assert_eq!(pairs.resolve("XXBTZUSD").unwrap().symbol.as_str(), "BTC/USD");
    assert_eq!(pairs.resolve("XETHZUSD").unwrap().symbol.as_str(), "ETH/USD");
    assert_eq!(btc.tick_size, dec!(0.1));
    assert_eq!(btc.ordermin, dec!(0.0001));

    let (key, ticker) = bounded(rest.ticker(&btc.altname)).await.unwrap();
    assert_eq!(key, "XXBTZUSD");
    let symbol = pairs.resolve(&key).unwrap().symbol.clone();
    let quote = ticker.to_quote(symbol, chrono::Utc::now());
    assert_eq!(quote.symbol.as_str(), "BTC/USD");
    assert!(quote.bid < quote.ask, "{quote:?}");

    let (key, depth) = bounded(rest.depth("XBTUSD", 10)).await.unwrap();
    assert_eq!(key, "XXBTZUSD");
    assert_eq!((depth.bids.len(), depth.asks.len()), (10, 10));
    assert!(depth.bids[0].0 < depth.asks[0].0);

    let err = bounded(rest.ticker("NOPEUSD")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownAssetPair), "{err:?}");
}

#[tokio::test]
async fn a_signed_order_rests_is_found_and_cancels_by_client_id() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let rest = client(&fake);

    let balance = bounded(rest.balance()).await.unwrap();
    assert_eq!(balance["ZUSD"].0, dec!(10000));

    let added = bounded(rest.add_order(&limit_buy(dec!(0.01), dec!(60000.0), "lido-1"))).await.unwrap();
    assert_eq!(added.txid.len(), 1);
    let txid = added.txid[0].clone();
    // Kraken writes the volume at the pair's lot decimals ("Add Order" example).
    assert_eq!(added.descr.order, "buy 0.01000000 XBTUSD @ limit 60000.0");

    let open = bounded(rest.open_orders(&OpenOrdersRequest::default())).await.unwrap().open;
    let order = open.get(&txid).expect("the order is open");
    assert_eq!(order.cl_ord_id.as_deref(), Some("lido-1"));
    assert_eq!(order.lido_status(), OrderStatus::Accepted);
    let by_client = OpenOrdersRequest { trades: false, cl_ord_id: Some("lido-1".into()) };
    assert_eq!(bounded(rest.open_orders(&by_client)).await.unwrap().open.len(), 1);

    let queried = bounded(rest.query_orders(std::slice::from_ref(&txid))).await.unwrap();
    assert_eq!(queried[&txid].vol, dec!(0.01));

    // A second open order with the same client id is refused.
    let dup = bounded(rest.add_order(&limit_buy(dec!(0.01), dec!(60000.0), "lido-1"))).await.unwrap_err();
    assert_eq!(dup.reason(), DUPLICATE_ORDER);

    let canceled = bounded(rest.cancel_order(&CancelOrderRequest::ClOrdId("lido-1".into()))).await.unwrap();
    assert_eq!(canceled.count, 1);
    assert!(bounded(rest.open_orders(&OpenOrdersRequest::default())).await.unwrap().open.is_empty());
    let queried = bounded(rest.query_orders(std::slice::from_ref(&txid))).await.unwrap();
    assert_eq!(queried[&txid].lido_status(), OrderStatus::Canceled);

    let again = bounded(rest.cancel_order(&CancelOrderRequest::Txid(txid))).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::UnknownOrder));
    assert_eq!(fake.orders().len(), 1, "only the first order was booked");
}

#[tokio::test]
async fn cancel_all_cancels_every_open_order_and_counts_them() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let rest = client(&fake);
    for id in ["all-1", "all-2", "all-3"] {
        bounded(rest.add_order(&limit_buy(dec!(0.01), dec!(60000.0), id))).await.unwrap();
    }
    let canceled = bounded(rest.cancel_all()).await.unwrap();
    assert_eq!(canceled.count, 3);
    assert!(bounded(rest.open_orders(&OpenOrdersRequest::default())).await.unwrap().open.is_empty());
    assert!(fake.orders().values().all(|o| o.status == "canceled"), "{:?}", fake.orders());
    // Nothing left: Kraken answers a count of zero, not an error.
    assert_eq!(bounded(rest.cancel_all()).await.unwrap().count, 0);
}

#[tokio::test]
async fn a_wrong_secret_is_an_invalid_signature() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let rest = client_with(&fake, "c2VjcmV0LWJ1dC13cm9uZw==", NonceSource::in_memory(), WITHIN);
    let err = bounded(rest.balance()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidSignature), "{err:?}");
    assert_eq!(err.reason(), "EAPI:Invalid signature");
    assert!(!err.is_transient());
    assert!(!format!("{err:?}").contains("c2VjcmV0"));

    let unknown = KrakenRest::new(
        config(&fake, WITHIN),
        Some(Credentials { key: "who".into(), secret: Signer::new(&FakeConfig::default().api_secret).unwrap() }),
        NonceSource::in_memory(),
    )
    .unwrap();
    let err = bounded(unknown.balance()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidKey), "{err:?}");
}

#[tokio::test]
async fn a_stale_nonce_is_refused() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let dir = std::env::temp_dir().join(format!("lido-kraken-rest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("k.nonce");
    // A nonce far in the future is accepted first…
    std::fs::write(&path, "99999999999999999\n").unwrap();
    let ahead = client_with(&fake, &FakeConfig::default().api_secret, NonceSource::load(&path).unwrap(), WITHIN);
    bounded(ahead.balance()).await.unwrap();
    assert_eq!(fake.last_nonce(), Some(100_000_000_000_000_000));
    // …so a client whose nonces come from the clock is behind it.
    let behind = client(&fake);
    let err = bounded(behind.balance()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidNonce), "{err:?}");
    assert!(err.is_transient() && err.certainly_not_executed());
    // The persisted source keeps going up.
    bounded(ahead.balance()).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn insufficient_funds_is_an_order_rejection_with_krakens_reason() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let rest = client(&fake);
    // 10 000 USD: 0.1 BTC at 60 000 is 6 000; a second one does not fit.
    bounded(rest.add_order(&limit_buy(dec!(0.1), dec!(60000.0), "a"))).await.unwrap();
    let err = bounded(rest.add_order(&limit_buy(dec!(0.1), dec!(60000.0), "b"))).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InsufficientFunds), "{err:?}");
    assert_eq!(err.reason(), "EOrder:Insufficient funds");
    assert!(err.is_order_rejection());
    assert_eq!(err.retry_advice(RequestKind::AddOrder { client_order_id: true }), RetryAdvice::DoNotRetry);
    assert_eq!(fake.orders().len(), 1);
}

#[tokio::test]
async fn a_rate_limit_answer_is_transient_and_fills_the_counter() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let rest = client(&fake);
    assert_eq!(rest.rate_limit_wait(), Duration::ZERO);
    fake.fail_next_with("EAPI:Rate limit exceeded");
    let err = bounded(rest.balance()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ApiRateLimit), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(err.retry_advice(RequestKind::AddOrder { client_order_id: false }), RetryAdvice::Retry);
    assert!(rest.rate_limit_wait() > Duration::ZERO, "the client now waits before its next private call");

    fake.fail_next_with("EService:Unavailable");
    let err = bounded(rest.server_time()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ServiceUnavailable));
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_stall_past_the_timeout_is_a_maybe_sent_transport_error() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let rest =
        client_with(&fake, &FakeConfig::default().api_secret, NonceSource::in_memory(), Duration::from_millis(500));
    fake.stall(Duration::from_secs(3));
    let err = bounded(rest.add_order(&limit_buy(dec!(0.01), dec!(60000.0), "slow"))).await.unwrap_err();
    assert!(matches!(err, KrakenError::Transport { maybe_sent: true, .. }), "{err:?}");
    assert_eq!(err.retry_advice(RequestKind::AddOrder { client_order_id: true }), RetryAdvice::ReconcileThenRetry);
    // It did reach the fake: reconciling by client order id finds it.
    let by_client = OpenOrdersRequest { trades: false, cl_ord_id: Some("slow".into()) };
    let open = bounded(rest.open_orders(&by_client)).await.unwrap().open;
    assert_eq!(open.len(), 1);
}

#[tokio::test]
async fn a_closed_port_is_a_transport_error_that_was_not_sent() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = RestConfig { base_url: format!("http://127.0.0.1:{port}"), timeout: WITHIN, ..RestConfig::default() };
    let credentials = Credentials { key: "k".into(), secret: Signer::new(&FakeConfig::default().api_secret).unwrap() };
    let rest = KrakenRest::new(config, Some(credentials), NonceSource::in_memory()).unwrap();
    let err = bounded(rest.add_order(&limit_buy(dec!(0.01), dec!(60000.0), "x"))).await.unwrap_err();
    assert!(matches!(err, KrakenError::Transport { maybe_sent: false, .. }), "{err:?}");
    assert_eq!(err.retry_advice(RequestKind::AddOrder { client_order_id: false }), RetryAdvice::Retry);
}

#[tokio::test]
async fn trades_and_ohlc_show_what_traded() {
    let fake = FakeKraken::start(FakeConfig::default()).await;
    let rest = client(&fake);
    let (_, before) = bounded(rest.ticker("XBTUSD")).await.unwrap();
    let ask = before.a.0;
    // A market buy of 0.15 takes the first ask level (0.1) and part of the next.
    let mut buy = limit_buy(dec!(0.15), ask, "taker");
    buy.order_type = OrderType::Market;
    buy.price = None;
    buy.post_only = false;
    bounded(rest.add_order(&buy)).await.unwrap();

    let trades = bounded(rest.trades("XBTUSD", None)).await.unwrap();
    assert_eq!(trades.pair, "XXBTZUSD");
    assert_eq!(trades.trades.len(), 2, "{trades:?}");
    assert_eq!(trades.trades.iter().map(|t| t.volume).sum::<rust_decimal::Decimal>(), dec!(0.15));
    assert!(trades.trades.iter().all(|t| t.side == Side::Buy && t.market));
    assert_eq!(trades.trades[0].price, ask);
    // The cursor returns nothing new.
    let again = bounded(rest.trades("XBTUSD", Some(&trades.last))).await.unwrap();
    assert!(again.trades.is_empty(), "{again:?}");

    let ohlc = bounded(rest.ohlc("XBTUSD", 1, None)).await.unwrap();
    assert_eq!(ohlc.pair, "XXBTZUSD");
    assert_eq!(ohlc.candles.len(), 1, "{ohlc:?}");
    let candle = &ohlc.candles[0];
    assert_eq!((candle.1, candle.4, candle.6, candle.7), (ask, trades.trades[1].price, dec!(0.15), 2));
    assert_eq!(ohlc.last, candle.0);
    let bad = bounded(rest.ohlc("XBTUSD", 7, None)).await.unwrap_err();
    assert_eq!(bad.reason(), "EGeneral:Invalid arguments:interval");
}

//! Tests of the paper venue. Scripted books (`set_book`) pin exact numbers;
//! the random market is only trusted for its invariants and determinism.

use chrono::{DateTime, Duration, TimeZone, Utc};
use lido_shared::model::{BookLevel, OrderStatus, OrderType, Side, Symbol, TimeInForce};
use lido_shared::pipe::{ServiceEvent, VenueOrder, VenueOrderReport};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::{PaperConfig, PaperError, PaperVenue};

const ACCOUNT: &str = "acme";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap()
}

fn sym(s: &str) -> Symbol {
    Symbol::parse(s).unwrap()
}

fn venue() -> PaperVenue {
    PaperVenue::new(PaperConfig::default(), t0())
}

fn venue_with_seed(seed: u64) -> PaperVenue {
    PaperVenue::new(PaperConfig { seed, ..PaperConfig::default() }, t0())
}

fn order(
    client_id: &str,
    symbol: &str,
    side: Side,
    order_type: OrderType,
    time_in_force: TimeInForce,
    quantity: Decimal,
    limit_price: Option<Decimal>,
) -> VenueOrder {
    VenueOrder {
        client_id: client_id.into(),
        account: ACCOUNT.into(),
        symbol: sym(symbol),
        side,
        order_type,
        time_in_force,
        quantity,
        limit_price,
        client_order_id: None,
    }
}

fn market(client_id: &str, symbol: &str, side: Side, quantity: Decimal) -> VenueOrder {
    order(client_id, symbol, side, OrderType::Market, TimeInForce::Ioc, quantity, None)
}

fn limit(client_id: &str, symbol: &str, side: Side, tif: TimeInForce, quantity: Decimal, price: Decimal) -> VenueOrder {
    order(client_id, symbol, side, OrderType::Limit, tif, quantity, Some(price))
}

/// `(total, available)` of one asset, zero if absent.
fn balance(v: &PaperVenue, asset: &str) -> (Decimal, Decimal) {
    v.balances(ACCOUNT)
        .into_iter()
        .find(|b| b.asset == asset)
        .map_or((Decimal::ZERO, Decimal::ZERO), |b| (b.total, b.available))
}

/// A scripted BTC/USD book: 1.8 BTC offered over three levels.
fn script_btc(v: &mut PaperVenue) {
    v.set_book(
        &sym("BTC/USD"),
        vec![BookLevel(dec!(64999.9), dec!(1.0)), BookLevel(dec!(64999.0), dec!(2.0))],
        vec![
            BookLevel(dec!(65000.0), dec!(0.5)),
            BookLevel(dec!(65000.5), dec!(0.3)),
            BookLevel(dec!(65001.0), dec!(1.0)),
        ],
    )
    .unwrap();
}

fn fills(events: &[ServiceEvent]) -> Vec<(Decimal, Decimal, Decimal)> {
    events
        .iter()
        .filter_map(|e| match e {
            ServiceEvent::Fill(f) => Some((f.price, f.quantity, f.fee)),
            _ => None,
        })
        .collect()
}

fn kinds(events: &[ServiceEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            ServiceEvent::Quote(_) => "quote",
            ServiceEvent::Trade(_) => "trade",
            ServiceEvent::Book(_) => "book",
            ServiceEvent::OrderUpdate(_) => "order_update",
            ServiceEvent::Fill(_) => "fill",
            ServiceEvent::Metrics(_) => "metrics",
            ServiceEvent::Scaled { .. } => "scaled",
        })
        .collect()
}

fn last_update(events: &[ServiceEvent]) -> &VenueOrderReport {
    match events.last() {
        Some(ServiceEvent::OrderUpdate(r)) => r,
        other => panic!("expected an order update last, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Catalogue and market data
// ---------------------------------------------------------------------------

#[test]
fn lists_crypto_and_equities_with_real_increments() {
    let v = venue();
    let symbols: Vec<String> = v.instruments().iter().map(|i| i.symbol.to_string()).collect();
    assert_eq!(symbols, ["BTC/USD", "ETH/USD", "SOL/USD", "AAPL", "MSFT", "SPY", "TSLA"]);
    let btc = v.instrument(&sym("BTC/USD")).unwrap();
    assert_eq!((btc.tick_size, btc.lot_size, btc.min_quantity), (dec!(0.1), dec!(0.0001), dec!(0.0001)));
    assert_eq!((btc.base.as_str(), btc.quote.as_str()), ("BTC", "USD"));
    let aapl = v.instrument(&sym("AAPL")).unwrap();
    assert_eq!((aapl.tick_size, aapl.lot_size, aapl.min_quantity), (dec!(0.01), dec!(1), dec!(1)));
    assert_eq!((aapl.base.as_str(), aapl.quote.as_str()), ("AAPL", "USD"));
    assert!(v.instrument(&sym("DOGE/USD")).is_none());
}

#[test]
fn markets_open_at_their_reference_prices() {
    let v = venue();
    let q = v.quote(&sym("BTC/USD")).unwrap();
    assert!([dec!(64999.8), dec!(64999.9)].contains(&q.bid), "bid {}", q.bid);
    assert!([dec!(65000.1), dec!(65000.2)].contains(&q.ask), "ask {}", q.ask);
    assert_eq!(q.last, None);
    assert_eq!(q.ts, t0());
    let q = v.quote(&sym("AAPL")).unwrap();
    assert!([dec!(189.98), dec!(189.99)].contains(&q.bid), "bid {}", q.bid);
}

#[test]
fn unknown_symbol_is_an_error_with_a_code() {
    let v = venue();
    let err = v.quote(&sym("DOGE/USD")).unwrap_err();
    assert_eq!(err, PaperError::UnknownSymbol("DOGE/USD".into()));
    assert_eq!(err.code(), "unknown_symbol");
    assert_eq!(err.to_string(), "unknown symbol DOGE/USD: list the instruments to see what the paper venue trades");
    assert_eq!(v.book(&sym("DOGE/USD"), 5).unwrap_err().code(), "unknown_symbol");
}

#[test]
fn same_seed_gives_identical_markets() {
    let (mut a, mut b) = (venue_with_seed(7), venue_with_seed(7));
    for n in 1..=200 {
        let now = t0() + Duration::seconds(n);
        assert_eq!(a.tick(now), b.tick(now), "tick {n}");
    }
    for i in a.instruments() {
        assert_eq!(a.quote(&i.symbol).unwrap(), b.quote(&i.symbol).unwrap());
        assert_eq!(a.book(&i.symbol, 20).unwrap(), b.book(&i.symbol, 20).unwrap());
    }
    let btc = a.quote(&sym("BTC/USD")).unwrap();
    assert!((btc.bid - dec!(65000)).abs() > dec!(1), "200 s of BTC volatility should move the price, bid {}", btc.bid);
}

#[test]
fn different_seeds_give_different_markets() {
    let (mut a, mut b) = (venue_with_seed(7), venue_with_seed(8));
    for n in 1..=50 {
        let now = t0() + Duration::seconds(n);
        a.tick(now);
        b.tick(now);
    }
    let differing =
        a.instruments().iter().filter(|i| a.quote(&i.symbol).unwrap() != b.quote(&i.symbol).unwrap()).count();
    assert_eq!(differing, 7);
}

#[test]
fn books_are_sane_on_tick_and_lot() {
    let mut v = venue();
    for n in 0..=50 {
        if n > 0 {
            v.tick(t0() + Duration::minutes(n));
        }
        for i in v.instruments() {
            let book = v.book(&i.symbol, 20).unwrap();
            assert_eq!((book.bids.len(), book.asks.len()), (20, 20), "{}", i.symbol);
            assert!(book.bids.windows(2).all(|w| w[0].price() > w[1].price()), "{} bids descend", i.symbol);
            assert!(book.asks.windows(2).all(|w| w[0].price() < w[1].price()), "{} asks ascend", i.symbol);
            let (bid, ask) = (book.bids[0].price(), book.asks[0].price());
            let spread_ticks = (ask - bid) / i.tick_size;
            assert!((dec!(2)..=dec!(4)).contains(&spread_ticks), "{} spread {spread_ticks} ticks", i.symbol);
            for level in book.bids.iter().chain(&book.asks) {
                assert!(level.price() > Decimal::ZERO && (level.price() % i.tick_size).is_zero(), "{level:?}");
                assert!(level.size() > Decimal::ZERO && (level.size() % i.lot_size).is_zero(), "{level:?}");
            }
            let q = v.quote(&i.symbol).unwrap();
            assert_eq!((q.bid, q.bid_size, q.ask, q.ask_size), (bid, book.bids[0].size(), ask, book.asks[0].size()));
            assert_eq!(v.book(&i.symbol, 3).unwrap().bids.len(), 3);
        }
    }
}

#[test]
fn tick_emits_quote_and_book_per_symbol_then_trades() {
    let mut v = venue();
    let now = t0() + Duration::seconds(1);
    let events = v.tick(now);
    let ks = kinds(&events);
    assert_eq!(ks.iter().filter(|k| **k == "quote").count(), 7);
    assert_eq!(ks.iter().filter(|k| **k == "book").count(), 7);
    assert!(ks.iter().all(|k| ["quote", "book", "trade"].contains(k)), "no own orders, no order events: {ks:?}");
    assert_eq!(&ks[..2], ["quote", "book"]);
    let ServiceEvent::Quote(q) = &events[0] else { unreachable!() };
    assert_eq!((q.symbol.as_str(), q.ts), ("BTC/USD", now));
    let ServiceEvent::Book(b) = &events[1] else { unreachable!() };
    assert_eq!(b.bids.len(), 20);
    assert_eq!(v.now(), now);
}

// ---------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------

#[test]
fn market_buy_walks_levels_with_vwap_fees_and_balances() {
    let mut v = venue();
    script_btc(&mut v);
    let (report, events) = v.place(market("m-1", "BTC/USD", Side::Buy, dec!(1.2)), t0());

    assert_eq!(report.status, OrderStatus::Filled);
    assert_eq!(report.filled_quantity, dec!(1.2));
    // (0.5 × 65000.0 + 0.3 × 65000.5 + 0.4 × 65001.0) / 1.2 = 78000.55 / 1.2
    assert_eq!(report.average_price, Some(dec!(65000.458333333333)));
    assert_eq!(report.venue_order_id, "P-1");
    assert_eq!(
        fills(&events),
        [
            (dec!(65000.0), dec!(0.5), dec!(32.5)),
            (dec!(65000.5), dec!(0.3), dec!(19.50015)),
            (dec!(65001.0), dec!(0.4), dec!(26.0004)),
        ]
    );
    assert_eq!(kinds(&events), ["fill", "trade", "fill", "trade", "fill", "trade", "order_update"]);
    assert_eq!(last_update(&events), &report);
    let ServiceEvent::Fill(first) = &events[0] else { unreachable!() };
    assert_eq!((first.fill_id.as_str(), first.order_id.as_str()), ("F-1", "m-1"));
    let ServiceEvent::Trade(print) = &events[1] else { unreachable!() };
    assert_eq!((print.side, print.price, print.quantity), (Side::Buy, dec!(65000.0), dec!(0.5)));

    // 100000 − 78000.55 notional − 78.00055 fees
    assert_eq!(balance(&v, "USD"), (dec!(21921.44945), dec!(21921.44945)));
    assert_eq!(balance(&v, "BTC"), (dec!(1.2), dec!(1.2)));
    let q = v.quote(&sym("BTC/USD")).unwrap();
    assert_eq!((q.ask, q.ask_size, q.last), (dec!(65001.0), dec!(0.6), Some(dec!(65001.0))));
}

#[test]
fn second_market_order_in_a_tick_goes_deeper() {
    let mut v = venue();
    script_btc(&mut v);
    let (first, _) = v.place(market("m-1", "BTC/USD", Side::Buy, dec!(0.5)), t0());
    let (second, events) = v.place(market("m-2", "BTC/USD", Side::Buy, dec!(0.5)), t0());
    assert_eq!(first.average_price, Some(dec!(65000)));
    assert_eq!(
        fills(&events).iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(),
        [(dec!(65000.5), dec!(0.3)), (dec!(65001.0), dec!(0.2))]
    );
    // (19500.15 + 13000.2) / 0.5
    assert_eq!(second.average_price, Some(dec!(65000.7)));
    assert_eq!(second.venue_order_id, "P-2");
}

#[test]
fn market_order_remainder_is_canceled_when_depth_runs_out() {
    let config = PaperConfig { starting_cash: dec!(1_000_000), ..PaperConfig::default() };
    let mut v = PaperVenue::new(config, t0());
    script_btc(&mut v);
    let (report, events) = v.place(market("m-1", "BTC/USD", Side::Buy, dec!(2.0)), t0());
    assert_eq!(report.status, OrderStatus::Canceled);
    assert_eq!(report.reason.as_deref(), Some("no liquidity for remainder"));
    assert_eq!(report.filled_quantity, dec!(1.8));
    // 117001.15 / 1.8
    assert_eq!(report.average_price, Some(dec!(65000.638888888889)));
    assert_eq!(fills(&events).len(), 3);
    assert!(v.book(&sym("BTC/USD"), 20).unwrap().asks.is_empty());
    let q = v.quote(&sym("BTC/USD")).unwrap();
    assert_eq!((q.ask, q.ask_size), (dec!(65000.0), Decimal::ZERO));
    assert_eq!(balance(&v, "USD"), (dec!(882881.84885), dec!(882881.84885)));
}

#[test]
fn market_sell_walks_the_bids() {
    let mut v = venue();
    script_btc(&mut v);
    v.place(market("b", "BTC/USD", Side::Buy, dec!(0.5)), t0());
    let (report, events) = v.place(market("s", "BTC/USD", Side::Sell, dec!(0.5)), t0());
    assert_eq!(report.status, OrderStatus::Filled);
    assert_eq!(fills(&events), [(dec!(64999.9), dec!(0.5), dec!(32.49995))]);
    // 100000 − 32500 − 32.5 + 32499.95 − 32.49995
    assert_eq!(balance(&v, "USD"), (dec!(99934.95005), dec!(99934.95005)));
    assert_eq!(balance(&v, "BTC"), (Decimal::ZERO, Decimal::ZERO));
    assert!(v.positions(ACCOUNT).is_empty());
}

#[test]
fn limit_ioc_fills_what_it_can_and_cancels_the_rest() {
    let mut v = venue();
    script_btc(&mut v);
    let (report, events) =
        v.place(limit("i-1", "BTC/USD", Side::Buy, TimeInForce::Ioc, dec!(1.0), dec!(65000.5)), t0());
    assert_eq!(report.status, OrderStatus::Canceled);
    assert_eq!(
        report.reason.as_deref(),
        Some("immediate-or-cancel remainder canceled: no liquidity at or better than the limit")
    );
    assert_eq!(report.filled_quantity, dec!(0.8));
    // (32500 + 19500.15) / 0.8
    assert_eq!(report.average_price, Some(dec!(65000.1875)));
    assert_eq!(fills(&events).len(), 2);
    assert_eq!(balance(&v, "USD"), (dec!(47947.84985), dec!(47947.84985)));
    assert!(v.open_orders(ACCOUNT).is_empty());
    assert_eq!(v.book(&sym("BTC/USD"), 20).unwrap().asks, [BookLevel(dec!(65001.0), dec!(1.0))]);
}

#[test]
fn limit_gtc_remainder_rests_and_holds_funds_back() {
    let mut v = venue();
    script_btc(&mut v);
    let (report, _) = v.place(limit("g-1", "BTC/USD", Side::Buy, TimeInForce::Gtc, dec!(1.0), dec!(65000.5)), t0());
    assert_eq!(report.status, OrderStatus::PartiallyFilled);
    assert_eq!(report.filled_quantity, dec!(0.8));
    let open = v.open_orders(ACCOUNT);
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].order.as_ref().map(|o| o.client_id.as_str()), Some("g-1"), "listings carry the order");
    assert_eq!(VenueOrderReport { order: None, ..open[0].clone() }, report);
    // 0.2 × 65000.5 × 1.001 = 13013.1001 held back
    assert_eq!(balance(&v, "USD"), (dec!(47947.84985), dec!(34934.74975)));
}

#[test]
fn gtc_order_rests_then_fills_when_the_market_moves_through() {
    let mut v = venue();
    let bid = v.quote(&sym("BTC/USD")).unwrap().bid;
    let price = bid - dec!(2.0);
    let (report, events) = v.place(limit("g-1", "BTC/USD", Side::Buy, TimeInForce::Gtc, dec!(0.01), price), t0());
    assert_eq!(report.status, OrderStatus::Accepted);
    assert_eq!(kinds(&events), ["order_update"]);
    let held = dec!(0.01) * price * dec!(1.001);
    assert_eq!(balance(&v, "USD"), (dec!(100000), dec!(100000) - held));

    let mut filled = None;
    for n in 1..=600 {
        let events = v.tick(t0() + Duration::seconds(n));
        let own: Vec<_> = events.iter().filter(|e| e.must_deliver()).cloned().collect();
        if !own.is_empty() {
            filled = Some((n, own));
            break;
        }
    }
    let (n, own) = filled.expect("BTC should trade 2.0 below the bid within 600 one-second ticks");
    assert!(n >= 1);
    assert_eq!(kinds(&own), ["fill", "order_update"]);
    assert_eq!(fills(&own), [(price, dec!(0.01), price * dec!(0.01) * dec!(0.001))]);
    let report = last_update(&own);
    assert_eq!(
        (report.status, report.filled_quantity, report.average_price),
        (OrderStatus::Filled, dec!(0.01), Some(price))
    );
    assert_eq!(v.order(ACCOUNT, "g-1").as_ref(), Some(report));
    assert_eq!(balance(&v, "USD"), (dec!(100000) - held, dec!(100000) - held));
    assert_eq!(balance(&v, "BTC"), (dec!(0.01), dec!(0.01)));
    assert!(v.open_orders(ACCOUNT).is_empty());
}

// ---------------------------------------------------------------------------
// Cancel and expiry
// ---------------------------------------------------------------------------

#[test]
fn cancel_releases_reserved_funds() {
    let mut v = venue();
    script_btc(&mut v);
    v.place(limit("g-1", "BTC/USD", Side::Buy, TimeInForce::Gtc, dec!(1.0), dec!(60000.0)), t0());
    assert_eq!(balance(&v, "USD"), (dec!(100000), dec!(39940)));

    let later = t0() + Duration::seconds(5);
    let (report, events) = v.cancel(ACCOUNT, "g-1", later).unwrap();
    assert_eq!(
        (report.status, report.reason.as_deref(), report.ts),
        (OrderStatus::Canceled, Some("canceled on request"), later)
    );
    assert_eq!(events, [ServiceEvent::OrderUpdate(report)]);
    assert_eq!(balance(&v, "USD"), (dec!(100000), dec!(100000)));
    assert!(v.open_orders(ACCOUNT).is_empty());

    let again = v.cancel(ACCOUNT, "g-1", later).unwrap_err();
    assert_eq!(again, PaperError::NotOpen { client_id: "g-1".into(), status: OrderStatus::Canceled });
    assert_eq!(again.code(), "order_not_open");
    assert_eq!(again.to_string(), "order g-1 is already canceled: only open orders can be canceled");
    let unknown = v.cancel(ACCOUNT, "nope", later).unwrap_err();
    assert_eq!((unknown.code(), unknown), ("unknown_order", PaperError::UnknownOrder("nope".into())));
    assert_eq!(v.cancel("someone-else", "g-1", later).unwrap_err().code(), "unknown_order");
}

#[test]
fn resting_sell_holds_back_the_base_asset() {
    let mut v = venue();
    v.set_book(&sym("AAPL"), vec![BookLevel(dec!(99.00), dec!(100))], vec![BookLevel(dec!(100.00), dec!(100))])
        .unwrap();
    v.place(market("b", "AAPL", Side::Buy, dec!(10)), t0());
    v.place(limit("s-1", "AAPL", Side::Sell, TimeInForce::Gtc, dec!(10), dec!(150.00)), t0());
    assert_eq!(balance(&v, "AAPL"), (dec!(10), dec!(0)));
    let (report, _) = v.place(market("s-2", "AAPL", Side::Sell, dec!(1)), t0());
    assert_eq!(report.status, OrderStatus::Rejected);
    v.cancel(ACCOUNT, "s-1", t0()).unwrap();
    assert_eq!(balance(&v, "AAPL"), (dec!(10), dec!(10)));
}

#[test]
fn day_orders_expire_when_the_utc_date_rolls_over() {
    let start = Utc.with_ymd_and_hms(2024, 3, 1, 23, 59, 0).unwrap();
    let mut v = PaperVenue::new(PaperConfig::default(), start);
    v.place(limit("day", "AAPL", Side::Buy, TimeInForce::Day, dec!(10), dec!(100.00)), start);
    v.place(limit("gtc", "AAPL", Side::Buy, TimeInForce::Gtc, dec!(10), dec!(100.00)), start);
    assert_eq!(balance(&v, "USD"), (dec!(100000), dec!(97998)));

    let events = v.tick(start + Duration::seconds(30));
    assert!(events.iter().all(|e| !e.must_deliver()));
    assert_eq!(v.open_orders(ACCOUNT).len(), 2);

    let midnight = Utc.with_ymd_and_hms(2024, 3, 2, 0, 0, 5).unwrap();
    let own: Vec<_> = v.tick(midnight).into_iter().filter(ServiceEvent::must_deliver).collect();
    assert_eq!(own.len(), 1);
    let report = last_update(&own);
    assert_eq!((report.client_id.as_str(), report.status, report.ts), ("day", OrderStatus::Expired, midnight));
    assert_eq!(report.reason.as_deref(), Some("day order expired at the end of its utc trading day"));
    let open: Vec<String> = v.open_orders(ACCOUNT).into_iter().map(|r| r.client_id).collect();
    assert_eq!(open, ["gtc"]);
    assert_eq!(balance(&v, "USD"), (dec!(100000), dec!(98999)));
    assert_eq!(
        v.cancel(ACCOUNT, "day", midnight).unwrap_err(),
        PaperError::NotOpen { client_id: "day".into(), status: OrderStatus::Expired }
    );
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

#[test]
fn insufficient_funds_rejects_and_changes_nothing() {
    let mut v = venue();
    script_btc(&mut v);
    v.set_book(&sym("ETH/USD"), vec![BookLevel(dec!(3499.99), dec!(10))], vec![BookLevel(dec!(3500.00), dec!(40))])
        .unwrap();
    let before = (v.balances(ACCOUNT), v.book(&sym("BTC/USD"), 20).unwrap(), v.book(&sym("ETH/USD"), 20).unwrap());

    let (report, events) = v.place(limit("big", "BTC/USD", Side::Buy, TimeInForce::Gtc, dec!(2), dec!(65000.0)), t0());
    assert_eq!(report.status, OrderStatus::Rejected);
    assert_eq!(report.reason.as_deref(), Some("insufficient funds: need 130130.00 USD, available 100000.00 USD"));
    assert_eq!((report.filled_quantity, report.average_price), (Decimal::ZERO, None));
    assert_eq!(events, [ServiceEvent::OrderUpdate(report)]);

    // a market buy is priced by walking the asks: 30 × 3500.00 × 1.001
    let (report, _) = v.place(market("big-mkt", "ETH/USD", Side::Buy, dec!(30)), t0());
    assert_eq!(report.reason.as_deref(), Some("insufficient funds: need 105105.00 USD, available 100000.00 USD"));

    let after = (v.balances(ACCOUNT), v.book(&sym("BTC/USD"), 20).unwrap(), v.book(&sym("ETH/USD"), 20).unwrap());
    assert_eq!(before, after);
    assert!(v.open_orders(ACCOUNT).is_empty());
    assert!(v.positions(ACCOUNT).is_empty());
}

#[test]
fn selling_without_holdings_is_rejected() {
    let mut v = venue();
    let (report, _) = v.place(market("s-1", "BTC/USD", Side::Sell, dec!(0.5)), t0());
    assert_eq!(report.status, OrderStatus::Rejected);
    assert_eq!(
        report.reason.as_deref(),
        Some("insufficient funds: need 0.5 BTC, available 0 BTC; the paper venue does not allow short selling")
    );
    let (report, _) = v.place(limit("s-2", "AAPL", Side::Sell, TimeInForce::Gtc, dec!(1), dec!(190.00)), t0());
    assert_eq!(
        report.reason.as_deref(),
        Some("insufficient funds: need 1 AAPL, available 0 AAPL; the paper venue does not allow short selling")
    );
    assert_eq!(v.balances(ACCOUNT).len(), 1);
}

#[test]
fn quantity_price_and_symbol_validation_rejects() {
    let mut v = venue();
    let cases = [
        (market("a", "BTC/USD", Side::Buy, dec!(0.00005)), "quantity 0.00005 is below the minimum 0.0001 for BTC/USD"),
        (
            market("b", "BTC/USD", Side::Buy, dec!(0.00015)),
            "quantity 0.00015 is not a multiple of the lot size 0.0001 for BTC/USD",
        ),
        (market("c", "AAPL", Side::Buy, dec!(1.5)), "quantity 1.5 is not a multiple of the lot size 1 for AAPL"),
        (market("d", "AAPL", Side::Buy, dec!(0)), "quantity must be positive, got 0"),
        (market("e", "AAPL", Side::Buy, dec!(-3)), "quantity must be positive, got -3"),
        (
            limit("f", "BTC/USD", Side::Buy, TimeInForce::Gtc, dec!(0.1), dec!(65000.05)),
            "price 65000.05 is not a multiple of the tick size 0.1 for BTC/USD",
        ),
        (
            limit("g", "AAPL", Side::Buy, TimeInForce::Gtc, dec!(1), dec!(190.005)),
            "price 190.005 is not a multiple of the tick size 0.01 for AAPL",
        ),
        (limit("h", "AAPL", Side::Buy, TimeInForce::Gtc, dec!(1), dec!(-1.00)), "price must be positive, got -1.00"),
        (
            order("i", "AAPL", Side::Buy, OrderType::Limit, TimeInForce::Gtc, dec!(1), None),
            "a limit order needs a limit price",
        ),
        (
            order("j", "AAPL", Side::Buy, OrderType::Market, TimeInForce::Ioc, dec!(1), Some(dec!(190.00))),
            "a market order takes no limit price: drop it or send a limit order",
        ),
        (
            market("k", "DOGE/USD", Side::Buy, dec!(1)),
            "unknown symbol DOGE/USD: list the instruments to see what the paper venue trades",
        ),
    ];
    for (order, reason) in cases {
        let id = order.client_id.clone();
        let (report, events) = v.place(order, t0());
        assert_eq!((report.status, report.reason.as_deref()), (OrderStatus::Rejected, Some(reason)), "order {id}");
        assert_eq!(events.len(), 1);
    }
    assert!(v.open_orders(ACCOUNT).is_empty());
    assert_eq!(balance(&v, "USD"), (dec!(100000), dec!(100000)));
}

#[test]
fn place_is_idempotent_on_client_id() {
    let mut v = venue();
    script_btc(&mut v);
    let (first, events) = v.place(limit("c-1", "BTC/USD", Side::Buy, TimeInForce::Gtc, dec!(0.1), dec!(60000.0)), t0());
    assert_eq!(events.len(), 1);
    let (again, events) = v.place(limit("c-1", "BTC/USD", Side::Buy, TimeInForce::Gtc, dec!(0.2), dec!(61000.0)), t0());
    assert_eq!(again, first);
    assert!(events.is_empty());
    assert_eq!(v.open_orders(ACCOUNT).len(), 1);
    assert_eq!(balance(&v, "USD"), (dec!(100000), dec!(93994)));

    // a rejection is remembered too
    let (rejected, _) = v.place(market("c-2", "BTC/USD", Side::Sell, dec!(1)), t0());
    let (again, events) = v.place(market("c-2", "BTC/USD", Side::Sell, dec!(1)), t0());
    assert_eq!((again, events.len()), (rejected, 0));

    // the same client id in another account is another order
    let mut other = limit("c-1", "BTC/USD", Side::Buy, TimeInForce::Gtc, dec!(0.1), dec!(60000.0));
    other.account = "globex".into();
    let (report, _) = v.place(other, t0());
    assert_eq!(report.venue_order_id, "P-3");
    assert_eq!(v.open_orders("globex").len(), 1);
    assert_eq!(v.open_orders(ACCOUNT).len(), 1);
}

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

#[test]
fn new_accounts_start_with_cash() {
    let v = venue();
    let balances = v.balances("fresh");
    assert_eq!(balances.len(), 1);
    assert_eq!(
        (balances[0].asset.as_str(), balances[0].total, balances[0].available),
        ("USD", dec!(100000), dec!(100000))
    );
    assert!(v.positions("fresh").is_empty());
    assert!(v.open_orders("fresh").is_empty());
    assert_eq!(v.order("fresh", "x"), None);
}

#[test]
fn positions_track_vwap_through_buys_and_a_partial_sell() {
    let mut v = venue();
    let aapl = sym("AAPL");
    v.set_book(
        &aapl,
        vec![BookLevel(dec!(99.00), dec!(100))],
        vec![BookLevel(dec!(100.00), dec!(10)), BookLevel(dec!(101.00), dec!(10))],
    )
    .unwrap();
    v.place(market("b-1", "AAPL", Side::Buy, dec!(10)), t0());
    v.set_book(&aapl, vec![BookLevel(dec!(103.99), dec!(100))], vec![BookLevel(dec!(104.00), dec!(30))]).unwrap();
    v.place(market("b-2", "AAPL", Side::Buy, dec!(30)), t0());

    let position = &v.positions(ACCOUNT)[0];
    // (10 × 100 + 30 × 104) / 40
    assert_eq!(
        (position.symbol.as_str(), position.quantity, position.average_price),
        ("AAPL", dec!(40), Some(dec!(103)))
    );

    v.set_book(&aapl, vec![BookLevel(dec!(105.00), dec!(100))], vec![BookLevel(dec!(105.01), dec!(100))]).unwrap();
    let (report, events) = v.place(market("s-1", "AAPL", Side::Sell, dec!(15)), t0());
    assert_eq!((report.status, report.average_price), (OrderStatus::Filled, Some(dec!(105))));
    assert_eq!(fills(&events), [(dec!(105.00), dec!(15), dec!(1.575))]);

    let positions = v.positions(ACCOUNT);
    assert_eq!(positions.len(), 1);
    assert_eq!((positions[0].quantity, positions[0].average_price), (dec!(25), Some(dec!(103))));
    // 100000 − 1000 − 1 − 3120 − 3.12 + 1575 − 1.575
    assert_eq!(balance(&v, "USD"), (dec!(97449.305), dec!(97449.305)));
    assert_eq!(balance(&v, "AAPL"), (dec!(25), dec!(25)));
}

#[test]
fn a_restored_venue_has_its_accounts_and_resting_orders_back() {
    let mut v = venue();
    script_btc(&mut v);
    let (report, _) = v.place(limit("g-1", "BTC/USD", Side::Buy, TimeInForce::Gtc, dec!(1.0), dec!(65000.5)), t0());
    let json = serde_json::to_string(&v.state()).unwrap();

    let mut restored = venue();
    restored.restore(serde_json::from_str(&json).unwrap());
    assert_eq!(restored.balances(ACCOUNT), v.balances(ACCOUNT), "holdings and reservations survive");
    assert_eq!(restored.positions(ACCOUNT), v.positions(ACCOUNT));
    assert_eq!(restored.open_orders(ACCOUNT), v.open_orders(ACCOUNT));
    assert_eq!(restored.order(ACCOUNT, "g-1"), Some(report));
    // The same client id is still the same order, and new ids continue.
    let (again, events) =
        restored.place(limit("g-1", "BTC/USD", Side::Buy, TimeInForce::Gtc, dec!(1.0), dec!(65000.5)), t0());
    assert!(events.is_empty());
    assert_eq!(again.venue_order_id, "P-1");
    let (next, _) = restored.place(limit("g-2", "BTC/USD", Side::Buy, TimeInForce::Gtc, dec!(0.1), dec!(1000)), t0());
    assert_eq!(next.venue_order_id, "P-2");
    // The resting order can still be canceled, releasing its funds.
    restored.cancel(ACCOUNT, "g-1", t0()).unwrap();
    assert!(restored.open_orders(ACCOUNT).iter().all(|o| o.client_id != "g-1"));
}

#[test]
fn a_repeat_place_from_another_node_finds_the_first_order_with_its_details() {
    let mut v = venue();
    script_btc(&mut v);
    // Node A places; node B (same account, same Lido order id) places again.
    let mut first = limit("o-1", "BTC/USD", Side::Buy, TimeInForce::Gtc, dec!(0.6), dec!(65000.0));
    first.client_order_id = Some("algo-7".into());
    let (placed, _) = v.place(first.clone(), t0());
    assert_eq!((placed.status, placed.filled_quantity), (OrderStatus::PartiallyFilled, dec!(0.5)));
    assert_eq!(placed.trade_ids, ["F-1"], "the report names its fills");
    let (again, events) = v.place(first, t0() + Duration::seconds(1));
    assert_eq!(again, placed);
    assert!(events.is_empty(), "nothing new happened");
    assert_eq!(v.open_orders(ACCOUNT).len(), 1, "exactly one order of that client id");

    // What another node needs to adopt it: the order and the algo's id.
    let detailed = v.order_detailed(ACCOUNT, "o-1").unwrap();
    let order = detailed.order.as_deref().unwrap();
    assert_eq!(order.client_order_id.as_deref(), Some("algo-7"));
    assert_eq!(detailed.trade_ids, ["F-1"]);
    assert_eq!(v.order_detailed("globex", "o-1"), None, "accounts stay apart");
    assert_eq!(v.open_orders(ACCOUNT)[0].order.as_deref().unwrap().client_order_id.as_deref(), Some("algo-7"));
}

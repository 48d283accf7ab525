//! Lido orders ↔ Schwab's order JSON.
//!
//! - [`request`]: a [`VenueOrder`] as the documented single-leg equity
//!   order (`orderType`, `session`, `duration`, `orderStrategyType: SINGLE`,
//!   `orderLegCollection[{instruction, quantity, instrument}]`). Schwab's API
//!   takes whole shares only, so a fractional quantity is refused here.
//! - [`order_id_from_location`]: the new order's id, from the `Location`
//!   header of the `201 Created` (the body is empty).
//! - [`report`] and [`fills`]: Schwab's order (status, `filledQuantity`,
//!   `orderActivityCollection` executions) as Lido's report and fills;
//!   [`venue_order`]: what the order asks for (instrument, instruction,
//!   quantity, type, price, duration) in Lido's terms, which the report
//!   carries so that a restarted node can adopt an order it never journaled.
//! - [`same_order`]: Schwab has no client order id field, so after a send
//!   whose outcome is unknown the broker finds its order again among the
//!   recent ones by what it asked for (symbol, instruction, quantity, type,
//!   price, duration, session).

use chrono::{DateTime, TimeDelta, Utc};
use lido_shared::model::{Fill, OrderStatus, OrderType, Side, Symbol, TimeInForce};
use lido_shared::pipe::{VenueOrder, VenueOrderReport};
use rust_decimal::Decimal;

use super::error::SchwabError;
use super::hours::Session;
use super::wire::{self, Instrument, OrderLeg, OrderRequest};

/// The order JSON for `order`: `session` is the broker's (`NORMAL`, or
/// `SEAMLESS` with `extended_hours`), except that a market order always goes
/// `NORMAL` (Schwab takes market orders in the regular session only);
/// `position` is the account's position in the symbol (long positive, short
/// negative), which picks the instruction ([`instruction`]).
///
/// Time in force: `gtc` → `GOOD_TILL_CANCEL`, `day` → `DAY`; a market order
/// goes `DAY` whatever it says. `ioc` is refused before sending: Schwab
/// answers `IMMEDIATE_OR_CANCEL` with 400 for equities (schwab-py issue 226
/// tried each duration on a live account), and its `FILL_OR_KILL` is not
/// the same promise (all or nothing, where ioc keeps a partial fill), so
/// Lido does not substitute it.
pub fn request(order: &VenueOrder, session: Session, position: Decimal) -> Result<OrderRequest, SchwabError> {
    if order.symbol.quote().is_some() {
        return Err(SchwabError::Invalid(format!(
            "{} is a currency pair; a Schwab broker trades US equities by ticker (AAPL)",
            order.symbol
        )));
    }
    if order.quantity <= Decimal::ZERO || !order.quantity.fract().is_zero() {
        return Err(SchwabError::Invalid(format!(
            "quantity {} is not a whole number of shares; Schwab's API takes whole shares only",
            order.quantity
        )));
    }
    if order.time_in_force == TimeInForce::Ioc {
        return Err(SchwabError::Refused {
            code: UNSUPPORTED_TIME_IN_FORCE,
            message: "time_in_force ioc is not available at Schwab (its API refuses IMMEDIATE_OR_CANCEL for \
                      equities, and FILL_OR_KILL is all-or-nothing, not the same); Schwab accepts day and gtc: \
                      the order was not sent"
                .into(),
        });
    }
    let (order_type, price, session) = match (order.order_type, order.limit_price) {
        (OrderType::Market, _) => ("MARKET", None, Session::Normal),
        (OrderType::Limit, Some(p)) if p > Decimal::ZERO => ("LIMIT", Some(p.normalize()), session),
        (OrderType::Limit, _) => return Err(SchwabError::Invalid("a limit order needs a positive limit_price".into())),
    };
    // A market order executes at once or not at all: Schwab takes it as a
    // DAY order, whatever time in force Lido's default (gtc) says.
    let duration = match (order.order_type, order.time_in_force) {
        (OrderType::Market, _) | (_, TimeInForce::Day) => "DAY",
        (_, TimeInForce::Gtc) => "GOOD_TILL_CANCEL",
        (_, TimeInForce::Ioc) => unreachable!("refused above"),
    };
    Ok(OrderRequest {
        order_type: order_type.into(),
        session: session.wire().into(),
        duration: duration.into(),
        order_strategy_type: "SINGLE".into(),
        price,
        order_leg_collection: vec![OrderLeg {
            instruction: instruction(order.side, order.quantity, position, &order.symbol)?.into(),
            quantity: order.quantity.normalize(),
            instrument: Instrument { symbol: order.symbol.as_str().into(), asset_type: "EQUITY".into() },
        }],
    })
}

/// Lido's code for a time in force Schwab does not take.
pub const UNSUPPORTED_TIME_IN_FORCE: &str = "unsupported_time_in_force";
/// Lido's code for an order that would cross a position through zero.
pub const POSITION_CROSSING: &str = "position_crossing";

/// Schwab's instruction for `side` given the account's `position` in
/// `symbol`: `BUY`/`SELL` against a long (or no) position, `SELL_SHORT`
/// with no long position, `BUY_TO_COVER` against a short one. Schwab takes
/// one instruction per order, so an order that would cross zero (sell more
/// than the long position, buy more than the short) is refused with what
/// to send instead.
pub fn instruction(
    side: Side,
    quantity: Decimal,
    position: Decimal,
    symbol: &Symbol,
) -> Result<&'static str, SchwabError> {
    let crossing = |held: Decimal, what: &str, rest: &str| SchwabError::Refused {
        code: POSITION_CROSSING,
        message: format!(
            "{what} {quantity} {symbol} would cross the position of {position} through zero, which Schwab does not \
             take in one order: send {held} first, then {rest}; the order was not sent",
            position = position.normalize(),
        ),
    };
    match side {
        Side::Buy if position < Decimal::ZERO => {
            let short = -position;
            if quantity > short {
                return Err(crossing(short.normalize(), "buying", "the rest as a new buy"));
            }
            Ok("BUY_TO_COVER")
        }
        Side::Buy => Ok("BUY"),
        Side::Sell if position > Decimal::ZERO => {
            if quantity > position {
                return Err(crossing(position.normalize(), "selling", "the rest as a short sale"));
            }
            Ok("SELL")
        }
        Side::Sell => Ok("SELL_SHORT"),
    }
}

/// The order id at the end of `…/accounts/{hash}/orders/{orderId}`.
pub fn order_id_from_location(location: &str) -> Option<i64> {
    location.trim_end_matches('/').rsplit('/').next()?.parse().ok()
}

/// Schwab's status in Lido's words, given how much has filled.
pub fn status(schwab: &str, filled: Decimal) -> OrderStatus {
    match schwab {
        "FILLED" => OrderStatus::Filled,
        "CANCELED" | "REPLACED" => OrderStatus::Canceled,
        "REJECTED" => OrderStatus::Rejected,
        "EXPIRED" => OrderStatus::Expired,
        // WORKING, QUEUED, ACCEPTED, PENDING_*, AWAITING_*, NEW, UNKNOWN…:
        // the order is at Schwab and may still fill.
        _ if filled > Decimal::ZERO => OrderStatus::PartiallyFilled,
        _ => OrderStatus::Accepted,
    }
}

/// Lido's report of a Schwab order, placed for Lido's order `client_id` of `account`.
pub fn report(client_id: &str, account: &str, order: &wire::Order, now: DateTime<Utc>) -> VenueOrderReport {
    let (trade_ids, legs): (Vec<String>, Vec<&wire::ExecutionLeg>) = executions(order).into_iter().unzip();
    let executed: Decimal = legs.iter().map(|l| l.quantity).sum();
    let average_price = (!executed.is_zero())
        .then(|| (legs.iter().map(|l| l.price * l.quantity).sum::<Decimal>() / executed).round_dp(12).normalize());
    let st = status(&order.status, order.filled_quantity);
    let reason = match st {
        OrderStatus::Rejected | OrderStatus::Canceled | OrderStatus::Expired => {
            Some(order.status_description.clone().unwrap_or_else(|| format!("Schwab status {}", order.status)))
        }
        _ => None,
    };
    let ts = order.close_time.as_deref().or(Some(&order.entered_time)).and_then(wire::parse_time).unwrap_or(now);
    VenueOrderReport {
        client_id: client_id.to_string(),
        venue_order_id: order.order_id.to_string(),
        status: st,
        filled_quantity: order.filled_quantity,
        average_price,
        reason,
        ts,
        order: venue_order(client_id, account, order).map(Box::new),
        trade_ids,
    }
}

/// What Schwab's `order` asks for, as Lido's order `client_id` of
/// `account`; `None` for what Lido cannot express (several legs, options
/// instructions, stop orders, fill-or-kill).
pub fn venue_order(client_id: &str, account: &str, order: &wire::Order) -> Option<VenueOrder> {
    let [leg] = order.order_leg_collection.as_slice() else { return None };
    let side = match leg.instruction.as_str() {
        "BUY" | "BUY_TO_COVER" => Side::Buy,
        "SELL" | "SELL_SHORT" | "SELL_SHORT_EXEMPT" => Side::Sell,
        _ => return None,
    };
    let (order_type, limit_price) = match order.order_type.as_str() {
        "MARKET" => (OrderType::Market, None),
        "LIMIT" => (OrderType::Limit, Some(order.price?.normalize())),
        _ => return None,
    };
    let time_in_force = match order.duration.as_str() {
        "DAY" => TimeInForce::Day,
        "GOOD_TILL_CANCEL" => TimeInForce::Gtc,
        "IMMEDIATE_OR_CANCEL" => TimeInForce::Ioc,
        _ => return None,
    };
    Some(VenueOrder {
        client_id: client_id.to_string(),
        account: account.to_string(),
        symbol: Symbol::parse(&leg.instrument.symbol).ok()?,
        side,
        order_type,
        time_in_force,
        quantity: leg.quantity,
        limit_price,
        client_order_id: None,
    })
}

/// Every execution leg of `order` as a Lido fill (id `{orderId}-{activityId}-{legId}`,
/// stable, so the order store drops repeats). Schwab reports commissions
/// in transactions, not on orders: the fee is zero here.
pub fn fills(client_id: &str, symbol: &Symbol, side: Side, order: &wire::Order, now: DateTime<Utc>) -> Vec<Fill> {
    executions(order)
        .into_iter()
        .map(|(fill_id, leg)| Fill {
            fill_id,
            order_id: client_id.to_string(),
            symbol: symbol.clone(),
            side,
            price: leg.price,
            quantity: leg.quantity,
            fee: Decimal::ZERO,
            ts: wire::parse_time(&leg.time).unwrap_or(now),
        })
        .collect()
}

/// Every execution leg of `order` with the id of its fill.
fn executions(order: &wire::Order) -> Vec<(String, &wire::ExecutionLeg)> {
    order
        .order_activity_collection
        .iter()
        .filter(|a| a.activity_type == "EXECUTION" && a.execution_type == "FILL")
        .flat_map(|a| {
            a.execution_legs.iter().map(move |l| (format!("{}-{}-{}", order.order_id, a.activity_id, l.leg_id), l))
        })
        .collect()
}

/// How far before the send an order's `enteredTime` may lie and still be
/// the sent order (Schwab's clock and the broker's differ a little).
pub const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(1);

/// Whether `order` is what `sent` asked for (to find a maybe-sent order):
/// Schwab keeps no client order id, so the match is by fields (symbol,
/// instruction, quantity, type, price, duration, session) and by time:
/// entered from [`CLOCK_SKEW`] before `sent_at` to `until` (the end of the
/// quiet period, see the broker's `unknown_quiet_ms`).
pub fn same_order(order: &wire::Order, sent: &OrderRequest, sent_at: DateTime<Utc>, until: DateTime<Utc>) -> bool {
    let legs_match = order.order_leg_collection.len() == sent.order_leg_collection.len()
        && order.order_leg_collection.iter().zip(&sent.order_leg_collection).all(|(a, b)| {
            a.instruction == b.instruction && a.quantity == b.quantity && a.instrument.symbol == b.instrument.symbol
        });
    let entered = wire::parse_time(&order.entered_time);
    legs_match
        && order.order_type == sent.order_type
        && order.price.map(|p| p.normalize()) == sent.price
        && order.duration == sent.duration
        && order.session == sent.session
        && entered.is_some_and(|t| sent_at - CLOCK_SKEW <= t && t <= until)
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn venue_order(ty: OrderType, tif: TimeInForce, qty: Decimal, price: Option<Decimal>) -> VenueOrder {
        VenueOrder {
            client_id: "o-1".into(),
            account: "acme".into(),
            symbol: Symbol::parse("AAPL").unwrap(),
            side: Side::Buy,
            order_type: ty,
            time_in_force: tif,
            quantity: qty,
            limit_price: price,
            client_order_id: None,
        }
    }

    fn schwab_order(status: &str, filled: Decimal, activities: serde_json::Value) -> wire::Order {
        serde_json::from_value(serde_json::json!({
            "session":"NORMAL","duration":"DAY","orderType":"LIMIT","complexOrderStrategyType":"NONE",
            "quantity":10,"filledQuantity":filled,"remainingQuantity":10 - filled.to_string().parse::<i64>().unwrap(),
            "requestedDestination":"AUTO","price":190.5,
            "orderLegCollection":[{"orderLegType":"EQUITY","legId":1,"instrument":{"assetType":"EQUITY","symbol":"AAPL"},
                                   "instruction":"BUY","positionEffect":"OPENING","quantity":10}],
            "orderStrategyType":"SINGLE","orderId":1000123,"cancelable":true,"editable":true,"status":status,
            "enteredTime":"2026-12-02T15:00:00+0000","accountNumber":12345678,
            "orderActivityCollection":activities
        }))
        .unwrap()
    }

    #[test]
    fn limit_and_market_orders_as_schwab_json() {
        let limit = request(
            &venue_order(OrderType::Limit, TimeInForce::Gtc, dec!(10), Some(dec!(190.50))),
            Session::Normal,
            dec!(0),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&limit).unwrap(),
            serde_json::json!({"orderType":"LIMIT","session":"NORMAL","duration":"GOOD_TILL_CANCEL",
                "orderStrategyType":"SINGLE","price":190.5,
                "orderLegCollection":[{"instruction":"BUY","quantity":10,"instrument":{"symbol":"AAPL","assetType":"EQUITY"}}]})
        );
        let market =
            request(&venue_order(OrderType::Market, TimeInForce::Gtc, dec!(5), None), Session::Seamless, dec!(0))
                .unwrap();
        assert_eq!(
            (market.order_type.as_str(), market.duration.as_str(), market.session.as_str()),
            ("MARKET", "DAY", "NORMAL"),
            "a market order goes in the regular session even when the broker trades extended hours"
        );
        assert_eq!(market.price, None);
        let seamless = request(
            &venue_order(OrderType::Limit, TimeInForce::Day, dec!(1), Some(dec!(1))),
            Session::Seamless,
            dec!(0),
        )
        .unwrap();
        assert_eq!(seamless.session, "SEAMLESS");
    }

    #[test]
    fn ioc_is_refused_before_sending_not_sent_as_immediate_or_cancel() {
        // Schwab answers IMMEDIATE_OR_CANCEL with 400 (schwab-py issue 226).
        for ty in [OrderType::Limit, OrderType::Market] {
            let price = (ty == OrderType::Limit).then_some(dec!(1));
            let e = request(&venue_order(ty, TimeInForce::Ioc, dec!(1), price), Session::Normal, dec!(0)).unwrap_err();
            assert_eq!(e.code(), "unsupported_time_in_force");
            assert!(e.to_string().contains("day and gtc") && e.to_string().contains("not sent"), "{e}");
            assert!(!e.maybe_sent());
        }
    }

    #[test]
    fn the_instruction_follows_the_position_and_never_crosses_zero() {
        let aapl = Symbol::parse("AAPL").unwrap();
        assert_eq!(instruction(Side::Buy, dec!(5), dec!(0), &aapl).unwrap(), "BUY");
        assert_eq!(instruction(Side::Buy, dec!(5), dec!(10), &aapl).unwrap(), "BUY");
        assert_eq!(instruction(Side::Sell, dec!(10), dec!(10), &aapl).unwrap(), "SELL");
        assert_eq!(instruction(Side::Sell, dec!(3), dec!(0), &aapl).unwrap(), "SELL_SHORT");
        assert_eq!(instruction(Side::Sell, dec!(3), dec!(-2), &aapl).unwrap(), "SELL_SHORT");
        assert_eq!(instruction(Side::Buy, dec!(2), dec!(-2), &aapl).unwrap(), "BUY_TO_COVER");
        let over = instruction(Side::Sell, dec!(15), dec!(10), &aapl).unwrap_err();
        assert_eq!(over.code(), "position_crossing");
        assert!(over.to_string().contains("send 10 first"), "{over}");
        let cover = instruction(Side::Buy, dec!(5), dec!(-2), &aapl).unwrap_err();
        assert!(cover.to_string().contains("send 2 first"), "{cover}");
        let mut sell = venue_order(OrderType::Limit, TimeInForce::Day, dec!(4), Some(dec!(1)));
        sell.side = Side::Sell;
        let short = request(&sell, Session::Normal, dec!(0)).unwrap();
        assert_eq!(short.order_leg_collection[0].instruction, "SELL_SHORT");
    }

    #[test]
    fn orders_schwab_cannot_take_are_refused() {
        let frac = request(
            &venue_order(OrderType::Limit, TimeInForce::Day, dec!(0.5), Some(dec!(1))),
            Session::Normal,
            dec!(0),
        );
        assert!(frac.unwrap_err().to_string().contains("whole shares"));
        let no_price =
            request(&venue_order(OrderType::Limit, TimeInForce::Day, dec!(1), None), Session::Normal, dec!(0));
        assert_eq!(no_price.unwrap_err().code(), "invalid_order");
        let mut pair = venue_order(OrderType::Market, TimeInForce::Day, dec!(1), None);
        pair.symbol = Symbol::parse("BTC/USD").unwrap();
        assert!(request(&pair, Session::Normal, dec!(0)).is_err());
    }

    #[test]
    fn location_header_gives_the_order_id() {
        let loc = "https://api.schwabapi.com/trader/v1/accounts/E5B2A1C0F/orders/1000123456";
        assert_eq!(order_id_from_location(loc), Some(1000123456));
        assert_eq!(order_id_from_location("/orders/"), None);
    }

    #[test]
    fn statuses_and_fills_from_executions() {
        let exec = serde_json::json!([
            {"activityType":"EXECUTION","activityId":501,"executionType":"FILL","quantity":4,"orderRemainingQuantity":6,
             "executionLegs":[{"legId":1,"price":190.25,"quantity":4,"mismarkedQuantity":0,"instrumentId":1,"time":"2026-12-02T15:00:01+0000"}]},
            {"activityType":"EXECUTION","activityId":502,"executionType":"FILL","quantity":6,"orderRemainingQuantity":0,
             "executionLegs":[{"legId":1,"price":190.5,"quantity":6,"mismarkedQuantity":0,"instrumentId":1,"time":"2026-12-02T15:00:02+0000"}]}
        ]);
        let now = Utc::now();
        let working = schwab_order("WORKING", dec!(0), serde_json::json!([]));
        assert_eq!(report("o-1", "acme", &working, now).status, OrderStatus::Accepted);
        let filled = schwab_order("FILLED", dec!(10), exec);
        let r = report("o-1", "acme", &filled, now);
        assert_eq!((r.status, r.filled_quantity, r.average_price), (OrderStatus::Filled, dec!(10), Some(dec!(190.4))));
        assert_eq!(r.venue_order_id, "1000123");
        let f = fills("o-1", &Symbol::parse("AAPL").unwrap(), Side::Buy, &filled, now);
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].fill_id.as_str(), f[0].price, f[0].quantity), ("1000123-501-1", dec!(190.25), dec!(4)));
        assert_eq!(status("WORKING", dec!(3)), OrderStatus::PartiallyFilled);
        assert_eq!(status("PENDING_CANCEL", dec!(0)), OrderStatus::Accepted);
        let mut rejected = schwab_order("REJECTED", dec!(0), serde_json::json!([]));
        rejected.status_description = Some("Insufficient buying power".into());
        assert_eq!(report("o-1", "acme", &rejected, now).reason.as_deref(), Some("Insufficient buying power"));
    }

    #[test]
    fn the_report_carries_what_schwab_holds_in_lidos_terms() {
        let working = schwab_order("WORKING", dec!(0), serde_json::json!([]));
        let r = report("o-1", "acme", &working, Utc::now());
        assert_eq!(
            r.order.as_deref(),
            Some(&venue_order(OrderType::Limit, TimeInForce::Day, dec!(10), Some(dec!(190.5))))
        );
        let mut short = working.clone();
        short.order_leg_collection[0].instruction = "SELL_SHORT".into();
        (short.order_type, short.price, short.duration) = ("MARKET".into(), None, "GOOD_TILL_CANCEL".into());
        let o = super::venue_order("o-1", "acme", &short).unwrap();
        assert_eq!(
            (o.side, o.order_type, o.time_in_force, o.limit_price),
            (Side::Sell, OrderType::Market, TimeInForce::Gtc, None)
        );
        let mut stop = working.clone();
        stop.order_type = "STOP".into();
        assert_eq!(super::venue_order("o-1", "acme", &stop), None, "Lido has no stop orders");
        let mut option = working;
        option.order_leg_collection[0].instruction = "BUY_TO_OPEN".into();
        assert_eq!(super::venue_order("o-1", "acme", &option), None);
    }

    #[test]
    fn a_maybe_sent_order_is_recognized_by_what_was_asked() {
        let sent = request(
            &venue_order(OrderType::Limit, TimeInForce::Day, dec!(10), Some(dec!(190.50))),
            Session::Normal,
            dec!(0),
        )
        .unwrap();
        // schwab_order was entered at 2026-12-02T15:00:00Z.
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let (sent_at, until) = (at("2026-12-02T14:59:58Z"), at("2026-12-02T15:05:00Z"));
        let order = schwab_order("WORKING", dec!(0), serde_json::json!([]));
        assert!(same_order(&order, &sent, sent_at, until));
        let mut other = order.clone();
        other.order_leg_collection[0].quantity = dec!(11);
        assert!(!same_order(&other, &sent, sent_at, until));
        assert!(!same_order(&order, &sent, at("2026-12-02T15:01:30Z"), until), "entered before the send");
        assert!(!same_order(&order, &sent, at("2026-12-02T14:50:00Z"), at("2026-12-02T14:55:00Z")), "after the window");
    }
}

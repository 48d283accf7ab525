//! Serde types for the Schwab REST bodies the broker reads and writes,
//! named as Schwab names them (camelCase). Only the fields Lido uses are
//! declared; Schwab sends many more, which are ignored. Prices and
//! quantities are JSON numbers both ways (see [`super`] on exactness).
//!
//! Times: Schwab writes order times as `2024-03-29T14:30:00+0000`
//! ([`parse_time`]) and wants query times as `2024-03-29T00:00:00.000Z`
//! ([`format_query_time`]); market data times are epoch milliseconds.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};
use lido_shared::model::{Bar, Symbol};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::venue::kraken::num::{number, number_opt};

// ── market data ──

/// One entry of `GET /marketdata/v1/quotes?symbols=…&fields=quote`, keyed
/// by symbol in the answer (beside an `errors` entry for unknown symbols).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuoteEntry {
    pub asset_main_type: String,
    pub symbol: String,
    pub quote: QuoteBlock,
}

/// The `quote` block of a [`QuoteEntry`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuoteBlock {
    #[serde(with = "number")]
    pub bid_price: Decimal,
    #[serde(with = "number")]
    pub bid_size: Decimal,
    #[serde(with = "number")]
    pub ask_price: Decimal,
    #[serde(with = "number")]
    pub ask_size: Decimal,
    #[serde(default, with = "number_opt")]
    pub last_price: Option<Decimal>,
    /// Epoch milliseconds.
    pub quote_time: i64,
}

/// `{"errors":{"invalidSymbols":["XYZ"]}}` inside a quotes answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuoteErrors {
    #[serde(default)]
    pub invalid_symbols: Vec<String>,
}

/// `GET /marketdata/v1/pricehistory?symbol=…`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceHistory {
    pub candles: Vec<Candle>,
    pub symbol: String,
    pub empty: bool,
}

impl PriceHistory {
    /// The candles as Lido bars (a candle with an impossible time is left out).
    pub fn bars(&self, symbol: &Symbol) -> Vec<Bar> {
        self.candles
            .iter()
            .filter_map(|c| {
                Some(Bar {
                    symbol: symbol.clone(),
                    start: from_millis(c.datetime)?,
                    open: c.open,
                    high: c.high,
                    low: c.low,
                    close: c.close,
                    volume: c.volume,
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candle {
    #[serde(with = "number")]
    pub open: Decimal,
    #[serde(with = "number")]
    pub high: Decimal,
    #[serde(with = "number")]
    pub low: Decimal,
    #[serde(with = "number")]
    pub close: Decimal,
    #[serde(with = "number")]
    pub volume: Decimal,
    /// Epoch milliseconds of the candle's start.
    pub datetime: i64,
}

/// `GET /marketdata/v1/markets?markets=equity&date=…`:
/// `{"equity":{"EQ":{…}}}`, market then product.
pub type MarketHoursAnswer = BTreeMap<String, BTreeMap<String, MarketHours>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarketHours {
    pub date: String,
    pub market_type: String,
    pub product: String,
    pub is_open: bool,
    /// Absent on days the market is closed.
    #[serde(default)]
    pub session_hours: Option<SessionHours>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionHours {
    #[serde(default)]
    pub pre_market: Vec<Interval>,
    #[serde(default)]
    pub regular_market: Vec<Interval>,
    #[serde(default)]
    pub post_market: Vec<Interval>,
}

/// Start and end with the exchange's offset (`2026-12-02T09:30:00-05:00`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub start: DateTime<FixedOffset>,
    pub end: DateTime<FixedOffset>,
}

// ── accounts ──

/// One entry of `GET /trader/v1/accounts/accountNumbers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountNumber {
    pub account_number: String,
    /// What every other trader call takes in place of the account number.
    pub hash_value: String,
}

/// `GET /trader/v1/accounts/{hash}?fields=positions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountAnswer {
    pub securities_account: SecuritiesAccount,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecuritiesAccount {
    #[serde(rename = "type")]
    pub account_type: String,
    pub account_number: String,
    #[serde(default)]
    pub positions: Vec<AccountPosition>,
    pub current_balances: CurrentBalances,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountPosition {
    #[serde(with = "number")]
    pub short_quantity: Decimal,
    #[serde(with = "number")]
    pub long_quantity: Decimal,
    #[serde(with = "number")]
    pub average_price: Decimal,
    pub instrument: Instrument,
}

/// `currentBalances` of a `MARGIN` or a `CASH` account (the Trader API's
/// `MarginBalance` and `CashBalance` schemas; TD Ameritrade's, whose names
/// Schwab kept). Margin accounts report `availableFunds`, `buyingPower` and
/// `marginBalance`; cash accounts `cashAvailableForTrading`, `totalCash` and
/// `unsettledCash` instead. Every field is optional here so that either
/// reads; [`CurrentBalances::usd`] picks by the account's type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentBalances {
    #[serde(default, with = "number_opt", skip_serializing_if = "Option::is_none")]
    pub cash_balance: Option<Decimal>,
    #[serde(default, with = "number_opt", skip_serializing_if = "Option::is_none")]
    pub available_funds: Option<Decimal>,
    #[serde(default, with = "number_opt", skip_serializing_if = "Option::is_none")]
    pub buying_power: Option<Decimal>,
    #[serde(default, with = "number_opt", skip_serializing_if = "Option::is_none")]
    pub cash_available_for_trading: Option<Decimal>,
    #[serde(default, with = "number_opt", skip_serializing_if = "Option::is_none")]
    pub total_cash: Option<Decimal>,
    #[serde(default, with = "number_opt", skip_serializing_if = "Option::is_none")]
    pub unsettled_cash: Option<Decimal>,
}

impl CurrentBalances {
    /// `(total, available)` US dollars of an account of `account_type`: a
    /// `CASH` account's total is `totalCash` (settled and unsettled) and
    /// what it may trade `cashAvailableForTrading`; a `MARGIN` account's
    /// total is `cashBalance` and what it may trade `availableFunds`.
    pub fn usd(&self, account_type: &str) -> (Decimal, Decimal) {
        let zero = Decimal::ZERO;
        if account_type == "CASH" {
            let total = self
                .total_cash
                .or_else(|| Some(self.cash_balance? + self.unsettled_cash.unwrap_or_default()))
                .unwrap_or(zero);
            (total, self.cash_available_for_trading.or(self.cash_balance).unwrap_or(zero))
        } else {
            let total = self.cash_balance.unwrap_or(zero);
            (total, self.available_funds.or(self.cash_available_for_trading).unwrap_or(total))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instrument {
    pub symbol: String,
    pub asset_type: String,
}

// ── orders ──

/// The body of `POST /trader/v1/accounts/{hash}/orders` (a single equity order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRequest {
    /// `MARKET` or `LIMIT`.
    pub order_type: String,
    /// `NORMAL` (regular hours) or `SEAMLESS` (pre, regular and post market).
    pub session: String,
    /// `DAY`, `GOOD_TILL_CANCEL` or `FILL_OR_KILL`.
    pub duration: String,
    /// `SINGLE`.
    pub order_strategy_type: String,
    #[serde(default, with = "number_opt", skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    pub order_leg_collection: Vec<OrderLeg>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLeg {
    /// `BUY` or `SELL` for equities.
    pub instruction: String,
    #[serde(with = "number")]
    pub quantity: Decimal,
    pub instrument: Instrument,
}

/// An order as `GET …/orders/{orderId}` and the order lists return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: i64,
    pub session: String,
    pub duration: String,
    pub order_type: String,
    pub order_strategy_type: String,
    #[serde(default, with = "number_opt", skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    #[serde(with = "number")]
    pub quantity: Decimal,
    #[serde(with = "number")]
    pub filled_quantity: Decimal,
    #[serde(with = "number")]
    pub remaining_quantity: Decimal,
    #[serde(default)]
    pub order_leg_collection: Vec<OrderLeg>,
    /// `WORKING`, `FILLED`, `CANCELED`, `REJECTED`, … (see [`super::orders::status`]).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_description: Option<String>,
    pub cancelable: bool,
    pub entered_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_time: Option<String>,
    pub account_number: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order_activity_collection: Vec<OrderActivity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderActivity {
    /// `EXECUTION` for fills.
    pub activity_type: String,
    pub activity_id: i64,
    /// `FILL` for fills.
    pub execution_type: String,
    #[serde(with = "number")]
    pub quantity: Decimal,
    #[serde(default)]
    pub execution_legs: Vec<ExecutionLeg>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionLeg {
    pub leg_id: i64,
    #[serde(with = "number")]
    pub price: Decimal,
    #[serde(with = "number")]
    pub quantity: Decimal,
    pub time: String,
}

// ── user preference ──

/// `GET /trader/v1/userPreference` (the parts the streamer needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPreference {
    pub streamer_info: Vec<StreamerInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamerInfo {
    pub streamer_socket_url: String,
    pub schwab_client_customer_id: String,
    pub schwab_client_correl_id: String,
    pub schwab_client_channel: String,
    pub schwab_client_function_id: String,
}

/// Reads Schwab's order time (`2024-03-29T14:30:00+0000`, or with
/// milliseconds, or RFC 3339).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Writes a time as Schwab's order queries want it (`2024-03-29T00:00:00.000Z`).
pub fn format_query_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Writes a time as Schwab writes order times (`2024-03-29T14:30:00+0000`).
pub fn format_order_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%z").to_string()
}

/// Epoch milliseconds as a time (`None` when out of range).
pub fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn order_request_is_schwabs_documented_json() {
        let request = OrderRequest {
            order_type: "LIMIT".into(),
            session: "NORMAL".into(),
            duration: "DAY".into(),
            order_strategy_type: "SINGLE".into(),
            price: Some(dec!(34.97)),
            order_leg_collection: vec![OrderLeg {
                instruction: "BUY".into(),
                quantity: dec!(15),
                instrument: Instrument { symbol: "XYZ".into(), asset_type: "EQUITY".into() },
            }],
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::json!({
                "orderType": "LIMIT", "session": "NORMAL", "duration": "DAY", "orderStrategyType": "SINGLE",
                "price": 34.97,
                "orderLegCollection": [{"instruction": "BUY", "quantity": 15,
                                        "instrument": {"symbol": "XYZ", "assetType": "EQUITY"}}]
            })
        );
    }

    #[test]
    fn candles_become_bars() {
        let history: PriceHistory = serde_json::from_str(
            r#"{"candles":[{"open":190.1,"high":191.0,"low":189.95,"close":190.5,"volume":120345,"datetime":1764685800000}],
            "symbol":"AAPL","empty":false}"#,
        )
        .unwrap();
        let bars = history.bars(&Symbol::parse("AAPL").unwrap());
        assert_eq!((bars[0].open, bars[0].low, bars[0].volume), (dec!(190.1), dec!(189.95), dec!(120345)));
        assert_eq!(bars[0].start.timestamp_millis(), 1764685800000);
    }

    #[test]
    fn times_in_schwabs_formats() {
        let t = parse_time("2024-03-29T14:30:00+0000").unwrap();
        assert_eq!(t, "2024-03-29T14:30:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(parse_time("2024-03-29T14:30:00.123+0000").unwrap().timestamp_subsec_millis(), 123);
        assert_eq!(format_query_time(t), "2024-03-29T14:30:00.000Z");
        assert_eq!(format_order_time(t), "2024-03-29T14:30:00+0000");
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn a_cash_account_reads_its_own_balance_fields() {
        // The Trader API's CashBalance schema (currentBalances of a CASH
        // securitiesAccount): no availableFunds, no buyingPower.
        let account: AccountAnswer = serde_json::from_str(
            r#"{"securitiesAccount":{"type":"CASH","accountNumber":"87654321","roundTrips":0,"isDayTrader":false,
            "isClosingOnlyRestricted":false,"pfcbFlag":false,"positions":[],
            "currentBalances":{"accruedInterest":0,"cashBalance":2500.5,"cashReceipts":0,"longOptionMarketValue":0,
            "liquidationValue":2500.5,"longMarketValue":0,"moneyMarketFund":0,"savings":0,"shortMarketValue":0,
            "pendingDeposits":0,"mutualFundValue":0,"bondValue":0,"shortOptionMarketValue":0,
            "cashAvailableForTrading":2000.5,"cashAvailableForWithdrawal":2000.5,"cashCall":0,
            "longNonMarginableMarketValue":0,"totalCash":2500.5,"cashDebitCallValue":0,"unsettledCash":500}}}"#,
        )
        .unwrap();
        let a = account.securities_account;
        assert_eq!(a.account_type, "CASH");
        assert_eq!(
            a.current_balances.usd(&a.account_type),
            (dec!(2500.5), dec!(2000.5)),
            "unsettled cash is not available"
        );
        let no_cash_balance = CurrentBalances {
            total_cash: Some(dec!(10)),
            cash_available_for_trading: Some(dec!(7)),
            ..Default::default()
        };
        assert_eq!(no_cash_balance.usd("CASH"), (dec!(10), dec!(7)));
    }

    #[test]
    fn account_and_hours_read_schwab_examples() {
        let account: AccountAnswer = serde_json::from_str(
            r#"{"securitiesAccount":{"type":"MARGIN","accountNumber":"12345678","roundTrips":0,"isDayTrader":false,
            "positions":[{"shortQuantity":0,"averagePrice":170.12,"currentDayProfitLoss":1.5,"longQuantity":10,
            "instrument":{"assetType":"EQUITY","cusip":"037833100","symbol":"AAPL","netChange":0.5},"marketValue":1710.2}],
            "currentBalances":{"availableFunds":5000.25,"buyingPower":10000.5,"cashBalance":5000.25,"liquidationValue":6710.45}}}"#,
        )
        .unwrap();
        let a = account.securities_account;
        assert_eq!(a.positions[0].average_price, dec!(170.12));
        assert_eq!(a.current_balances.available_funds, Some(dec!(5000.25)));
        assert_eq!(a.current_balances.usd(&a.account_type), (dec!(5000.25), dec!(5000.25)));
        let hours: MarketHoursAnswer = serde_json::from_str(
            r#"{"equity":{"EQ":{"date":"2022-04-14","marketType":"EQUITY","exchange":"NULL","category":"NULL",
            "product":"EQ","productName":"equity","isOpen":true,"sessionHours":{
            "preMarket":[{"start":"2022-04-14T07:00:00-04:00","end":"2022-04-14T09:30:00-04:00"}],
            "regularMarket":[{"start":"2022-04-14T09:30:00-04:00","end":"2022-04-14T16:00:00-04:00"}],
            "postMarket":[{"start":"2022-04-14T16:00:00-04:00","end":"2022-04-14T20:00:00-04:00"}]}}}}"#,
        )
        .unwrap();
        let eq = &hours["equity"]["EQ"];
        assert!(eq.is_open);
        assert_eq!(
            eq.session_hours.as_ref().unwrap().regular_market[0].start.to_rfc3339(),
            "2022-04-14T09:30:00-04:00"
        );
    }
}

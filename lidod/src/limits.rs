//! Per-customer limits and pre-trade risk checks, applied at the API edge
//! before an order reaches the MarketManager.
//!
//! Limits (`[limits]`, per-customer overrides in `[limits.customers.NAME]`):
//! sessions, stream subscriptions, open orders, orders per second. Risk
//! (`[risk]`, `[risk.customers.NAME]`): largest order notional and largest
//! position per symbol. A breach answers with the limit's name and value and
//! changes nothing: 429 `rate_limited` for the order rate, 409
//! `limit_exceeded` for counts, 422 `risk_rejected` for risk checks.
//!
//! A resubmitted client order id is not checked: it returns the first order.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lido_shared::api::{OrdersQuery, PlaceOrder};
use lido_shared::model::Side;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::error::ApiError;
use crate::markets::MarketManager;

/// `[limits]`: defaults for every customer, and overrides by customer.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub sessions_per_customer: usize,
    pub subscriptions_per_session: usize,
    pub open_orders_per_customer: usize,
    pub orders_per_second: u32,
    pub customers: BTreeMap<String, LimitOverrides>,
}

/// Per-customer values of `[limits]`; unset ones keep the default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOverrides {
    pub sessions_per_customer: Option<usize>,
    pub subscriptions_per_session: Option<usize>,
    pub open_orders_per_customer: Option<usize>,
    pub orders_per_second: Option<u32>,
}

/// `[risk]`: pre-trade checks; unset means unchecked.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    /// Largest quantity × price of one order, in the quote currency.
    pub max_order_notional: Option<Decimal>,
    /// Largest absolute position per symbol, counting open orders on the same side.
    pub max_position: Option<Decimal>,
    pub customers: BTreeMap<String, RiskOverrides>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskOverrides {
    pub max_order_notional: Option<Decimal>,
    pub max_position: Option<Decimal>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            sessions_per_customer: 100,
            subscriptions_per_session: lido_shared::api::MAX_SUBSCRIPTIONS_PER_STREAM,
            open_orders_per_customer: 1_000,
            orders_per_second: 50,
            customers: BTreeMap::new(),
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.orders_per_second > 0, "limits.orders_per_second must be at least 1");
        for (name, o) in &self.customers {
            anyhow::ensure!(
                o.orders_per_second != Some(0),
                "limits.customers.{name}.orders_per_second must be at least 1"
            );
        }
        Ok(())
    }
}

/// The limits in force, with one order-rate limiter per customer.
#[derive(Clone)]
pub struct Limits {
    inner: Arc<Inner>,
}

struct Inner {
    limits: LimitsConfig,
    risk: RiskConfig,
    rates: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
}

impl Limits {
    pub fn new(limits: LimitsConfig, risk: RiskConfig) -> Self {
        Self { inner: Arc::new(Inner { limits, risk, rates: Mutex::new(HashMap::new()) }) }
    }

    /// Before opening a session; `open` is how many the customer has.
    pub fn check_sessions(&self, customer: &str, open: usize) -> Result<(), ApiError> {
        let max = self.limit(customer, |o| o.sessions_per_customer, |l| l.sessions_per_customer);
        count_check(open, max, "sessions_per_customer", customer, "close one or ask an operator to raise the limit")
    }

    /// Before adding a subscription; `held` is how many the connection has.
    pub fn check_subscriptions(&self, customer: &str, held: usize) -> Result<(), ApiError> {
        let max = self.limit(customer, |o| o.subscriptions_per_session, |l| l.subscriptions_per_session);
        count_check(held, max, "subscriptions_per_session", customer, "unsubscribe from one or open another connection")
    }

    /// Every check an order must pass before it goes to the MarketManager.
    pub async fn check_order(&self, markets: &MarketManager, customer: &str, req: &PlaceOrder) -> Result<(), ApiError> {
        // A client order id seen before answers with its first order: no
        // limit applies to a repeat. Both lookups are index reads, so these
        // checks cost the same with 10 orders on the book or 100,000 (only
        // `max_position`, when set, lists the customer's open orders).
        if req.client_order_id.as_deref().is_some_and(|id| markets.knows_client_order(customer, id)) {
            return Ok(());
        }
        self.check_rate(customer)?;
        let max = self.limit(customer, |o| o.open_orders_per_customer, |l| l.open_orders_per_customer);
        count_check(
            markets.open_orders_of(customer),
            max,
            "open_orders_per_customer",
            customer,
            "cancel some or wait for fills",
        )?;
        self.check_risk(markets, customer, req).await
    }

    fn check_rate(&self, customer: &str) -> Result<(), ApiError> {
        let per_second = self.limit(customer, |o| o.orders_per_second, |l| l.orders_per_second);
        let limiter = {
            let mut rates = self.inner.rates.lock().unwrap_or_else(|p| p.into_inner());
            rates
                .entry(customer.to_string())
                .or_insert_with(|| {
                    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
                    Arc::new(RateLimiter::direct(Quota::per_second(rate)))
                })
                .clone()
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "limit orders_per_second = {per_second} reached for customer {customer}; retry in {} ms",
                    wait.as_millis().max(1)
                ),
            )
        })
    }

    async fn check_risk(&self, markets: &MarketManager, customer: &str, req: &PlaceOrder) -> Result<(), ApiError> {
        let risk = &self.inner.risk;
        let own = risk.customers.get(customer);
        let max_notional = own.and_then(|o| o.max_order_notional).or(risk.max_order_notional);
        let max_position = own.and_then(|o| o.max_position).or(risk.max_position);
        if max_notional.is_none() && max_position.is_none() {
            return Ok(());
        }
        let (_, instrument) = markets.resolve(&req.market, &req.symbol).await?;
        if let Some(max) = max_notional {
            let price = match req.limit_price {
                Some(p) => p,
                None => market_price(markets, req).await?,
            };
            let notional = req.quantity * price;
            if notional > max {
                return Err(risk_rejected(format!(
                    "order notional {notional} is over max_order_notional = {max} for customer {customer}"
                )));
            }
        }
        if let Some(max) = max_position {
            let held = markets
                .positions(customer, Some(&req.market))
                .await?
                .into_iter()
                .find(|p| p.symbol == instrument.symbol)
                .map_or(Decimal::ZERO, |p| p.quantity);
            let sign = |side: Side| if side == Side::Buy { Decimal::ONE } else { Decimal::NEGATIVE_ONE };
            let open = markets
                .orders(customer, &OrdersQuery { status: Some("open".into()), market: Some(req.market.clone()) })?;
            let working: Decimal = open
                .iter()
                .filter(|o| o.market == req.market && o.symbol == instrument.symbol && o.side == req.side)
                .map(|o| (o.quantity - o.filled_quantity) * sign(o.side))
                .sum();
            let projected = held + working + req.quantity * sign(req.side);
            if projected.abs() > max {
                return Err(risk_rejected(format!(
                    "position in {} would reach {projected} (held {held}, working {working}), over max_position = {max} for customer {customer}",
                    instrument.symbol
                )));
            }
        }
        Ok(())
    }

    fn limit<T: Copy>(
        &self,
        customer: &str,
        own: impl Fn(&LimitOverrides) -> Option<T>,
        all: impl Fn(&LimitsConfig) -> T,
    ) -> T {
        self.inner.limits.customers.get(customer).and_then(own).unwrap_or_else(|| all(&self.inner.limits))
    }
}

/// The price a market order would trade at now: the ask to buy, the bid to sell.
async fn market_price(markets: &MarketManager, req: &PlaceOrder) -> Result<Decimal, ApiError> {
    let quote = markets.quote(&req.market, &req.symbol).await?;
    let price = match req.side {
        Side::Buy => quote.ask,
        Side::Sell => quote.bid,
    };
    Some(price).filter(|p| !p.is_zero()).or(quote.last).ok_or_else(|| {
        risk_rejected(format!("no price for {} to check max_order_notional; send a limit order", req.symbol))
    })
}

fn count_check(have: usize, max: usize, name: &str, customer: &str, hint: &str) -> Result<(), ApiError> {
    if have < max {
        return Ok(());
    }
    Err(ApiError::conflict("limit_exceeded", format!("limit {name} = {max} reached for customer {customer}; {hint}")))
}

fn risk_rejected(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "risk_rejected", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(toml_text: &str) -> Limits {
        #[derive(Deserialize)]
        struct Both {
            #[serde(default)]
            limits: LimitsConfig,
            #[serde(default)]
            risk: RiskConfig,
        }
        let both: Both = toml::from_str(toml_text).unwrap();
        Limits::new(both.limits, both.risk)
    }

    #[test]
    fn counts_name_the_limit_and_honour_overrides() {
        let l = limits("[limits]\nsessions_per_customer = 2\n[limits.customers.acme]\nsessions_per_customer = 5\n");
        assert!(l.check_sessions("bob", 1).is_ok());
        let e = l.check_sessions("bob", 2).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "limit_exceeded"));
        assert!(e.message.contains("sessions_per_customer = 2"), "{}", e.message);
        assert!(l.check_sessions("acme", 4).is_ok());
        assert!(l.check_sessions("acme", 5).is_err());
    }

    #[test]
    fn order_rate_is_per_customer() {
        let l = limits("[limits]\norders_per_second = 2\n");
        assert!(l.check_rate("a").is_ok());
        assert!(l.check_rate("a").is_ok());
        let e = l.check_rate("a").unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
        assert!(e.message.contains("orders_per_second = 2"), "{}", e.message);
        assert!(l.check_rate("b").is_ok(), "another customer is not affected");
    }

    #[test]
    fn risk_values_read_as_strings_or_numbers() {
        let r: RiskConfig = toml::from_str("max_order_notional = \"250000.5\"\nmax_position = 0.25").unwrap();
        assert_eq!(r.max_order_notional, Some(Decimal::new(2_500_005, 1)));
        assert_eq!(r.max_position, Some(Decimal::new(25, 2)));
    }

    #[test]
    fn zero_rate_is_refused_in_config() {
        let c: LimitsConfig = toml::from_str("orders_per_second = 0").unwrap();
        assert!(c.validate().is_err());
    }
}

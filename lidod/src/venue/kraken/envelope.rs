//! Kraken's REST envelope and its errors.
//!
//! Every REST answer is `{"error":[…],"result":…}` with HTTP 200, even for
//! failures. An `error` entry is `<severity><category>:<message>[:<detail>]`:
//! severity `E` (error) or `W` (warning), category `General`, `API`,
//! `Query`, `Order`, `Trade`, `Funding`, `Service`, … For example
//! `EOrder:Insufficient funds` or `EGeneral:Invalid arguments:volume`.
//! Warnings alone do not fail a call.
//!
//! [`KrakenError`] keeps Kraken's exact reason string (the algo sees it) and
//! classifies it into an [`ErrorCode`], from which follow
//! [`KrakenError::is_transient`] and the retry rules
//! ([`KrakenError::retry_advice`], [`KrakenError::retry_safe_for`]): a
//! retry must never be able to place an order twice.

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Kraken's error strings, by meaning. Kraken's exact text is kept beside
/// it in [`KrakenError::Api`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    // EGeneral
    InvalidArguments,
    PermissionDenied,
    TemporaryLockout,
    InternalError,
    UnknownMethod,
    TooManyRequests,
    // EAPI
    InvalidKey,
    InvalidSignature,
    InvalidNonce,
    ApiRateLimit,
    FeatureDisabled,
    BadRequest,
    // EOrder
    InsufficientFunds,
    OrderMinimum,
    CostMinimum,
    TickSize,
    InvalidPrice,
    OrderRateLimit,
    OrdersLimit,
    PositionsLimit,
    UnknownOrder,
    UnknownPosition,
    MarginRejected,
    PostOnlyRejected,
    // EQuery
    UnknownAssetPair,
    UnknownAsset,
    // EService
    ServiceUnavailable,
    ServiceBusy,
    MarketCancelOnly,
    MarketPostOnly,
    DeadlineElapsed,
    // anything else
    Other,
}

impl ErrorCode {
    /// Classifies one Kraken error string (`EOrder:Insufficient funds`,
    /// `EGeneral:Invalid arguments:volume`, …). Matching is on the category
    /// and message; a trailing `:detail` is ignored.
    pub fn from_kraken(error: &str) -> Self {
        // (category:message, code); a message matches whole, or followed by `:detail`.
        const TABLE: &[(&str, ErrorCode)] = &[
            ("EGeneral:Invalid arguments", ErrorCode::InvalidArguments),
            ("EGeneral:Permission denied", ErrorCode::PermissionDenied),
            ("EGeneral:Temporary lockout", ErrorCode::TemporaryLockout),
            ("EGeneral:Internal error", ErrorCode::InternalError),
            ("EGeneral:Unknown method", ErrorCode::UnknownMethod),
            ("EGeneral:Too many requests", ErrorCode::TooManyRequests),
            ("EAPI:Invalid key", ErrorCode::InvalidKey),
            ("EAPI:Invalid signature", ErrorCode::InvalidSignature),
            ("EAPI:Invalid nonce", ErrorCode::InvalidNonce),
            ("EAPI:Rate limit exceeded", ErrorCode::ApiRateLimit),
            ("EAPI:Feature disabled", ErrorCode::FeatureDisabled),
            ("EAPI:Bad request", ErrorCode::BadRequest),
            ("EOrder:Insufficient funds", ErrorCode::InsufficientFunds),
            ("EOrder:Order minimum not met", ErrorCode::OrderMinimum),
            ("EOrder:Cost minimum not met", ErrorCode::CostMinimum),
            ("EOrder:Tick size check failed", ErrorCode::TickSize),
            ("EOrder:Invalid price", ErrorCode::InvalidPrice),
            ("EOrder:Rate limit exceeded", ErrorCode::OrderRateLimit),
            ("EOrder:Orders limit exceeded", ErrorCode::OrdersLimit),
            ("EOrder:Positions limit exceeded", ErrorCode::PositionsLimit),
            ("EOrder:Unknown order", ErrorCode::UnknownOrder),
            ("EOrder:Unknown position", ErrorCode::UnknownPosition),
            ("EOrder:Post only order", ErrorCode::PostOnlyRejected),
            ("EOrder:Cannot open position", ErrorCode::MarginRejected),
            ("EOrder:Cannot open opposing position", ErrorCode::MarginRejected),
            ("EOrder:Margin allowance exceeded", ErrorCode::MarginRejected),
            ("EOrder:Margin level too low", ErrorCode::MarginRejected),
            ("EOrder:Margin position size exceeded", ErrorCode::MarginRejected),
            ("EOrder:Insufficient margin", ErrorCode::MarginRejected),
            ("EQuery:Unknown asset pair", ErrorCode::UnknownAssetPair),
            ("EQuery:Unknown asset", ErrorCode::UnknownAsset),
            ("EService:Unavailable", ErrorCode::ServiceUnavailable),
            ("EService:Busy", ErrorCode::ServiceBusy),
            ("EService:Market in cancel_only mode", ErrorCode::MarketCancelOnly),
            ("EService:Market in post_only mode", ErrorCode::MarketPostOnly),
            ("EService:Deadline elapsed", ErrorCode::DeadlineElapsed),
        ];
        let error = error.trim();
        TABLE
            .iter()
            .find(|(prefix, _)| error.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with(':')))
            .map_or(ErrorCode::Other, |(_, code)| *code)
    }

    /// A stable snake_case name, for Lido's `{"error":{"code":…}}` bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArguments => "invalid_arguments",
            Self::PermissionDenied => "permission_denied",
            Self::TemporaryLockout => "temporary_lockout",
            Self::InternalError => "venue_internal_error",
            Self::UnknownMethod => "unknown_method",
            Self::TooManyRequests => "too_many_requests",
            Self::InvalidKey => "invalid_key",
            Self::InvalidSignature => "invalid_signature",
            Self::InvalidNonce => "invalid_nonce",
            Self::ApiRateLimit => "rate_limited",
            Self::FeatureDisabled => "feature_disabled",
            Self::BadRequest => "bad_request",
            Self::InsufficientFunds => "insufficient_funds",
            Self::OrderMinimum => "order_minimum_not_met",
            Self::CostMinimum => "cost_minimum_not_met",
            Self::TickSize => "invalid_tick_size",
            Self::InvalidPrice => "invalid_price",
            Self::OrderRateLimit => "order_rate_limited",
            Self::OrdersLimit => "open_orders_limit",
            Self::PositionsLimit => "positions_limit",
            Self::UnknownOrder => "unknown_order",
            Self::UnknownPosition => "unknown_position",
            Self::MarginRejected => "margin_rejected",
            Self::PostOnlyRejected => "post_only_rejected",
            Self::UnknownAssetPair => "unknown_symbol",
            Self::UnknownAsset => "unknown_asset",
            Self::ServiceUnavailable => "venue_unavailable",
            Self::ServiceBusy => "venue_busy",
            Self::MarketCancelOnly => "market_cancel_only",
            Self::MarketPostOnly => "market_post_only",
            Self::DeadlineElapsed => "deadline_elapsed",
            Self::Other => "venue_error",
        }
    }
}

/// What a request does, for deciding whether it may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Public market data: repeating it changes nothing.
    Public,
    /// Private reads (Balance, OpenOrders, QueryOrders, …).
    PrivateRead,
    /// AddOrder; `client_order_id` when it carries a `cl_ord_id` (or
    /// `userref`) by which the first attempt can be found again.
    AddOrder { client_order_id: bool },
    /// CancelOrder / CancelAll: a second cancel cannot do more than the first.
    Cancel,
}

/// How to follow up a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAdvice {
    /// Send it again after a backoff (with a fresh nonce).
    Retry,
    /// The order may or may not exist: look its client order id up
    /// (OpenOrders / QueryOrders with `cl_ord_id`) and send it again only if
    /// it is not there.
    ReconcileThenRetry,
    /// Do not send it again; report the error (an order rejection reaches
    /// the algo with Kraken's reason).
    DoNotRetry,
}

/// A failed Kraken call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KrakenError {
    /// Kraken answered with an error string; `reason` is Kraken's text
    /// exactly (all of them, `; `-joined, when there were several).
    #[error("kraken: {reason}")]
    Api { code: ErrorCode, reason: String },
    /// The answer was not the JSON Kraken documents.
    #[error("kraken answered with an unexpected body: {0}")]
    Decode(String),
    /// An envelope with neither an error nor a result.
    #[error("kraken answered with neither an error nor a result")]
    EmptyResult,
    /// The request did not complete (connection refused or dropped,
    /// timeout, HTTP 5xx from a proxy). `maybe_sent`: it may have reached
    /// Kraken, so its outcome is unknown.
    #[error("request to kraken failed: {message}")]
    Transport { message: String, maybe_sent: bool },
}

impl KrakenError {
    /// Builds the error for Kraken's error strings (the first `E…` entry
    /// decides the code).
    pub fn from_errors(errors: &[String]) -> Self {
        let first = errors.iter().find(|e| e.starts_with('E')).or(errors.first());
        let code = first.map_or(ErrorCode::Other, |e| ErrorCode::from_kraken(e));
        Self::Api { code, reason: errors.join("; ") }
    }

    /// The classified code, `None` for errors that did not come from Kraken.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Kraken's own words (`EOrder:Insufficient funds`), for the algo.
    pub fn reason(&self) -> String {
        match self {
            Self::Api { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }

    /// Whether the same request could succeed later without changes: rate
    /// limits, a stale nonce (a fresh one is used on resend), an engine that
    /// is offline or busy, internal errors, transport failures.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { code, .. } => matches!(
                code,
                ErrorCode::ApiRateLimit
                    | ErrorCode::OrderRateLimit
                    | ErrorCode::TooManyRequests
                    | ErrorCode::InvalidNonce
                    | ErrorCode::TemporaryLockout
                    | ErrorCode::ServiceUnavailable
                    | ErrorCode::ServiceBusy
                    | ErrorCode::DeadlineElapsed
                    | ErrorCode::InternalError
            ),
            Self::Transport { .. } => true,
            Self::Decode(_) | Self::EmptyResult => false,
        }
    }

    /// Whether the request certainly did not take effect. Authentication,
    /// rate limit and validation errors are answered before the engine acts;
    /// an offline/busy engine, an internal error, an elapsed deadline, an
    /// unreadable answer or a dropped connection leave the outcome unknown.
    pub fn certainly_not_executed(&self) -> bool {
        match self {
            Self::Api { code, .. } => !matches!(
                code,
                ErrorCode::ServiceUnavailable
                    | ErrorCode::ServiceBusy
                    | ErrorCode::InternalError
                    | ErrorCode::DeadlineElapsed
                    | ErrorCode::Other
            ),
            Self::Transport { maybe_sent, .. } => !maybe_sent,
            Self::Decode(_) | Self::EmptyResult => false,
        }
    }

    /// Whether this is Kraken refusing the order itself (funds, minimums,
    /// tick size, limits, market state): final, and reported to the algo
    /// with [`KrakenError::reason`].
    pub fn is_order_rejection(&self) -> bool {
        matches!(
            self.code(),
            Some(
                ErrorCode::InsufficientFunds
                    | ErrorCode::OrderMinimum
                    | ErrorCode::CostMinimum
                    | ErrorCode::TickSize
                    | ErrorCode::InvalidPrice
                    | ErrorCode::OrdersLimit
                    | ErrorCode::PositionsLimit
                    | ErrorCode::MarginRejected
                    | ErrorCode::PostOnlyRejected
                    | ErrorCode::MarketCancelOnly
                    | ErrorCode::MarketPostOnly
                    | ErrorCode::InvalidArguments
                    | ErrorCode::UnknownAssetPair
            )
        )
    }

    /// What to do about this error for a request of `kind`.
    ///
    /// Non-transient errors are never retried. A transient error that
    /// certainly did not execute is retried for any kind. One whose outcome
    /// is unknown is retried for idempotent kinds (reads, cancels); an
    /// AddOrder with an unknown outcome is looked up by its client order id
    /// first and never blindly resent; without a client order id it is not
    /// resent at all (the reconciliation with OpenOrders decides).
    pub fn retry_advice(&self, kind: RequestKind) -> RetryAdvice {
        if !self.is_transient() {
            return RetryAdvice::DoNotRetry;
        }
        if self.certainly_not_executed() {
            return RetryAdvice::Retry;
        }
        match kind {
            RequestKind::Public | RequestKind::PrivateRead | RequestKind::Cancel => RetryAdvice::Retry,
            RequestKind::AddOrder { client_order_id: true } => RetryAdvice::ReconcileThenRetry,
            RequestKind::AddOrder { client_order_id: false } => RetryAdvice::DoNotRetry,
        }
    }

    /// Whether retrying a request of `kind` cannot duplicate an order:
    /// true for [`RetryAdvice::Retry`] and, for an AddOrder that carries a
    /// client order id, for [`RetryAdvice::ReconcileThenRetry`] (Kraken
    /// refuses a second open order with the same `cl_ord_id`, and the service
    /// looks the id up before resending, which also covers a first attempt
    /// that already filled). Never true for an AddOrder without one whose
    /// outcome is unknown.
    pub fn retry_safe_for(&self, kind: RequestKind) -> bool {
        !matches!(self.retry_advice(kind), RetryAdvice::DoNotRetry)
    }
}

/// The raw envelope: Kraken's `error` strings and `result`, before typing.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub error: Vec<String>,
    /// Kept as Kraken wrote it, so numbers are typed from their text
    /// (never through a float; see [`super::num`]).
    #[serde(default)]
    pub result: Option<Box<serde_json::value::RawValue>>,
}

impl Envelope {
    /// The `W…` warnings that came with a successful answer.
    pub fn warnings(&self) -> impl Iterator<Item = &str> {
        self.error.iter().map(String::as_str).filter(|e| e.starts_with('W'))
    }

    /// `Err` if any entry is an error, else the result typed as `T`.
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, KrakenError> {
        if self.error.iter().any(|e| !e.starts_with('W')) {
            return Err(KrakenError::from_errors(&self.error));
        }
        let result = self.result.ok_or(KrakenError::EmptyResult)?;
        serde_json::from_str(result.get()).map_err(|e| KrakenError::Decode(e.to_string()))
    }
}

/// Decodes a REST body into `T`, or the error Kraken reported.
pub fn decode<T: DeserializeOwned>(body: &str) -> Result<T, KrakenError> {
    let envelope: Envelope = serde_json::from_str(body).map_err(|e| KrakenError::Decode(e.to_string()))?;
    envelope.into_result()
}

/// The envelope of a successful answer, as Kraken writes it.
pub fn success_body<T: serde::Serialize>(result: &T) -> String {
    serde_json::json!({ "error": [], "result": result }).to_string()
}

/// The envelope of a failed answer, as Kraken writes it.
pub fn error_body(errors: &[&str]) -> String {
    serde_json::json!({ "error": errors }).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn decodes_a_result() {
        let body = r#"{"error":[],"result":{"unixtime":1688669448,"rfc1123":"Thu, 06 Jul 23 18:50:48 +0000"}}"#;
        let v: BTreeMap<String, serde_json::Value> = decode(body).unwrap();
        assert_eq!(v["unixtime"], 1688669448);
    }

    #[test]
    fn a_result_s_numbers_are_typed_from_their_text() {
        // Balance-shaped, with a number a float cannot hold (20 digits).
        let body = r#"{"error":[],"result":{"ZUSD":12345678901.123456789,"XXBT":"0.0000000001"}}"#;
        let v: BTreeMap<String, crate::venue::kraken::num::Flex> = decode(body).unwrap();
        assert_eq!(v["ZUSD"].0.to_string(), "12345678901.123456789");
        assert_eq!(v["XXBT"].0.to_string(), "0.0000000001");
    }

    #[test]
    fn an_error_wins_over_a_result_and_keeps_krakens_words() {
        let err = decode::<serde_json::Value>(r#"{"error":["EOrder:Insufficient funds"],"result":{}}"#).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InsufficientFunds));
        assert_eq!(err.reason(), "EOrder:Insufficient funds");
        assert!(err.is_order_rejection());
        assert!(!err.is_transient());
        let err = decode::<serde_json::Value>(r#"{"error":["EGeneral:Invalid arguments:volume"]}"#).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidArguments));
        assert_eq!(err.reason(), "EGeneral:Invalid arguments:volume");
    }

    #[test]
    fn warnings_alone_do_not_fail() {
        let env: Envelope = serde_json::from_str(r#"{"error":["WGeneral:Deprecated"],"result":{"count":1}}"#).unwrap();
        assert_eq!(env.warnings().collect::<Vec<_>>(), ["WGeneral:Deprecated"]);
        let v: BTreeMap<String, u32> = env.into_result().unwrap();
        assert_eq!(v["count"], 1);
    }

    #[test]
    fn malformed_and_empty_answers() {
        assert!(matches!(decode::<serde_json::Value>("<html>502</html>"), Err(KrakenError::Decode(_))));
        assert_eq!(decode::<serde_json::Value>(r#"{"error":[]}"#), Err(KrakenError::EmptyResult));
        assert!(matches!(decode::<Vec<u8>>(r#"{"error":[],"result":{"a":1}}"#), Err(KrakenError::Decode(_))));
    }

    #[test]
    fn classifies_krakens_documented_strings() {
        for (s, code) in [
            ("EOrder:Insufficient funds", ErrorCode::InsufficientFunds),
            ("EGeneral:Invalid arguments", ErrorCode::InvalidArguments),
            ("EGeneral:Invalid arguments:Index unavailable", ErrorCode::InvalidArguments),
            ("EAPI:Invalid nonce", ErrorCode::InvalidNonce),
            ("EAPI:Invalid key", ErrorCode::InvalidKey),
            ("EAPI:Invalid signature", ErrorCode::InvalidSignature),
            ("EAPI:Rate limit exceeded", ErrorCode::ApiRateLimit),
            ("EOrder:Rate limit exceeded", ErrorCode::OrderRateLimit),
            ("EService:Unavailable", ErrorCode::ServiceUnavailable),
            ("EService:Busy", ErrorCode::ServiceBusy),
            ("EService:Market in cancel_only mode", ErrorCode::MarketCancelOnly),
            ("EService:Deadline elapsed", ErrorCode::DeadlineElapsed),
            ("EGeneral:Temporary lockout", ErrorCode::TemporaryLockout),
            ("EGeneral:Internal error:1234", ErrorCode::InternalError),
            ("EOrder:Unknown order", ErrorCode::UnknownOrder),
            ("EOrder:Order minimum not met", ErrorCode::OrderMinimum),
            ("EOrder:Cost minimum not met", ErrorCode::CostMinimum),
            ("EOrder:Tick size check failed", ErrorCode::TickSize),
            ("EOrder:Orders limit exceeded", ErrorCode::OrdersLimit),
            ("EOrder:Margin allowance exceeded", ErrorCode::MarginRejected),
            ("EQuery:Unknown asset pair", ErrorCode::UnknownAssetPair),
            ("EQuery:Unknown asset", ErrorCode::UnknownAsset),
            ("EGeneral:Permission denied", ErrorCode::PermissionDenied),
            ("EFunding:Unknown reference id", ErrorCode::Other),
            // A longer message is not mistaken for a shorter one.
            ("EQuery:Unknown asset pairs", ErrorCode::Other),
        ] {
            assert_eq!(ErrorCode::from_kraken(s), code, "{s}");
        }
    }

    fn api(s: &str) -> KrakenError {
        KrakenError::from_errors(&[s.to_string()])
    }

    const ADD_WITH_ID: RequestKind = RequestKind::AddOrder { client_order_id: true };
    const ADD_BARE: RequestKind = RequestKind::AddOrder { client_order_id: false };

    #[test]
    fn never_blindly_resends_an_order_whose_outcome_is_unknown() {
        for s in ["EService:Unavailable", "EService:Busy", "EGeneral:Internal error", "EService:Deadline elapsed"] {
            let e = api(s);
            assert!(e.is_transient(), "{s}");
            assert!(!e.certainly_not_executed(), "{s}");
            assert_eq!(e.retry_advice(ADD_BARE), RetryAdvice::DoNotRetry, "{s}");
            assert!(!e.retry_safe_for(ADD_BARE), "{s}");
            assert_eq!(e.retry_advice(ADD_WITH_ID), RetryAdvice::ReconcileThenRetry, "{s}");
            assert!(e.retry_safe_for(ADD_WITH_ID), "{s}");
            assert_eq!(e.retry_advice(RequestKind::PrivateRead), RetryAdvice::Retry, "{s}");
            assert_eq!(e.retry_advice(RequestKind::Cancel), RetryAdvice::Retry, "{s}");
        }
        let dropped = KrakenError::Transport { message: "connection reset".into(), maybe_sent: true };
        assert!(!dropped.retry_safe_for(ADD_BARE));
        assert_eq!(dropped.retry_advice(ADD_WITH_ID), RetryAdvice::ReconcileThenRetry);
        let refused = KrakenError::Transport { message: "connection refused".into(), maybe_sent: false };
        assert_eq!(refused.retry_advice(ADD_BARE), RetryAdvice::Retry);
    }

    #[test]
    fn rejections_before_the_engine_are_retried_even_for_orders() {
        for s in ["EAPI:Rate limit exceeded", "EOrder:Rate limit exceeded", "EAPI:Invalid nonce"] {
            let e = api(s);
            assert!(e.is_transient() && e.certainly_not_executed(), "{s}");
            assert_eq!(e.retry_advice(ADD_BARE), RetryAdvice::Retry, "{s}");
            assert!(e.retry_safe_for(ADD_BARE), "{s}");
        }
    }

    #[test]
    fn final_errors_are_not_retried() {
        for s in ["EOrder:Insufficient funds", "EAPI:Invalid key", "EAPI:Invalid signature", "EOrder:Unknown order"] {
            let e = api(s);
            assert!(!e.is_transient(), "{s}");
            for kind in [RequestKind::Public, RequestKind::PrivateRead, RequestKind::Cancel, ADD_WITH_ID, ADD_BARE] {
                assert_eq!(e.retry_advice(kind), RetryAdvice::DoNotRetry, "{s} {kind:?}");
            }
        }
        assert!(!KrakenError::Decode("x".into()).retry_safe_for(RequestKind::Public));
    }

    #[test]
    fn several_errors_keep_all_words_and_the_first_error_decides() {
        let e = KrakenError::from_errors(&["WGeneral:Deprecated".into(), "EOrder:Insufficient funds".into()]);
        assert_eq!(e.code(), Some(ErrorCode::InsufficientFunds));
        assert_eq!(e.reason(), "WGeneral:Deprecated; EOrder:Insufficient funds");
        assert_eq!(e.to_string(), "kraken: WGeneral:Deprecated; EOrder:Insufficient funds");
        assert_eq!(ErrorCode::InsufficientFunds.as_str(), "insufficient_funds");
    }

    #[test]
    fn builds_bodies_as_kraken_writes_them() {
        let ok = success_body(&serde_json::json!({"count": 1}));
        assert_eq!(decode::<BTreeMap<String, u32>>(&ok).unwrap()["count"], 1);
        let bad = error_body(&["EAPI:Invalid nonce"]);
        assert_eq!(bad, r#"{"error":["EAPI:Invalid nonce"]}"#);
        assert_eq!(decode::<serde_json::Value>(&bad).unwrap_err().code(), Some(ErrorCode::InvalidNonce));
    }
}

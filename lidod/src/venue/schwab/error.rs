//! Schwab's failures, typed.
//!
//! Schwab answers errors with an HTTP status and one of three bodies:
//! - the Trader API's documented `{"message":"…","errors":["…"]}`,
//! - the API gateway's `{"errors":[{"id":"…","status":"401","title":
//!   "Unauthorized","detail":"…"}]}` (market data, and any bad bearer token),
//! - the OAuth endpoint's `{"error":"invalid_grant","error_description":"…"}`.
//!
//! [`SchwabError::from_response`] reads all three (and any other text, kept
//! short) into one message, and the status into a variant. `429` carries
//! `Retry-After` when Schwab sends it. Order rejections keep Schwab's words.

use std::time::Duration;

use serde::Deserialize;

/// Something Schwab, or the way to it, refused or failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchwabError {
    /// Bad options or a missing/invalid token file; nothing was sent.
    #[error("{0}")]
    Config(String),
    /// The broker's own files failed (the orders file); nothing was sent.
    #[error("{0}")]
    Storage(String),
    /// Refused before sending: the order cannot be expressed or is outside the session.
    #[error("{0}")]
    Invalid(String),
    /// Outside the session the order asks for; nothing was sent.
    #[error("{0}")]
    MarketClosed(String),
    /// Refused by Lido before sending, with Lido's own code: what Schwab is
    /// known to refuse (`unsupported_time_in_force`, `position_crossing`)
    /// or a venue budget spent (`rate_limited`). Nothing was sent.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// 401 even with a fresh access token, or the refresh was refused.
    #[error("Schwab refused the credentials ({message}); log in again with `lidoctl broker auth schwab`")]
    Unauthorized { message: String },
    /// 403: the app or account may not do this.
    #[error("Schwab forbids this for the app or account: {message}")]
    Forbidden { message: String },
    /// 404.
    #[error("Schwab does not know it: {message}")]
    NotFound { message: String },
    /// 429.
    #[error("Schwab's request limit was reached{}; wait and retry", retry_after.map(|d| format!(" (retry after {} s)", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// 400/422 and other 4xx: Schwab read the request and refused it.
    #[error("Schwab rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// 5xx: Schwab failed; a POST may or may not have taken effect.
    #[error("Schwab failed (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    /// No usable HTTP answer. `maybe_sent`: the request may have reached Schwab.
    #[error("cannot reach Schwab: {message}")]
    Transport { message: String, maybe_sent: bool },
    /// An answer this client cannot read.
    #[error("unexpected answer from Schwab: {0}")]
    Decode(String),
}

impl SchwabError {
    /// The error from a non-success answer.
    pub fn from_response(status: u16, retry_after: Option<&str>, body: &str) -> Self {
        let message = error_message(body);
        match status {
            401 => Self::Unauthorized { message },
            403 => Self::Forbidden { message },
            404 => Self::NotFound { message },
            429 => Self::RateLimited {
                retry_after: retry_after.and_then(|s| s.trim().parse().ok()).map(Duration::from_secs),
            },
            400..=499 => Self::Rejected { status, message },
            _ => Self::Server { status, message },
        }
    }

    /// Lido's snake_case code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Config(_) => "venue_config",
            Self::Storage(_) => "broker_storage",
            Self::Invalid(_) => "invalid_order",
            Self::MarketClosed(_) => "market_closed",
            Self::Refused { code, .. } => code,
            Self::Unauthorized { .. } => "venue_unauthorized",
            Self::Forbidden { .. } => "venue_forbidden",
            Self::NotFound { .. } => "not_found",
            Self::RateLimited { .. } => "rate_limited",
            Self::Rejected { .. } => "venue_rejected",
            Self::Server { .. } => "venue_unavailable",
            Self::Transport { .. } => "venue_unreachable",
            Self::Decode(_) => "venue_protocol",
        }
    }

    /// Whether a request that failed this way may have taken effect at
    /// Schwab (so an order must be looked up, never blindly sent again).
    pub fn maybe_sent(&self) -> bool {
        match self {
            Self::Transport { maybe_sent, .. } => *maybe_sent,
            Self::Server { .. } | Self::Decode(_) => true,
            _ => false,
        }
    }
}

/// One line from any of Schwab's error bodies (see the module docs).
pub fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Text(String),
        Gateway {
            #[serde(default)]
            title: Option<String>,
            #[serde(default)]
            detail: Option<String>,
        },
    }
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        errors: Vec<Item>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        error_description: Option<String>,
    }
    let Ok(parsed) = serde_json::from_str::<Body>(body) else {
        let text: String = body.trim().chars().take(200).collect();
        return if text.is_empty() { "no details given".into() } else { text };
    };
    let mut parts: Vec<String> = parsed.message.into_iter().collect();
    for item in parsed.errors {
        match item {
            Item::Text(t) => parts.push(t),
            Item::Gateway { title, detail } => {
                parts.extend(detail.or(title));
            }
        }
    }
    parts.extend(parsed.error_description.or(parsed.error));
    if parts.is_empty() {
        "no details given".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trader_api_body_keeps_schwab_words() {
        let body = r#"{"message":"A validation error occurred while processing the request.","errors":["Order quantity must be greater than zero"]}"#;
        let e = SchwabError::from_response(400, None, body);
        assert_eq!(
            e,
            SchwabError::Rejected {
                status: 400,
                message: "A validation error occurred while processing the request.; Order quantity must be greater than zero".into()
            }
        );
        assert_eq!(e.code(), "venue_rejected");
        assert!(!e.maybe_sent());
    }

    #[test]
    fn gateway_401_is_unauthorized() {
        let body = r#"{"errors":[{"id":"6f9b2a4c-1c1e-4b57-9f0e-2b7d6f1f0c11","status":"401","title":"Unauthorized","detail":"Client not authorized"}]}"#;
        let e = SchwabError::from_response(401, None, body);
        assert_eq!(e, SchwabError::Unauthorized { message: "Client not authorized".into() });
        assert!(e.to_string().contains("lidoctl broker auth schwab"));
    }

    #[test]
    fn oauth_error_and_rate_limit() {
        let e = SchwabError::from_response(
            400,
            None,
            r#"{"error":"invalid_grant","error_description":"refresh token expired"}"#,
        );
        assert_eq!(e, SchwabError::Rejected { status: 400, message: "refresh token expired".into() });
        let e = SchwabError::from_response(429, Some("7"), "");
        assert_eq!(e, SchwabError::RateLimited { retry_after: Some(Duration::from_secs(7)) });
        assert_eq!(e.code(), "rate_limited");
        assert!(e.to_string().contains("retry after 7 s"));
        assert_eq!(
            SchwabError::from_response(429, None, "").to_string(),
            "Schwab's request limit was reached; wait and retry"
        );
    }

    #[test]
    fn server_errors_may_have_taken_effect() {
        let e = SchwabError::from_response(502, None, "<html>Bad Gateway</html>");
        assert_eq!(e, SchwabError::Server { status: 502, message: "<html>Bad Gateway</html>".into() });
        assert!(e.maybe_sent());
        assert!(!SchwabError::Transport { message: "refused".into(), maybe_sent: false }.maybe_sent());
        assert_eq!(SchwabError::from_response(404, None, "").code(), "not_found");
    }
}

//! Schwab OAuth 2 tokens: the authorization-code login, the refresh rules
//! and the token file.
//!
//! - Login: the user opens [`authorize_url`] (`{auth_url}/v1/oauth/authorize
//!   ?client_id=APP_KEY&redirect_uri=…`), signs in, and is sent to the
//!   redirect URI with `?code=…&session=…`; [`code_from_redirect`] takes the
//!   code out (Schwab's codes end in `@`, sent URL-encoded as `%40`).
//! - Exchange and refresh: `POST {auth_url}/v1/oauth/token` with HTTP Basic
//!   `app_key:app_secret` and the form `grant_type=authorization_code&code=…
//!   &redirect_uri=…` or `grant_type=refresh_token&refresh_token=…`; the
//!   answer is a [`TokenResponse`].
//! - Lifetimes: access tokens live `expires_in` seconds (1800); refresh
//!   tokens seven days from the login, and Schwab does not say so in the
//!   answer, so [`REFRESH_TOKEN_LIFETIME`] is counted from the code
//!   exchange and kept across refreshes that return the same refresh token.
//! - [`Tokens::needs_refresh`] says when to refresh (a margin before the
//!   access token expires); [`Tokens::refresh_warning`] when the refresh
//!   token is close enough to its end that a person must log in again.
//! - [`TokenFile`] keeps [`Tokens`] as JSON, owner-only (0600), replaced
//!   atomically ([`file::replace`]).
//!
//! No token ever reaches a log or an error: [`Tokens`]' `Debug` is redacted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::error::SchwabError;
use crate::venue::file;

/// Schwab's OAuth host (authorize and token endpoints live under `/v1/oauth`).
pub const PRODUCTION_AUTH_URL: &str = "https://api.schwabapi.com";
/// Refresh tokens last seven days from the login (Schwab's documentation).
pub const REFRESH_TOKEN_LIFETIME: TimeDelta = TimeDelta::days(7);
/// Access tokens live 30 minutes (`expires_in` 1800).
pub const ACCESS_TOKEN_LIFETIME: TimeDelta = TimeDelta::minutes(30);
/// Refresh the access token this long before it expires.
pub const ACCESS_REFRESH_MARGIN: TimeDelta = TimeDelta::minutes(5);
/// Warn in the log once the refresh token has less than this left (a
/// person must log in again within seven days of the last login).
pub const REFRESH_WARNING: TimeDelta = TimeDelta::days(2);

/// The answer of `POST /v1/oauth/token`.
#[derive(Clone, Deserialize, Serialize)]
pub struct TokenResponse {
    /// Seconds the access token lives (1800).
    pub expires_in: i64,
    pub token_type: String,
    #[serde(default)]
    pub scope: Option<String>,
    pub refresh_token: String,
    pub access_token: String,
    #[serde(default)]
    pub id_token: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// What the broker keeps: both tokens and when each ends.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_expires_at: DateTime<Utc>,
    /// When the access token was issued. Absent in files written before
    /// Lido kept it: then [`Tokens::issued`] counts back from the expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

impl Tokens {
    /// Tokens from a code exchange at `now`: the refresh token's seven days start now.
    pub fn from_login(response: TokenResponse, now: DateTime<Utc>) -> Self {
        Self {
            access_expires_at: now + TimeDelta::seconds(response.expires_in),
            refresh_expires_at: now + REFRESH_TOKEN_LIFETIME,
            access_token: response.access_token,
            refresh_token: response.refresh_token,
            issued_at: Some(now),
        }
    }

    /// Tokens after a refresh at `now`. Schwab returns the same refresh token,
    /// whose end does not move; a different one starts a new seven days.
    pub fn refreshed(&self, response: TokenResponse, now: DateTime<Utc>) -> Self {
        let refresh_expires_at = if response.refresh_token == self.refresh_token {
            self.refresh_expires_at
        } else {
            now + REFRESH_TOKEN_LIFETIME
        };
        Self {
            access_expires_at: now + TimeDelta::seconds(response.expires_in),
            refresh_expires_at,
            access_token: response.access_token,
            refresh_token: response.refresh_token,
            issued_at: Some(now),
        }
    }

    /// When the access token was issued (for files without `issued_at`,
    /// its expiry less Schwab's 30 minutes).
    pub fn issued(&self) -> DateTime<Utc> {
        self.issued_at.unwrap_or(self.access_expires_at - ACCESS_TOKEN_LIFETIME)
    }

    /// Whether these tokens are newer than `other`: a later login (the
    /// refresh token's issue, hence its end, is later) wins, then the later
    /// issued access token. Several processes write one token file (each
    /// broker of a login, and `lidoctl broker auth`); none replaces newer
    /// tokens with older ones.
    pub fn newer_than(&self, other: &Tokens) -> bool {
        (self.refresh_expires_at, self.issued()) > (other.refresh_expires_at, other.issued())
    }

    /// Whether the access token should be refreshed before the next call.
    pub fn needs_refresh(&self, now: DateTime<Utc>) -> bool {
        now + ACCESS_REFRESH_MARGIN >= self.access_expires_at
    }

    /// Whether the refresh token has ended: only a new login helps.
    pub fn refresh_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.refresh_expires_at
    }

    /// Time left on the refresh token, when it is under [`REFRESH_WARNING`].
    pub fn refresh_warning(&self, now: DateTime<Utc>) -> Option<Duration> {
        let left = self.refresh_expires_at - now;
        (left < REFRESH_WARNING).then(|| left.to_std().unwrap_or_default())
    }
}

/// The URL a person opens to log in and allow the app.
pub fn authorize_url(auth_url: &str, app_key: &str, redirect_uri: &str) -> Result<reqwest::Url, SchwabError> {
    let base = format!("{}/v1/oauth/authorize", auth_url.trim_end_matches('/'));
    reqwest::Url::parse_with_params(&base, &[("client_id", app_key), ("redirect_uri", redirect_uri)])
        .map_err(|e| SchwabError::Config(format!("auth_url {auth_url:?} is not a URL: {e}")))
}

/// The authorization code in the URL the browser was redirected to
/// (`https://127.0.0.1/?code=C0.b2F1dGgy…%40&session=…`), decoded.
pub fn code_from_redirect(redirected: &str) -> Result<String, SchwabError> {
    let url = reqwest::Url::parse(redirected.trim()).map_err(|e| {
        SchwabError::Config(format!("that is not the redirect URL ({e}); paste the whole address from the browser"))
    })?;
    if let Some((_, error)) = url.query_pairs().find(|(k, _)| k == "error") {
        return Err(SchwabError::Config(format!("Schwab refused the login: {error}")));
    }
    url.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| SchwabError::Config("the redirect URL has no code= parameter; log in again".into()))
}

/// The token file: JSON [`Tokens`], owner-only.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the tokens; a missing file says how to log in.
    pub fn load(&self) -> Result<Tokens, SchwabError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            SchwabError::Config(format!(
                "cannot read the Schwab token file {}: {e}; log in with `lidoctl broker auth schwab --name NAME`",
                self.path.display()
            ))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            SchwabError::Config(format!(
                "the Schwab token file {} is not valid ({e}); log in again with `lidoctl broker auth schwab`",
                self.path.display()
            ))
        })
    }

    /// Replaces the file atomically and owner-only ([`file::replace`]).
    pub fn save(&self, tokens: &Tokens) -> Result<(), SchwabError> {
        let fail = |what: &str, e: std::io::Error| {
            SchwabError::Config(format!("cannot {what} the Schwab token file {}: {e}", self.path.display()))
        };
        let text = serde_json::to_vec_pretty(tokens).map_err(|e| fail("encode", e.into()))?;
        file::replace(&self.path, &text, file::Access::OwnerOnly).map_err(|e| fail("write", e))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn response(access: &str, refresh: &str) -> TokenResponse {
        TokenResponse {
            expires_in: 1800,
            token_type: "Bearer".into(),
            scope: Some("api".into()),
            refresh_token: refresh.into(),
            access_token: access.into(),
            id_token: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn access_token_is_refreshed_five_minutes_before_it_ends() {
        let t = Tokens::from_login(response("a1", "r1"), at("2026-12-01T10:00:00Z"));
        assert_eq!(t.access_expires_at, at("2026-12-01T10:30:00Z"));
        assert!(!t.needs_refresh(at("2026-12-01T10:24:59Z")));
        assert!(t.needs_refresh(at("2026-12-01T10:25:00Z")));
        assert!(t.needs_refresh(at("2026-12-01T11:00:00Z")));
    }

    #[test]
    fn refresh_token_keeps_its_seven_days_across_refreshes() {
        let login = Tokens::from_login(response("a1", "r1"), at("2026-12-01T10:00:00Z"));
        assert_eq!(login.refresh_expires_at, at("2026-12-08T10:00:00Z"));
        let same = login.refreshed(response("a2", "r1"), at("2026-12-03T10:00:00Z"));
        assert_eq!(same.access_token, "a2");
        assert_eq!(same.refresh_expires_at, at("2026-12-08T10:00:00Z"));
        assert_eq!(same.access_expires_at, at("2026-12-03T10:30:00Z"));
        let rotated = login.refreshed(response("a3", "r2"), at("2026-12-03T10:00:00Z"));
        assert_eq!(rotated.refresh_expires_at, at("2026-12-10T10:00:00Z"));
    }

    #[test]
    fn a_later_login_is_newer_whatever_the_access_tokens_say() {
        let login = Tokens::from_login(response("a1", "r1"), at("2026-12-01T10:00:00Z"));
        let refreshed = login.refreshed(response("a2", "r1"), at("2026-12-03T10:00:00Z"));
        assert!(refreshed.newer_than(&login) && !login.newer_than(&refreshed));
        let relogin = Tokens::from_login(response("a3", "r2"), at("2026-12-02T10:00:00Z"));
        assert!(relogin.newer_than(&refreshed), "a new login outranks a later refresh of the old one");
        let mut legacy = login.clone();
        legacy.issued_at = None;
        assert_eq!(legacy.issued(), at("2026-12-01T10:00:00Z"));
        assert!(!legacy.newer_than(&login) && !login.newer_than(&legacy));
    }

    #[test]
    fn refresh_token_end_is_warned_two_days_early() {
        let t = Tokens::from_login(response("a", "r"), at("2026-12-01T10:00:00Z"));
        assert_eq!(t.refresh_warning(at("2026-12-06T09:59:59Z")), None);
        assert_eq!(t.refresh_warning(at("2026-12-07T22:00:00Z")), Some(Duration::from_secs(12 * 3600)));
        assert!(!t.refresh_expired(at("2026-12-08T09:59:59Z")));
        assert!(t.refresh_expired(at("2026-12-08T10:00:00Z")));
        assert_eq!(t.refresh_warning(at("2026-12-09T10:00:00Z")), Some(Duration::ZERO));
    }

    #[test]
    fn authorize_url_and_redirect_code() {
        let url = authorize_url("https://api.schwabapi.com/", "KEY", "https://127.0.0.1").unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.schwabapi.com/v1/oauth/authorize?client_id=KEY&redirect_uri=https%3A%2F%2F127.0.0.1"
        );
        let code = code_from_redirect("https://127.0.0.1/?code=C0.b2F1dGgyLmJkYy5zY2h3YWIuY29t.abc%40&session=s-1");
        assert_eq!(code.unwrap(), "C0.b2F1dGgyLmJkYy5zY2h3YWIuY29t.abc@");
        assert!(code_from_redirect("https://127.0.0.1/?session=s").is_err());
        assert!(code_from_redirect("not a url").is_err());
        assert!(code_from_redirect("https://127.0.0.1/?error=access_denied")
            .unwrap_err()
            .to_string()
            .contains("refused"));
    }

    #[test]
    fn token_file_is_owner_only_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("schwab-token-test-{}", std::process::id()));
        let file = TokenFile::new(dir.join("s1.json"));
        let t = Tokens::from_login(response("secret-access", "secret-refresh"), at("2026-12-01T10:00:00Z"));
        file.save(&t).unwrap();
        file.save(&t).unwrap();
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(file.load().unwrap(), t);
        let debug = format!("{t:?}");
        assert!(!debug.contains("secret"), "{debug}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(TokenFile::new(dir.join("none.json")).load().unwrap_err().to_string().contains("lidoctl broker auth"));
    }
}

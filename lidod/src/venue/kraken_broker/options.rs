//! The options a `kraken` broker takes (`--set k=v`, or `options` in
//! `lido.toml`), and the credentials read from the environment variables
//! they name. Unknown keys and bad values are errors naming the key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::venue::kraken::book::DEPTHS;
use crate::venue::kraken::ratelimit::Tier;
use crate::venue::kraken::rest::{Credentials, PRODUCTION_URL};
use crate::venue::kraken::sign::Signer;

/// Kraken's public WebSocket v2 endpoint.
pub const PUBLIC_WS_URL: &str = "wss://ws.kraken.com/v2";
/// Kraken's private (authenticated) WebSocket v2 endpoint.
pub const PRIVATE_WS_URL: &str = "wss://ws-auth.kraken.com/v2";
/// Most public connections one broker opens, on demand included.
pub const MAX_CONNECTIONS: usize = 16;
/// Default for `max_subscriptions_per_connection`: a conservative figure
/// (Kraken documents connection and request rate limits, not a fixed cap
/// on subscriptions per v2 connection), counted per (channel, symbol).
const DEFAULT_MAX_SUBSCRIPTIONS: usize = 50;

/// A parsed, checked option set.
#[derive(Clone, Debug, PartialEq)]
pub struct KrakenOptions {
    pub rest_url: String,
    pub ws_url: String,
    pub ws_auth_url: String,
    /// Names of the environment variables holding the key and the secret.
    pub api_key_env: String,
    pub api_secret_env: String,
    pub tier: Tier,
    /// Public WebSocket connections always open; more are opened when
    /// these carry `max_subscriptions_per_connection` each.
    pub connections: usize,
    /// (channel, symbol) subscriptions one public connection carries at most.
    pub max_subscriptions_per_connection: usize,
    /// A connection counts as full this many subscriptions before the
    /// limit, so the next one opens while there is room; `None`: a tenth of
    /// the limit (see [`Self::headroom`]).
    pub subscription_headroom: Option<usize>,
    /// Where the last nonce is kept, so nonces increase across restarts.
    pub nonce_file: PathBuf,
    /// Depth of the WebSocket `book` subscriptions.
    pub book_depth: u32,
    /// Limit on one REST request, sending included.
    pub rest_timeout: Duration,
    /// How often AssetPairs is reloaded (it is also reloaded after the
    /// public socket connects again).
    pub pairs_refresh: Duration,
}

impl KrakenOptions {
    pub const KEYS: &'static [&'static str] = &[
        "rest_url",
        "ws_url",
        "ws_auth_url",
        "api_key_env",
        "api_secret_env",
        "tier",
        "connections",
        "max_subscriptions_per_connection",
        "subscription_headroom",
        "nonce_file",
        "book_depth",
        "rest_timeout_ms",
        "pairs_refresh_ms",
    ];

    /// The defaults for a broker called `name` (its nonce file is named
    /// after it).
    pub fn defaults(name: &str) -> Self {
        Self {
            rest_url: PRODUCTION_URL.to_string(),
            ws_url: PUBLIC_WS_URL.to_string(),
            ws_auth_url: PRIVATE_WS_URL.to_string(),
            api_key_env: "KRAKEN_API_KEY".to_string(),
            api_secret_env: "KRAKEN_API_SECRET".to_string(),
            tier: Tier::Starter,
            connections: 1,
            max_subscriptions_per_connection: DEFAULT_MAX_SUBSCRIPTIONS,
            subscription_headroom: None,
            nonce_file: default_state_dir().join(format!("kraken-{name}.nonce")),
            book_depth: 10,
            rest_timeout: Duration::from_secs(10),
            pairs_refresh: Duration::from_secs(300),
        }
    }

    /// Parses `options` for the broker `name`.
    pub fn parse(name: &str, options: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut out = Self::defaults(name);
        for (k, v) in options {
            match k.as_str() {
                "rest_url" => out.rest_url = url(k, v, &["http://", "https://"])?,
                "ws_url" => out.ws_url = url(k, v, &["ws://", "wss://"])?,
                "ws_auth_url" => out.ws_auth_url = url(k, v, &["ws://", "wss://"])?,
                "api_key_env" => out.api_key_env = env_name(k, v)?,
                "api_secret_env" => out.api_secret_env = env_name(k, v)?,
                "tier" => {
                    out.tier = Tier::parse(v)
                        .ok_or_else(|| format!("option tier must be starter, intermediate or pro, got {v:?}"))?
                }
                "connections" => {
                    out.connections = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_CONNECTIONS).contains(n))
                        .ok_or_else(|| format!("option connections must be 1 to {MAX_CONNECTIONS}, got {v:?}"))?
                }
                "max_subscriptions_per_connection" => {
                    out.max_subscriptions_per_connection =
                        v.parse().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
                            format!("option max_subscriptions_per_connection must be 1 to 1000, got {v:?}")
                        })?
                }
                "subscription_headroom" => {
                    out.subscription_headroom = Some(v.parse().ok().filter(|n| *n < 1000).ok_or_else(|| {
                        format!("option subscription_headroom must be 0 to 999 subscriptions, got {v:?}")
                    })?)
                }
                "nonce_file" if !v.trim().is_empty() => out.nonce_file = PathBuf::from(v),
                "nonce_file" => return Err("option nonce_file must be a file path, got an empty value".into()),
                "book_depth" => {
                    out.book_depth = v.parse().ok().filter(|d| DEPTHS.contains(d)).ok_or_else(|| {
                        format!("option book_depth must be one of 10, 25, 100, 500, 1000 (kraken's depths), got {v:?}")
                    })?
                }
                "rest_timeout_ms" => {
                    let ms: u64 = v
                        .parse()
                        .ok()
                        .filter(|ms| (100..=120_000).contains(ms))
                        .ok_or_else(|| format!("option rest_timeout_ms must be 100 to 120000, got {v:?}"))?;
                    out.rest_timeout = Duration::from_millis(ms);
                }
                "pairs_refresh_ms" => {
                    let ms: u64 = v
                        .parse()
                        .ok()
                        .filter(|ms| (1_000..=86_400_000).contains(ms))
                        .ok_or_else(|| format!("option pairs_refresh_ms must be 1000 to 86400000, got {v:?}"))?;
                    out.pairs_refresh = Duration::from_millis(ms);
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?} for a kraken broker; known: {}",
                        Self::KEYS.join(", ")
                    ))
                }
            }
        }
        Ok(out)
    }

    /// The headroom in force: as set, else a tenth of the limit.
    pub fn headroom(&self) -> usize {
        self.subscription_headroom.unwrap_or(self.max_subscriptions_per_connection / 10)
    }

    /// The API key and secret from the environment, `None` when neither
    /// variable is set (public data only). Errors never contain the values.
    pub fn credentials(&self) -> Result<Option<Credentials>, String> {
        let key = std::env::var(&self.api_key_env).ok().filter(|k| !k.is_empty());
        let secret = std::env::var(&self.api_secret_env).ok().filter(|s| !s.is_empty());
        match (key, secret) {
            (None, None) => Ok(None),
            (Some(key), Some(secret)) => {
                let secret = Signer::new(&secret).map_err(|_| {
                    format!("the secret in {} is not valid base64; copy it again from Kraken", self.api_secret_env)
                })?;
                Ok(Some(Credentials { key, secret }))
            }
            (Some(_), None) => {
                Err(format!("{} is set but {} is not; set both or neither", self.api_key_env, self.api_secret_env))
            }
            (None, Some(_)) => {
                Err(format!("{} is set but {} is not; set both or neither", self.api_secret_env, self.api_key_env))
            }
        }
    }
}

/// `$XDG_STATE_HOME/lido`, else `~/.local/state/lido`, else `./lido-state`.
fn default_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/state")));
    match base {
        Some(dir) => dir.join("lido"),
        None => PathBuf::from("lido-state"),
    }
}

fn url(key: &str, value: &str, schemes: &[&str]) -> Result<String, String> {
    let value = value.trim().trim_end_matches('/');
    let ok = schemes.iter().any(|s| value.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
    if !ok {
        return Err(format!("option {key} must be a {} URL, got {value:?}", schemes.join(" or ")));
    }
    Ok(value.to_string())
}

fn env_name(key: &str, value: &str) -> Result<String, String> {
    let ok = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!("option {key} must name an environment variable (letters, digits, _), got {value:?}"));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_krakens_production_endpoints() {
        let o = KrakenOptions::parse("k1", &BTreeMap::new()).unwrap();
        assert_eq!(o.rest_url, "https://api.kraken.com");
        assert_eq!(o.ws_url, "wss://ws.kraken.com/v2");
        assert_eq!(o.ws_auth_url, "wss://ws-auth.kraken.com/v2");
        assert_eq!((o.api_key_env.as_str(), o.api_secret_env.as_str()), ("KRAKEN_API_KEY", "KRAKEN_API_SECRET"));
        assert!(o.nonce_file.ends_with("kraken-k1.nonce"), "{:?}", o.nonce_file);
    }

    #[test]
    fn overrides_parse_and_bad_values_name_the_key() {
        let o = KrakenOptions::parse(
            "k1",
            &opts(&[("rest_url", "http://127.0.0.1:9/"), ("ws_url", "ws://127.0.0.1:9/v2"), ("book_depth", "25")]),
        )
        .unwrap();
        assert_eq!(o.rest_url, "http://127.0.0.1:9");
        assert_eq!(o.book_depth, 25);
        for (k, v) in [("book_depth", "20"), ("ws_url", "http://x"), ("tier", "gold"), ("connections", "0")] {
            let err = KrakenOptions::parse("k1", &opts(&[(k, v)])).unwrap_err();
            assert!(err.contains(k), "{err}");
        }
        let err = KrakenOptions::parse("k1", &opts(&[("api_sekret_env", "X")])).unwrap_err();
        assert!(err.contains("unknown option \"api_sekret_env\""), "{err}");
    }

    #[test]
    fn headroom_defaults_to_a_tenth_of_the_limit() {
        assert_eq!(KrakenOptions::parse("k1", &BTreeMap::new()).unwrap().headroom(), 5);
        let small = KrakenOptions::parse("k1", &opts(&[("max_subscriptions_per_connection", "3")])).unwrap();
        assert_eq!(small.headroom(), 0);
        let set = KrakenOptions::parse("k1", &opts(&[("subscription_headroom", "2")])).unwrap();
        assert_eq!(set.headroom(), 2);
        assert!(KrakenOptions::parse("k1", &opts(&[("subscription_headroom", "-1")])).is_err());
    }
}

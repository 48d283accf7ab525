//! The documented Schwab payloads the fake answers with, read from
//! `tests/fixtures/schwab/*.json` (each file names its source in `_source`).
//! The fake clones a template and fills in the values of the moment.

use std::sync::LazyLock;

use serde_json::Value;

/// One fixture file, parsed once.
pub struct File(LazyLock<Value>);

impl File {
    /// A clone of the example named `key`; panics on a fixture that does not
    /// exist, which is a bug of the fake, not of the code under test.
    pub fn get(&self, key: &str) -> Value {
        match self.0.get(key) {
            Some(v) => v.clone(),
            None => panic!("fixture entry {key} missing"),
        }
    }

    /// A string example.
    pub fn text(&self, key: &str) -> String {
        self.get(key).as_str().unwrap_or_default().to_string()
    }
}

fn parse(name: &str, text: &str) -> Value {
    match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => panic!("fixture {name} is not JSON: {e}"),
    }
}

pub static OAUTH: File = File(LazyLock::new(|| parse("oauth", include_str!("../fixtures/schwab/oauth.json"))));
pub static ERRORS: File = File(LazyLock::new(|| parse("errors", include_str!("../fixtures/schwab/errors.json"))));
pub static ACCOUNTS: File = File(LazyLock::new(|| parse("accounts", include_str!("../fixtures/schwab/accounts.json"))));
pub static ORDERS: File = File(LazyLock::new(|| parse("orders", include_str!("../fixtures/schwab/orders.json"))));
pub static MARKETDATA: File =
    File(LazyLock::new(|| parse("marketdata", include_str!("../fixtures/schwab/marketdata.json"))));
pub static STREAMER: File = File(LazyLock::new(|| parse("streamer", include_str!("../fixtures/schwab/streamer.json"))));
pub static USER_PREFERENCE: File =
    File(LazyLock::new(|| parse("user_preference", include_str!("../fixtures/schwab/user_preference.json"))));

/// Whether `value` is among the strings of `ORDERS.accepted[list]`.
pub fn accepted(list: &str, value: &str) -> bool {
    ORDERS.get("accepted")[list].as_array().is_some_and(|a| a.iter().any(|v| v == value))
}

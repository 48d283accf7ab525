//! A node trading at the fake Schwab: the token file from the fake's login
//! and the `lido.toml` of one Schwab broker in one market, with the app's
//! keys in environment variables. What the Schwab broker, truth and
//! conformance tests share.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::schwab_fake::FakeSchwab;

/// The environment variables that hold the app key and secret.
pub const KEY_ENV: &str = "LIDO_IT_SCHWAB_KEY";
pub const SECRET_ENV: &str = "LIDO_IT_SCHWAB_SECRET";

/// Writes `<dir>/<broker>-token.json` from the fake's login, mode 0600 as
/// the broker requires; returns its path.
pub fn token_file(fake: &FakeSchwab, dir: &Path, broker: &str) -> PathBuf {
    let path = dir.join(format!("{broker}-token.json"));
    std::fs::write(&path, serde_json::to_vec(&fake.issue_tokens()).expect("tokens")).expect("write the token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    path
}

/// `lido.toml` with broker `broker` of `broker_type` on the fake (token at
/// `token`) in market `market`; `options` is more broker options, as TOML
/// lines (e.g. `symbols = "AAPL"`).
pub fn node_toml(
    fake: &FakeSchwab,
    token: &Path,
    broker: &str,
    broker_type: &str,
    market: &str,
    options: &str,
) -> String {
    format!(
        r#"
[[broker]]
name = "{broker}"
type = "{broker_type}"
[broker.options]
api_url = "{url}"
auth_url = "{url}"
token_file = "{token}"
app_key_env = "{KEY_ENV}"
app_secret_env = "{SECRET_ENV}"
{options}

[[market]]
name = "{market}"
brokers = ["{broker}"]
"#,
        url = fake.url,
        token = token.display()
    )
}

/// The app's key and secret as lidod's environment.
pub fn env(fake: &FakeSchwab) -> Vec<(String, String)> {
    vec![
        (KEY_ENV.to_string(), fake.config().app_key.clone()),
        (SECRET_ENV.to_string(), fake.config().app_secret.clone()),
    ]
}

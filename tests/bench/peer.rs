//! The peer: what many algo authors use instead of Lido, Python `ccxt`'s
//! `kraken` class, pointed at the Kraken fake (`urls['api']`) with the
//! fake's key and secret, timing `fetch_ticker` and `create_order` (a
//! resting limit buy) one after another.

use std::time::Duration;

use anyhow::{bail, Context};
use lido_tests::kraken_fake::{FakeConfig, FakeKraken};

use crate::stats::Percentiles;

/// Prints `{"ticker":[µs…],"order":[µs…]}`. Nonces are microseconds,
/// counted up, since ccxt's millisecond nonce repeats within a
/// millisecond and Kraken refuses a nonce not above the last.
const SCRIPT: &str = r#"
import json, sys, time
import ccxt
url, key, secret, n, warmup = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
ex = ccxt.kraken({"apiKey": key, "secret": secret, "enableRateLimit": False})
ex.urls["api"] = {"public": url, "private": url}
ex.has["fetchCurrencies"] = False
counter = [int(time.time() * 1e6)]
def nonce():
    counter[0] += 1
    return counter[0]
ex.nonce = nonce
ex.load_markets()
def timed(call):
    out = []
    for i in range(warmup + n):
        t = time.perf_counter_ns()
        call()
        if i >= warmup:
            out.append((time.perf_counter_ns() - t) // 1000)
    return out
ticker = timed(lambda: ex.fetch_ticker("BTC/USD"))
order = timed(lambda: ex.create_order("BTC/USD", "limit", "buy", 0.0001, 10000))
print(json.dumps({"ccxt": ccxt.__version__, "ticker": ticker, "order": order}))
"#;

pub struct Peer {
    pub version: String,
    pub ticker: Percentiles,
    pub order: Percentiles,
}

#[derive(serde::Deserialize)]
struct Output {
    ccxt: String,
    ticker: Vec<u64>,
    order: Vec<u64>,
}

/// `None` when Python or ccxt is missing (the row is skipped, saying so).
pub async fn run(n: usize, warmup: usize) -> anyhow::Result<Option<Peer>> {
    let has_ccxt = tokio::process::Command::new("python3")
        .args(["-c", "import ccxt"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !has_ccxt {
        return Ok(None);
    }
    // The peer row times a client's round trip, not Kraken's budget: up to
    // 500 unpaced orders would pass the Pro trading counter (180) the fake
    // now enforces.
    let config = FakeConfig { rate_limits: false, ..crate::orders::rich_fake_config() };
    let fake = FakeKraken::start(config.clone()).await;
    let out = tokio::process::Command::new("python3")
        .args(["-c", SCRIPT, &fake.url, &config.api_key, &config.api_secret, &n.to_string(), &warmup.to_string()])
        .output()
        .await
        .context("running python3 with ccxt")?;
    if !out.status.success() {
        bail!("the ccxt script failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let parsed: Output = serde_json::from_slice(&out.stdout).context("reading the ccxt script's output")?;
    let to_percentiles = |v: Vec<u64>| Percentiles::of(v.into_iter().map(Duration::from_micros).collect());
    Ok(Some(Peer { version: parsed.ccxt, ticker: to_percentiles(parsed.ticker), order: to_percentiles(parsed.order) }))
}

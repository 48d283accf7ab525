//! What one Kraken API key shares across the node's broker processes.
//!
//! Kraken keeps two things per key or per account that every broker using
//! the key spends together: the nonce (per key: a nonce lower than the last
//! one Kraken saw is refused) and the per-pair trading rate counter (per
//! account, across REST, WebSocket and FIX). Brokers are separate OS
//! processes on one node, so both live in files under the node's data dir,
//! in a folder named by a hash of the API key (never the key itself):
//!
//! ```text
//! <data dir>/kraken/account-<first 16 hex of SHA-256(key)>/
//!     nonce          the last nonce handed out
//!     nonce.lock     held from taking a nonce until its request is sent
//!     trading.json   the per-pair trading counters (a [`TradingLedger`])
//!     trading.lock   held while the counters are read and written
//! ```
//!
//! The locks are `flock`s (std's `File::lock`), released by the kernel when
//! a process dies, so a crashed broker never wedges the others. Brokers of
//! the same account on other nodes cannot see these files: they must use
//! API keys of their own (README, Kraken section).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::venue::file;
pub use crate::venue::kraken::lock::FileLock;
use crate::venue::kraken::ratelimit::{Limits, TradeAction, TradingLedger, TradingRefusal};

/// The folder of one API key's shared state under `base`.
pub fn account_dir(base: &Path, api_key: &str) -> PathBuf {
    let digest = Sha256::digest(api_key.as_bytes());
    base.join(format!("account-{}", &hex::encode(digest)[..16]))
}

/// Microseconds since the Unix epoch now.
pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The per-pair trading counters of one account, kept in `trading.json`
/// under the account folder (or in memory, for a broker without keys).
#[derive(Debug)]
pub struct SharedTrading {
    dir: Option<PathBuf>,
    limits: Limits,
    memory: std::sync::Mutex<TradingLedger>,
}

/// The answer to a trading-counter check.
#[derive(Debug)]
pub enum Charge {
    Counted,
    Refused(TradingRefusal),
}

impl SharedTrading {
    pub fn new(dir: Option<PathBuf>, limits: Limits) -> Self {
        Self { dir, limits, memory: std::sync::Mutex::new(TradingLedger::default()) }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Counts `action` on `pair` if the account's counter stays within
    /// Kraken's threshold, else refuses it (nothing counted).
    pub async fn charge(&self, pair: &str, action: TradeAction) -> io::Result<Charge> {
        self.update(|ledger, now| match ledger.charge(pair, action, self.limits, now) {
            Ok(()) => Charge::Counted,
            Err(r) => Charge::Refused(r),
        })
        .await
    }

    /// Kraken refused with `EOrder:Rate limit exceeded` on `pair`.
    pub async fn saturate(&self, pair: &str) -> io::Result<()> {
        self.update(|ledger, now| ledger.saturate(pair, self.limits, now)).await
    }

    /// The busiest pair's counter as a share of the threshold, as last
    /// read (for status; never waits on the lock).
    pub fn busiest_share(&self) -> f64 {
        let ledger = match &self.dir {
            Some(dir) => read_ledger(&dir.join("trading.json")).unwrap_or_default(),
            None => self.memory.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        ledger.busiest_share(self.limits, now_micros())
    }

    async fn update<T>(&self, f: impl FnOnce(&mut TradingLedger, u64) -> T) -> io::Result<T> {
        let Some(dir) = &self.dir else {
            let mut ledger = self.memory.lock().unwrap_or_else(|p| p.into_inner());
            return Ok(f(&mut ledger, now_micros()));
        };
        let _lock = FileLock::acquire(&dir.join("trading.lock"), Duration::from_secs(5)).await?;
        let path = dir.join("trading.json");
        let mut ledger = read_ledger(&path)?;
        let now = now_micros();
        let out = f(&mut ledger, now);
        ledger.prune(self.limits, now);
        let text = serde_json::to_vec(&ledger).map_err(io::Error::other)?;
        file::replace(&path, &text, file::Access::Default)?;
        Ok(out)
    }
}

fn read_ledger(path: &Path) -> io::Result<TradingLedger> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TradingLedger::default()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::venue::kraken::ratelimit::Tier;

    #[test]
    fn the_folder_is_named_by_a_hash_never_the_key() {
        let dir = account_dir(Path::new("/data/kraken"), "my-public-key");
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("account-") && name.len() == "account-".len() + 16, "{name}");
        assert!(!name.contains("my-public-key"));
        assert_eq!(dir, account_dir(Path::new("/data/kraken"), "my-public-key"));
        assert_ne!(dir, account_dir(Path::new("/data/kraken"), "another-key"));
    }

    #[tokio::test]
    async fn two_brokers_on_one_key_spend_one_trading_counter() {
        // Two `SharedTrading`s on one folder stand for two broker processes.
        let tmp = tempfile::tempdir().unwrap();
        let dir = account_dir(tmp.path(), "key");
        // Starter's threshold with next to no decay, so a slow disk cannot
        // make room between the calls.
        let limits = Limits::new(Tier::Starter.trading_limits().max, 1);
        let a = SharedTrading::new(Some(dir.clone()), limits);
        let b = SharedTrading::new(Some(dir), limits);
        for i in 0..60 {
            let broker = if i % 2 == 0 { &a } else { &b };
            assert!(matches!(broker.charge("XBTUSD", TradeAction::Add).await.unwrap(), Charge::Counted), "{i}");
        }
        let Charge::Refused(r) = b.charge("XBTUSD", TradeAction::Add).await.unwrap() else {
            panic!("the 61st add within a second must be refused")
        };
        assert!(r.to_string().starts_with("kraken trading rate limit for XBTUSD: counter 60 of 60"), "{r}");
        assert!(a.busiest_share() > 0.9);
    }
}

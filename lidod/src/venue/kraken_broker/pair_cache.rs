//! The broker's copy of Kraken's AssetPairs: loaded on first use, then
//! reloaded when it is `every` old or the public socket has connected
//! again since it was loaded, so a new `tick_size`, `ordermin`,
//! `lot_decimals` or pair `status` reaches the order checks without a
//! restart. A failed reload keeps the pairs loaded before and tries again
//! after [`RETRY_AFTER`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::venue::kraken::envelope::KrakenError;
use crate::venue::kraken::pairs::PairMap;

/// Wait before another try after a failed reload.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// AssetPairs, kept fresh (see the module docs).
pub struct PairCache {
    every: Duration,
    /// Held across a load, so one load runs at a time.
    state: Mutex<Option<Loaded>>,
}

struct Loaded {
    map: Arc<PairMap>,
    /// When the pairs are due for a reload.
    due: Instant,
    /// The public socket's connection count they were loaded at.
    sessions: u64,
}

impl PairCache {
    pub fn new(every: Duration) -> Self {
        Self { every, state: Mutex::new(None) }
    }

    /// Whether the pairs were loaded and are due for a reload at `now`,
    /// given the public socket's connection count `sessions`.
    pub async fn is_due(&self, now: Instant, sessions: u64) -> bool {
        self.state.lock().await.as_ref().is_some_and(|l| l.is_due(now, sessions))
    }

    /// The pairs at `now`; `load` (AssetPairs) runs when none are loaded
    /// or they are due.
    pub async fn get<F, Fut>(&self, now: Instant, sessions: u64, load: F) -> Result<Arc<PairMap>, KrakenError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<PairMap, KrakenError>>,
    {
        let mut state = self.state.lock().await;
        if let Some(loaded) = state.as_ref().filter(|l| !l.is_due(now, sessions)) {
            return Ok(loaded.map.clone());
        }
        let reload = state.is_some();
        match load().await {
            Ok(map) => {
                let map = Arc::new(map);
                if reload {
                    info!(pairs = map.len(), "kraken AssetPairs reloaded");
                }
                *state = Some(Loaded { map: map.clone(), due: now + self.every, sessions });
                Ok(map)
            }
            Err(e) => {
                let Some(loaded) = state.as_mut() else { return Err(e) };
                warn!(error = %e, retry_in = ?RETRY_AFTER, "kraken AssetPairs reload failed; keeping the pairs loaded before");
                loaded.due = now + RETRY_AFTER.min(self.every);
                loaded.sessions = sessions;
                Ok(loaded.map.clone())
            }
        }
    }
}

impl Loaded {
    fn is_due(&self, now: Instant, sessions: u64) -> bool {
        now >= self.due || sessions != self.sessions
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::venue::kraken::envelope::KrakenError;

    fn pairs(ordermin: &str) -> PairMap {
        PairMap::from_body(&format!(
            r#"{{"error":[],"result":{{"XXBTZUSD":{{"altname":"XBTUSD","wsname":"XBT/USD","base":"XXBT","quote":"ZUSD",
            "pair_decimals":1,"lot_decimals":8,"ordermin":"{ordermin}","tick_size":"0.1","status":"online"}}}}}}"#
        ))
        .unwrap()
    }

    fn ordermin(map: &PairMap) -> String {
        map.resolve("XBTUSD").unwrap().ordermin.to_string()
    }

    #[tokio::test]
    async fn pairs_are_reloaded_when_old_or_after_a_reconnect_and_kept_when_a_reload_fails() {
        let cache = PairCache::new(Duration::from_secs(300));
        let loads = AtomicUsize::new(0);
        let load = |min: &'static str| {
            let loads = &loads;
            move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, KrakenError>(pairs(min))
            }
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(ordermin(&cache.get(at(0), 1, load("0.0001")).await.unwrap()), "0.0001");
        // Fresh: no call to Kraken.
        assert!(!cache.is_due(at(299), 1).await);
        assert_eq!(ordermin(&cache.get(at(299), 1, load("0.5")).await.unwrap()), "0.0001");
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        // Five minutes old: reloaded, the new ordermin in force.
        assert!(cache.is_due(at(300), 1).await);
        assert_eq!(ordermin(&cache.get(at(300), 1, load("0.5")).await.unwrap()), "0.5");
        // The public socket connected again: reloaded at once.
        assert!(cache.is_due(at(301), 2).await);
        assert_eq!(ordermin(&cache.get(at(301), 2, load("0.25")).await.unwrap()), "0.25");
        assert_eq!(loads.load(Ordering::SeqCst), 3);
        // A failed reload keeps what was loaded and tries again later.
        let failed =
            || async { Err(KrakenError::Transport { message: "connection refused".into(), maybe_sent: false }) };
        assert_eq!(ordermin(&cache.get(at(601), 2, failed).await.unwrap()), "0.25");
        assert!(!cache.is_due(at(602), 2).await);
        assert!(cache.is_due(at(601) + RETRY_AFTER, 2).await);
    }

    #[tokio::test]
    async fn a_first_load_that_fails_is_an_error() {
        let cache = PairCache::new(Duration::from_secs(300));
        let failed =
            || async { Err(KrakenError::Transport { message: "connection refused".into(), maybe_sent: false }) };
        assert!(cache.get(Instant::now(), 0, failed).await.is_err());
    }
}

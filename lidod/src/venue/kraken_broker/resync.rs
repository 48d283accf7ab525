//! When a book whose checksum failed is resubscribed: at once the first
//! time, then no sooner than a delay that doubles with each resync of the
//! same streak (capped), so a feed that keeps failing costs one
//! unsubscribe/subscribe pair per delay, not one per bad update. A streak
//! ends with a book that applies cleanly; the delay starts over only when
//! the last resync is [`CALM_AFTER`] old.

use std::collections::HashMap;
use std::time::Duration;

use lido_shared::model::Symbol;
use tokio::time::Instant;

/// Shortest wait between two resyncs of one symbol.
pub const MIN_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between two resyncs of one symbol.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A symbol with no resync for this long starts again from [`MIN_DELAY`].
pub const CALM_AFTER: Duration = Duration::from_secs(300);

/// What to do about a book out of sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resync {
    /// Resubscribe now; `first_of_streak`: log it.
    Now { first_of_streak: bool },
    /// Wait: a resync is due later ([`BookResyncs::due`] says when).
    Later,
}

/// Resync pacing per symbol.
#[derive(Default)]
pub struct BookResyncs {
    symbols: HashMap<Symbol, Pacing>,
}

struct Pacing {
    /// The last resync.
    last: Instant,
    /// The wait after `last` before the next one.
    delay: Duration,
    /// A resync was held back and is owed.
    pending: bool,
}

impl BookResyncs {
    /// A checksum or sequence failure on `symbol` at `now`.
    pub fn out_of_sync(&mut self, symbol: &Symbol, now: Instant) -> Resync {
        let Some(p) = self.symbols.get_mut(symbol) else {
            self.symbols.insert(symbol.clone(), Pacing { last: now, delay: MIN_DELAY, pending: false });
            return Resync::Now { first_of_streak: true };
        };
        let calm = now.duration_since(p.last) >= CALM_AFTER;
        if !calm && now < p.last + p.delay {
            p.pending = true;
            return Resync::Later;
        }
        p.delay = if calm { MIN_DELAY } else { (p.delay * 2).min(MAX_DELAY) };
        p.last = now;
        p.pending = false;
        Resync::Now { first_of_streak: calm }
    }

    /// Symbols whose held-back resync may go at `now` (marked as sent).
    pub fn due(&mut self, now: Instant) -> Vec<Symbol> {
        let mut out = Vec::new();
        for (symbol, p) in &mut self.symbols {
            if p.pending && now >= p.last + p.delay {
                p.pending = false;
                p.last = now;
                p.delay = (p.delay * 2).min(MAX_DELAY);
                out.push(symbol.clone());
            }
        }
        out
    }

    /// Forgets `symbol` (unsubscribed).
    pub fn forget(&mut self, symbol: &Symbol) {
        self.symbols.remove(symbol);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_updates_resync_once_then_at_doubling_capped_intervals() {
        let btc = Symbol::parse("BTC/USD").unwrap();
        let mut r = BookResyncs::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(r.out_of_sync(&btc, at(0)), Resync::Now { first_of_streak: true });
        // Every bad update of the next second: held back, not resent.
        for ms in [10, 20, 500, 999] {
            assert_eq!(r.out_of_sync(&btc, at(ms)), Resync::Later);
        }
        assert!(r.due(at(999)).is_empty());
        // The owed one goes when its time comes, once.
        assert_eq!(r.due(at(1000)), vec![btc.clone()]);
        assert!(r.due(at(1001)).is_empty());
        // Then 2 s, 4 s, … capped at a minute; not logged again.
        assert_eq!(r.out_of_sync(&btc, at(2000)), Resync::Later);
        assert_eq!(r.out_of_sync(&btc, at(3000)), Resync::Now { first_of_streak: false });
        let mut last = 3000;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let mut t = last + 1;
            while r.out_of_sync(&btc, at(t)) == Resync::Later {
                t += 100;
            }
            waits.push((t - last) / 1000);
            last = t;
        }
        assert_eq!(waits, vec![4, 8, 16, 32, 60, 60, 60, 60]);
        // Calm for five minutes: the next one is at once and logged again.
        let calm = last + CALM_AFTER.as_millis() as u64;
        assert_eq!(r.out_of_sync(&btc, at(calm)), Resync::Now { first_of_streak: true });
        // Other symbols have their own pacing.
        let eth = Symbol::parse("ETH/USD").unwrap();
        assert_eq!(r.out_of_sync(&eth, at(calm)), Resync::Now { first_of_streak: true });
    }
}

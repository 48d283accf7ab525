//! One market: a name, a broker pool in priority order (and fallback
//! brokers, and its symbol universe), its instruments and
//! its market-data feeds, each fed by one venue subscription however many
//! algos listen. A feed has one broadcast per instance its listeners are
//! on (see `instances.rs`); an update goes once to each such instance.
//!
//! The pool can be replaced at run time ([`Market::set_spec`]); readers
//! take a short read lock and a copy, the failover watcher moves routes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use lido_shared::model::{Instrument, Symbol};
use lido_shared::pipe::Feed;
use serde_json::value::RawValue;
use tokio::sync::broadcast;

use super::instances::Instance;
use super::routing::PoolSpec;

/// What a feed carries to the algo streams.
#[derive(Clone, Debug)]
pub enum MdMsg {
    /// Serialized once by the router, shared by every listener, with when
    /// the router published it (for the fan-out latency).
    Data(Arc<RawValue>, Instant),
    /// Data could not be carried across (why); the stream sends a gap marker.
    Gap(String),
}

pub struct Market {
    pub name: String,
    /// The pool: brokers by priority, fallback, universe. Replaceable.
    spec: RwLock<PoolSpec>,
    /// The pool changed and routes were not yet reconsidered for it.
    pool_changed: AtomicBool,
    instruments: Mutex<Vec<Instrument>>,
    feeds: Mutex<HashMap<(Feed, Symbol), FeedEntry>>,
    /// Venue updates fanned out, and the count at the last rate sample.
    published: AtomicU64,
    sampled: AtomicU64,
}

struct FeedEntry {
    listeners: usize,
    shards: Vec<Shard>,
}

/// A feed's listeners on one instance.
struct Shard {
    instance: Arc<Instance>,
    tx: broadcast::Sender<MdMsg>,
    listeners: usize,
    /// Updates the instance could not take; its listeners get a gap marker
    /// before the next one.
    skipped: u64,
}

impl Shard {
    fn deliver(&mut self, msg: MdMsg) {
        if self.skipped > 0 {
            let reason = format!("fan-out instance {} overloaded: {} updates skipped", self.instance.id, self.skipped);
            if !self.instance.deliver(&self.tx, MdMsg::Gap(reason)) {
                self.skipped += 1;
                return;
            }
            self.skipped = 0;
        }
        if !self.instance.deliver(&self.tx, msg) {
            self.skipped += 1;
        }
    }
}

/// Capacity of each feed's fan-out buffer; a consumer further behind skips
/// ahead and gets a gap marker.
const FEED_BUFFER: usize = 1024;

impl Market {
    /// A market over a whole validated pool: priority brokers, fallback, universe.
    pub fn with_spec(name: String, spec: PoolSpec) -> Self {
        Self {
            name,
            spec: RwLock::new(spec),
            pool_changed: AtomicBool::new(false),
            instruments: Mutex::new(Vec::new()),
            feeds: Mutex::new(HashMap::new()),
            published: AtomicU64::new(0),
            sampled: AtomicU64::new(0),
        }
    }

    /// The pool as it is now (a copy: routing reads it, a change replaces it).
    pub fn spec(&self) -> PoolSpec {
        self.spec.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the pool; returns the one it replaces.
    pub fn set_spec(&self, spec: PoolSpec) -> PoolSpec {
        std::mem::replace(&mut *self.spec.write().unwrap_or_else(|p| p.into_inner()), spec)
    }

    /// Notes a pool change for the failover watcher.
    pub fn mark_pool_changed(&self) {
        self.pool_changed.store(true, Ordering::Release);
    }

    /// Whether the pool changed since the last call.
    pub fn take_pool_changed(&self) -> bool {
        self.pool_changed.swap(false, Ordering::AcqRel)
    }

    /// Whether `broker` is in the pool or its fallback.
    pub fn uses(&self, broker: &str) -> bool {
        self.spec.read().unwrap_or_else(|p| p.into_inner()).contains(broker)
    }

    pub fn instruments(&self) -> Vec<Instrument> {
        self.instruments.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// Whether the instruments were loaded (without copying them).
    pub fn has_instruments(&self) -> bool {
        self.instruments.lock().is_ok_and(|i| !i.is_empty())
    }

    pub fn set_instruments(&self, list: Vec<Instrument>) {
        if let Ok(mut i) = self.instruments.lock() {
            *i = list;
        }
    }

    pub fn instrument(&self, symbol: &Symbol) -> Option<Instrument> {
        self.instruments.lock().ok()?.iter().find(|i| &i.symbol == symbol).cloned()
    }

    /// Adds a listener on `instance`; `true` in the answer means the venue
    /// must now be subscribed (first listener on any instance).
    pub fn listen(&self, feed: Feed, symbol: &Symbol, instance: &Arc<Instance>) -> (broadcast::Receiver<MdMsg>, bool) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let entry =
            feeds.entry((feed, symbol.clone())).or_insert_with(|| FeedEntry { listeners: 0, shards: Vec::new() });
        entry.listeners += 1;
        let at = match entry.shards.iter().position(|s| s.instance.id == instance.id) {
            Some(at) => at,
            None => {
                let tx = broadcast::channel(FEED_BUFFER).0;
                entry.shards.push(Shard { instance: instance.clone(), tx, listeners: 0, skipped: 0 });
                entry.shards.len() - 1
            }
        };
        let shard = &mut entry.shards[at];
        shard.listeners += 1;
        (shard.tx.subscribe(), entry.listeners == 1)
    }

    /// Removes a listener of instance `instance`; `true` means the last one
    /// left (unsubscribe the venue).
    pub fn unlisten(&self, feed: Feed, symbol: &Symbol, instance: u32) -> bool {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = feeds.get_mut(&(feed, symbol.clone())) else {
            return false;
        };
        let Some(at) = entry.shards.iter().position(|s| s.instance.id == instance) else {
            return false;
        };
        entry.shards[at].listeners -= 1;
        if entry.shards[at].listeners == 0 {
            entry.shards.swap_remove(at);
        }
        entry.listeners = entry.listeners.saturating_sub(1);
        if entry.listeners == 0 {
            feeds.remove(&(feed, symbol.clone()));
            return true;
        }
        false
    }

    /// Passes venue data to the feed's instances, if any listen.
    pub fn publish(&self, feed: Feed, symbol: &Symbol, data: &Arc<RawValue>) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = feeds.get_mut(&(feed, symbol.clone())) {
            let now = Instant::now();
            for shard in &mut entry.shards {
                shard.deliver(MdMsg::Data(data.clone(), now));
            }
            self.published.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tells every listener that data was lost, and why.
    pub fn gap_all(&self, reason: &str) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        for shard in feeds.values_mut().flat_map(|e| e.shards.iter_mut()) {
            shard.deliver(MdMsg::Gap(reason.to_string()));
        }
    }

    /// Tells the listeners of one feed that data was lost, and why.
    pub fn gap(&self, feed: Feed, symbol: &Symbol, reason: &str) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = feeds.get_mut(&(feed, symbol.clone())) {
            for shard in &mut entry.shards {
                shard.deliver(MdMsg::Gap(reason.to_string()));
            }
        }
    }

    /// Ends every feed of `symbol`: its listeners get a gap marker saying
    /// why, then their stream of it closes. Returns the feeds ended.
    pub fn end_feeds(&self, symbol: &Symbol, reason: &str) -> Vec<Feed> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let ended: Vec<Feed> = feeds.keys().filter(|(_, s)| s == symbol).map(|(f, _)| *f).collect();
        for feed in &ended {
            if let Some(mut entry) = feeds.remove(&(*feed, symbol.clone())) {
                for shard in &mut entry.shards {
                    shard.deliver(MdMsg::Gap(reason.to_string()));
                }
            }
        }
        ended
    }

    /// The feeds the venue must carry (for re-subscribing after a restart).
    pub fn active_feeds(&self) -> Vec<(Feed, Symbol)> {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.keys().cloned().collect()
    }

    /// Updates fanned out per second since the last call.
    pub fn sample_rate(&self, elapsed: std::time::Duration) -> f64 {
        let now = self.published.load(Ordering::Relaxed);
        let before = self.sampled.swap(now, Ordering::Relaxed);
        now.saturating_sub(before) as f64 / elapsed.as_secs_f64().max(1e-3)
    }

    pub fn listener_count(&self) -> usize {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.values().map(|f| f.listeners).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_venue_subscription_for_many_listeners_on_several_instances() {
        let cancel = tokio_util::sync::CancellationToken::new();
        let (one, two) = (Instance::spawn(1, &cancel), Instance::spawn(2, &cancel));
        let m = Market::with_spec("paper".into(), PoolSpec::new(vec!["paper".into()], vec![], &[]).unwrap());
        let s = Symbol::parse("BTC/USD").unwrap();
        let (mut a, first_a) = m.listen(Feed::Quotes, &s, &one);
        let (mut b, first_b) = m.listen(Feed::Quotes, &s, &one);
        let (mut c, first_c) = m.listen(Feed::Quotes, &s, &two);
        assert!(first_a && !first_b && !first_c, "one venue subscription across instances");
        m.publish(Feed::Quotes, &s, &Arc::from(serde_json::value::to_raw_value(&serde_json::json!({"x": 1})).unwrap()));
        for rx in [&mut a, &mut b, &mut c] {
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await;
            assert!(matches!(got, Ok(Ok(MdMsg::Data(..)))), "{got:?}");
        }
        assert!(!m.unlisten(Feed::Quotes, &s, 1));
        assert!(!m.unlisten(Feed::Quotes, &s, 2));
        assert!(m.unlisten(Feed::Quotes, &s, 1), "last listener leaving unsubscribes");
        assert!(m.active_feeds().is_empty());
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_replaced_pool_is_seen_at_once_and_ended_feeds_say_why() {
        let cancel = tokio_util::sync::CancellationToken::new();
        let one = Instance::spawn(1, &cancel);
        let (btc, eth) = (Symbol::parse("BTC/USD").unwrap(), Symbol::parse("ETH/USD").unwrap());
        let spec = PoolSpec::new(vec!["k1".into(), "k2".into()], vec![], &["BTC/USD".into(), "ETH/USD".into()]);
        let m = Market::with_spec("crypto".into(), spec.unwrap());
        assert!(!m.take_pool_changed());
        let new = PoolSpec::new(vec!["k2".into()], vec!["paper-1".into()], &["ETH/USD".into()]).unwrap();
        let old = m.set_spec(new.clone());
        m.mark_pool_changed();
        assert_eq!(old.brokers, ["k1", "k2"]);
        assert_eq!(m.spec(), new);
        assert!(!m.uses("k1") && m.uses("k2") && m.uses("paper-1"));
        assert!(m.take_pool_changed() && !m.take_pool_changed(), "taken once");

        let (mut rx, _) = m.listen(Feed::Quotes, &btc, &one);
        let (_eth_rx, _) = m.listen(Feed::Quotes, &eth, &one);
        assert_eq!(m.end_feeds(&btc, "BTC/USD left the universe"), [Feed::Quotes]);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.unwrap();
        assert!(matches!(&got, Ok(MdMsg::Gap(r)) if r == "BTC/USD left the universe"), "{got:?}");
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.unwrap();
        assert!(matches!(closed, Err(broadcast::error::RecvError::Closed)), "the feed ends: {closed:?}");
        assert_eq!(m.active_feeds(), [(Feed::Quotes, eth.clone())], "other feeds go on");
        assert!(!m.unlisten(Feed::Quotes, &btc, 1), "leaving an ended feed unsubscribes nothing");
        cancel.cancel();
    }
}

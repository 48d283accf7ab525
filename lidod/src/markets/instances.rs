//! Market instances: the MarketManager's fan-out shards. Each instance has
//! its own broadcast per (market, feed, symbol) (held in the market's feed
//! table, see `market.rs`) and its own forwarding task that feeds them,
//! while the venue subscription stays one per (market, feed, symbol): the
//! router hands each update once to every instance that carries the feed,
//! and each instance pays for waking its own listeners.
//!
//! A session is assigned the least loaded instance when it is opened, and
//! its algo streams join that instance; a stream without a session joins
//! the least loaded one. The rules in [`crate::autoscale`] add an instance
//! when every one is full (clients) or one fans out too slowly (p99 of
//! router publish → frame handed to the socket, measured by the stream's
//! writer), and release an extra that stayed idle. Streams are never moved:
//! a released instance had none. Each decision is logged, published as a
//! cluster `Log` event and kept for `GET /v1/autoscale`, with the brokers'
//! own connection decisions.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lido_shared::autoscale::{AutoscaleRules, InstanceStatus, ScaleDecision};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::MdMsg;
use crate::autoscale::{self, Action, InstanceLoad};
use crate::config::AutoscaleConfig;
use crate::events::EventBus;

/// Updates waiting for one instance's forwarding task; past this, the
/// instance's listeners get a gap marker instead of the updates it missed.
const INBOX: usize = 4096;
/// Decisions kept for status.
const DECISIONS_KEPT: usize = 50;

/// One update for one of an instance's broadcasts.
pub struct Delivery {
    pub tx: broadcast::Sender<MdMsg>,
    pub msg: MdMsg,
}

/// One fan-out shard.
pub struct Instance {
    pub id: u32,
    created_at: DateTime<Utc>,
    inbox: mpsc::Sender<Delivery>,
    streams: AtomicUsize,
    /// Sessions assigned here whose stream has not joined yet, and when.
    reserved: Mutex<HashMap<String, Instant>>,
    /// Since when it has had no client.
    idle_since: Mutex<Option<(Instant, DateTime<Utc>)>>,
    latency: LatencyWindow,
    /// p99 and frame count of the last full window.
    last_window: Mutex<(Option<f64>, u64)>,
    stop: CancellationToken,
}

impl Instance {
    /// Starts an instance and its forwarding task (ends with `cancel` or release).
    pub fn spawn(id: u32, cancel: &CancellationToken) -> Arc<Self> {
        let (inbox, rx) = mpsc::channel(INBOX);
        let stop = cancel.child_token();
        tokio::spawn(forward(rx, stop.clone()));
        Arc::new(Self {
            id,
            created_at: Utc::now(),
            inbox,
            streams: AtomicUsize::new(0),
            reserved: Mutex::new(HashMap::new()),
            idle_since: Mutex::new(Some((Instant::now(), Utc::now()))),
            latency: LatencyWindow::default(),
            last_window: Mutex::new((None, 0)),
            stop,
        })
    }

    /// Hands an update to the forwarding task; `false` when its inbox is full.
    pub fn deliver(&self, tx: &broadcast::Sender<MdMsg>, msg: MdMsg) -> bool {
        self.inbox.try_send(Delivery { tx: tx.clone(), msg }).is_ok()
    }

    /// One frame's fan-out time: router publish → handed to the socket.
    pub fn record_latency(&self, took: Duration) {
        self.latency.record(took);
    }

    fn clients(&self) -> usize {
        self.streams.load(Ordering::Relaxed) + lock(&self.reserved).len()
    }

    fn load(&self) -> InstanceLoad {
        InstanceLoad {
            id: self.id,
            clients: self.clients(),
            p99_ms: lock(&self.last_window).0,
            idle_for: lock(&self.idle_since).map(|(at, _)| at.elapsed()),
        }
    }

    /// Marks idle or busy after a client came or went.
    fn update_idle(&self) {
        let mut idle = lock(&self.idle_since);
        match (self.clients(), idle.is_some()) {
            (0, false) => *idle = Some((Instant::now(), Utc::now())),
            (n, true) if n > 0 => *idle = None,
            _ => {}
        }
    }

    fn status(&self) -> InstanceStatus {
        let (p99, frames) = *lock(&self.last_window);
        InstanceStatus {
            id: self.id,
            streams: self.streams.load(Ordering::Relaxed),
            reserved: lock(&self.reserved).len(),
            fanout_p99_ms: p99,
            frames,
            created_at: self.created_at,
            idle_since: lock(&self.idle_since).map(|(_, at)| at),
        }
    }
}

async fn forward(mut inbox: mpsc::Receiver<Delivery>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            d = inbox.recv() => match d {
                Some(d) => { let _ = d.tx.send(d.msg); }
                None => return,
            },
        }
    }
}

/// An algo stream's place in an instance; leaving is dropping it.
pub struct Client {
    pub instance: Arc<Instance>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.instance.streams.fetch_sub(1, Ordering::Relaxed);
        self.instance.update_idle();
    }
}

/// The instances of one MarketManager and the decisions taken about them.
#[derive(Clone)]
pub struct Instances {
    inner: Arc<Shared>,
}

struct Shared {
    rules: AutoscaleConfig,
    bus: EventBus,
    cancel: CancellationToken,
    state: Mutex<State>,
}

struct State {
    list: Vec<Arc<Instance>>,
    next_id: u32,
    decisions: VecDeque<ScaleDecision>,
}

impl Instances {
    /// Starts `min_instances` and the task that applies the rules once per
    /// `latency_window_s`.
    pub fn start(rules: AutoscaleConfig, bus: EventBus, cancel: CancellationToken) -> Self {
        let state = State { list: Vec::new(), next_id: 1, decisions: VecDeque::new() };
        let instances = Self { inner: Arc::new(Shared { rules, bus, cancel, state: Mutex::new(state) }) };
        {
            let mut state = instances.state();
            while state.list.len() < instances.inner.rules.min_instances {
                instances.add(&mut state, None);
            }
        }
        tokio::spawn(instances.clone().run());
        instances
    }

    /// Assigns a new session the least loaded instance (adding one first
    /// when all are full); its stream joins it later.
    pub fn assign(&self, session_id: &str) -> u32 {
        // Under the state lock, so the instance cannot be released meanwhile.
        let mut state = self.state();
        let instance = self.place(&mut state);
        lock(&instance.reserved).insert(session_id.to_string(), Instant::now());
        instance.update_idle();
        instance.id
    }

    /// A stream joins its session's instance, or (no session, or its
    /// instance was released) the least loaded one.
    pub fn join(&self, session: Option<(&str, u32)>) -> Client {
        let mut state = self.state();
        let assigned = session.and_then(|(sid, id)| {
            let instance = state.list.iter().find(|i| i.id == id).cloned()?;
            lock(&instance.reserved).remove(sid);
            Some(instance)
        });
        let instance = assigned.unwrap_or_else(|| self.place(&mut state));
        instance.streams.fetch_add(1, Ordering::Relaxed);
        instance.update_idle();
        Client { instance }
    }

    pub fn rules(&self) -> AutoscaleRules {
        let r = &self.inner.rules;
        AutoscaleRules {
            min_instances: r.min_instances,
            max_instances: r.max_instances,
            max_clients_per_instance: r.max_clients_per_instance,
            max_fanout_latency_ms: r.max_fanout_latency_ms,
            idle_release_s: r.idle_release_s,
            latency_window_s: r.latency_window_s,
        }
    }

    /// The instances, oldest first, and the recent decisions.
    pub fn status(&self) -> (Vec<InstanceStatus>, Vec<ScaleDecision>) {
        let state = self.state();
        (state.list.iter().map(|i| i.status()).collect(), state.decisions.iter().cloned().collect())
    }

    /// Records a decision taken elsewhere (a broker's connections): one log
    /// line, a cluster `Log` event, and a place in the recent decisions.
    pub fn record(&self, scope: &str, action: &str, reason: &str) {
        self.decided(&mut self.state(), scope, action, reason);
    }

    /// The least loaded instance after the new-client rule had its say.
    fn place(&self, state: &mut State) -> Arc<Instance> {
        let loads: Vec<InstanceLoad> = state.list.iter().map(|i| i.load()).collect();
        if let Some(Action::Add { reason }) = autoscale::on_new_client(&self.inner.rules, &loads) {
            return self.add(state, Some(&reason));
        }
        let id = autoscale::least_loaded(&loads);
        state.list.iter().find(|i| Some(i.id) == id).cloned().unwrap_or_else(|| self.add(state, None))
    }

    /// Adds an instance; `reason` is `None` for the ones started at boot.
    fn add(&self, state: &mut State, reason: Option<&str>) -> Arc<Instance> {
        let instance = Instance::spawn(state.next_id, &self.inner.cancel);
        state.next_id += 1;
        state.list.push(instance.clone());
        metrics::gauge!("lido_market_instances").set(state.list.len() as f64);
        if let Some(reason) = reason {
            let action = format!("add_instance {}", instance.id);
            self.decided(state, "instances", &action, reason);
        }
        instance
    }

    fn decided(&self, state: &mut State, scope: &str, action: &str, reason: &str) {
        info!(%scope, %action, %reason, "autoscale decision");
        self.inner.bus.log("info", format!("autoscale {scope}: {action}: {reason}"));
        if state.decisions.len() == DECISIONS_KEPT {
            state.decisions.pop_front();
        }
        let (action, _) = action.split_once(' ').unwrap_or((action, ""));
        let decision =
            ScaleDecision { at: Utc::now(), scope: scope.into(), action: action.into(), reason: reason.into() };
        state.decisions.push_back(decision);
    }

    /// Once per window: close each instance's latency window, drop stale
    /// reservations, and apply the tick rules.
    async fn run(self) {
        let window = Duration::from_secs(self.inner.rules.latency_window_s);
        let stale = Duration::from_secs(self.inner.rules.idle_release_s).max(window);
        let mut tick = tokio::time::interval(window);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut state = self.state();
            for instance in &state.list {
                *lock(&instance.last_window) = instance.latency.take();
                lock(&instance.reserved).retain(|_, at| at.elapsed() < stale);
                instance.update_idle();
            }
            let loads: Vec<InstanceLoad> = state.list.iter().map(|i| i.load()).collect();
            match autoscale::on_tick(&self.inner.rules, &loads) {
                Some(Action::Add { reason }) => {
                    self.add(&mut state, Some(&reason));
                }
                Some(Action::Release { id, reason }) => self.release(&mut state, id, &reason),
                None => {}
            }
        }
    }

    fn release(&self, state: &mut State, id: u32, reason: &str) {
        let Some(at) = state.list.iter().position(|i| i.id == id && i.clients() == 0) else { return };
        let instance = state.list.remove(at);
        instance.stop.cancel();
        metrics::gauge!("lido_market_instances").set(state.list.len() as f64);
        self.decided(state, "instances", &format!("release_instance {id}"), &format!("instance {id}: {reason}"));
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fan-out times of one window in log-scaled buckets (4 per power of two of
/// microseconds, so a percentile is at most 25% above the truth), recorded
/// without a lock by every stream writer of the instance.
pub struct LatencyWindow {
    buckets: [AtomicU64; BUCKETS],
}

const BUCKETS: usize = 128;

impl Default for LatencyWindow {
    fn default() -> Self {
        Self { buckets: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl LatencyWindow {
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Ends the window: its p99 in milliseconds (the upper bound of the
    /// bucket it falls in) and how many frames it measured.
    pub fn take(&self) -> (Option<f64>, u64) {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.swap(0, Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return (None, 0);
        }
        let rank = total - total / 100; // the 99th percentile's rank, 1-based
        let mut seen = 0;
        let index = counts.iter().position(|c| {
            seen += c;
            seen >= rank
        });
        let upper_us = index.map_or(u64::MAX, upper_bound_of);
        (Some(upper_us as f64 / 1000.0), total)
    }
}

/// Buckets 0-3 hold 0-3 µs; above, each power of two splits in four.
fn bucket_of(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros() as usize; // >= 2
    let quarter = ((us >> (msb - 2)) & 3) as usize;
    (4 * (msb - 1) + quarter).min(BUCKETS - 1)
}

/// The largest value that falls in bucket `index`.
fn upper_bound_of(index: usize) -> u64 {
    if index < 4 {
        return index as u64;
    }
    let msb = index / 4 + 1;
    let quarter = (index % 4) as u64;
    ((4 + quarter + 1) << (msb - 2)) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values() {
        for us in [0, 3, 4, 5, 7, 8, 100, 999, 1000, 25_000, 1_000_000] {
            let b = bucket_of(us);
            assert!(upper_bound_of(b) >= us, "{us} in bucket {b} bounded by {}", upper_bound_of(b));
            assert!(b == 0 || upper_bound_of(b - 1) < us, "{us} belongs in an earlier bucket than {b}");
        }
    }

    #[test]
    fn p99_is_taken_over_the_window_and_the_window_restarts() {
        let w = LatencyWindow::default();
        for _ in 0..990 {
            w.record(Duration::from_micros(200));
        }
        for _ in 0..10 {
            w.record(Duration::from_millis(80));
        }
        let (p99, frames) = w.take();
        assert_eq!(frames, 1000);
        let p99 = p99.unwrap();
        assert!((0.2..0.25).contains(&p99), "p99 {p99} ms: the slowest 1% is excluded");
        w.record(Duration::from_millis(80));
        let (p99, _) = w.take();
        assert!((80.0..96.0).contains(&p99.unwrap()), "{p99:?}");
        assert_eq!(w.take(), (None, 0));
    }

    #[tokio::test]
    async fn sessions_spread_and_an_instance_is_added_when_all_are_full() {
        let rules = AutoscaleConfig { max_clients_per_instance: 2, max_instances: 3, ..AutoscaleConfig::default() };
        let cancel = CancellationToken::new();
        let instances = Instances::start(rules, EventBus::new(), cancel.clone());
        let ids: Vec<u32> = (0..6).map(|n| instances.assign(&format!("s{n}"))).collect();
        assert_eq!(ids, [1, 1, 2, 2, 3, 3]);
        // At max_instances, the least loaded takes more.
        assert_eq!(instances.assign("s6"), 1);
        // A session's stream joins its instance; the reservation becomes a stream.
        let client = instances.join(Some(("s2", 2)));
        assert_eq!(client.instance.id, 2);
        let (status, decisions) = instances.status();
        assert_eq!((status[1].streams, status[1].reserved), (1, 1));
        assert_eq!(decisions.iter().filter(|d| d.action == "add_instance").count(), 2);
        cancel.cancel();
    }
}

//! Broker health as the MarketManager sees it, for routing.
//!
//! [`assess`] is the rule, a pure function of an [`Observation`]: the pipe
//! (up, heartbeat), the venue connection the broker reports, the request
//! errors the MarketManager saw, latency, stalled feeds and drain. The
//! [`HealthBook`] gathers those observations per broker as they happen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lido_shared::model::Symbol;
use lido_shared::pipe::Feed;

/// How fit a broker is to carry a market. The default is pessimistic:
/// a broker nobody has heard from is down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Routable, with a warning (recent errors, slow answers).
    Degraded(String),
    /// Up, but takes no new work: its work moves away without a gap.
    Draining,
    /// Not routable; its work moves away as after a failure.
    Down(String),
}

impl Default for Health {
    fn default() -> Self {
        Self::Down("no report from the broker yet".into())
    }
}

impl Health {
    /// May carry new subscriptions and orders.
    pub fn routable(&self) -> bool {
        matches!(self, Self::Healthy | Self::Degraded(_))
    }

    /// `healthy`, `degraded`, `draining` or `down`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded(_) => "degraded",
            Self::Draining => "draining",
            Self::Down(_) => "down",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Degraded(r) | Self::Down(r) => Some(r),
            Self::Draining => Some("drained by an operator"),
            Self::Healthy => None,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(r) => write!(f, "{} ({r})", self.label()),
            None => f.write_str(self.label()),
        }
    }
}

/// Everything known about one broker at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// The supervisor has it running (not starting, stopped or failed;
    /// `degraded` is running).
    pub running: bool,
    /// The broker reports itself `degraded`, with why (e.g. a venue login
    /// that needs a person).
    pub service_degraded: Option<String>,
    /// Its pipe is connected and heartbeats arrive.
    pub pipe_up: bool,
    /// What the broker last reported of its venue connection (`None`: it
    /// does not report one, as the paper broker).
    pub venue_connected: Option<bool>,
    /// Venue errors in a row on requests the MarketManager sent.
    pub consecutive_errors: u32,
    /// The pipe's last heartbeat latency.
    pub latency: Option<Duration>,
    /// A feed routed to it that went silent, described.
    pub stalled: Option<String>,
    pub draining: bool,
}

/// The limits [`assess`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// This many venue errors in a row make a broker down.
    pub error_threshold: u32,
    /// A heartbeat latency above this makes a broker degraded.
    pub slow_latency: Duration,
}

/// The health rule: failures first (down), then drain, then warnings.
pub fn assess(o: &Observation, t: &Thresholds) -> Health {
    if !o.running {
        return Health::Down("the broker service is not running".into());
    }
    if !o.pipe_up {
        return Health::Down("the broker's pipe is down (no heartbeat)".into());
    }
    if o.venue_connected == Some(false) {
        return Health::Down("the broker reports its venue connection down".into());
    }
    if o.consecutive_errors >= t.error_threshold {
        return Health::Down(format!("{} venue errors in a row", o.consecutive_errors));
    }
    if let Some(stall) = &o.stalled {
        return Health::Down(stall.clone());
    }
    if o.draining {
        return Health::Draining;
    }
    if let Some(why) = &o.service_degraded {
        return Health::Degraded(format!("the broker reports: {why}"));
    }
    if o.consecutive_errors > 0 {
        return Health::Degraded(format!("{} recent venue error(s)", o.consecutive_errors));
    }
    match o.latency {
        Some(l) if l > t.slow_latency => Health::Degraded(format!("pipe latency {} ms", l.as_millis())),
        _ => Health::Healthy,
    }
}

/// A feed of one broker is stalled when it has been silent (no data since
/// it was subscribed or since its last update) longer than `stall_after`.
/// Trades are exempt: a quiet symbol has no trades, and that is not a fault.
pub fn stalled(feed: Feed, silent_for: Duration, stall_after: Duration) -> bool {
    feed != Feed::Trades && silent_for > stall_after
}

/// What the MarketManager records per broker as it goes.
#[derive(Default)]
pub struct HealthBook {
    brokers: Mutex<HashMap<String, BrokerRecord>>,
}

#[derive(Default)]
struct BrokerRecord {
    consecutive_errors: u32,
    last_error: Option<Instant>,
    draining: bool,
    /// The symbols the broker offers, once it has told.
    offers: Option<HashSet<Symbol>>,
    /// Per (feed, symbol) the broker carries: when subscribed, last data.
    /// By symbol, then feed: found per venue update without allocating a key.
    feeds: BTreeMap<Symbol, BTreeMap<Feed, FeedClock>>,
    /// A stall seen, until when it keeps the broker down.
    stall: Option<(String, Instant)>,
    /// The last assessment and since when it holds.
    health: Health,
    since: Option<Instant>,
    /// It has been up (healthy, degraded or draining) before.
    was_up: bool,
    /// The current healthy spell is its first time up: a broker coming up
    /// for the first time is not recovering, so no failback hold applies.
    first_up: bool,
}

#[derive(Clone, Copy)]
struct FeedClock {
    subscribed: Instant,
    last_data: Option<Instant>,
}

impl HealthBook {
    pub fn request_ok(&self, broker: &str) {
        self.with(broker, |r| r.consecutive_errors = 0);
    }

    pub fn request_failed(&self, broker: &str) {
        self.with(broker, |r| {
            r.consecutive_errors += 1;
            r.last_error = Some(Instant::now());
        });
    }

    pub fn set_draining(&self, broker: &str, draining: bool) {
        self.with(broker, |r| r.draining = draining);
    }

    pub fn draining(&self, broker: &str) -> bool {
        self.read(broker, |r| r.draining).unwrap_or(false)
    }

    pub fn set_offers(&self, broker: &str, symbols: impl IntoIterator<Item = Symbol>) {
        let set = symbols.into_iter().collect();
        self.with(broker, |r| r.offers = Some(set));
    }

    pub fn offers(&self, broker: &str, symbol: &Symbol) -> bool {
        self.read(broker, |r| r.offers.as_ref().is_some_and(|s| s.contains(symbol))).unwrap_or(false)
    }

    /// The broker was asked to carry a feed (its silence counts from now).
    pub fn subscribed(&self, broker: &str, feed: Feed, symbol: &Symbol) {
        let clock = FeedClock { subscribed: Instant::now(), last_data: None };
        self.with(broker, |r| {
            r.feeds.entry(symbol.clone()).or_default().insert(feed, clock);
        });
    }

    /// The broker already carries this feed (for some market).
    pub fn carries(&self, broker: &str, feed: Feed, symbol: &Symbol) -> bool {
        self.read(broker, |r| r.feeds.get(symbol).is_some_and(|f| f.contains_key(&feed))).unwrap_or(false)
    }

    pub fn unsubscribed(&self, broker: &str, feed: Feed, symbol: &Symbol) {
        self.with(broker, |r| {
            if let Some(feeds) = r.feeds.get_mut(symbol) {
                feeds.remove(&feed);
                if feeds.is_empty() {
                    r.feeds.remove(symbol);
                }
            }
        });
    }

    /// The broker's pipe went down or came up again: its feeds start over.
    pub fn reset_feeds(&self, broker: &str) {
        self.with(broker, |r| r.feeds.clear());
    }

    pub fn data(&self, broker: &str, feed: Feed, symbol: &Symbol) {
        let mut brokers = self.lock();
        if let Some(clock) = brokers.get_mut(broker).and_then(|r| r.feeds.get_mut(symbol)?.get_mut(&feed)) {
            clock.last_data = Some(Instant::now());
        }
    }

    /// A description of the first feed of `broker` that has stalled, if
    /// any; a stall keeps the broker down for `memory`, so it is not
    /// routed back at once to a venue socket that may still be silent.
    pub fn check_stall(&self, broker: &str, stall_after: Duration, memory: Duration) -> Option<String> {
        let now = Instant::now();
        let mut brokers = self.lock();
        let record = brokers.get_mut(broker)?;
        let mut clocks =
            record.feeds.iter().flat_map(|(symbol, feeds)| feeds.iter().map(move |(feed, c)| (feed, symbol, c)));
        let found = clocks.find_map(|(feed, symbol, clock)| {
            let silent = now - clock.last_data.unwrap_or(clock.subscribed);
            stalled(*feed, silent, stall_after)
                .then(|| format!("feed {} {symbol} silent for {} ms", feed_name(*feed), silent.as_millis()))
        });
        if let Some(why) = found {
            record.feeds.clear();
            record.stall = Some((why, now + memory));
        }
        match &record.stall {
            Some((why, until)) if *until > now => Some(why.clone()),
            _ => {
                record.stall = None;
                None
            }
        }
    }

    /// Venue errors in a row, forgotten once the last is `forget_after`
    /// old (a broker no longer routed gets no requests to succeed with).
    pub fn consecutive_errors(&self, broker: &str, forget_after: Duration) -> u32 {
        let recent = |r: &BrokerRecord| r.last_error.is_some_and(|at| at.elapsed() < forget_after);
        self.read(broker, |r| if recent(r) { r.consecutive_errors } else { 0 }).unwrap_or(0)
    }

    /// Records an assessment; answers the previous one when it changed,
    /// and how long the current one has held.
    pub fn record(&self, broker: &str, health: Health) -> (Option<Health>, Duration) {
        let now = Instant::now();
        let mut brokers = self.lock();
        let r = brokers.entry(broker.to_string()).or_default();
        if r.since.is_some() && r.health == health {
            return (None, now - r.since.unwrap_or(now));
        }
        // A health that changes only its reason's figures is not news.
        let news = r.since.is_none() || r.health.label() != health.label();
        if news {
            r.first_up = health == Health::Healthy && !r.was_up;
            r.was_up |= !matches!(health, Health::Down(_));
        }
        let before = std::mem::replace(&mut r.health, health);
        if news {
            r.since = Some(now);
        }
        (news.then_some(before), now - r.since.unwrap_or(now))
    }

    /// The last assessment and since when that kind of health holds.
    pub fn current(&self, broker: &str) -> (Health, Option<Instant>) {
        self.read(broker, |r| (r.health.clone(), r.since)).unwrap_or_default()
    }

    /// True while the broker is healthy for the first time since it was
    /// known (not back from a failure or a drain).
    pub fn first_up(&self, broker: &str) -> bool {
        self.read(broker, |r| r.first_up && r.health == Health::Healthy).unwrap_or(false)
    }

    fn with(&self, broker: &str, f: impl FnOnce(&mut BrokerRecord)) {
        f(self.lock().entry(broker.to_string()).or_default());
    }

    fn read<T>(&self, broker: &str, f: impl FnOnce(&BrokerRecord) -> T) -> Option<T> {
        self.lock().get(broker).map(f)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BrokerRecord>> {
        self.brokers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The feed as the API names its channel.
pub fn feed_name(feed: Feed) -> &'static str {
    match feed {
        Feed::Quotes => "quotes",
        Feed::Trades => "trades",
        Feed::Book => "book",
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_a_broker_back_from_a_failure_or_drain_is_recovering() {
        let book = HealthBook::default();
        assert!(!book.first_up("k1"), "unknown");
        book.record("k1", Health::Healthy);
        assert!(book.first_up("k1"), "first time up: no failback hold");
        book.record("k1", Health::Down("pipe down".into()));
        assert!(!book.first_up("k1"));
        book.record("k1", Health::Healthy);
        assert!(!book.first_up("k1"), "back from a failure: the hold applies");
        book.record("k2", Health::Draining);
        book.record("k2", Health::Healthy);
        assert!(!book.first_up("k2"), "back from a drain: the hold applies");
    }

    use super::*;

    const T: Thresholds = Thresholds { error_threshold: 3, slow_latency: Duration::from_millis(500) };

    fn up() -> Observation {
        Observation { running: true, pipe_up: true, ..Observation::default() }
    }

    #[test]
    fn a_broker_that_reports_itself_degraded_is_degraded_with_its_words() {
        let o = Observation {
            service_degraded: Some("log in again: `lidoctl broker auth schwab --name s1`".into()),
            ..up()
        };
        assert_eq!(
            assess(&o, &T),
            Health::Degraded("the broker reports: log in again: `lidoctl broker auth schwab --name s1`".into())
        );
    }

    #[test]
    fn nothing_heard_is_down() {
        assert_eq!(Health::default().label(), "down");
        assert!(!assess(&Observation::default(), &T).routable());
    }

    #[test]
    fn failures_make_a_broker_down_with_the_reason() {
        assert_eq!(assess(&up(), &T), Health::Healthy);
        let pipe_down = Observation { pipe_up: false, ..up() };
        assert!(assess(&pipe_down, &T).to_string().contains("pipe is down"));
        let venue_down = Observation { venue_connected: Some(false), ..up() };
        assert!(assess(&venue_down, &T).to_string().contains("venue connection down"));
        let errors = Observation { consecutive_errors: 3, ..up() };
        assert_eq!(assess(&errors, &T), Health::Down("3 venue errors in a row".into()));
        let stalled = Observation { stalled: Some("feed quotes BTC/USD silent".into()), ..up() };
        assert_eq!(assess(&stalled, &T).label(), "down");
    }

    #[test]
    fn a_failure_beats_a_drain_and_a_drain_beats_a_warning() {
        let draining = Observation { draining: true, consecutive_errors: 1, ..up() };
        assert_eq!(assess(&draining, &T), Health::Draining);
        assert!(!Health::Draining.routable());
        let failed = Observation { draining: true, pipe_up: false, ..up() };
        assert_eq!(assess(&failed, &T).label(), "down");
    }

    #[test]
    fn warnings_degrade_but_stay_routable() {
        let errors = Observation { consecutive_errors: 2, ..up() };
        let slow = Observation { latency: Some(Duration::from_secs(1)), ..up() };
        for o in [errors, slow] {
            let h = assess(&o, &T);
            assert_eq!(h.label(), "degraded");
            assert!(h.routable());
        }
        assert_eq!(assess(&Observation { venue_connected: Some(true), ..up() }, &T), Health::Healthy);
    }

    #[test]
    fn quiet_trades_are_not_a_stall() {
        let long = Duration::from_secs(60);
        let bound = Duration::from_secs(5);
        assert!(stalled(Feed::Quotes, long, bound));
        assert!(stalled(Feed::Book, long, bound));
        assert!(!stalled(Feed::Trades, long, bound));
        assert!(!stalled(Feed::Quotes, Duration::from_secs(1), bound));
    }

    #[test]
    fn errors_in_a_row_reset_on_success() {
        let book = HealthBook::default();
        let memory = Duration::from_secs(60);
        book.request_failed("k1");
        book.request_failed("k1");
        assert_eq!(book.consecutive_errors("k1", memory), 2);
        assert_eq!(book.consecutive_errors("k1", Duration::ZERO), 0, "old errors are forgotten");
        book.request_ok("k1");
        assert_eq!(book.consecutive_errors("k1", memory), 0);
    }

    #[test]
    fn a_silent_feed_is_a_stall_and_data_is_not() {
        let book = HealthBook::default();
        let btc = Symbol::parse("BTC/USD").unwrap();
        book.subscribed("k1", Feed::Quotes, &btc);
        let minute = Duration::from_secs(60);
        assert_eq!(book.check_stall("k1", minute, minute), None);
        std::thread::sleep(Duration::from_millis(20));
        let why = book.check_stall("k1", Duration::from_millis(5), minute).expect("stalled");
        assert!(why.contains("quotes BTC/USD"), "{why}");
        assert!(!book.carries("k1", Feed::Quotes, &btc), "a stalled feed is dropped");
        assert_eq!(book.check_stall("k1", minute, minute), Some(why), "and remembered");
        book.subscribed("k3", Feed::Book, &btc);
        std::thread::sleep(Duration::from_millis(20));
        assert!(book.check_stall("k3", Duration::from_millis(5), Duration::from_millis(1)).is_some());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(book.check_stall("k3", minute, minute), None, "remembered for a while only");
        book.subscribed("k2", Feed::Quotes, &btc);
        book.data("k2", Feed::Quotes, &btc);
        assert_eq!(book.check_stall("k2", minute, minute), None);
    }

    #[test]
    fn only_a_change_of_kind_is_news() {
        let book = HealthBook::default();
        assert!(book.record("k1", Health::Healthy).0.is_some(), "the first assessment is news");
        assert!(book.record("k1", Health::Healthy).0.is_none());
        assert!(book.record("k1", Health::Degraded("1 recent venue error(s)".into())).0.is_some());
        assert!(book.record("k1", Health::Degraded("2 recent venue error(s)".into())).0.is_none());
        assert_eq!(book.record("k1", Health::Down("x".into())).0.map(|h| h.label()), Some("degraded"));
    }
}

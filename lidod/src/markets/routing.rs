//! Which broker carries a market's symbol: the pool a market is configured
//! with ([`PoolSpec`]) and the routing rule ([`decide`]), a pure function.
//!
//! The rule: the highest-priority broker that is routable and offers the
//! symbol; `fallback` brokers only when no primary one is. Routes are
//! sticky: a symbol stays where it is until its broker stops being
//! routable, or a primary broker of higher priority has been healthy for
//! the hold time (failback, a planned move), or it left the pool (a pool
//! change at run time, planned while it still streams).

use std::collections::BTreeMap;
use std::time::Duration;

use lido_shared::model::Symbol;

use super::health::Health;

/// A market's symbol universe and broker pool, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolSpec {
    /// Brokers in priority order, highest first.
    pub brokers: Vec<String>,
    /// Used only when none of `brokers` is routable.
    pub fallback: Vec<String>,
    /// The universe; empty: whatever the pool offers.
    pub symbols: Vec<Symbol>,
}

impl PoolSpec {
    /// Checks a pool: at least one broker, no broker twice (also not in
    /// both lists), symbols that parse. Errors say what to change.
    pub fn new(brokers: Vec<String>, fallback: Vec<String>, symbols: &[String]) -> Result<Self, String> {
        if brokers.is_empty() {
            return Err("a market needs at least one broker in `brokers` (priority order), e.g. brokers=k1,k2".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for b in brokers.iter().chain(&fallback) {
            if !seen.insert(b.as_str()) {
                return Err(format!("broker {b:?} is listed twice in the market's brokers and fallback; name it once"));
            }
        }
        let mut parsed = Vec::new();
        for s in symbols {
            let sym = Symbol::parse(s).map_err(|e| format!("symbol {s:?} in the market's symbols: {e}"))?;
            if parsed.contains(&sym) {
                return Err(format!("symbol {sym} is listed twice in the market's symbols"));
            }
            parsed.push(sym);
        }
        Ok(Self { brokers, fallback, symbols: parsed })
    }

    /// From spawn options: `brokers`, `fallback`, `symbols`, each a comma list.
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Self, String> {
        let (mut brokers, mut fallback, mut symbols) = (Vec::new(), Vec::new(), Vec::new());
        for (k, v) in options {
            let list = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            match k.as_str() {
                "brokers" => brokers = list,
                "fallback" => fallback = list,
                "symbols" => symbols = list,
                other => {
                    return Err(format!("unknown option {other:?} for a market; known: brokers, fallback, symbols"))
                }
            }
        }
        Self::new(brokers, fallback, &symbols)
    }

    /// Every broker, primary ones first, in priority order.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.brokers.iter().chain(&self.fallback)
    }

    pub fn contains(&self, broker: &str) -> bool {
        self.all().any(|b| b == broker)
    }

    /// In the universe (an empty universe takes every symbol).
    pub fn trades(&self, symbol: &Symbol) -> bool {
        self.symbols.is_empty() || self.symbols.contains(symbol)
    }
}

/// What routing knows of one broker for one symbol.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub health: Health,
    /// The broker lists the symbol among its instruments.
    pub offers: bool,
    /// How long its health has been of the current kind.
    pub held_for: Duration,
}

/// What to do with one symbol's route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Stay,
    /// Move to `to`. `planned` (drain, failback): the current broker still
    /// streams, so make before break; otherwise data was lost.
    Move {
        to: String,
        planned: bool,
    },
    /// No broker of the pool can carry it.
    NoRoute,
}

/// The routing rule for one symbol whose route is `current` (see the module docs).
pub fn decide(
    pool: &PoolSpec,
    current: Option<&str>,
    candidate: impl Fn(&str) -> Candidate,
    hold: Duration,
) -> Decision {
    let usable = |b: &str| {
        let c = candidate(b);
        c.offers && c.health.routable()
    };
    if let Some(cur) = current.filter(|c| pool.contains(c) && usable(c)) {
        let rank = pool.all().position(|b| b == cur).unwrap_or(usize::MAX);
        let better = pool.brokers.iter().take(rank).find(|b| {
            let c = candidate(b);
            c.offers && c.health == Health::Healthy && c.held_for >= hold
        });
        return match better {
            Some(b) => Decision::Move { to: b.clone(), planned: true },
            None => Decision::Stay,
        };
    }
    let best = [&pool.brokers, &pool.fallback].into_iter().find_map(|tier| {
        let fit = |healthy_only: bool| {
            tier.iter().find(|b| {
                let c = candidate(b);
                c.offers && if healthy_only { c.health == Health::Healthy } else { c.health.routable() }
            })
        };
        fit(true).or_else(|| fit(false))
    });
    match best {
        Some(to) => {
            // Make before break while the current broker still streams: it drains or left the pool.
            let planned = current.is_some_and(|c| {
                let health = candidate(c).health;
                health == Health::Draining || (!pool.contains(c) && health.routable())
            });
            Decision::Move { to: to.clone(), planned }
        }
        None => Decision::NoRoute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(10);

    fn pool() -> PoolSpec {
        PoolSpec::new(vec!["k1".into(), "k2".into()], vec!["paper-1".into()], &[]).unwrap()
    }

    fn healthy(held: u64) -> Candidate {
        Candidate { health: Health::Healthy, offers: true, held_for: Duration::from_secs(held) }
    }

    fn down() -> Candidate {
        Candidate { health: Health::Down("pipe down".into()), offers: true, held_for: Duration::ZERO }
    }

    /// A view where each named broker has the given candidate, others are down.
    fn view(list: Vec<(&'static str, Candidate)>) -> impl Fn(&str) -> Candidate {
        move |b| list.iter().find(|(n, _)| *n == b).map(|(_, c)| c.clone()).unwrap_or_else(down)
    }

    fn to(b: &str, planned: bool) -> Decision {
        Decision::Move { to: b.into(), planned }
    }

    #[test]
    fn pools_are_validated() {
        assert!(PoolSpec::new(vec![], vec!["p".into()], &[]).unwrap_err().contains("at least one broker"));
        assert!(PoolSpec::new(vec!["a".into(), "a".into()], vec![], &[]).unwrap_err().contains("twice"));
        assert!(PoolSpec::new(vec!["a".into()], vec!["a".into()], &[]).unwrap_err().contains("twice"));
        assert!(PoolSpec::new(vec!["a".into()], vec![], &["BTC/".into()]).is_err());
        let opts = [("brokers", "k1, k2"), ("fallback", "paper-1"), ("symbols", "BTC/USD,ETH/USD")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let p = PoolSpec::from_options(&opts).unwrap();
        assert_eq!(p.all().cloned().collect::<Vec<_>>(), ["k1", "k2", "paper-1"]);
        assert!(p.trades(&Symbol::parse("ETH/USD").unwrap()) && !p.trades(&Symbol::parse("SOL/USD").unwrap()));
        let bad = [("pool".to_string(), "k1".to_string())].into_iter().collect();
        assert!(PoolSpec::from_options(&bad).unwrap_err().contains("known: brokers, fallback, symbols"));
    }

    #[test]
    fn a_new_route_takes_the_highest_priority_healthy_broker() {
        let v = view(vec![("k1", healthy(0)), ("k2", healthy(0)), ("paper-1", healthy(0))]);
        assert_eq!(decide(&pool(), None, &v, HOLD), to("k1", false));
        let degraded = Candidate { health: Health::Degraded("1 recent venue error(s)".into()), ..healthy(0) };
        let v = view(vec![("k1", degraded.clone()), ("k2", healthy(0))]);
        assert_eq!(decide(&pool(), None, &v, HOLD), to("k2", false), "healthy beats degraded");
        let v = view(vec![("k1", degraded)]);
        assert_eq!(decide(&pool(), None, &v, HOLD), to("k1", false), "degraded beats nothing");
    }

    #[test]
    fn a_broker_that_lacks_the_symbol_is_passed_over() {
        let v = view(vec![("k1", Candidate { offers: false, ..healthy(100) }), ("k2", healthy(0))]);
        assert_eq!(decide(&pool(), None, &v, HOLD), to("k2", false));
    }

    #[test]
    fn a_failed_route_moves_with_data_lost() {
        let v = view(vec![("k2", healthy(100))]);
        assert_eq!(decide(&pool(), Some("k1"), &v, HOLD), to("k2", false));
    }

    #[test]
    fn fallback_only_when_no_primary_is_routable() {
        let v = view(vec![("paper-1", healthy(100))]);
        assert_eq!(decide(&pool(), Some("k1"), &v, HOLD), to("paper-1", false));
        assert_eq!(decide(&pool(), Some("k1"), view(vec![]), HOLD), Decision::NoRoute);
    }

    #[test]
    fn routes_are_sticky_until_failback_hold() {
        let v = view(vec![("k1", healthy(3)), ("k2", healthy(100)), ("paper-1", healthy(100))]);
        assert_eq!(decide(&pool(), Some("k2"), &v, HOLD), Decision::Stay, "k1 back, not yet for the hold time");
        let fallback_only = view(vec![("k1", healthy(3)), ("paper-1", healthy(100))]);
        assert_eq!(decide(&pool(), Some("paper-1"), &fallback_only, HOLD), Decision::Stay);
        let v = view(vec![("k1", healthy(10)), ("k2", healthy(100)), ("paper-1", healthy(100))]);
        assert_eq!(decide(&pool(), Some("k2"), &v, HOLD), to("k1", true), "failback is planned");
        assert_eq!(decide(&pool(), Some("k1"), &v, HOLD), Decision::Stay);
        let v = view(vec![("k2", healthy(10)), ("paper-1", healthy(100))]);
        assert_eq!(decide(&pool(), Some("paper-1"), &v, HOLD), to("k2", true), "any primary beats the fallback");
    }

    #[test]
    fn a_broker_that_left_the_pool_hands_over_make_before_break() {
        let v = view(vec![("k1", healthy(100)), ("k2", healthy(0)), ("paper-1", healthy(100))]);
        let without_k1 = PoolSpec::new(vec!["k2".into()], vec!["paper-1".into()], &[]).unwrap();
        assert_eq!(decide(&without_k1, Some("k1"), &v, HOLD), to("k2", true), "still streaming: planned");
        let v = view(vec![("k2", healthy(0))]);
        assert_eq!(decide(&without_k1, Some("k1"), &v, HOLD), to("k2", false), "gone and down: data lost");
        let reordered = PoolSpec::new(vec!["k2".into(), "k1".into()], vec![], &[]).unwrap();
        let v = view(vec![("k1", healthy(100)), ("k2", healthy(0))]);
        assert_eq!(decide(&reordered, Some("k1"), &v, Duration::ZERO), to("k2", true), "new priority, no hold");
        assert_eq!(decide(&reordered, Some("k1"), &v, HOLD), Decision::Stay, "sticky within the hold");
    }

    #[test]
    fn a_draining_route_moves_make_before_break() {
        let draining = Candidate { health: Health::Draining, ..healthy(0) };
        let v = view(vec![("k1", draining), ("k2", healthy(0))]);
        assert_eq!(decide(&pool(), Some("k1"), &v, HOLD), to("k2", true));
        assert_eq!(decide(&pool(), None, &v, HOLD), to("k2", false), "nothing to make before break");
    }
}

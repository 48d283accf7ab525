//! The autoscaler's rules for market instances, as pure functions of the
//! instances' figures: when to add one, which one a new client joins, and
//! when an extra one is released. [`crate::markets::Instances`] gathers
//! the figures, applies the answers and reports them; the rules for venue
//! connections are the broker's (`venue/kraken_broker/public_ws.rs`).

use std::time::Duration;

use lido_shared::autoscale::{AutoscaleStatus, BrokerScale};
use lido_shared::cluster::ServiceInfo;

use crate::config::AutoscaleConfig;
use crate::markets::Instances;

/// The figure names a broker reports its venue connections with
/// (`ServiceEvent::Metrics`); per connection `subscriptions_conn_<index>`.
pub mod figures {
    pub const VENUE_CONNECTIONS: &str = "venue_connections";
    pub const MAX_SUBSCRIPTIONS: &str = "max_subscriptions_per_connection";
    pub const HEADROOM: &str = "subscription_headroom";
    pub const PER_CONNECTION: &str = "subscriptions_conn_";
    pub const REST_BUDGET_USED: &str = "rest_budget_used";
    pub const TRADING_BUDGET_USED: &str = "trading_budget_used";
}

/// `GET /v1/autoscale`: the rules, the instances, the brokers that report
/// venue connections, and the recent decisions.
pub fn status(instances: &Instances, brokers: &[ServiceInfo]) -> AutoscaleStatus {
    let (list, decisions) = instances.status();
    AutoscaleStatus {
        rules: instances.rules(),
        instances: list,
        brokers: brokers.iter().filter_map(broker_scale).collect(),
        decisions,
    }
}

/// A broker's connection figures, if it reports them.
pub fn broker_scale(info: &ServiceInfo) -> Option<BrokerScale> {
    let m = &info.metrics;
    let count = |key: &str| m.get(key).map_or(0, |v| *v as usize);
    let connections = count(figures::VENUE_CONNECTIONS);
    m.get(figures::VENUE_CONNECTIONS)?;
    let mut per_connection: Vec<(usize, usize)> = m
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(figures::PER_CONNECTION)?.parse().ok()?, *v as usize)))
        .collect();
    per_connection.sort_unstable();
    Some(BrokerScale {
        broker: info.name.clone(),
        venue_connections: connections,
        subscriptions_per_connection: per_connection.into_iter().map(|(_, n)| n).collect(),
        max_subscriptions_per_connection: count(figures::MAX_SUBSCRIPTIONS),
        subscription_headroom: count(figures::HEADROOM),
        rest_budget_used: m.get(figures::REST_BUDGET_USED).copied().unwrap_or(0.0),
        trading_budget_used: m.get(figures::TRADING_BUDGET_USED).copied().unwrap_or(0.0),
    })
}

/// One instance's figures, as the rules see them.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceLoad {
    pub id: u32,
    /// Streams joined plus sessions reserved on it.
    pub clients: usize,
    /// Fan-out p99 over the last window, if any frame was measured.
    pub p99_ms: Option<f64>,
    /// How long it has had no client, if it has none.
    pub idle_for: Option<Duration>,
}

/// What the rules ask for.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Add { reason: String },
    Release { id: u32, reason: String },
}

/// The instance a new client joins: the fewest clients, the oldest on a tie.
pub fn least_loaded(loads: &[InstanceLoad]) -> Option<u32> {
    loads.iter().min_by_key(|l| (l.clients, l.id)).map(|l| l.id)
}

/// Before a new client is placed: add an instance when even the least
/// loaded one is full, unless at `max_instances`.
pub fn on_new_client(rules: &AutoscaleConfig, loads: &[InstanceLoad]) -> Option<Action> {
    if loads.len() >= rules.max_instances {
        return None;
    }
    let least = loads.iter().map(|l| l.clients).min()?;
    (least >= rules.max_clients_per_instance).then(|| Action::Add {
        reason: format!(
            "every instance has {least} or more clients (max_clients_per_instance = {})",
            rules.max_clients_per_instance
        ),
    })
}

/// At each window's end: keep `min_instances`; add one when an instance's
/// fan-out p99 passes the bound (unless an empty instance already waits for
/// new clients, or at `max_instances`); else release the newest extra that
/// has been idle for `idle_release_s`.
pub fn on_tick(rules: &AutoscaleConfig, loads: &[InstanceLoad]) -> Option<Action> {
    if loads.len() < rules.min_instances {
        return Some(Action::Add { reason: format!("below min_instances = {}", rules.min_instances) });
    }
    let slow = loads.iter().find(|l| l.p99_ms.is_some_and(|p| p > rules.max_fanout_latency_ms));
    let empty_waiting = loads.iter().any(|l| l.clients == 0);
    if let Some(slow) = slow.filter(|_| loads.len() < rules.max_instances && !empty_waiting) {
        return Some(Action::Add {
            reason: format!(
                "instance {} fan-out p99 {:.1} ms > max_fanout_latency_ms = {}",
                slow.id,
                slow.p99_ms.unwrap_or_default(),
                rules.max_fanout_latency_ms
            ),
        });
    }
    if loads.len() <= rules.min_instances {
        return None;
    }
    let idle_release = Duration::from_secs(rules.idle_release_s);
    let idle = loads.iter().filter(|l| l.clients == 0 && l.idle_for.is_some_and(|d| d >= idle_release));
    idle.max_by_key(|l| l.id).map(|l| Action::Release {
        id: l.id,
        reason: format!(
            "no client for {}s (idle_release_s = {})",
            l.idle_for.unwrap_or_default().as_secs(),
            rules.idle_release_s
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AutoscaleConfig {
        AutoscaleConfig {
            min_instances: 1,
            max_instances: 3,
            max_clients_per_instance: 5,
            max_fanout_latency_ms: 20.0,
            idle_release_s: 10,
            latency_window_s: 1,
        }
    }

    fn load(id: u32, clients: usize) -> InstanceLoad {
        InstanceLoad { id, clients, p99_ms: None, idle_for: None }
    }

    #[test]
    fn a_new_client_adds_an_instance_only_when_all_are_full() {
        let r = rules();
        assert_eq!(on_new_client(&r, &[load(1, 4)]), None);
        assert!(matches!(on_new_client(&r, &[load(1, 5)]), Some(Action::Add { .. })));
        assert_eq!(on_new_client(&r, &[load(1, 7), load(2, 2)]), None, "one has room");
        assert_eq!(on_new_client(&r, &[load(1, 9), load(2, 9), load(3, 9)]), None, "at max_instances");
    }

    #[test]
    fn new_clients_go_to_the_least_loaded_oldest_first() {
        assert_eq!(least_loaded(&[load(1, 5), load(2, 0), load(3, 0)]), Some(2));
        assert_eq!(least_loaded(&[load(1, 1), load(2, 3)]), Some(1));
        assert_eq!(least_loaded(&[]), None);
    }

    #[test]
    fn latency_past_the_bound_adds_an_instance_once() {
        let r = rules();
        let hot = InstanceLoad { p99_ms: Some(35.0), ..load(1, 2) };
        let Some(Action::Add { reason }) = on_tick(&r, std::slice::from_ref(&hot)) else { panic!("expected an add") };
        assert!(reason.contains("35.0 ms"), "{reason}");
        // An empty instance is already there for new clients: no second one.
        assert_eq!(on_tick(&r, &[hot.clone(), load(2, 0)]), None);
        let cool = InstanceLoad { p99_ms: Some(3.0), ..load(1, 2) };
        assert_eq!(on_tick(&r, &[cool]), None);
    }

    #[test]
    fn a_brokers_connection_figures_are_read_in_connection_order() {
        let mut info: ServiceInfo = serde_json::from_value(serde_json::json!({
            "name": "k1", "kind": "broker", "type": "kraken", "state": "running", "node": "n1", "mode": "process",
            "restarts": 0, "options": {}
        }))
        .unwrap();
        assert_eq!(broker_scale(&info), None, "a broker without venue connections is not listed");
        for (k, v) in [
            ("venue_connections", 3.0),
            ("subscriptions_conn_10", 1.0),
            ("subscriptions_conn_2", 3.0),
            ("subscriptions_conn_0", 2.0),
            ("max_subscriptions_per_connection", 3.0),
            ("subscription_headroom", 1.0),
            ("rest_budget_used", 0.25),
        ] {
            info.metrics.insert(k.into(), v);
        }
        let scale = broker_scale(&info).unwrap();
        assert_eq!(scale.subscriptions_per_connection, [2, 3, 1], "by index, not by name");
        assert_eq!((scale.venue_connections, scale.max_subscriptions_per_connection), (3, 3));
        assert_eq!((scale.subscription_headroom, scale.rest_budget_used, scale.trading_budget_used), (1, 0.25, 0.0));
    }

    #[test]
    fn an_idle_extra_is_released_newest_first_never_below_min() {
        let r = rules();
        let idle = |id| InstanceLoad { idle_for: Some(Duration::from_secs(12)), ..load(id, 0) };
        assert_eq!(on_tick(&r, &[idle(1)]), None, "min_instances stays");
        let Some(Action::Release { id, .. }) = on_tick(&r, &[load(1, 3), idle(2), idle(3)]) else {
            panic!("expected a release")
        };
        assert_eq!(id, 3);
        let fresh = InstanceLoad { idle_for: Some(Duration::from_secs(2)), ..load(2, 0) };
        assert_eq!(on_tick(&r, &[load(1, 3), fresh]), None, "not idle long enough");
        assert!(matches!(on_tick(&AutoscaleConfig { min_instances: 2, ..r }, &[load(1, 0)]), Some(Action::Add { .. })));
    }
}

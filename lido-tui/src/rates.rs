//! Per-service rate history from the once-a-second
//! [`ClusterEvent::Metrics`](lido_shared::cluster::ClusterEvent::Metrics)
//! events: the last [`RATE_SAMPLES`] of messages/s and pipe latency.

use std::collections::{BTreeMap, VecDeque};

/// Samples kept per service and figure (a minute at one a second).
pub const RATE_SAMPLES: usize = 60;
/// The metric key for throughput.
pub const MESSAGES_PER_S: &str = "messages_per_s";
/// The metric key for the manager↔service pipe round trip.
pub const PIPE_LATENCY_MS: &str = "pipe_latency_ms";

/// One service's recent figures, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub messages_per_s: VecDeque<f64>,
    pub pipe_latency_ms: VecDeque<f64>,
}

impl Series {
    fn push(&mut self, figures: &BTreeMap<String, f64>) {
        push(&mut self.messages_per_s, figures.get(MESSAGES_PER_S));
        push(&mut self.pipe_latency_ms, figures.get(PIPE_LATENCY_MS));
    }
}

fn push(series: &mut VecDeque<f64>, value: Option<&f64>) {
    let Some(&value) = value.filter(|v| v.is_finite()) else {
        return;
    };
    if series.len() == RATE_SAMPLES {
        series.pop_front();
    }
    series.push_back(value.max(0.0));
}

/// Every service's series, by service name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates {
    services: BTreeMap<String, Series>,
}

impl Rates {
    /// Adds one Metrics event's figures.
    pub fn record(&mut self, services: &BTreeMap<String, BTreeMap<String, f64>>) {
        for (name, figures) in services {
            self.services.entry(name.clone()).or_default().push(figures);
        }
    }

    pub fn get(&self, service: &str) -> Option<&Series> {
        self.services.get(service)
    }

    /// Drops a removed service's history.
    pub fn forget(&mut self, service: &str) {
        self.services.remove(service);
    }
}

/// Scales samples for a sparkline: `×scale`, rounded, as `u64`.
pub fn bars(samples: &VecDeque<f64>, scale: f64) -> Vec<u64> {
    // Float to int: finite and non-negative by construction, saturating otherwise.
    samples.iter().map(|v| (v * scale).round() as u64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(messages: f64, latency: f64) -> BTreeMap<String, BTreeMap<String, f64>> {
        let f = [(MESSAGES_PER_S.to_string(), messages), (PIPE_LATENCY_MS.to_string(), latency)].into();
        [("paper-1".to_string(), f)].into()
    }

    #[test]
    fn keeps_the_last_samples() {
        let mut rates = Rates::default();
        for i in 0..RATE_SAMPLES + 5 {
            rates.record(&figures(i as f64, 0.5));
        }
        let s = rates.get("paper-1").unwrap();
        assert_eq!(s.messages_per_s.len(), RATE_SAMPLES);
        assert_eq!(s.messages_per_s.front(), Some(&5.0));
        assert_eq!(s.messages_per_s.back(), Some(&(RATE_SAMPLES as f64 + 4.0)));
        rates.forget("paper-1");
        assert!(rates.get("paper-1").is_none());
    }

    #[test]
    fn missing_and_bad_figures_are_skipped() {
        let mut rates = Rates::default();
        rates.record(&[("x".to_string(), BTreeMap::new())].into());
        rates.record(&figures(f64::NAN, -3.0));
        let s = rates.get("x").unwrap();
        assert!(s.messages_per_s.is_empty());
        let p = rates.get("paper-1").unwrap();
        assert!(p.messages_per_s.is_empty());
        assert_eq!(p.pipe_latency_ms, [0.0]);
        assert_eq!(bars(&[1.26, 0.0].into(), 10.0), [13, 0]);
    }
}

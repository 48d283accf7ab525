//! Latency samples and their percentiles.

use std::time::Duration;

/// Percentiles of one set of samples.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (all zero when empty).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> Duration {
            if samples.is_empty() {
                return Duration::ZERO;
            }
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Self { n: samples.len(), p50: at(0.50), p99: at(0.99), p999: at(0.999) }
    }
}

/// Microseconds with one decimal, for the table.
pub fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// `a - b`, or zero.
pub fn minus(a: Duration, b: Duration) -> Duration {
    a.saturating_sub(b)
}

/// `added / floor_added` as `1.23x`, or `n/a` when the floor adds nothing.
pub fn ratio(added: Duration, floor_added: Duration) -> String {
    if floor_added.is_zero() {
        return "n/a".into();
    }
    format!("{:.2}x", added.as_secs_f64() / floor_added.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of((1..=1000).map(Duration::from_micros).collect());
        assert_eq!(
            (p.p50, p.p99, p.p999),
            (Duration::from_micros(500), Duration::from_micros(990), Duration::from_micros(999))
        );
        assert_eq!(Percentiles::of(vec![]).p99, Duration::ZERO);
    }
}
